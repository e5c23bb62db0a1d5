"""Clients for livechat: `ChatClient`, an asyncio client for one room over WebSocket (resume,
nonces, reconnects with backoff, presence, typing, edits, deletions, reactions, read positions);
`HTTPClient`, a synchronous client for backends (publish, history, the server API); and
`mint_token`, tokens signed as `livechat token` signs them."""

from .backoff import Backoff
from .client import ChatClient, ChatClosed, ConnectionLost, RequestRefused
from .events import (
    CaughtUp,
    Connected,
    Deleted,
    Disconnected,
    Edited,
    Event,
    Gap,
    Message,
    PresenceChanged,
    Reaction,
    Reactions,
    ReadMoved,
    Reset,
    Seen,
    ServerError,
    TokenRefreshed,
    Typing,
)
from .http import HTTPClient, LivechatError
from .presence import Member, Presence
from .tokens import mint_token, token_claims

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "CaughtUp",
    "ChatClient",
    "ChatClosed",
    "Connected",
    "ConnectionLost",
    "Deleted",
    "Disconnected",
    "Edited",
    "Event",
    "Gap",
    "HTTPClient",
    "LivechatError",
    "Member",
    "Message",
    "Presence",
    "PresenceChanged",
    "Reaction",
    "Reactions",
    "ReadMoved",
    "RequestRefused",
    "Reset",
    "Seen",
    "ServerError",
    "TokenRefreshed",
    "Typing",
    "mint_token",
    "token_claims",
]
