"""A small synchronous HTTP client for backends: publish, history, the rooms, and the server API
(bans, disconnect, broadcast, room info, erasure). Standard library only (`http.client`), one
kept-alive connection per thread, so one client can be shared by a web app's threads."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, cast
from urllib.parse import quote, urlencode, urlsplit

from .types import (
    Ban,
    BroadcastRoom,
    Direct,
    DirectSummary,
    Erasure,
    HistoryPage,
    PresenceList,
    Rooms,
    RoomInfo,
    SendAnswer,
    StoredMessage,
    Unread,
    User,
)


class LivechatError(Exception):
    """An answer livechat gave with an error status: `status` (400, 401, 403, 404, 409, 413,
    429, 503...), `error` (its `{"error": ...}` text), `body` (the whole JSON answer, when it was
    JSON), `retry_after_ms` (429: when to try again)."""

    def __init__(self, status: int, error: str, body: Any = None):
        super().__init__(f"{status}: {error}")
        self.status = status
        self.error = error
        self.body = body
        self.retry_after_ms: int | None = (
            body.get("retry_after_ms") if isinstance(body, dict) and isinstance(body.get("retry_after_ms"), int) else None
        )


# Failures of a kept-alive connection the server closed while it was idle: the request did not
# reach it, so one that is safe to repeat is sent again on a new connection.
_STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def _nonce() -> str:
    return uuid.uuid4().hex


class HTTPClient:
    """livechat's HTTP API, for a backend.

    `url`: the server's base URL (`http://127.0.0.1:8003`, `https://chat.example.com`; `ws://`
    and `wss://` are taken as `http://` and `https://`; a path is a prefix, as behind a proxy).
    `api_key`: the server key (`LIVECHAT_API_KEY`): any room, the server API, publishing for a
    user. `token`: a user's JWT instead. `name`: with auth off, the name publishes and read
    positions are made under. `headers`: sent with every request (a session cookie, where a
    connect hook names the caller). Errors raise `LivechatError`; a server that cannot be reached
    raises `OSError`.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | None = None,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ):
        if api_key and token:
            raise ValueError("give the server key or a token, not both")
        parts = urlsplit(url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, not {url!r}")
        self.base_url = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._scheme = scheme
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._credential = api_key or token
        self.name = name
        self._headers = dict(headers or {})
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._local = threading.local()

    # -- transport ---------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self._scheme == "https":
                connection = http.client.HTTPSConnection(self._netloc, timeout=self.timeout, context=self._ssl_context)
            else:
                connection = http.client.HTTPConnection(self._netloc, timeout=self.timeout)
            self._local.connection = connection
        return connection

    def close(self) -> None:
        """Closes this thread's kept-alive connection (others close when their thread ends)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        repeatable: bool = True,
    ) -> Any:
        """Sends a request to `path` (under the base URL) and returns its JSON answer (`None`
        for an empty one). `repeatable`: the request may be sent again when a kept-alive
        connection turns out to be closed (every request here but a ban is)."""
        target = self._prefix + path
        present = {key: value for key, value in (query or {}).items() if value is not None}
        if self.name is not None:
            present.setdefault("name", self.name)  # with auth off, who the caller is
        if present:
            target += "?" + urlencode(present)
        headers = {"Accept": "application/json", **self._headers}
        if self._credential:
            headers["Authorization"] = f"Bearer {self._credential}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            connection = self._connection()
            reused = connection.sock is not None
            try:
                connection.request(method, target, body=payload, headers=headers)
                response = connection.getresponse()
                data = response.read()
            except _STALE_CONNECTION:
                self.close()
                if attempt == 1 and reused and repeatable:
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if response.will_close:
                self.close()
            return self._answer(response.status, data)
        raise AssertionError("unreachable")

    @staticmethod
    def _answer(status: int, data: bytes) -> Any:
        try:
            answer = json.loads(data) if data else None
        except ValueError:
            answer = None
        if 200 <= status < 300:
            if data and answer is None:
                raise LivechatError(status, f"not a JSON answer: {data[:200]!r}")
            return answer
        error = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(error, str):
            error = data[:200].decode(errors="replace") or http.client.responses.get(status, "error")
        raise LivechatError(status, error, answer)

    # -- messages ----------------------------------------------------------------------------

    def publish(
        self,
        message: Any,
        room: str | None = None,
        *,
        nonce: str | None = None,
        user: User | None = None,
        reply_to: int | None = None,
    ) -> SendAnswer:
        """Stores and delivers `message` (any JSON value) in `room` (absent: the server's default
        room). It always carries a nonce (a new one unless given), so that sending it again,
        here after a dropped connection or by the caller after an error, stores it once; the
        answer then has `"duplicate": true`. `user` ({"id", "name"}): with the server key, the
        user the backend publishes for."""
        body: dict[str, Any] = {"message": message, "nonce": nonce or _nonce()}
        if room is not None:
            body["room"] = room
        if user is not None:
            body["user"] = user
        if self.name is not None:
            body["name"] = self.name
        if reply_to is not None:
            body["reply_to"] = reply_to
        return cast(SendAnswer, self.request("POST", "/chat/send/", body=body))

    def history(
        self,
        room: str | None = None,
        *,
        limit: int | None = None,
        before: int | None = None,
        after: int | None = None,
    ) -> HistoryPage:
        """One page of stored messages, oldest first: the latest `limit` (default 50, at most
        1,000), those just `before` an id, or just `after` one."""
        query = {"room": room, "limit": limit, "before": before, "after": after}
        return cast(HistoryPage, self.request("GET", "/chat/history/", query=query))

    def history_after(self, room: str, after: int = 0, *, page: int = 1000) -> Iterable[StoredMessage]:
        """Every stored message of `room` after the id `after`, oldest first, read page by page."""
        while True:
            answer = self.history(room, limit=page, after=after)
            messages = answer["chat_history"]
            yield from messages
            if not messages or (len(messages) < page and not answer.get("more")):
                return
            after = messages[-1]["id"]

    def edit(self, room: str, id: int, message: Any) -> dict[str, Any]:
        """Replaces message `id`'s content; answers the `edited` event members receive."""
        return cast(dict[str, Any], self.request("PATCH", f"/chat/history/{_path(room)}/{id}", body={"message": message}))

    def delete(self, room: str, id: int) -> dict[str, Any]:
        """Deletes message `id` (its text and author are erased); answers the `deleted` event."""
        return cast(dict[str, Any], self.request("DELETE", f"/chat/history/{_path(room)}/{id}"))

    def react(self, room: str, id: int, emoji: str) -> dict[str, Any]:
        """Adds this user's `emoji` to message `id`; answers the `reaction` event (with the count)."""
        path = f"/chat/history/{_path(room)}/{id}/reactions"
        return cast(dict[str, Any], self.request("POST", path, body={"emoji": emoji}))

    def unreact(self, room: str, id: int, emoji: str) -> dict[str, Any]:
        path = f"/chat/history/{_path(room)}/{id}/reactions/{_path(emoji)}"
        return cast(dict[str, Any], self.request("DELETE", path))

    # -- rooms, presence, read positions, direct messages -------------------------------------

    def rooms(self) -> Rooms:
        """The rooms with members (and their counts on every node), and those written lately."""
        return cast(Rooms, self.request("GET", "/chat/rooms/"))

    def presence(self, room: str | None = None) -> PresenceList:
        """Who is in `room`: its connection count and named users."""
        return cast(PresenceList, self.request("GET", "/chat/presence/", query={"room": room}))

    def read(self, room: str, id: int) -> dict[str, Any]:
        """Moves this user's read position in `room` forward to `id`."""
        return cast(dict[str, Any], self.request("POST", "/chat/read/", body={"room": room, "id": id}))

    def unread(self) -> list[Unread]:
        """Each room this user has a read position in, with its unread count."""
        return cast(list[Unread], self.request("GET", "/chat/unread/")["rooms"])

    def open_direct(self, with_user: str) -> Direct:
        """The direct-message room of this user and `with_user` (`dm:A:B`), listed for both."""
        return cast(Direct, self.request("POST", "/chat/dm/", body={"with": with_user}))

    def directs(self) -> list[DirectSummary]:
        """This user's direct-message rooms, the latest written first."""
        return cast(list[DirectSummary], self.request("GET", "/chat/dm/")["directs"])

    # -- the server API (the server key, or a token with the moderate claim) -----------------

    def ban(
        self,
        user: str,
        room: str | None = None,
        *,
        duration: int | None = None,
        reason: str | None = None,
        mode: Literal["ban", "mute"] = "ban",
    ) -> Ban:
        """Bans (or mutes) `user` in `room` (`None`: every room) for `duration` seconds (`None`:
        until lifted). A ban closes its connections there with 4003 and refuses new ones."""
        body: dict[str, Any] = {"user": user, "mode": mode}
        if room is not None:
            body["room"] = room
        if duration is not None:
            body["duration"] = duration
        if reason is not None:
            body["reason"] = reason
        # Not repeated by itself: sent twice, it would set two bans.
        return cast(Ban, self.request("POST", "/api/bans", body=body, repeatable=False))

    def bans(self, *, user: str | None = None, room: str | None = None) -> list[Ban]:
        """The bans and mutes in force, oldest first (`room`: those covering it)."""
        return cast(list[Ban], self.request("GET", "/api/bans", query={"user": user, "room": room})["bans"])

    def unban(self, ban_id: str) -> None:
        """Lifts a ban (`LivechatError` 404 when there is none)."""
        self.request("DELETE", f"/api/bans/{_path(ban_id)}")

    def disconnect(self, user: str, *, reason: str | None = None, reconnect: bool = True) -> None:
        """Closes every connection of `user` on every node: 4003 (it may reconnect), or with
        `reconnect=False` 4004 (it should not: an account closed)."""
        body: dict[str, Any] = {"user": user, "reconnect": reconnect}
        if reason is not None:
            body["reason"] = reason
        self.request("POST", "/api/disconnect", body=body)

    def broadcast(
        self,
        rooms: Sequence[str],
        message: Any,
        *,
        user: User | None = None,
        nonce: str | None = None,
    ) -> list[BroadcastRoom]:
        """Stores `message` in each of `rooms` (1 to 100), each with its own id. It always
        carries a nonce, so sending it again stores it only in the rooms that missed it. When
        some rooms could not be written, `LivechatError` 503 has them in `.body["rooms"]`."""
        body: dict[str, Any] = {"rooms": list(rooms), "message": message, "nonce": nonce or _nonce()}
        if user is not None:
            body["user"] = user
        return cast(list[BroadcastRoom], self.request("POST", "/api/broadcast", body=body)["rooms"])

    def room_info(self, room: str) -> RoomInfo:
        """A room's members and users on every node, last id and epoch, holdings and bans."""
        return cast(RoomInfo, self.request("GET", f"/api/rooms/{_path(room)}"))

    def erase_user_messages(self, user: str, *, limit: int | None = None) -> int:
        """Deletes every stored message of `user` (account deletion), pass after pass until
        done; returns how many were deleted. Each pass is `erase_user_messages_pass`."""
        deleted = 0
        cursor: str | None = None
        while True:
            answer = self.erase_user_messages_pass(user, start=cursor, limit=limit)
            deleted += answer["deleted"]
            if answer["done"] or answer["next"] is None:
                return deleted
            cursor = answer["next"]

    def erase_user_messages_pass(self, user: str, *, start: str | None = None, limit: int | None = None) -> Erasure:
        """One bounded pass of the erasure (up to `limit` stored messages looked at)."""
        query = {"from": start, "limit": limit}
        return cast(Erasure, self.request("DELETE", f"/api/users/{_path(user)}/messages", query=query))

    # -- health ------------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether the server can store messages now (`GET /readyz`)."""
        try:
            self.request("GET", "/readyz")
        except LivechatError as error:
            if error.status == 503:
                return False
            raise
        return True


def _path(segment: str) -> str:
    """One path segment, percent-encoded (room names such as `dm:a:b` keep their colons)."""
    return quote(segment, safe=":@+")
