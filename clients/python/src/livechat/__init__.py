"""Clients for livechat: `ChatClient`, an asyncio client for one room over WebSocket (resume,
nonces, reconnects with backoff, presence, typing, edits, deletions, reactions, read positions);
`HTTPClient`, a synchronous client for backends (publish, history, the server API); and
`mint_token`, tokens signed as `livechat token` signs them."""

from . import events
from .backoff import Backoff
from .client import ChatClient, ChatClosed, ConnectionLost, RequestRefused
from .events import *  # noqa: F403 (its __all__, added to this one's below)
from .http import HTTPClient, LivechatError
from .presence import Member, Presence
from .tokens import mint_token, token_claims

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "ChatClient",
    "ChatClosed",
    "ConnectionLost",
    "HTTPClient",
    "LivechatError",
    "Member",
    "Presence",
    "RequestRefused",
    "mint_token",
    "token_claims",
]
__all__ += events.__all__
