"""The three views livechat calls (docs/hooks.md in the livechat repository): who a caller is
(connect hook), whether a message may be sent and as what (publish hook), and what happened
(webhooks: every message is recorded once)."""
import json
import logging
import re
from datetime import datetime, timezone

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.cookie import parse_cookie

from .models import HookCalls, Message
from .rooms import may_enter, rooms_for
from .signature import signed_by_livechat

logger = logging.getLogger(__name__)


def browser_request(headers) -> HttpRequest:
    """The browser's request as Django's session and auth middleware see it, from the headers
    livechat forwards (`Cookie`): its `.user` is what a Channels consumer had as `scope["user"]`."""
    request = HttpRequest()
    cookie = headers.get("cookie") if isinstance(headers, dict) else None
    request.COOKIES = parse_cookie(cookie) if isinstance(cookie, str) else {}
    SessionMiddleware(lambda _: None).process_request(request)
    AuthenticationMiddleware(lambda _: None).process_request(request)
    return request


@signed_by_livechat
def connect(request, call):
    """200 with the user's claims; 401 without a signed-in session; 403 for a room not theirs."""
    HookCalls.record("connect")
    user = browser_request(call.get("headers")).user
    if not user.is_authenticated:
        return JsonResponse({"error": "not signed in: sign in at /accounts/login/ first"}, status=401)
    rooms = rooms_for(user)
    room = call.get("room")
    if isinstance(room, str) and not may_enter(rooms, room):
        return JsonResponse({"error": f"{user.get_username()} may not enter the room {room}"}, status=403)
    return JsonResponse(
        {
            "user": {"id": str(user.pk), "name": user.get_username()},
            "rooms": rooms,
            "expires_in": settings.LIVECHAT_CONNECT_EXPIRES_IN,
        }
    )


def banned_word_reason(text: str) -> str | None:
    word = settings.LIVECHAT_BANNED_WORD
    if word and re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE):
        return f'"{word}" is not allowed in this chat'
    return None


@signed_by_livechat
def publish(request, call):
    """Refuses the banned word and empty text; sends text without its surrounding whitespace.
    Messages that are not text (any other JSON value) pass as they are."""
    message = call.get("message")
    if not isinstance(message, str):
        return JsonResponse({})
    reason = banned_word_reason(message)
    if reason:
        return JsonResponse({"error": reason}, status=403)
    trimmed = message.strip()
    if not trimmed:
        return JsonResponse({"error": "an empty message is not sent"}, status=400)
    return JsonResponse({"message": trimmed} if trimmed != message else {})


def message_row(event, users: set[int]) -> Message | None:
    """The Message a `message` event tells of; None (logged) when the event lacks what it needs."""
    body = event.get("message")
    try:
        author = (body.get("user") or {}).get("id")
        user_id = int(author) if author is not None else None
        return Message(
            event_id=str(event["id"]),
            livechat_id=int(body["id"]),
            room=str(body["room"]),
            text=body["message"] if isinstance(body["message"], str) else json.dumps(body["message"]),
            ts=datetime.fromtimestamp(int(body["ts"]) / 1000, tz=timezone.utc),
            user_id=user_id if user_id in users else None,
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        logger.warning("skipped a message event without the fields it needs: %.500r", event)
        return None


def user_ids(events) -> set[int]:
    """The ids of the authors that exist in this app (messages of deleted users keep no author)."""
    wanted = set()
    for event in events:
        try:
            wanted.add(int(event["message"]["user"]["id"]))
        except (KeyError, TypeError, ValueError):
            pass
    return set(get_user_model().objects.filter(pk__in=wanted).values_list("pk", flat=True))


@signed_by_livechat
def events(request, batch):
    """Records each `message` event once: the event id is unique, and an event livechat sends
    again (its acknowledgement was lost, or a node died before it) is skipped. Other event types
    are acknowledged and not kept. A 2xx answer acknowledges the whole batch."""
    events = batch.get("events")
    if not isinstance(events, list):
        return JsonResponse({"error": "expected {\"events\": [...]}"}, status=400)
    messages = [event for event in events if isinstance(event, dict) and event.get("type") == "message"]
    authors = user_ids(messages)
    rows = [row for row in (message_row(event, authors) for event in messages) if row is not None]
    Message.objects.bulk_create(rows, ignore_conflicts=True)
    return HttpResponse(status=204)
