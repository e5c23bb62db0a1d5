"""Keeps docs/asyncapi.yaml true: runs the server, has WebSocket clients provoke every frame the
document lists (plain and meta messages, errors, rate-limit refusals), and checks each frame
against the document's schemas, and that every frame seen is one the document describes.
Usage: python tests/asyncapi/check.py BINARY   (from the repository root)"""

import asyncio
import json
import re
import subprocess
import threading
import sys
import tempfile
import urllib.request
from pathlib import Path

import jsonschema
import websockets
import yaml

ROOT = Path(__file__).resolve().parents[2]


def schemas() -> dict:
    document = yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())
    assert document["asyncapi"].startswith("3."), document["asyncapi"]
    shared = document["components"]["schemas"]
    # Payloads refer to shared schemas: resolve them in place for jsonschema.
    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(shared[node["$ref"].rsplit("/", 1)[1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node
    return {name: resolve(message["payload"])
            for name, message in document["components"]["messages"].items()}


SECRET = "asyncapi-check-secret-of-32-bytes!"


def start(binary: str, data_dir: str, args: list[str]) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1:0", "--data-dir", data_dir, *args],
        stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        match = re.search(r"listening on http://(\S+)", line)
        if match:
            # Keep reading the log so that the server never blocks on a full pipe.
            threading.Thread(target=server.stderr.read, daemon=True).start()
            return server, match.group(1)
    sys.exit("the server did not start")


async def frames(address: str) -> list[tuple[str, dict]]:
    """(what the client was sent, the frame) for each frame the scenario produces."""
    seen = []
    url = f"ws://{address}/ws/chat/documented/"
    async with websockets.connect(url) as plain, \
            websockets.connect(url + "?meta=1&name=Dana") as meta:
        await meta.send(json.dumps({"message": {"any": ["json", 1]}}))
        seen.append(("message", json.loads(await plain.recv())))
        seen.append(("messageWithMeta", json.loads(await meta.recv())))
        await plain.send("not json")
        seen.append(("error", json.loads(await plain.recv())))
        await plain.send(json.dumps({"message": "second"}))
        seen.append(("message", json.loads(await plain.recv())))
        seen.append(("messageWithMeta", json.loads(await meta.recv())))
        await plain.send(json.dumps({"message": "third"}))
        seen.append(("message", json.loads(await plain.recv())))
        # This connection's burst (2) is spent: the next publish is refused, naming its nonce.
        await plain.send(json.dumps({"message": "fourth", "nonce": "refused-1"}))
        refused = json.loads(await plain.recv())
        assert refused.get("nonce") == "refused-1" and refused.get("for") == "message", refused
        seen.append(("rateLimited", refused))
        # A typing frame from a connection with no name: an error for `typing`.
        await plain.send(json.dumps({"typing": True}))
        refused = json.loads(await plain.recv())
        assert refused.get("for") == "typing", refused
        seen.append(("error", refused))
    async with websockets.connect(url + "?meta=1") as sender:
        await sender.send(json.dumps({"message": "once", "nonce": "n-1"}))
        seen.append(("messageWithMeta", json.loads(await sender.recv())))
        # The same nonce again: its sender alone gets the first message back.
        await sender.send(json.dumps({"message": "once", "nonce": "n-1"}))
        seen.append(("messageWithMeta", json.loads(await sender.recv())))
    # Resuming: 5 stored, the replay holds 2 (--replay-max): a gap, 2 messages, caught up.
    async with websockets.connect(url + "?meta=1&since=0") as resuming:
        seen.append(("gap", json.loads(await resuming.recv())))
        seen.append(("messageWithMeta", json.loads(await resuming.recv())))
        seen.append(("messageWithMeta", json.loads(await resuming.recv())))
        seen.append(("caughtUp", json.loads(await resuming.recv())))
    async with websockets.connect(url + "?since=1000") as ahead:
        seen.append(("reset", json.loads(await ahead.recv())))
        seen.append(("caughtUp", json.loads(await ahead.recv())))
    # Presence: a snapshot first, a change when someone joins, typing from someone else.
    here = f"ws://{address}/ws/chat/people/?presence=1&name="
    async with websockets.connect(here + "Ada") as ada:
        seen.append(("presenceSnapshot", json.loads(await ada.recv())))
        async with websockets.connect(here + "Bo") as bo:
            await bo.send(json.dumps({"typing": True}))
            kinds = set()
            while kinds != {"userTyping", "presenceChange with Bo"}:
                frame = json.loads(await ada.recv())
                kind = "userTyping" if frame["event"] == "typing" else "presenceChange"
                seen.append((kind, frame))
                kinds.add(kind if kind == "userTyping" or frame["members"] < 2
                          else "presenceChange with Bo")
                kinds.discard("presenceChange")
    return seen


KEY = "asyncapi-check-server-key"


async def next_frame(client) -> dict:
    return json.loads(await client.recv())


async def conversation_frames(address: str) -> list[tuple[str, dict]]:
    """Replies, edits, deletions, reactions, read positions, receipts, a resume after changes,
    and a muted user's refusal."""
    seen = []
    url = f"ws://{address}/ws/chat/life/"
    async with websockets.connect(url + "?meta=1&receipts=1&name=Ann") as ann, \
            websockets.connect(url + "?meta=1&name=Bo") as bo, \
            websockets.connect(f"ws://{address}/ws/chat/elsewhere/?name=Bo") as bo_elsewhere:
        for n in (1, 2, 3):
            await ann.send(json.dumps({"message": f"m{n}"}))
            await next_frame(ann)
            await next_frame(bo)
        await bo.send(json.dumps({"message": "answer", "reply_to": 1}))
        seen.append(("messageWithMeta", await next_frame(bo)))
        await next_frame(ann)
        # A client away after id 4 comes back after these changes.
        await ann.send(json.dumps({"edit": 1, "message": "m1, edited"}))
        seen.append(("edited", await next_frame(ann)))
        await next_frame(bo)
        await bo.send(json.dumps({"react": 2, "emoji": "👍"}))
        seen.append(("reaction", await next_frame(bo)))
        await next_frame(ann)
        await ann.send(json.dumps({"delete": 3}))
        seen.append(("deleted", await next_frame(ann)))
        await next_frame(bo)
        await bo.send(json.dumps({"edit": 1, "message": "not mine"}))
        refused = await next_frame(bo)
        assert refused.get("for") == "edit" and refused.get("id") == 1, refused
        seen.append(("error", refused))
        await bo.send(json.dumps({"read": 4}))
        seen.append(("readMoved", await next_frame(bo_elsewhere)))
        seen.append(("seen", await next_frame(ann)))
    async with websockets.connect(url + "?meta=1&name=Cy&since=4") as back:
        for expected in ("edited", "reactionsNow", "deleted", "caughtUp"):
            seen.append((expected, await next_frame(back)))
    mute = json.dumps({"user": "Bo", "mode": "mute", "reason": "calm down"}).encode()
    request = urllib.request.Request(f"http://{address}/api/bans", data=mute, method="POST",
                                     headers={"Authorization": f"Bearer {KEY}"})
    await asyncio.to_thread(urllib.request.urlopen, request)
    async with websockets.connect(url + "?name=Bo") as muted:
        await muted.send(json.dumps({"message": "hello?", "nonce": "m-1"}))
        seen.append(("barred", await next_frame(muted)))
    return seen


def token(binary: str, sub: str) -> str:
    minted = subprocess.run([binary, "token", "--sub", sub, "--ttl", "10m"], check=True,
                            capture_output=True, text=True, env={"LIVECHAT_JWT_SECRET": SECRET})
    return minted.stdout.strip()


async def authenticated_frames(binary: str, address: str) -> list[tuple[str, dict]]:
    """With auth required: a refresh's confirmation."""
    url = f"ws://{address}/ws/chat/documented/?token={token(binary, 'ada')}"
    async with websockets.connect(url) as client:
        await client.send(json.dumps({"token": token(binary, "ada")}))
        return [("tokenRefreshed", json.loads(await client.recv()))]


def run(binary: str, args: list[str], scenario) -> list[tuple[str, dict]]:
    with tempfile.TemporaryDirectory() as data_dir:
        server, address = start(binary, data_dir, args)
        try:
            return asyncio.run(asyncio.wait_for(scenario(address), 30))
        finally:
            server.terminate()
            server.wait()


def main() -> None:
    documented = schemas()
    binary = sys.argv[1]
    seen = run(binary, ["--rate-limit", "1/m", "--rate-burst", "2", "--replay-max", "2"], frames)
    seen += run(binary, ["--auth", "required", "--jwt-secret", SECRET],
                lambda address: authenticated_frames(binary, address))
    seen += run(binary, ["--api-key", KEY], conversation_frames)
    receivable = ["message", "messageWithMeta", "error", "rateLimited", "tokenRefreshed", "gap",
                  "reset", "caughtUp",
                  "presenceSnapshot", "presenceChange", "userTyping",
                  "barred", "edited", "deleted", "reaction", "reactionsNow", "readMoved", "seen"]
    failed = 0
    for expected, frame in seen:
        try:
            jsonschema.validate(frame, documented[expected])
            matching = [name for name in receivable
                        if jsonschema.Draft202012Validator(documented[name]).is_valid(frame)]
            assert matching, f"no documented frame matches {frame}"
        except (jsonschema.ValidationError, AssertionError) as error:
            failed += 1
            print(f"asyncapi: {expected}: {frame}: {error}")
    # The sent frames the scenario used are documented too.
    jsonschema.validate({"message": {"any": ["json", 1]}}, documented["publish"])
    jsonschema.validate({"token": "eyJ..."}, documented["refreshToken"])
    jsonschema.validate({"message": "x", "nonce": "n-1"}, documented["publish"])
    jsonschema.validate({"typing": True}, documented["typing"])
    jsonschema.validate({"message": "answer", "reply_to": 1}, documented["publish"])
    jsonschema.validate({"edit": 1, "message": "m1, edited"}, documented["edit"])
    jsonschema.validate({"delete": 3}, documented["delete"])
    jsonschema.validate({"react": 2, "emoji": "👍"}, documented["react"])
    jsonschema.validate({"unreact": 2, "emoji": "👍"}, documented["react"])
    jsonschema.validate({"read": 4}, documented["read"])
    print(f"asyncapi frames: {len(seen) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
