"""The client's pure parts: presence kept from events, backoff delays, frames read as events."""

from __future__ import annotations

import random
from typing import get_args

import pytest

import livechat
from livechat import Backoff, Gap, Message, Presence, PresenceChanged, ServerError, Typing
from livechat.events import Event, parse_frame


def change(**fields: object) -> PresenceChanged:
    event = parse_frame({"event": "presence", "room": "r", **fields})
    assert isinstance(event, PresenceChanged)
    return event


def test_presence_is_a_snapshot_then_set_operations() -> None:
    presence = Presence()
    presence.apply(change(members=3, users=[{"id": "1", "name": "Ada", "connections": 2}]))
    assert [(m.id, m.name, m.connections) for m in presence] == [("1", "Ada", 2)]
    # One's own join after the snapshot: Ada stays once, with the count the snapshot gave.
    presence.apply(change(members=4, joined=[{"id": "1", "name": "Ada"}, {"id": "2", "name": "Bo"}], left=[]))
    assert [(m.name, m.connections) for m in presence] == [("Ada", 2), ("Bo", None)]
    assert presence.members == 4 and "2" in presence and {"id": "2"} in presence and len(presence) == 2
    presence.apply(change(members=2, joined=[], left=[{"id": "1", "name": "Ada"}]))
    assert [m.name for m in presence] == ["Bo"] and presence.members == 2
    # With auth off a user is its chosen name.
    presence.apply(change(members=1, users=[{"name": "Cy", "connections": 1}], truncated=True))
    assert [m.name for m in presence] == ["Cy"] and "Cy" in presence and presence.truncated
    presence.clear()
    assert len(presence) == 0 and presence.members == 0


def test_typing_is_shown_for_three_seconds_or_until_a_message() -> None:
    presence = Presence()
    ada = Typing("r", {"name": "Ada"})
    bo = Typing("r", {"name": "Bo"})
    presence.typing(ada, now=10.0)
    presence.typing(bo, now=11.0)
    assert presence.typing_users(now=12.0) == [{"name": "Ada"}, {"name": "Bo"}]
    assert presence.typing_users(now=13.5) == [{"name": "Bo"}]
    presence.stopped_typing({"name": "Bo"})
    assert presence.typing_users(now=13.5) == []


def test_backoff_grows_within_its_bounds_with_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=8, rng=random.Random(7))
    assert [backoff.bound(n) for n in range(6)] == [0.5, 1, 2, 4, 8, 8]
    assert backoff.bound(10_000) == 8
    delays = [backoff.delay(3) for _ in range(200)]
    assert all(0.05 <= delay <= 4 for delay in delays)
    assert len({round(delay, 3) for delay in delays}) > 150  # spread, not in step
    with pytest.raises(ValueError):
        Backoff(initial=5, maximum=1)


def test_frames_read_as_events() -> None:
    message = parse_frame({"id": 3, "room": "r", "message": {"a": 1}, "ts": 5, "user": {"name": "Ada"}, "nonce": "n"})
    assert message == Message(3, "r", {"a": 1}, 5, {"name": "Ada"}, "n")
    gap = {"event": "gap", "room": "r", "from": 2, "to": 4}
    read = parse_frame(gap)
    assert read == Gap("r", 2, 4) and read.raw == gap  # kept, and left out of comparisons
    refused = parse_frame({"error": "rate limited", "for": "message", "nonce": "n", "retry_after_ms": 250})
    assert refused == ServerError("rate limited", "message", "n", None, 250)
    assert parse_frame({"message": "a plain frame"}) is None
    assert parse_frame({"event": "from a newer server"}) is None
    assert parse_frame({"event": "gap", "room": "r"}) is None


def test_the_export_list_has_every_event() -> None:
    """`from livechat import *` (as the tests import it) brings every event the client yields."""
    assert {kind.__name__ for kind in get_args(Event)} | {"Event"} <= set(livechat.__all__)
