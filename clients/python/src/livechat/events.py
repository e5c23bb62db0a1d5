"""What a `ChatClient` yields: each frame livechat sends (docs/asyncapi.yaml) as a dataclass, and
the client's own connection changes. Every frame-made event keeps the frame as `raw`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union, cast

from .types import ReactionCount, User

# The package's export list for the events (`livechat/__init__.py` adds these to its own).
__all__ = [
    "CaughtUp",
    "Connected",
    "Deleted",
    "Disconnected",
    "Edited",
    "Event",
    "Gap",
    "Message",
    "PresenceChanged",
    "Reaction",
    "Reactions",
    "ReadMoved",
    "Reset",
    "Seen",
    "ServerError",
    "TokenRefreshed",
    "Typing",
]


@dataclass(frozen=True)
class _FromFrame:
    """An event made from a frame, which it keeps as `raw` (a keyword argument, after the
    fields)."""

    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)


@dataclass(frozen=True)
class _InRoom(_FromFrame):
    """About the room `room`."""

    room: str


@dataclass(frozen=True)
class _OnMessage(_InRoom):
    """About message `id` of the room."""

    id: int


@dataclass(frozen=True)
class Message(_FromFrame):
    """A stored message of the room (live, or replayed on resume), in id order, each once."""

    id: int
    room: str
    message: Any
    ts: int
    user: User | None = None
    nonce: str | None = None
    reply_to: int | None = None


@dataclass(frozen=True)
class Edited(_OnMessage):
    """Message `id` now reads `message`. `by`: who edited it (absent when told on resume, with
    the message's `reactions` then)."""

    message: Any
    edited_ts: int
    by: User | None = None
    reactions: dict[str, ReactionCount] | None = None


@dataclass(frozen=True)
class Deleted(_OnMessage):
    """Message `id` was deleted (`by`: who; absent on resume)."""

    by: User | None = None


@dataclass(frozen=True)
class Reaction(_OnMessage):
    """`user` added (`on`) or took back `emoji` on message `id`; `count`: the emoji's count now."""

    emoji: str
    user: User
    count: int
    on: bool


@dataclass(frozen=True)
class Reactions(_OnMessage):
    """On resume: the reactions now of message `id`, changed while the client was away."""

    reactions: dict[str, ReactionCount]


@dataclass(frozen=True)
class ReadMoved(_OnMessage):
    """This user's read position in the room moved to `id` (from another of its connections)."""


@dataclass(frozen=True)
class Seen(_InRoom):
    """Read receipt (`receipts=True`): `user` has read the room up to `id`."""

    user: User
    id: int


@dataclass(frozen=True)
class Typing(_InRoom):
    """Someone else is typing (`presence=True`); show it for about 3 s."""

    user: User


@dataclass(frozen=True)
class PresenceChanged(_InRoom):
    """Presence (`presence=True`): a snapshot (`users`), or a change (`joined`, `left`). The
    client's `presence` already has it applied."""

    members: int
    users: list[User] | None = None
    joined: list[User] | None = None
    left: list[User] | None = None
    truncated: bool = False


@dataclass(frozen=True)
class Gap(_InRoom):
    """Ids `first` to `last` will not be sent (retention removed them, or past the replay bound);
    what is still stored can be read with `HTTPClient.history(room, after=first - 1, before=last + 1)`."""

    first: int
    last: int


@dataclass(frozen=True)
class Reset(_InRoom):
    """The room's numbering is not the one the client knew (the server lost or replaced its
    history): forget the ids seen and reload history; messages after `last` follow."""

    last: int
    epoch: str


@dataclass(frozen=True)
class CaughtUp(_OnMessage):
    """The replay after a (re)connect is done: the client is current through `id`."""

    epoch: str


@dataclass(frozen=True)
class TokenRefreshed(_InRoom):
    """The token sent with `refresh_token` took: the connection now lasts until `exp`."""

    exp: int


@dataclass(frozen=True)
class ServerError(_FromFrame):
    """An error frame no pending request of this client was waiting for (a frame it could not
    read, a refused `read`, ...): `error`, `kind` (its `for`), and `nonce`/`id` when it had one."""

    error: str
    kind: str
    nonce: str | None = None
    id: int | None = None
    retry_after_ms: int | None = None


@dataclass(frozen=True)
class Connected:
    """A connection opened (the first, or again after a drop); with resume, a `CaughtUp`
    follows once the missed messages have been replayed."""

    attempt: int


@dataclass(frozen=True)
class Disconnected:
    """The connection closed (`code`, `reason`; 1006 when it dropped without a close frame); the
    client reconnects after `retry_in` seconds, or does not (`retry_in` is `None`)."""

    code: int
    reason: str
    retry_in: float | None


Event = Union[
    Message,
    Edited,
    Deleted,
    Reaction,
    Reactions,
    ReadMoved,
    Seen,
    Typing,
    PresenceChanged,
    Gap,
    Reset,
    CaughtUp,
    TokenRefreshed,
    ServerError,
    Connected,
    Disconnected,
]


def _user(value: Any) -> User | None:
    return cast(User, value) if isinstance(value, dict) else None


def _users(value: Any) -> list[User] | None:
    return [cast(User, user) for user in value if isinstance(user, dict)] if isinstance(value, list) else None


def parse_frame(frame: dict[str, Any]) -> Event | None:
    """The event a frame from livechat stands for; `None` for a frame this client does not know
    (a newer server's), or one without the keys it needs."""
    try:
        if "error" in frame:
            retry = frame.get("retry_after_ms")
            return ServerError(
                error=str(frame["error"]),
                kind=str(frame.get("for", "")),
                nonce=frame.get("nonce"),
                id=frame.get("id"),
                retry_after_ms=retry if isinstance(retry, int) else None,
                raw=frame,
            )
        event = frame.get("event")
        room = frame.get("room", "")
        if event is None:
            if "id" not in frame:
                return None  # a plain frame: this client always connects with meta=1
            return Message(
                id=int(frame["id"]),
                room=room,
                message=frame.get("message"),
                ts=int(frame["ts"]),
                user=_user(frame.get("user")),
                nonce=frame.get("nonce"),
                reply_to=frame.get("reply_to"),
                raw=frame,
            )
        if event == "caught_up":
            return CaughtUp(room, int(frame["id"]), str(frame["epoch"]), raw=frame)
        if event == "reset":
            return Reset(room, int(frame["last"]), str(frame["epoch"]), raw=frame)
        if event == "gap":
            return Gap(room, int(frame["from"]), int(frame["to"]), raw=frame)
        if event == "presence":
            return PresenceChanged(
                room,
                int(frame["members"]),
                users=_users(frame.get("users")),
                joined=_users(frame.get("joined")),
                left=_users(frame.get("left")),
                truncated=bool(frame.get("truncated", False)),
                raw=frame,
            )
        if event == "typing":
            return Typing(room, frame["user"], raw=frame)
        if event == "edited":
            return Edited(
                room,
                int(frame["id"]),
                frame.get("message"),
                int(frame["edited_ts"]),
                by=_user(frame.get("by")),
                reactions=frame.get("reactions"),
                raw=frame,
            )
        if event == "deleted":
            return Deleted(room, int(frame["id"]), by=_user(frame.get("by")), raw=frame)
        if event == "reaction":
            return Reaction(
                room,
                int(frame["id"]),
                str(frame["emoji"]),
                frame["user"],
                int(frame["count"]),
                bool(frame["on"]),
                raw=frame,
            )
        if event == "reactions":
            return Reactions(room, int(frame["id"]), frame["reactions"], raw=frame)
        if event == "read":
            return ReadMoved(room, int(frame["id"]), raw=frame)
        if event == "seen":
            return Seen(room, frame["user"], int(frame["id"]), raw=frame)
        if event == "token":
            return TokenRefreshed(room, int(frame["exp"]), raw=frame)
    except (KeyError, TypeError, ValueError):
        return None
    return None
