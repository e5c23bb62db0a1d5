"""HTTPClient against the real server: publish (once per nonce), history pages, rooms and
presence, a message's life over HTTP, read positions, direct messages, the server API, errors,
and a kept-alive connection the server closed."""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Callable

import pytest
from conftest import API_KEY, JWT_SECRET, LivechatServer, run

from livechat import ChatClient, ChatClosed, HTTPClient, LivechatError, mint_token


def test_publish_history_and_rooms(livechat: Callable[..., LivechatServer]) -> None:
    server = livechat()
    with HTTPClient(server.url) as http:
        first = http.publish({"text": "hello"}, "news", nonce="n-1")
        assert (first["room"], first["id"], first["message"]) == ("news", 1, "Message sent!")
        again = http.publish({"text": "hello"}, "news", nonce="n-1")
        assert again["duplicate"] is True and again["id"] == 1
        for n in range(2, 8):
            http.publish(f"m{n}", "news")
        default = http.publish("to the default room")
        assert default["room"] == "lobby"
        page = http.history("news", limit=3)
        assert [item["id"] for item in page["chat_history"]] == [5, 6, 7] and page["epoch"] == first["epoch"]
        assert [item["id"] for item in http.history("news", limit=2, before=3)["chat_history"]] == [1, 2]
        assert [item["id"] for item in http.history_after("news", after=2, page=2)] == [3, 4, 5, 6, 7]
        assert http.history("news")["chat_history"][0]["message"] == {"text": "hello"}
        assert http.history("nobody-here")["chat_history"] == []
        recent = [room["room"] for room in http.rooms()["recent"]]
        assert set(recent) == {"news", "lobby"}
        assert http.presence("news") == {"room": "news", "members": 0, "users": []}
        assert http.ready()
        with pytest.raises(LivechatError) as invalid:
            http.history("not a room")
        assert invalid.value.status == 400 and "room" in invalid.value.error


def test_a_message_life_read_positions_and_the_server_api(livechat: Callable[..., LivechatServer]) -> None:
    server = livechat()
    backend = server.http()
    ada = HTTPClient(server.url, name="Ada")
    published = ada.publish("frist", "life")
    room = "life"
    # The server key is a moderator: it may change anyone's message.
    edited = backend.edit(room, published["id"], "first")
    assert edited["event"] == "edited" and edited["message"] == "first"
    reaction = backend.react(room, published["id"], "🎉")
    assert (reaction["count"], reaction["on"]) == (1, True)
    assert backend.unreact(room, published["id"], "🎉")["count"] == 0
    second = ada.publish("second", room)
    assert ada.read(room, second["id"]) == {"room": room, "id": second["id"]}
    assert ada.unread() == [{"room": room, "unread": 0, "last_id": 2, "read_id": 2}]
    assert backend.delete(room, second["id"])["event"] == "deleted"
    assert backend.history(room)["chat_history"][1] == {"id": 2, "room": room, "ts": second["ts"], "deleted": True}
    with pytest.raises(LivechatError) as missing:
        backend.edit(room, 99, "nothing there")
    assert missing.value.status == 404
    with pytest.raises(LivechatError) as not_allowed:
        ada.ban("Bo")
    assert not_allowed.value.status == 403

    # Bans and mutes, lifted; broadcasts; what is known of a room; erasure.
    ban = backend.ban("Bo", room, duration=60, reason="spam", mode="mute")
    assert (ban["user"], ban["room"], ban["mode"], ban["reason"], ban["created_by"]) == ("Bo", room, "mute", "spam", "server")
    assert [item["id"] for item in backend.bans(room=room)] == [ban["id"]]
    with pytest.raises(LivechatError) as muted:
        HTTPClient(server.url, name="Bo").publish("hello?", room)
    assert muted.value.status == 403 and muted.value.error == "muted"
    backend.unban(ban["id"])
    assert backend.bans() == []
    with pytest.raises(LivechatError) as gone:
        backend.unban(ban["id"])
    assert gone.value.status == 404
    HTTPClient(server.url, name="Bo").publish("hello again", room)
    rooms = backend.broadcast(["life", "elsewhere"], "maintenance at noon", nonce="b-1")
    assert [(item["room"], item["id"]) for item in rooms] == [("life", 4), ("elsewhere", 1)]
    assert [item["id"] for item in backend.broadcast(["life", "elsewhere"], "maintenance at noon", nonce="b-1")] == [4, 1]
    info = backend.room_info(room)
    assert (info["room"], info["last_id"], info["messages"]) == (room, 4, 4)
    assert backend.erase_user_messages("Ada", limit=2) == 1  # the first; the second was deleted already
    assert [item.get("deleted", False) for item in backend.history(room)["chat_history"]] == [True, True, False, False]


def test_disconnect_reaches_a_chat_client(livechat: Callable[..., LivechatServer]) -> None:
    server = livechat()

    async def scenario() -> None:
        async with ChatClient(server.url, "lobby", name="Ada") as chat:
            await asyncio.to_thread(server.http().disconnect, "Ada", reconnect=False, reason="account closed")
            with pytest.raises(ChatClosed) as closed:
                async for _ in chat:
                    pass
            assert (closed.value.code, closed.value.reason) == (4004, "disconnected: account closed")

    run(scenario())


def test_direct_messages_with_tokens(livechat: Callable[..., LivechatServer]) -> None:
    server = livechat("--auth", "required", "--jwt-secret", JWT_SECRET)
    ada = HTTPClient(server.url, token=mint_token(JWT_SECRET, "ada", name="Ada"))
    bo = HTTPClient(server.url, token=mint_token(JWT_SECRET, "bo", name="Bo"))
    direct = ada.open_direct("bo")
    assert direct == {"room": "dm:ada:bo", "with": "bo"}
    ada.publish("psst", direct["room"])
    [summary] = bo.directs()
    assert summary["room"] == "dm:ada:bo" and summary["with"] == "ada" and summary["unread"] == 1
    assert summary["last"] is not None and summary["last"]["message"] == "psst"
    carol = HTTPClient(server.url, token=mint_token(JWT_SECRET, "carol"))
    with pytest.raises(LivechatError) as refused:
        carol.history("dm:ada:bo")
    assert refused.value.status == 403
    with pytest.raises(LivechatError) as anonymous:
        HTTPClient(server.url).publish("hello")
    assert anonymous.value.status == 401


def test_a_kept_alive_connection_the_server_closed_is_opened_again(livechat: Callable[..., LivechatServer]) -> None:
    """livechat closes idle kept-alive connections after its request timeout: the next request
    finds its connection closed, and is sent again on a new one (publishes carry a nonce, so a
    repeat would be stored once anyway)."""
    server = livechat("--request-timeout", "1s")
    http = HTTPClient(server.url, api_key=API_KEY)
    http.publish("before", "idle")
    connection = http._connection()
    assert connection.sock is not None
    deadline = time.monotonic() + 20
    while not closed_by_peer(connection.sock):
        assert time.monotonic() < deadline, "livechat kept the idle connection open"
        time.sleep(0.05)
    http.publish("after", "idle")
    assert http._connection() is not connection
    assert [item["message"] for item in http.history("idle")["chat_history"]] == ["before", "after"]


def closed_by_peer(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
