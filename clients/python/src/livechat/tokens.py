"""Minting tokens for livechat (HS256, signed with the server's `LIVECHAT_JWT_SECRET`), with the
claims `livechat token` writes, plus `moderate`. Standard library only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_token(
    secret: str | bytes,
    sub: str | int,
    *,
    name: str | None = None,
    rooms: Sequence[str] | None = None,
    publish: bool = True,
    moderate: bool = False,
    ttl: float = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """A JSON Web Token livechat accepts with `LIVECHAT_AUTH=required` and this HS256 secret.

    `sub`: the user's id (an integer is written as its decimal string, as livechat reads it);
    `rooms`: the rooms it may join and read (an entry ending in `*` is a prefix; `None`: every
    room); `publish=False`: read-only; `moderate=True`: may edit and delete any message and use
    the server API; `ttl`: seconds from `now` (default: the current time) until `exp`;
    `issuer`/`audience`: `iss`/`aud`, needed when the server sets `LIVECHAT_JWT_ISSUER` /
    `LIVECHAT_JWT_AUDIENCE`.
    """
    if isinstance(secret, str):
        secret = secret.encode()
    if not secret:
        raise ValueError("the secret is empty")
    if ttl <= 0:
        raise ValueError("ttl must be more than 0 seconds")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": str(sub), "exp": issued + int(ttl), "iat": issued}
    if name is not None:
        claims["name"] = name
    if rooms is not None:
        if isinstance(rooms, str):
            raise TypeError("rooms is a list of room names, not one string")
        claims["rooms"] = list(rooms)
    if not publish:
        claims["publish"] = False
    if moderate:
        claims["moderate"] = True
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signed = f"{header}.{payload}".encode("ascii")
    signature = _b64url(hmac.new(secret, signed, hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a token, *not verified* (for reading its `exp` or `sub` on the client side)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as error:
        raise ValueError("not a JSON Web Token") from error
    if not isinstance(claims, dict):
        raise ValueError("not a JSON Web Token: its payload is not an object")
    return claims
