"""An asyncio client for one livechat room over WebSocket (PyPI `websockets`): it reconnects by
itself (backoff with jitter) and resumes where it stopped (`since` + `epoch`: every missed message
once, in order, then live ones; `gap` and `reset` told), sends each message with a nonce and sends
those not yet confirmed again after a reconnect (stored once), and keeps the room's presence and
who is typing. Edits, deletions, reactions and read positions come as events (it connects with
`meta=1`)."""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union
from urllib.parse import quote, urlencode, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .backoff import Backoff
from .events import *  # noqa: F403 (every event: this module handles them all)
from .events import parse_frame
from .http import HTTPClient, LivechatError
from .presence import Presence
from .tokens import token_claims
from .types import User

logger = logging.getLogger("livechat")

TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]

# Close codes after which the client does not reconnect by itself: the server asked it not to
# (4004), its token expired and it has no way to get another (4001, without a token source), or a
# frame was too big (1009).
DO_NOT_RECONNECT = 4004
TOKEN_EXPIRED = 4001
# A frame over a side's size limit: a reconnect would meet the same frame again.
TOO_BIG = 1009
# Handshake answers that another try would get again (a bad room or query, a refused token, a
# ban, a foreign origin): the client stops. Other statuses (503: caps, store or Redis down) are
# retried with backoff.
REFUSALS = {400, 401, 403, 404}
TYPING_EVERY = 2.2  # seconds between typing frames: livechat passes one per 2 s on


class ChatClosed(Exception):
    """The client stopped for good: the handshake was refused (`status`, with the server's
    `error`), the server closed with a code not to be retried (`code`, `reason`), or the client
    was closed."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.code = code
        self.reason = reason


class ConnectionLost(Exception):
    """The connection dropped before the server answered an edit, deletion, reaction or token
    refresh: it may or may not have been made (history, or the resume's events, will say)."""


class RequestRefused(Exception):
    """The server refused a request of this client: `refusal` is its error frame (`error`,
    `kind`, and `retry_after_ms` when rate limited)."""

    def __init__(self, refusal: ServerError):
        super().__init__(refusal.error)
        self.refusal = refusal


def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """The close code and reason: the server's close frame, else the one this side sent (it
    fails a connection, a frame too big say, without waiting for an answer), else 1006. Read from
    the protocol's record (the connection's close_code is not in websockets 13)."""
    protocol = ws.protocol
    for frame in (protocol.close_rcvd, protocol.close_sent):
        if frame is not None:
            return frame.code, frame.reason
    return 1006, ""


def _expiry(token: str | None) -> int | None:
    """A token's `exp` (seconds since the Unix epoch), read without checking it."""
    if not token:
        return None
    try:
        exp = token_claims(token).get("exp")
    except ValueError:
        return None
    return exp if isinstance(exp, int) else None


@dataclass
class _Pending:
    frame: dict[str, Any]
    future: asyncio.Future[Message]
    sent_on: int = 0  # the connection it was last sent on (0: none yet)


# The event that answers each kind of request, and the `for` of the error that refuses it.
_ANSWERS = {"edit": Edited, "delete": Deleted, "react": Reaction}


class ChatClient:
    """One room of a livechat server, followed over WebSocket.

    ```python
    async with ChatClient("ws://127.0.0.1:8003", "lobby", name="Ada") as chat:
        await chat.send("hello")
        async for event in chat:
            if isinstance(event, Message):
                print(event.user, event.message)
    ```

    `url`: the server (`ws://`, `wss://`, or `http(s)://`; a path is a prefix). `token`: a JWT,
    or a function (sync or async) returning one, called before each connection and before the
    connection's token expires (the new one is handed over on the socket). `name`: with auth off, the name to speak under. `headers`: sent with the
    handshake (a session cookie, for a connect hook). `presence`: presence and typing events
    (kept in `.presence`). `receipts`: `Seen` events.

    Resume (`resume=True`, the default): each reconnect asks for what was missed after the last
    id seen, so every message comes once and in order. The first connection starts from `since`
    (and `epoch`) when given, else from the room's latest message (read over HTTP: history
    must be readable; `resume=False` follows the room live only, with gaps across drops). What the
    replay leaves out (it is bounded) is read from history (`fill_gaps`); what history no longer
    has comes as a `Gap` event.

    Events (dataclasses of `livechat.events`) are iterated with `async for`; at most `max_queue`
    wait to be read (past it the client stops reading its socket: the server then closes it as
    a slow consumer, and it resumes where it stopped). `max_queue=None`: no events are kept (a
    client that only sends). The iteration ends when the client is closed, and raises
    `ChatClosed` when the server refused it for good.
    """

    def __init__(
        self,
        url: str,
        room: str,
        *,
        token: TokenSource | None = None,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        presence: bool = False,
        receipts: bool = False,
        resume: bool = True,
        fill_gaps: bool = True,
        since: int | None = None,
        epoch: str | None = None,
        backoff: Backoff | None = None,
        max_queue: int | None = 1000,
        max_message_bytes: int | None = 16 * 1024 * 1024,
        open_timeout: float = 10.0,
        request_timeout: float = 30.0,
        connect_options: Mapping[str, Any] | None = None,
    ):
        parts = urlsplit(url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        if scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"expected a ws://, wss://, http:// or https:// URL, not {url!r}")
        if epoch is not None and since is None:
            raise ValueError("epoch needs since")
        self.room = room
        self._base = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._http_base = f"{'https' if scheme == 'wss' else 'http'}://{parts.netloc}{parts.path.rstrip('/')}"
        self._token = token
        self._token_now: str | None = None  # the token of the latest connection
        self._fill_gaps = fill_gaps
        self._name = name
        self._headers = dict(headers or {})
        self._presence_on = presence
        self._receipts = receipts
        self._resume = resume
        self.last_id: int | None = since
        """The id of the last message seen in the room (the resume point)."""
        self.epoch: str | None = epoch
        """The numbering `last_id` counts in."""
        self.presence = Presence()
        self._backoff = backoff or Backoff()
        self._open_timeout = open_timeout
        self._max_message_bytes = max_message_bytes
        self._request_timeout = request_timeout
        self._connect_options = dict(connect_options or {})
        self._events: asyncio.Queue[Event | None] | None = asyncio.Queue(max_queue) if max_queue is not None else None
        self._pending: collections.OrderedDict[str, _Pending] = collections.OrderedDict()
        self._waiters: dict[tuple[str, int], collections.deque[asyncio.Future[Any]]] = {}
        self._token_waiters: collections.deque[asyncio.Future[TokenRefreshed]] = collections.deque()
        self._ws: ClientConnection | None = None
        self._connection = 0  # connections opened so far; the current one's number
        self._ready = asyncio.Event()  # connected, and caught up when resuming
        self._first = asyncio.Event()  # the first connection opened, or the client stopped
        self._wake = asyncio.Event()  # interrupts a backoff sleep when closing
        self._flush_lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()
        self._hold_until = 0.0  # monotonic time: rate limited, publishes wait until then
        self._last_typing = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stopped = False  # the client ended: once the events are read, iteration ends
        self.failure: ChatClosed | None = None
        """Why the client stopped, when the server stopped it."""

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts following the room and waits until the first connection is open. Raises
        `ChatClosed` when the server refuses it; network failures are retried meanwhile."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"livechat {self.room}")
        await self._first.wait()
        if self.failure is not None:
            raise self.failure

    async def close(self) -> None:
        """Closes the connection and stops; messages still unconfirmed fail with `ChatClosed`."""
        self._closing = True
        self._wake.set()
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            # It may be waiting for room in the event queue: nothing more is to be read.
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def __aenter__(self) -> ChatClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def pending(self) -> int:
        """Messages sent and not yet confirmed by the server."""
        return len(self._pending)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._events is None:
            raise TypeError("this client keeps no events (max_queue=None)")
        if self._stopped and self._events.empty():
            event = None
        else:
            event = await self._events.get()
        if event is None:
            self._stopped = True
            if self.failure is not None:
                raise self.failure
            raise StopAsyncIteration
        return event

    # -- sending ------------------------------------------------------------------------------

    def send_nowait(self, message: Any, *, reply_to: int | None = None, nonce: str | None = None) -> asyncio.Future[Message]:
        """Sends `message` (any JSON value) with a nonce (new unless given): now if connected,
        else once connected again. The future is the stored message (its echo, or the replay's
        copy after a reconnect), or fails with `RequestRefused`. Until then it is sent again
        after every reconnect; the server stores it once. Over the rate limit, it is sent again
        after the time the server says."""
        if self._closing or self.failure is not None:
            raise self.failure or ChatClosed("the client is closed")
        nonce = nonce or uuid.uuid4().hex
        if nonce in self._pending:
            return self._pending[nonce].future
        frame: dict[str, Any] = {"message": message, "nonce": nonce}
        if reply_to is not None:
            frame["reply_to"] = reply_to
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[nonce] = _Pending(frame, future)
        self._schedule_flush()
        return future

    async def send(self, message: Any, *, reply_to: int | None = None, nonce: str | None = None) -> Message:
        """`send_nowait`, waiting for the stored message."""
        return await self.send_nowait(message, reply_to=reply_to, nonce=nonce)

    def _schedule_flush(self) -> None:
        if self._ready.is_set():
            task = asyncio.get_running_loop().create_task(self._flush())
            self._flushes.add(task)  # held until done (the loop keeps only weak references)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        """Sends, in order, every pending message not yet sent on this connection."""
        async with self._flush_lock:
            wait = self._hold_until - time.monotonic()
            if wait > 0:
                asyncio.get_running_loop().call_later(wait, self._schedule_flush)
                return
            for nonce, pending in list(self._pending.items()):
                ws = self._ws
                if ws is None or not self._ready.is_set():
                    return
                if pending.sent_on == self._connection or nonce not in self._pending:
                    continue
                pending.sent_on = self._connection
                try:
                    await ws.send(json.dumps(pending.frame))
                except ConnectionClosed:
                    return  # sent again after the reconnect

    async def _connected_socket(self) -> ClientConnection:
        await asyncio.wait_for(self._ready.wait(), self._request_timeout)
        if self._ws is None:
            raise ConnectionLost("not connected")
        return self._ws

    async def _request(self, kind: str, id: int, frame: dict[str, Any]) -> Any:
        ws = await self._connected_socket()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault((kind, id), collections.deque())
        waiters.append(future)
        try:
            await ws.send(json.dumps(frame))
            return await asyncio.wait_for(asyncio.shield(future), self._request_timeout)
        except ConnectionClosed:
            raise ConnectionLost(f"the connection dropped before {kind} {id} was sent") from None
        finally:
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop((kind, id), None)

    async def edit(self, id: int, message: Any) -> Edited:
        """Replaces message `id`'s content (its author, or a moderator); the `Edited` event."""
        return await self._request("edit", id, {"edit": id, "message": message})  # type: ignore[no-any-return]

    async def delete(self, id: int) -> Deleted:
        """Deletes message `id` (its author, or a moderator); the `Deleted` event."""
        return await self._request("delete", id, {"delete": id})  # type: ignore[no-any-return]

    async def react(self, id: int, emoji: str) -> Reaction:
        """Adds this user's `emoji` to message `id`; the `Reaction` event (with the count)."""
        return await self._request("react", id, {"react": id, "emoji": emoji})  # type: ignore[no-any-return]

    async def unreact(self, id: int, emoji: str) -> Reaction:
        return await self._request("react", id, {"unreact": id, "emoji": emoji})  # type: ignore[no-any-return]

    async def read(self, id: int) -> None:
        """Moves this user's read position in the room to `id` (its other connections are told)."""
        ws = await self._connected_socket()
        await ws.send(json.dumps({"read": id}))

    async def typing(self) -> None:
        """Tells the room this user is typing; call it on every keystroke: a frame goes at most
        every 2.2 s, and none while disconnected (typing is not worth a resend)."""
        now = time.monotonic()
        ws = self._ws
        if ws is None or now - self._last_typing < TYPING_EVERY:
            return
        self._last_typing = now
        try:
            await ws.send(json.dumps({"typing": True}))
        except ConnectionClosed:
            pass

    async def refresh_token(self, token: str) -> TokenRefreshed:
        """Hands the connection a fresh token before the current one expires; the server's
        confirmation (the connection now lasts until its `exp`). Raises `RequestRefused`."""
        ws = await self._connected_socket()
        future: asyncio.Future[TokenRefreshed] = asyncio.get_running_loop().create_future()
        self._token_waiters.append(future)
        try:
            await ws.send(json.dumps({"token": token}))
            refreshed = await asyncio.wait_for(asyncio.shield(future), self._request_timeout)
        except ConnectionClosed:
            raise ConnectionLost("the connection dropped before the token was sent") from None
        finally:
            if future in self._token_waiters:
                self._token_waiters.remove(future)
        if not callable(self._token):
            self._token = token  # the next connection uses it too
        self._token_now = token
        return refreshed

    async def _keep_token_fresh(self) -> None:
        """With a token function: a new token before the connection's expires (when a third of
        its lifetime is left, at most a minute before), so that a long connection is not closed
        with 4001. When that fails, the 4001 close comes, and the reconnect asks for a token."""
        while True:
            exp = _expiry(self._token_now)
            if exp is None:
                return
            left = exp - time.time()
            await asyncio.sleep(max(left - min(left / 3, 60), 0))
            try:
                token = await self._current_token()
                if token is None or (_expiry(token) or 0) <= exp:
                    # Not a later one (minted within the same second, or cached): ask again soon.
                    await asyncio.sleep(1)
                    continue
                await self.refresh_token(token)
            except (RequestRefused, ConnectionLost, asyncio.TimeoutError, ValueError) as error:
                logger.warning("livechat %s: the token could not be refreshed: %s", self.room, error)
                return

    def typing_users(self) -> list[User]:
        """Others typing now (within 3 s)."""
        return self.presence.typing_users()

    # -- the connection -----------------------------------------------------------------------

    async def _current_token(self) -> str | None:
        source = self._token
        if source is None or isinstance(source, str):
            return source
        token = source()
        if inspect.isawaitable(token):
            token = await token
        return token

    def _ws_url(self, token: str | None) -> str:
        query: dict[str, str] = {"meta": "1"}
        if token:
            query["token"] = token
        if self._name:
            query["name"] = self._name
        if self._presence_on:
            query["presence"] = "1"
        if self._receipts:
            query["receipts"] = "1"
        if self._resume and self.last_id is not None:
            query["since"] = str(self.last_id)
            if self.epoch:
                query["epoch"] = self.epoch
        return f"{self._base}/ws/chat/{quote(self.room, safe=':')}/?{urlencode(query)}"

    def _http(self) -> HTTPClient:
        return HTTPClient(self._http_base, token=self._token_now, headers=self._headers, timeout=self._open_timeout)

    async def _read_position(self) -> None:
        """The room's last id and epoch, to resume from when no `since` was given."""
        http = self._http()
        try:
            page = await asyncio.to_thread(http.history, self.room, limit=1)
        finally:
            http.close()
        messages = page.get("chat_history") or []
        self.last_id = messages[-1]["id"] if messages else 0
        self.epoch = page.get("epoch")

    async def _open(self) -> ClientConnection:
        token = self._token_now = await self._current_token()
        if self._resume and self.last_id is None:
            try:
                await self._read_position()
            except LivechatError as error:
                if error.status in REFUSALS:
                    raise ChatClosed(
                        f"cannot read where room {self.room} is to resume from it ({error}); give since=, "
                        "or resume=False to follow the room live only",
                        status=error.status,
                    ) from error
                raise
        options: dict[str, Any] = {
            "open_timeout": self._open_timeout,
            "close_timeout": 2,
            "max_queue": 64,
            "max_size": self._max_message_bytes,
        }
        if self._headers:
            options["additional_headers"] = self._headers
        options.update(self._connect_options)
        try:
            return await connect(self._ws_url(token), **options)
        except InvalidStatus as refused:
            status = refused.response.status_code
            if status not in REFUSALS:
                raise
            try:
                said = str(json.loads(refused.response.body or b"{}").get("error", ""))
            except (ValueError, AttributeError):
                said = ""
            raise ChatClosed(f"livechat refused the connection: {status} {said}", status=status, reason=said) from refused

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                try:
                    ws = await self._open()
                except ChatClosed:
                    raise
                # EOFError: websockets 13's word for a connection closed during the handshake.
                except (OSError, EOFError, asyncio.TimeoutError, InvalidHandshake, LivechatError) as error:
                    delay = self._backoff.delay(attempt)
                    attempt += 1
                    logger.warning("livechat %s: cannot connect (%s); again in %.2f s", self.room, error, delay)
                    await self._sleep(delay)
                    continue
                opened = time.monotonic()
                await self._serve(ws, attempt)
                if self._closing:
                    break
                code, reason = closed_with(ws)
                if code == DO_NOT_RECONNECT or (code == TOKEN_EXPIRED and not callable(self._token)):
                    raise ChatClosed(f"livechat closed the connection: {code} {reason}", code=code, reason=reason)
                if code == TOO_BIG:
                    # The same frame would be replayed (or the same message sent again) after a reconnect.
                    raise ChatClosed(
                        f"a frame was larger than the limit ({reason or 'message too big'}): the server's "
                        "LIVECHAT_MAX_MESSAGE_BYTES against this client's max_message_bytes",
                        code=code,
                        reason=reason,
                    )
                if time.monotonic() - opened >= self._backoff.maximum:
                    attempt = 0  # it had been up a while: this is a new outage
                delay = self._backoff.delay(attempt)
                attempt += 1
                logger.info("livechat %s: closed (%s %s); reconnecting in %.2f s", self.room, code, reason, delay)
                await self._emit(Disconnected(code, reason, delay))
                await self._sleep(delay)
        except ChatClosed as failure:
            self._fail(failure)
        except Exception as unexpected:  # a bug, or something websockets did not say it raises
            logger.exception("livechat %s: the client stopped", self.room)
            self._fail(ChatClosed(f"the client stopped: {unexpected!r}"))
        finally:
            self._stop()

    def _fail(self, failure: ChatClosed) -> None:
        self.failure = failure
        if self._events is not None and not self._events.full():
            self._events.put_nowait(Disconnected(failure.code or 1006, failure.reason or str(failure), None))

    def _stop(self) -> None:
        failure = self.failure or ChatClosed("the client is closed")
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(failure)
        self._pending.clear()
        self._first.set()
        self._stopped = True
        if self._events is not None and not self._events.full():
            self._events.put_nowait(None)  # wakes a reader waiting on an empty queue

    async def _sleep(self, delay: float) -> None:
        self._wake.clear()
        if self._closing:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except asyncio.TimeoutError:
            pass

    async def _serve(self, ws: ClientConnection, attempt: int) -> None:
        self._ws = ws
        self._connection += 1
        self._first.set()
        await self._emit(Connected(attempt))
        if not self._resume:
            self._ready.set()
            self._schedule_flush()
        refresher = asyncio.create_task(self._keep_token_fresh()) if callable(self._token) else None
        try:
            async for data in ws:
                if isinstance(data, bytes):
                    logger.warning("livechat %s: a binary frame, ignored", self.room)
                    continue
                try:
                    frame = json.loads(data)
                except ValueError:
                    logger.warning("livechat %s: a frame that is not JSON, ignored: %.200s", self.room, data)
                    continue
                if isinstance(frame, dict):
                    await self._dispatch(frame)
        except ConnectionClosed:
            pass
        finally:
            if refresher is not None:
                refresher.cancel()
            self._ws = None
            self._ready.clear()
            self.presence.clear()
            lost = ConnectionLost("the connection dropped before the server answered")
            for waiters in [*self._waiters.values(), self._token_waiters]:
                for future in waiters:
                    if not future.done():
                        future.set_exception(lost)

    async def _emit(self, event: Event) -> None:
        if self._events is not None:
            await self._events.put(event)

    def _answer(self, kind: str, id: int, outcome: Any) -> None:
        waiters = self._waiters.get((kind, id))
        while waiters:
            future = waiters.popleft()
            if not future.done():
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
                return

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        event = parse_frame(frame)
        if event is None:
            logger.warning("livechat %s: a frame this client does not know, ignored: %.200s", self.room, frame)
            return
        if isinstance(event, Message):
            pending = self._pending.pop(event.nonce, None) if event.nonce else None
            if pending is not None and not pending.future.done():
                pending.future.set_result(event)
            if self.last_id is not None and event.id <= self.last_id:
                return  # seen already (a resend's answer, or a live frame the replay had)
            self.last_id = event.id
            self.presence.stopped_typing(event.user)
        elif isinstance(event, CaughtUp):
            self.epoch = event.epoch
            if self.last_id is None or event.id > self.last_id:
                self.last_id = event.id
            self._ready.set()
            self._schedule_flush()  # apart from this reader: the server's answers must keep being read
        elif isinstance(event, Reset):
            self.last_id = event.last
            self.epoch = event.epoch
        elif isinstance(event, PresenceChanged):
            self.presence.apply(event)
        elif isinstance(event, Typing):
            self.presence.typing(event)
        elif isinstance(event, Edited):
            self._answer("edit", event.id, event)
        elif isinstance(event, Deleted):
            self._answer("delete", event.id, event)
        elif isinstance(event, Reaction):
            self._answer("react", event.id, event)
        elif isinstance(event, TokenRefreshed):
            while self._token_waiters:
                future = self._token_waiters.popleft()
                if not future.done():
                    future.set_result(event)
                    break
        elif isinstance(event, ServerError):
            if self._refused(event):
                return
        elif isinstance(event, Gap) and self._fill_gaps:
            await self._fill(event)
            return
        elif not isinstance(event, (Gap, Reactions, ReadMoved, Seen)):
            return
        await self._emit(event)

    async def _fill(self, gap: Gap) -> None:
        """Reads what a `gap` announces from history, page by page (the replay is bounded; history
        holds what retention kept), and hands it on in id order; what history no longer has is
        still told as a `Gap`. Without history (refused, unreachable), the gap as it came."""
        http = self._http()
        after, told = gap.first - 1, False
        try:
            while after < gap.last:
                page = await asyncio.to_thread(http.history, self.room, limit=1000, after=after, before=gap.last + 1)
                items = page["chat_history"]
                if not items:
                    break
                if not told and items[0]["id"] > gap.first:
                    await self._emit(Gap(gap.room, gap.first, items[0]["id"] - 1, raw=gap.raw))
                told = True
                for item in items:
                    if item.get("deleted"):
                        await self._dispatch({"event": "deleted", "room": item["room"], "id": item["id"]})
                    else:
                        await self._dispatch(dict(item))
                after = items[-1]["id"]
        except (LivechatError, OSError) as error:
            logger.warning("livechat %s: cannot read the gap %s-%s from history: %s", self.room, gap.first, gap.last, error)
            await self._emit(Gap(gap.room, max(gap.first, after + 1), gap.last, raw=gap.raw))
            return
        finally:
            http.close()
        if not told:
            await self._emit(gap)
        elif after < gap.last:
            await self._emit(Gap(gap.room, after + 1, gap.last, raw=gap.raw))

    def _refused(self, error: ServerError) -> bool:
        """Hands an error frame to the request it refuses; False when none was waiting for it."""
        if error.kind == "message" and error.nonce is not None and error.nonce in self._pending:
            pending = self._pending[error.nonce]
            if error.retry_after_ms is not None:
                # Over the rate limit: this and the later publishes wait, then go in order.
                pending.sent_on = 0
                delay = error.retry_after_ms / 1000
                self._hold_until = max(self._hold_until, time.monotonic() + delay)
                for later in self._pending.values():
                    later.sent_on = 0 if later.sent_on == self._connection else later.sent_on
                self._schedule_flush()  # it waits for the hold to end
                return True
            del self._pending[error.nonce]
            if not pending.future.done():
                pending.future.set_exception(RequestRefused(error))
            return True
        if error.kind in _ANSWERS and error.id is not None and (error.kind, error.id) in self._waiters:
            self._answer(error.kind, error.id, RequestRefused(error))
            return True
        if error.kind == "token" and self._token_waiters:
            future = self._token_waiters.popleft()
            if not future.done():
                future.set_exception(RequestRefused(error))
            return True
        return False
