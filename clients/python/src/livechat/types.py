"""The JSON shapes livechat answers with over HTTP (docs/openapi.json), as `TypedDict`s: at run
time they are the plain dicts `json.loads` makes."""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class User(TypedDict, total=False):
    """A message's author: `id` and `name` from a token or the connect hook, or with auth off a
    chosen `name` alone."""

    id: str
    name: str


class UserCount(User, total=False):
    connections: int


class ReactionCount(TypedDict):
    count: int
    me: bool


class _StoredMessageRequired(TypedDict):
    id: int
    room: str
    ts: int


class StoredMessage(_StoredMessageRequired, total=False):
    """A message as history returns it; a deleted one has `deleted` and neither `message` nor
    `user`."""

    message: Any
    user: User
    nonce: str
    reply_to: int
    edited_ts: int
    deleted: bool
    reactions: dict[str, ReactionCount]


class _SendAnswerRequired(TypedDict):
    message: str
    room: str
    id: int
    ts: int
    epoch: str


class SendAnswer(_SendAnswerRequired, total=False):
    duplicate: bool


class _HistoryPageRequired(TypedDict):
    chat_history: list[StoredMessage]
    epoch: str


class HistoryPage(_HistoryPageRequired, total=False):
    """`more` and `next` ({"before": ID} or {"after": ID}) when the page stopped at its byte cap."""

    more: bool
    next: dict[str, int]


class RoomCount(TypedDict):
    room: str
    members: int


class RecentRoom(TypedDict):
    room: str
    ts: int


class Rooms(TypedDict):
    rooms: list[RoomCount]
    recent: list[RecentRoom]


class _PresenceListRequired(TypedDict):
    room: str
    members: int
    users: list[UserCount]


class PresenceList(_PresenceListRequired, total=False):
    truncated: bool


class Unread(TypedDict):
    room: str
    unread: int
    last_id: int
    read_id: int


# "with" is a Python keyword: these two are spelt with TypedDict's functional syntax.
Direct = TypedDict("Direct", {"room": str, "with": str})
_DirectSummaryRequired = TypedDict(
    "_DirectSummaryRequired",
    {"room": str, "with": str, "unread": int, "last_id": int, "read_id": int},
)


class DirectSummary(_DirectSummaryRequired, total=False):
    """A direct-message room of the caller: the other user, its latest message (`None`: none
    yet) and the caller's unread count."""

    last: StoredMessage | None


class _BanRequired(TypedDict):
    id: str
    user: str
    mode: Literal["ban", "mute"]
    reason: str
    created_at: int
    created_by: str


class Ban(_BanRequired, total=False):
    room: str | None
    until: int | None


class RoomInfo(TypedDict):
    room: str
    members: int
    users: list[UserCount]
    last_id: int
    epoch: str
    messages: int
    bytes: int
    bans: list[Ban]


class BroadcastRoom(TypedDict, total=False):
    """One room of a broadcast's answer: its `id`, `ts` and `epoch`, or the `error` that room met."""

    room: str
    id: int
    ts: int
    epoch: str
    error: str


class Erasure(TypedDict):
    user: str
    deleted: int
    scanned: int
    next: str | None
    done: bool
