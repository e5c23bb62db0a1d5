"""livechat's request signature (`X-Livechat-Signature: t=UNIX,v1=HEX`), checked as docs/hooks.md
says: v1 is the hex HMAC-SHA256 of `t + "." + body` with the shared secret, and t must be recent."""
import functools
import hashlib
import hmac
import json
import logging
import time

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

logger = logging.getLogger(__name__)


class SignatureError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def verify(secret: bytes, header: str | None, body: bytes, tolerance: float, now: float) -> None:
    """Raises SignatureError (400: missing or malformed; 401: wrong or stale) unless `header` signs `body`."""
    if not header:
        raise SignatureError(400, "missing X-Livechat-Signature")
    try:
        parts = dict(item.strip().split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        signature = parts["v1"]
    except (KeyError, ValueError):
        raise SignatureError(400, "malformed X-Livechat-Signature: expected t=UNIX,v1=HEX") from None
    expected = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureError(401, "X-Livechat-Signature does not match: is LIVECHAT_WEBHOOK_SECRET the same on both sides?")
    if abs(now - timestamp) > tolerance:
        raise SignatureError(401, f"X-Livechat-Signature is {abs(now - timestamp):.0f} s from now: refused as a replay")


def signed_by_livechat(view):
    """A view livechat calls: POST only, no CSRF token (the signature stands for it), the body's
    signature checked, then `view(request, payload)` with the body's JSON object."""

    @functools.wraps(view)
    def checked(request):
        secret = settings.LIVECHAT_WEBHOOK_SECRET
        if not secret:
            logger.error("refused a livechat call: LIVECHAT_WEBHOOK_SECRET is not set")
            return JsonResponse({"error": "LIVECHAT_WEBHOOK_SECRET is not set on the app"}, status=503)
        try:
            verify(
                secret.encode(),
                request.headers.get("X-Livechat-Signature"),
                request.body,
                settings.LIVECHAT_SIGNATURE_TOLERANCE,
                time.time(),
            )
        except SignatureError as refusal:
            logger.warning("refused a call to %s: %s", request.path, refusal.reason)
            return JsonResponse({"error": refusal.reason}, status=refusal.status)
        try:
            payload = json.loads(request.body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return JsonResponse({"error": "the body is not a JSON object"}, status=400)
        return view(request, payload)

    return csrf_exempt(require_POST(checked))
