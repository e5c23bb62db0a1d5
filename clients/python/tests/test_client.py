"""ChatClient against the real server: messages, resume across a restart and a drop with no gap
and no duplicate, nonces resent and stored once, gap and reset, presence and typing, a message's
life (edits, deletions, reactions, read positions), refusals and close codes, tokens."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from conftest import JWT_SECRET, PATIENCE, LivechatServer, RedisServer, Relay, run, until

from livechat import *  # noqa: F403 (the package's export list: what the tests use of it)

FAST = Backoff(initial=0.05, maximum=0.5, minimum=0.01)
E = TypeVar("E")


class Events:
    """Reads a client's events as they come, and waits for those a test expects."""

    def __init__(self, chat: ChatClient):
        self.chat = chat
        self.seen: list[Event] = []
        self.ended: BaseException | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for event in self.chat:
                self.seen.append(event)
                self._changed.set()
        except ChatClosed as closed:
            self.ended = closed
        self._changed.set()

    def summary(self, last: int = 12) -> str:
        """The last events, short: their kind and id (a message's text may be long)."""
        return ", ".join(f"{type(event).__name__}({getattr(event, 'id', getattr(event, 'code', ''))})" for event in self.seen[-last:])

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.seen if isinstance(event, kind)]

    def messages(self) -> list[Any]:
        return [event.message for event in self.of(Message)]

    async def wait(self, condition: Callable[[], Any], what: str, timeout: float = PATIENCE) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = condition()
            if value:
                return value
            if self._task.done():
                raise AssertionError(f"the client ended ({self.ended!r}) while waiting for {what}")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"waited {timeout:.0f} s for {what}; the last events: {self.summary()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    async def first(self, kind: type[E], condition: Callable[[E], bool] = lambda _: True) -> E:
        return await self.wait(  # type: ignore[no-any-return]
            lambda: next((event for event in self.of(kind) if condition(event)), None), f"a {kind.__name__}"
        )


def test_messages_reach_every_member_with_their_author(livechat: Callable[..., LivechatServer]) -> None:
    server = livechat()

    async def scenario() -> None:
        async with ChatClient(server.url, "lobby", name="Ada") as ada, ChatClient(server.url, "lobby", name="Bo") as bo:
            ada_events, bo_events = Events(ada), Events(bo)
            sent = await ada.send({"text": "hello", "n": [1, 2]})
            assert sent.id == 1 and sent.user == {"name": "Ada"} and sent.nonce
            reply = await bo.send("hi Ada", reply_to=sent.id)
            assert reply.reply_to == 1
            await ada_events.wait(lambda: len(ada_events.of(Message)) == 2, "both messages")
            await bo_events.wait(lambda: len(bo_events.of(Message)) == 2, "both messages")
            for events in (ada_events, bo_events):
                assert events.messages() == [{"text": "hello", "n": [1, 2]}, "hi Ada"]
                assert [m.id for m in events.of(Message)] == [1, 2]
            assert ada.last_id == 2 and ada.epoch and ada.pending == 0

    run(scenario())


async def away_and_back(relay: Relay, http: HTTPClient, room: str, outage: Callable[[], Awaitable[None]]) -> Events:
    """A client follows `room` through `relay`; 5 messages, then `outage` while the relay refuses
    it, 5 more and one of its own meanwhile, then it comes back and 5 more: it must have each
    message once, in order, as the server stored them."""
    async with ChatClient(relay.url, room, name="Ada", backoff=FAST) as chat:
        events = Events(chat)
        for n in range(1, 6):
            http.publish(f"m{n}", room)
        await events.wait(lambda: len(events.of(Message)) == 5, "the first 5")
        relay.refusing = True  # the client keeps trying, refused meanwhile
        await outage()
        await events.first(Disconnected)
        for n in range(6, 11):
            http.publish(f"m{n}", room)  # missed by the client: to be replayed
        written_while_away = chat.send_nowait("sent while away")
        assert chat.pending == 1
        relay.refusing = False
        stored = await written_while_away
        for n in range(11, 16):
            http.publish(f"m{n}", room)
        await events.wait(lambda: len(events.of(Message)) == 16, "every message")
        expected = [f"m{n}" for n in range(1, 11)] + ["sent while away"] + [f"m{n}" for n in range(11, 16)]
        assert events.messages() == expected
        assert [m.id for m in events.of(Message)] == list(range(1, 17))
        assert stored.id == 11
        assert not events.of(Reset) and not events.of(Gap)
        assert len(events.of(Connected)) == 2 and len(events.of(CaughtUp)) == 2
        # What the client saw is what the server stored, once each.
        assert [item["message"] for item in http.history(room, limit=100)["chat_history"]] == expected
        return events


def test_resumes_across_a_server_restart_with_no_gap_and_no_duplicate(
    livechat: Callable[..., LivechatServer],
) -> None:
    server = livechat()

    async def scenario() -> None:
        async with Relay(server.port) as relay:
            events = await away_and_back(relay, server.http(), "river", lambda: asyncio.to_thread(server.restart))
            assert events.of(Disconnected)[0].code == 1001  # going away

    run(scenario())


def test_resumes_on_another_node_after_one_is_killed(livechat: Callable[..., LivechatServer], redis: RedisServer) -> None:
    """Two nodes on one Redis: the client's node dies (kill -9) and it resumes on the other, which
    replays what it missed from the room's stream."""
    first = livechat("--redis-url", redis.url)
    second = livechat("--redis-url", redis.url)

    async def scenario() -> None:
        async with Relay(first.port) as relay:

            async def kill_its_node() -> None:
                await asyncio.to_thread(first.stop, signal.SIGKILL)
                relay.target = second.port

            events = await away_and_back(relay, second.http(), "nodes", kill_its_node)
            assert events.of(Disconnected)[0].code == 1006  # no close frame from a killed node

    run(scenario())


def test_a_nonce_resent_after_a_drop_is_stored_once(livechat: Callable[..., LivechatServer]) -> None:
    """Live only (no resume): the message reached the server, its echo did not reach the client;
    the client sends it again on the new connection, and the server answers with the first copy."""
    server = livechat()
    http = server.http()

    async def scenario() -> None:
        async with Relay(server.port) as relay:
            async with ChatClient(relay.url, "once", name="Ada", resume=False, backoff=FAST) as chat:
                events = Events(chat)
                relay.hold("down")
                sent = chat.send_nowait("exactly once")
                await until(lambda: http.history("once")["chat_history"], "the message stored")
                relay.cut()
                relay.release()
                message = await sent
                await events.wait(lambda: len(events.of(Connected)) == 2, "the second connection")
                history = http.history("once")["chat_history"]
                assert [item["message"] for item in history] == ["exactly once"]
                assert message.id == history[0]["id"] and message.nonce == history[0]["nonce"]
                # The first echo was lost with the connection: the one seen is the resend's answer.
                await events.wait(lambda: events.messages() == ["exactly once"], "the message, once")

    run(scenario())


def test_a_message_stored_before_a_drop_is_confirmed_by_the_replay(livechat: Callable[..., LivechatServer]) -> None:
    """With resume: the replay carries the stored message with its nonce, which confirms it; a
    message that never reached the server is sent again and stored once."""
    server = livechat()
    http = server.http()

    async def scenario() -> None:
        async with Relay(server.port) as relay:
            async with ChatClient(relay.url, "twice", name="Ada", backoff=FAST) as chat:
                events = Events(chat)
                await events.first(CaughtUp)  # publishes go after it
                relay.hold("down")
                stored = chat.send_nowait("stored, echo lost")
                await until(lambda: http.history("twice")["chat_history"], "the first message stored")
                relay.cut()
                relay.release()
                await stored
                await events.wait(lambda: len(events.of(CaughtUp)) == 2, "caught up again")
                relay.hold("up")
                before = relay.received["up"]
                lost = chat.send_nowait("never reached the server")
                await until(lambda: relay.received["up"] > before, "the message sent into the relay")
                relay.cut()
                relay.release()
                await lost
                history = http.history("twice")["chat_history"]
                expected = ["stored, echo lost", "never reached the server"]
                assert [item["message"] for item in history] == expected
                await events.wait(lambda: events.messages() == expected, "each message once")
                assert len(events.of(Connected)) == 3

    run(scenario())


def test_a_backlog_written_while_away_goes_once_in_order(livechat: Callable[..., LivechatServer]) -> None:
    """More messages than the server takes from one connection before storing them (256): the
    client keeps reading the answers while it sends them."""
    server = livechat()

    async def scenario() -> None:
        async with Relay(server.port) as relay:
            async with ChatClient(relay.url, "backlog", name="Ada", backoff=FAST) as chat:
                relay.refusing = True
                relay.cut()
                sent = [chat.send_nowait({"n": n, "text": "x" * 200}) for n in range(600)]
                relay.refusing = False
                stored = await asyncio.gather(*sent)
                assert [message.id for message in stored] == list(range(1, 601))
                history = list(server.http().history_after("backlog"))
                assert [item["message"]["n"] for item in history] == list(range(600))

    run(scenario())


def test_a_reader_that_falls_behind_costs_a_reconnect_not_memory(livechat: Callable[..., LivechatServer]) -> None:
    """Events not read pile up to max_queue; then the client stops reading its socket, the server
    closes it as a slow consumer (1008), and once read again it resumes where it stopped."""
    # Without compression: the padding would shrink to nothing and never fill the queue.
    # --shutdown-timeout: the close waits for the reader to come back (it does, late, on a loaded
    # machine) instead of the default 5 s.
    server = livechat("--outbound-queue", "16", "--outbound-bytes", "65536", "--compression", "off",
                      "--shutdown-timeout", "60s")
    http = server.http()
    count = 600

    async def scenario() -> None:
        async with ChatClient(server.url, "firehose", name="Ada", backoff=FAST, max_queue=5) as chat:
            for n in range(count):
                await asyncio.to_thread(http.publish, {"n": n, "padding": "x" * 20_000}, "firehose")
            await until(lambda: any("slow consumer" in line for line in server.log), "the server to close a slow consumer")
            events = Events(chat)
            await events.wait(lambda: len(events.of(Message)) == count, "every message", timeout=60)
            assert [event.message["n"] for event in events.of(Message)] == list(range(count))
            assert any(event.code == 1008 for event in events.of(Disconnected))
            assert not events.of(Gap)  # what the bounded replay left out was read from history

    run(scenario(), timeout=120)


def test_what_the_replay_leaves_out_is_read_from_history(livechat: Callable[..., LivechatServer]) -> None:
    server = livechat("--replay-max", "3")
    http = server.http()

    async def scenario() -> None:
        async with Relay(server.port) as relay:
            async with ChatClient(relay.url, "bounded", name="Ada", backoff=FAST) as filled, ChatClient(
                relay.url, "bounded", name="Bo", backoff=FAST, fill_gaps=False
            ) as told:
                events, gaps = Events(filled), Events(told)
                http.publish("first", "bounded")
                await events.first(Message)
                await gaps.first(Message)
                relay.refusing = True
                relay.cut()
                for n in range(2, 12):
                    http.publish(f"m{n}", "bounded")
                http.delete("bounded", 5)
                relay.refusing = False
                expected = ["first"] + [f"m{n}" for n in range(2, 12) if n != 5]
                await events.wait(lambda: events.messages() == expected, "every message")
                assert not events.of(Gap) and [event.id for event in events.of(Deleted)] == [5]
                gap = await gaps.first(Gap)
                assert (gap.first, gap.last) == (2, 8)
                await gaps.wait(lambda: gaps.messages() == ["first", "m9", "m10", "m11"], "the replayed three")

    run(scenario(), timeout=120)


def test_a_gap_is_told_and_a_lost_history_resets(livechat: Callable[..., LivechatServer], tmp_path: Any) -> None:
    server = livechat("--history-max-count", "2")
    http = server.http()

    async def scenario() -> None:
        async with Relay(server.port) as relay:
            async with ChatClient(relay.url, "short", name="Ada", backoff=FAST) as chat:
                events = Events(chat)
                http.publish("first", "short")
                await events.first(Message)
                relay.refusing = True
                relay.cut()
                await events.first(Disconnected)
                for n in range(2, 7):
                    http.publish(f"m{n}", "short")
                relay.refusing = False
                gap = await events.first(Gap)
                assert (gap.first, gap.last) == (2, 4)
                await events.wait(lambda: events.messages() == ["first", "m5", "m6"], "the messages still stored")
                # The history file is replaced (a new epoch): the client is told to start over.
                old_epoch = chat.epoch
                relay.refusing = True
                await asyncio.to_thread(server.restart, tmp_path / "new-data")
                http.publish("in the new history", "short")
                relay.refusing = False
                reset = await events.first(Reset)
                assert reset.last == 1 and reset.epoch != old_epoch
                http.publish("after the reset", "short")
                await events.wait(lambda: events.messages()[-1:] == ["after the reset"], "the next message")
                assert chat.last_id == 2 and chat.epoch == reset.epoch

    run(scenario())


def test_presence_and_typing(livechat: Callable[..., LivechatServer]) -> None:
    server = livechat()

    async def scenario() -> None:
        async with ChatClient(server.url, "people", name="Ada", presence=True) as ada:
            events = Events(ada)
            await events.first(PresenceChanged)
            assert [member.name for member in ada.presence] == ["Ada"]
            async with ChatClient(server.url, "people", name="Bo", presence=True) as bo:
                await events.wait(lambda: "Bo" in ada.presence, "Bo in Ada's presence")
                assert ada.presence.members == 2
                await bo.typing()
                await bo.typing()  # within 2.2 s: not sent
                typing = await events.first(Typing)
                assert typing.user == {"name": "Bo"}
                assert ada.typing_users() == [{"name": "Bo"}]
                await bo.send("done typing")
                await events.wait(lambda: events.messages() == ["done typing"], "Bo's message")
                assert ada.typing_users() == []
                assert len(events.of(Typing)) == 1
            await events.wait(lambda: "Bo" not in ada.presence, "Bo gone from Ada's presence")
            assert ada.presence.members == 1

    run(scenario())


def test_edits_deletions_reactions_and_read_positions(livechat: Callable[..., LivechatServer]) -> None:
    server = livechat()

    async def scenario() -> None:
        url = server.url
        async with ChatClient(url, "life", name="Ada", receipts=True) as ada, ChatClient(
            url, "life", name="Bo"
        ) as bo, ChatClient(url, "life", name="Bo") as bo_elsewhere:
            ada_events, bo_events, elsewhere = Events(ada), Events(bo), Events(bo_elsewhere)
            first = await ada.send("frist")
            second = await ada.send("second")
            edited = await ada.edit(first.id, "first")
            assert isinstance(edited, Edited) and edited.message == "first" and edited.by == {"name": "Ada"}
            await bo_events.first(Edited, lambda event: event.id == first.id)
            with pytest.raises(RequestRefused) as refused:
                await bo.edit(first.id, "not mine")
            assert refused.value.refusal.kind == "edit" and "only its author" in refused.value.refusal.error
            reaction = await bo.react(second.id, "👍")
            assert isinstance(reaction, Reaction) and (reaction.count, reaction.on) == (1, True)
            taken_back = await bo.unreact(second.id, "👍")
            assert (taken_back.count, taken_back.on) == (0, False)
            deleted = await ada.delete(second.id)
            assert isinstance(deleted, Deleted) and deleted.id == second.id
            await bo_events.first(Deleted)
            with pytest.raises(RequestRefused):
                await ada.delete(second.id)  # already deleted
            await bo.read(first.id)
            moved = await elsewhere.first(ReadMoved)
            assert moved.id == first.id
            seen = await ada_events.first(Seen)
            assert seen.user == {"name": "Bo"} and seen.id == first.id
            # A client that comes back after the changes gets the messages as they are now.
            async with ChatClient(url, "life", name="Cy", since=0) as cy:
                back = Events(cy)
                await back.first(CaughtUp)
                assert back.messages() == ["first"]

    run(scenario())


def test_a_message_over_the_rate_limit_is_sent_again_in_order(livechat: Callable[..., LivechatServer]) -> None:
    server = livechat("--rate-limit", "4/s", "--rate-burst", "1")

    async def scenario() -> None:
        async with ChatClient(server.url, "busy", name="Ada") as chat:
            sent = [chat.send_nowait(f"m{n}") for n in range(5)]
            stored = await asyncio.gather(*sent)
            assert sorted(message.id for message in stored) == [1, 2, 3, 4, 5]
            history = server.http().history("busy")["chat_history"]
            assert sorted(item["message"] for item in history) == [f"m{n}" for n in range(5)]

    run(scenario())


def test_refusals_and_close_codes(livechat: Callable[..., LivechatServer]) -> None:
    server = livechat("--auth", "required", "--jwt-secret", JWT_SECRET)
    http = server.http()

    async def scenario() -> None:
        with pytest.raises(ChatClosed) as refused:
            await ChatClient(server.url, "lobby", resume=False).start()
        assert refused.value.status == 401
        with pytest.raises(ChatClosed) as elsewhere:
            await ChatClient(server.url, "lobby", token=mint_token(JWT_SECRET, "ada", rooms=["other"])).start()
        assert elsewhere.value.status == 403

        minted: list[str] = []

        def token() -> str:
            minted.append(mint_token(JWT_SECRET, "ada", name="Ada", ttl=600))
            return minted[-1]

        async with ChatClient(server.url, "lobby", token=token, backoff=FAST) as chat:
            events = Events(chat)
            first = await chat.send("hello")
            assert first.user == {"id": "ada", "name": "Ada"}
            refreshed = await chat.refresh_token(mint_token(JWT_SECRET, "ada", ttl=900))
            assert isinstance(refreshed, TokenRefreshed)
            with pytest.raises(RequestRefused):
                await chat.refresh_token(mint_token(JWT_SECRET, "bo"))
            # Disconnected by a moderator, may reconnect: it does, with a new token.
            http.disconnect("ada", reason="stretch your legs")
            dropped = await events.first(Disconnected)
            assert (dropped.code, dropped.reason) == (4003, "disconnected: stretch your legs")
            await events.wait(lambda: len(events.of(Connected)) == 2, "the reconnection")
            assert len(minted) == 2  # a token for each connection
            # Told not to reconnect: the client stops, and says why.
            http.disconnect("ada", reconnect=False)
            await events.wait(lambda: events.ended, "the client to stop")
            assert isinstance(events.ended, ChatClosed) and events.ended.code == 4004
            with pytest.raises(ChatClosed):
                chat.send_nowait("too late")

    run(scenario())


def test_a_frame_too_big_for_either_side_stops_the_client(livechat: Callable[..., LivechatServer]) -> None:
    """Reconnecting would only meet the same frame again: the client stops and says why."""
    server = livechat("--max-message-bytes", "1000")

    async def scenario() -> None:
        async with ChatClient(server.url, "big", name="Ada") as chat:
            events = Events(chat)
            with pytest.raises(ChatClosed) as refused:
                await chat.send("x" * 2000)
            assert refused.value.code == 1009
            await events.wait(lambda: events.ended, "the client to stop")
        async with ChatClient(server.url, "big", name="Ada", max_message_bytes=300) as small:
            events = Events(small)
            await asyncio.to_thread(server.http().publish, "y" * 500, "big")
            await events.wait(lambda: events.ended, "the client to stop")
            assert isinstance(events.ended, ChatClosed) and events.ended.code == 1009

    run(scenario())


def test_a_token_function_keeps_a_connection_past_its_first_tokens_expiry(livechat: Callable[..., LivechatServer]) -> None:
    """Tokens of 1 s: the server would close the connection 5 s (its clock skew) after the first
    one's exp; the client hands it fresh ones before, and stays."""
    server = livechat("--auth", "required", "--jwt-secret", JWT_SECRET)

    async def scenario() -> None:
        expiries: list[int] = []

        def token() -> str:
            minted = mint_token(JWT_SECRET, "ada", ttl=1)
            expiries.append(token_claims(minted)["exp"])
            return minted

        async with ChatClient(server.url, "fresh", token=token, backoff=FAST) as chat:
            events = Events(chat)
            past_the_first = expiries[0] + 5 + 1
            await events.wait(lambda: time.time() > past_the_first, "the first token's end, and its skew", timeout=15)
            assert len(events.of(TokenRefreshed)) >= 3
            assert not events.of(Disconnected) and len(events.of(Connected)) == 1
            assert (await chat.send("still here")).user == {"id": "ada"}

    run(scenario())
