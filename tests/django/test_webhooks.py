"""Webhooks: every message livechat stores reaches the app's Message table exactly once, through
signed requests, whether the app is down for a while, livechat is killed with events pending, or
the node holding them dies and another node takes over."""
import asyncio
import hashlib
import hmac
import json
import time
from collections import Counter

import pytest
import requests

from support import WEBHOOK_SECRET, alice_and_bob, close_all, fresh_room, until, wait_for


def assert_recorded_once(app, room, sent: dict, history: list, settled, timeout: float = 60):
    """The Message table holds every message of `sent` (id -> (text, author)) exactly once, as
    livechat's history has them, once livechat has nothing left to deliver (`settled()`)."""
    wait_for(
        lambda: set(sent) <= {row.livechat_id for row in app.messages(room)},
        f"the {len(sent)} messages in the Message table",
        timeout,
    )
    wait_for(settled, "livechat to have every event acknowledged")
    rows = app.messages(room)
    twice = {id: count for id, count in Counter(row.livechat_id for row in rows).items() if count > 1}
    assert twice == {}, f"recorded more than once: {twice}"
    recorded = {row.livechat_id: (row.text, row.username) for row in rows}
    assert recorded == sent
    assert {item["id"]: (item["message"], item["user"]["name"]) for item in history} == sent


def outbox_empty(livechat):
    """A condition: the node's outbox holds no event (`livechat_webhook_pending` is 0)."""
    return lambda: livechat.metric("livechat_webhook_pending") == 0


OUTBOX = "livechat:{webhooks}:outbox"  # the Redis engine's webhook stream (default prefix)
LEASE = "livechat:{webhooks}:sender"  # the sending node's lease: its node id


def stream_pending(redis) -> int:
    """Events of the webhook stream read by a sender and not acknowledged (XPENDING of the
    consumer group `livechat`)."""
    summary = redis.cli("XPENDING", OUTBOX, "livechat").split("\n")
    return int(summary[0]) if summary[0].isdigit() else 0


def stream_empty(redis):
    """A condition: every event of the stream was acknowledged (and deleted)."""
    return lambda: redis.cli("XLEN", OUTBOX) == "0"


async def burst(chats: dict, count: int, text: str) -> dict:
    """Every chat sends `count` messages without waiting; their ids -> (text, author)."""
    sent = {}
    for author, chat in chats.items():
        nonces = [await chat.send(f"{text} {n} from {author}") for n in range(count)]
        for nonce in nonces:
            echo = await chat.answer(nonce)
            assert "error" not in echo, echo
            sent[echo["id"]] = (echo["message"], author)
    return sent


@pytest.mark.parametrize("engine", ["embedded", "redis"])
def test_every_message_is_in_the_message_table_once_matching_history(app, servers, engine):
    settings = app.hooks()
    if engine == "redis":
        redis = servers.redis()
        settings["REDIS_URL"] = redis.url()
    livechat = servers.livechat(**settings)
    room = fresh_room()

    async def scenario():
        chats = await alice_and_bob(app, room, livechat)
        sent = await burst(chats, 25, "hello")
        for n in range(5):
            echo = await chats["alice"].publish(f"one at a time {n}")
            sent[echo["id"]] = (echo["message"], "alice")
        await close_all(chats)
        return sent

    sent = asyncio.run(scenario())
    settled = stream_empty(redis) if engine == "redis" else outbox_empty(livechat)
    assert_recorded_once(app, room, sent, livechat.history(room), settled)


def test_django_stopped_30_s_while_messages_flow_then_started_loses_none_and_doubles_none(app, servers):
    livechat = servers.livechat(**app.hooks(), LIVECHAT_PUBLISH_HOOK_FAILURE="accept")
    room = fresh_room()

    async def scenario():
        chats = await alice_and_bob(app, room, livechat)
        sent = await burst(chats, 2, "before the outage")
        await asyncio.to_thread(app.stop)
        outage_ends = time.monotonic() + 30
        n = 0
        while time.monotonic() < outage_ends:
            author = ("alice", "bob")[n % 2]
            echo = await chats[author].publish(f"during the outage {n}")
            sent[echo["id"]] = (echo["message"], author)
            n += 1
            await asyncio.sleep(0.2)  # the pace of the conversation
        assert livechat.metric("livechat_hook_calls_total", hook="webhook", outcome="failed") > 0
        await asyncio.to_thread(app.start)
        sent |= await burst(chats, 2, "after the outage")
        await close_all(chats)
        return sent

    sent = asyncio.run(scenario())
    # Deliveries resume at the next retry: the backoff doubles up to 60 s while the app is down.
    assert_recorded_once(app, room, sent, livechat.history(room), outbox_empty(livechat), timeout=90)


def test_livechat_killed_with_events_pending_delivers_them_after_restart(app, servers):
    livechat = servers.livechat(**app.hooks(), LIVECHAT_PUBLISH_HOOK_FAILURE="accept")
    room = fresh_room()

    async def scenario():
        chats = await alice_and_bob(app, room, livechat)
        sent = await burst(chats, 2, "delivered")
        await asyncio.to_thread(app.stop)
        pending = await burst(chats, 10, "pending")
        await until(
            lambda: livechat.metric("livechat_webhook_pending") >= len(pending),
            "the messages' events pending in the outbox",
        )
        livechat.kill9()
        await close_all(chats)
        return sent | pending

    sent = asyncio.run(scenario())
    app.start()
    livechat.start()  # the same data directory
    assert_recorded_once(app, room, sent, livechat.history(room), outbox_empty(livechat))


def test_two_nodes_on_redis_the_node_holding_pending_events_killed(app, servers):
    redis = servers.redis()
    settings = app.hooks() | {
        "REDIS_URL": redis.url(),
        "LIVECHAT_PUBLISH_HOOK_FAILURE": "accept",
        "LIVECHAT_WEBHOOK_EVENTS": "message",  # what the app keeps; the pending batch is the messages'
    }
    nodes = {name: servers.livechat(name, LIVECHAT_NODE_ID=name, **settings) for name in ("node-a", "node-b")}
    room = fresh_room()

    async def scenario():
        chats = await alice_and_bob(app, room, nodes["node-a"], nodes["node-b"])
        sent = await burst(chats, 2, "delivered")
        await until(stream_empty(redis), "the first messages delivered")
        await asyncio.to_thread(app.stop)
        sent |= await burst(chats, 10, "pending")
        # The sending node has read events it cannot deliver: they wait in its pending list.
        await until(lambda: stream_pending(redis) > 0, "events read and not acknowledged")
        lease = redis.cli("GET", LEASE)
        holder = next((name for name in nodes if name in lease), None)
        assert holder, f"the webhook lease names neither node: {lease!r}"
        nodes[holder].kill9()
        await close_all(chats)
        return sent, holder

    sent, holder = asyncio.run(scenario())
    app.start()
    survivor = next(node for name, node in nodes.items() if name != holder)
    assert_recorded_once(app, room, sent, survivor.history(room), stream_empty(redis))


def signature(body: bytes, t: int, secret: str = WEBHOOK_SECRET) -> str:
    return f"t={t},v1={hmac.new(secret.encode(), str(t).encode() + b'.' + body, hashlib.sha256).hexdigest()}"


def message_batch(room: str, event_id: str, livechat_id: int, user_id: int) -> bytes:
    ts = int(time.time() * 1000)
    message = {"id": livechat_id, "room": room, "message": f"message {livechat_id}", "ts": ts,
               "user": {"id": str(user_id), "name": "alice"}}
    event = {"id": event_id, "type": "message", "room": room, "ts": ts, "message": message}
    return json.dumps({"events": [event]}).encode()


def post(app, path: str, body: bytes, header: str | None) -> int:
    headers = {"Content-Type": "application/json"} | ({"X-Livechat-Signature": header} if header else {})
    return requests.post(app.url(path), data=body, headers=headers, timeout=10).status_code


def test_the_app_refuses_missing_malformed_wrong_and_stale_signatures(app):
    room = fresh_room()
    body = message_batch(room, f"{room}-1", 1, app.users["alice"])
    now = int(time.time())
    refusals = {
        None: 400,
        "v1=0123abcd": 400,
        f"t=soon,{signature(body, now).split(',')[1]}": 400,
        signature(body, now, secret="another secret"): 401,
        signature(body + b" ", now): 401,
        signature(body, now - 400): 401,
        signature(body, now + 400): 401,
    }
    for header, status in refusals.items():
        assert post(app, "/livechat/events", body, header) == status, header
    for hook in ("/livechat/connect", "/livechat/publish"):
        call = json.dumps({"room": room, "headers": {}}).encode()
        assert post(app, hook, call, None) == 400
        assert post(app, hook, call, signature(call, now, secret="another secret")) == 401
    assert app.messages(room) == []
    assert post(app, "/livechat/events", body, signature(body, now - 240)) == 204
    assert [row.livechat_id for row in app.messages(room)] == [1]


def test_a_batch_delivered_again_is_recorded_once(app):
    room = fresh_room()
    first = message_batch(room, f"{room}-1", 1, app.users["alice"])
    for _ in range(3):  # an acknowledgement lost twice
        assert post(app, "/livechat/events", first, signature(first, int(time.time()))) == 204
    events = json.loads(first)["events"] + json.loads(message_batch(room, f"{room}-2", 2, app.users["alice"]))["events"]
    both = json.dumps({"events": events}).encode()
    assert post(app, "/livechat/events", both, signature(both, int(time.time()))) == 204
    rows = app.messages(room)
    assert sorted((row.livechat_id, row.event_id, row.username) for row in rows) == [
        (1, f"{room}-1", "alice"),
        (2, f"{room}-2", "alice"),
    ]
