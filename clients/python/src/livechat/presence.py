"""Who is in a room, kept from livechat's presence events: a snapshot replaces the state, a change
is applied as set operations (a user may be in a snapshot and then in `joined`: one's own join).
Pure: no I/O, so it can be tested and used apart from a connection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from .events import PresenceChanged, Typing
from .types import User

TYPING_SHOWN_FOR = 3.0  # seconds a typing event is shown, as livechat's docs advise


def user_key(user: User) -> str:
    """A user's identity: its id, or with auth off the name it chose."""
    return user.get("id") or user.get("name") or ""


@dataclass
class Member:
    """A user in the room: its id and name, and how many connections it has (`None` when it
    joined after the snapshot: presence changes do not carry the count)."""

    id: str | None
    name: str | None
    connections: int | None = None


class Presence:
    """`members` (connections in the room, anonymous ones included), `users` (named users by
    `user_key`), `truncated` (the room has more users than livechat lists: read
    `HTTPClient.presence` for them), and who is typing."""

    def __init__(self) -> None:
        self.members = 0
        self.users: dict[str, Member] = {}
        self.truncated = False
        self._typing: dict[str, tuple[float, User]] = {}

    def apply(self, event: PresenceChanged) -> None:
        self.members = event.members
        self.truncated = event.truncated
        if event.users is not None:
            self.users = {}
            for user in event.users:
                connections = user.get("connections")
                self._add(user, connections if isinstance(connections, int) else None)
        for user in event.joined or ():
            self._add(user, None)
        for user in event.left or ():
            self.users.pop(user_key(user), None)
            self._typing.pop(user_key(user), None)

    def _add(self, user: User, connections: int | None) -> None:
        key = user_key(user)
        if key:
            known = self.users.get(key)
            if known is not None and connections is None:
                return
            self.users[key] = Member(user.get("id"), user.get("name"), connections)

    def typing(self, event: Typing, now: float | None = None) -> None:
        self._typing[user_key(event.user)] = ((time.monotonic() if now is None else now), event.user)

    def stopped_typing(self, user: User | None) -> None:
        """`user`'s message came: it is no longer typing."""
        if user is not None:
            self._typing.pop(user_key(user), None)

    def typing_users(self, now: float | None = None) -> list[User]:
        """Users who typed within the last 3 s, the latest last."""
        now = time.monotonic() if now is None else now
        for key in [key for key, (seen, _) in self._typing.items() if now - seen > TYPING_SHOWN_FOR]:
            del self._typing[key]
        return [user for _, user in sorted(self._typing.values(), key=lambda item: item[0])]

    def clear(self) -> None:
        """Forgets everything (the connection is gone: the list would be stale)."""
        self.members = 0
        self.users = {}
        self.truncated = False
        self._typing = {}

    def __iter__(self) -> Iterator[Member]:
        return iter(sorted(self.users.values(), key=lambda member: (member.name or "", member.id or "")))

    def __len__(self) -> int:
        return len(self.users)

    def __contains__(self, user: object) -> bool:
        if isinstance(user, str):
            return user in self.users
        if isinstance(user, dict):
            return user_key(user) in self.users  # type: ignore[arg-type]
        return False
