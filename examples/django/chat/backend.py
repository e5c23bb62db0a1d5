"""The app speaking to livechat, as a backend, with the Python client's HTTPClient and the server
key: announcements to rooms, and a closed account's connections closed at once (the connect hook
alone would refuse it only at its next check, up to LIVECHAT_CONNECT_EXPIRES_IN later)."""
import logging
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from livechat import HTTPClient, LivechatError

logger = logging.getLogger(__name__)


@cache
def livechat() -> HTTPClient:
    """One client for the process: it keeps a connection per thread, so gunicorn's threads share it."""
    if not settings.LIVECHAT_API_KEY:
        raise ImproperlyConfigured("set LIVECHAT_API_KEY (livechat's server key) for the app to speak to livechat")
    return HTTPClient(settings.LIVECHAT_URL, api_key=settings.LIVECHAT_API_KEY, timeout=5)


def announce(rooms: list[str], text: str) -> list[dict]:
    """Stores `text` in each room (one id each) as said by the app's announcer; sent again with
    the same nonce, it is stored only where it was missing."""
    return livechat().broadcast(rooms, text, user={"name": settings.LIVECHAT_ANNOUNCER})


def close_connections(user_id: int) -> None:
    """Closes every livechat connection of the user, on every node, with 4004 (do not reconnect).
    A failure is logged, not raised: the connect hook refuses the account at its next check anyway."""
    try:
        livechat().disconnect(str(user_id), reason="account closed", reconnect=False)
    except (LivechatError, OSError) as error:
        logger.error("could not close the livechat connections of user %s: %s", user_id, error)


def account_saved(sender, instance, **kwargs) -> None:
    """A user saved inactive (deactivated in the admin, say) loses its connections once the
    change is committed."""
    if not instance.is_active and settings.LIVECHAT_API_KEY:
        transaction.on_commit(lambda: close_connections(instance.pk))
