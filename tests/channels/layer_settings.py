"""The reference app's settings (bench/peers/django) with its channel layer as a test asks for it:
CHANNELS_HOSTS (Redis URLs, comma-separated, in order), CHANNELS_KEYS (symmetric_encryption_keys,
comma-separated), CHANNELS_PREFIX."""
import os

from chatproject.settings import *  # noqa: F401,F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": os.environ["CHANNELS_HOSTS"].split(","),
            "prefix": os.environ.get("CHANNELS_PREFIX", "asgi"),
            **(
                {"symmetric_encryption_keys": os.environ["CHANNELS_KEYS"].split(",")}
                if os.environ.get("CHANNELS_KEYS")
                else {}
            ),
        },
    }
}
