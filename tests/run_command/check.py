"""Runs the README's run command exactly as written (`cargo run --release`, from the repository
root), with LIVECHAT_BIND on a free port and LIVECHAT_DATA_DIR in a temporary directory; waits
for /readyz, sends a message over WebSocket, reads it back from history, stops the server with
SIGTERM and checks that it exits 0."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[2]
PATIENCE = 1200  # seconds: the release build may still be going (or, run alone, happen here)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.status, json.load(answer)


def wait_ready(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode} before it was ready")
        try:
            if get(f"{base}/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("the server was not ready in time")


async def round_trip(port: int) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/chat/readme/") as ws:
        await ws.send(json.dumps({"message": "hello from the README"}))
        echo = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert echo == {"message": "hello from the README"}, echo


def main() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        env = dict(os.environ, LIVECHAT_BIND=f"127.0.0.1:{port}", LIVECHAT_DATA_DIR=data_dir)
        # The command exactly as the README writes it.
        server = subprocess.Popen("cargo run --release", shell=True, cwd=ROOT, env=env)
        try:
            wait_ready(base, server)
            asyncio.run(round_trip(port))
            status, body = get(f"{base}/chat/history/?room=readme")
            messages = [item["message"] for item in body["chat_history"]]
            assert status == 200 and messages == ["hello from the README"], body
            # `cargo run` replaces itself with the server on Unix; the shell may stay as parent.
            os.kill(server_pid(server), signal.SIGTERM)
            code = server.wait(timeout=30)
            assert code == 0, f"exit code {code} after SIGTERM"
        finally:
            if server.poll() is None:
                server.kill()
    print("run command: 1 passed, 0 failed")


def server_pid(shell: subprocess.Popen) -> int:
    """The livechat process started by the shell (the shell itself when it exec'd the command)."""
    children = Path(f"/proc/{shell.pid}/task/{shell.pid}/children")
    if children.exists():
        pids = children.read_text().split()
        if pids:
            return int(pids[0])
    return shell.pid


if __name__ == "__main__":
    main()
