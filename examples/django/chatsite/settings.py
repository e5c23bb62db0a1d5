"""Settings of the example project, read from environment variables (see README.md)."""
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("set DJANGO_SECRET_KEY (or DJANGO_DEBUG=1 for a development key)")
    SECRET_KEY = "development only: not secret"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
WSGI_APPLICATION = "chatsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite in WAL mode, writers queued (IMMEDIATE) rather than failing with "database is locked":
# gunicorn's threads and workers write hook counters and webhook events at the same time.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", str(BASE_DIR / "db.sqlite3")),
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"chat": {"handlers": ["console"], "level": "INFO"}},
}

# livechat: the same secret as livechat's LIVECHAT_WEBHOOK_SECRET. It signs the webhooks and the
# hook calls; the three livechat views refuse everything (503) while it is not set.
LIVECHAT_WEBHOOK_SECRET = os.environ.get("LIVECHAT_WEBHOOK_SECRET", "")
# A signature whose time is further than this from now (seconds) is refused, as a replay.
LIVECHAT_SIGNATURE_TOLERANCE = 300
# Messages containing this word (as a whole word, in any case) are refused; empty: none are.
LIVECHAT_BANNED_WORD = os.environ.get("LIVECHAT_BANNED_WORD", "")
# Rooms every signed-in user may enter (an entry ending in `*` is a prefix). Members of the group
# NAME may also enter the rooms `NAME-*`; superusers, every room.
LIVECHAT_OPEN_ROOMS = env_list("LIVECHAT_OPEN_ROOMS", "lobby,general-*")
# How long livechat may keep a connection on the connect hook's answer before asking again.
LIVECHAT_CONNECT_EXPIRES_IN = int(os.environ.get("LIVECHAT_CONNECT_EXPIRES_IN", "300"))
# Where the browser finds livechat (shown on the home page).
LIVECHAT_PUBLIC_URL = os.environ.get("LIVECHAT_PUBLIC_URL", "ws://localhost:8003")
# Where the app reaches livechat's HTTP API (server to server), and livechat's server key
# (LIVECHAT_API_KEY on both sides): announcements, and closing a deactivated account's connections.
LIVECHAT_URL = os.environ.get("LIVECHAT_URL", "http://127.0.0.1:8003")
LIVECHAT_API_KEY = os.environ.get("LIVECHAT_API_KEY", "")
# The name announcements are posted under.
LIVECHAT_ANNOUNCER = os.environ.get("LIVECHAT_ANNOUNCER", "announcements")
