"""Real parts for the Django example's end-to-end tests: the example app (examples/django) under
gunicorn, the livechat binary and redis-server, each in its own process on a port it picked (or a
free one); and a browser's side of them: signing in through the login form, then a WebSocket to
livechat carrying the session cookie."""
import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections import namedtuple
from pathlib import Path

import requests
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "django"
LIVECHAT_BIN = Path(os.environ.get("LIVECHAT_BIN", ROOT / "target" / "debug" / "livechat"))
DJANGO_VENV = Path(os.environ.get("DJANGO_VENV", ROOT / "target" / "django-venv"))

PATIENCE = 30.0  # seconds: the longest any condition is waited for, unless a test says otherwise
WEBHOOK_SECRET = "the secret livechat and the app share in these tests"
API_KEY = "the server key of these tests"
BANNED_WORD = "grumpkin"
BANNED_REASON = f'"{BANNED_WORD}" is not allowed in this chat'  # the app's own words
PASSWORD = "correct horse battery staple"
OPEN_ROOMS = "lobby,chat-*"  # LIVECHAT_OPEN_ROOMS of the app; `staff-*` is for the group staff


def wait_for(condition, what: str, timeout: float = PATIENCE, interval: float = 0.1):
    """Polls `condition()` until it returns something true, and returns that; fails at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}; last seen: {value!r}")
        time.sleep(interval)


async def until(condition, what: str, timeout: float = PATIENCE, interval: float = 0.1):
    """`wait_for` inside a coroutine: the event loop (and the WebSockets on it) keeps running."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}; last seen: {value!r}")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def fresh_room(prefix: str = "chat") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def base_env() -> dict:
    """A clean environment: nothing of the caller's LIVECHAT_* or DJANGO_* leaks into a server."""
    return {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}


class Server:
    """A process whose output goes to a log file of its own per start."""

    def __init__(self, workdir: Path, name: str):
        self.workdir = workdir
        self.name = name
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.log: Path | None = None

    def spawn(self, command: list, env: dict, cwd: Path | None = None) -> None:
        self.starts += 1
        self.log = self.workdir / f"{self.name}.{self.starts}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)

    def read_log_until(self, pattern: re.Pattern) -> re.Match:
        def found():
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            return pattern.search(self.log.read_text(errors="replace"))

        return wait_for(found, f"{self.name} to log {pattern.pattern!r}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.running():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=PATIENCE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"{self.name} did not stop on signal {sig}") from None

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        if self.log is None or not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


Row = namedtuple("Row", "livechat_id text username event_id")


class DjangoApp(Server):
    """examples/django under gunicorn (2 workers, 8 threads each) with a SQLite file of its own,
    or another instance's (`db`) and its own settings (environment variables)."""

    def __init__(self, workdir: Path, name: str = "django", db: Path | None = None, **settings: str):
        super().__init__(workdir, name)
        self.db = db or workdir / "django.sqlite3"
        self.port = 0  # gunicorn picks it at the first start; later starts take the same one
        self.users: dict[str, int] = {}
        self.env = base_env() | {
            "DJANGO_SECRET_KEY": "the Django secret key of these tests",
            "DJANGO_DB_PATH": str(self.db),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LIVECHAT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "LIVECHAT_BANNED_WORD": BANNED_WORD,
            "LIVECHAT_OPEN_ROOMS": OPEN_ROOMS,
            "PYTHONDONTWRITEBYTECODE": "1",
        } | settings

    def manage(self, *args: str, **settings: str) -> str:
        """Runs `manage.py args` with the app's environment (and `settings` over it)."""
        done = subprocess.run(
            [DJANGO_VENV / "bin" / "python", "manage.py", *args],
            cwd=EXAMPLE, env=self.env | settings, capture_output=True, text=True,
        )
        assert done.returncode == 0, f"manage.py {args[0]} failed:\n{done.stdout}{done.stderr}"
        return done.stdout

    def create_users(self) -> None:
        """alice (no group) and bob (in the group staff), with PASSWORD."""
        script = (
            "import json\n"
            "from django.contrib.auth.models import Group, User\n"
            "staff, _ = Group.objects.get_or_create(name='staff')\n"
            f"alice = User.objects.create_user('alice', password={PASSWORD!r})\n"
            f"bob = User.objects.create_user('bob', password={PASSWORD!r})\n"
            "bob.groups.add(staff)\n"
            "print(json.dumps({'alice': alice.pk, 'bob': bob.pk}))\n"
        )
        self.users = json.loads(self.manage("shell", "--no-imports", "-c", script))

    def start(self) -> None:
        self.spawn(
            [
                DJANGO_VENV / "bin" / "gunicorn", "chatsite.wsgi",
                "--bind", f"127.0.0.1:{self.port}",
                "--workers", "2", "--threads", "8", "--graceful-timeout", "1",
                "--no-control-socket", "--error-logfile", "-",
                "--access-logfile", "-", "--access-logformat", '"%(r)s" %(s)s %(M)s ms',
            ],
            self.env,
            cwd=EXAMPLE,
        )
        self.port = int(self.read_log_until(re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")).group(1))
        wait_for(lambda: self.status("/accounts/login/") == 200, "the login page")

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Stops at once, as in an outage: gunicorn's quick shutdown, its workers killed after 1 s."""
        super().stop(sig)
        wait_for(lambda: not accepts(self.port), f"port {self.port} to close")

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def status(self, path: str) -> int | None:
        """The status of a GET of `path`; None while nothing answers."""
        try:
            return requests.get(self.url(path), timeout=5).status_code
        except (requests.ConnectionError, requests.Timeout):
            return None

    def connect_calls(self) -> int:
        return json.loads(self.manage("livechat_stats"))["connect_calls"]

    def messages(self, room: str) -> list[Row]:
        """The Message table's rows for `room`, read from the app's SQLite file."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as db:
            rows = db.execute(
                "SELECT m.livechat_id, m.text, u.username, m.event_id FROM chat_message m"
                " LEFT JOIN auth_user u ON u.id = m.user_id WHERE m.room = ?",
                (room,),
            ).fetchall()
        return [Row(*row) for row in rows]

    def hooks(self) -> dict:
        """livechat's settings that plug it into this app."""
        return {
            "LIVECHAT_CONNECT_HOOK": self.url("/livechat/connect"),
            "LIVECHAT_PUBLISH_HOOK": self.url("/livechat/publish"),
            "LIVECHAT_WEBHOOK_URL": self.url("/livechat/events"),
            "LIVECHAT_WEBHOOK_SECRET": WEBHOOK_SECRET,
            # More than the 2 s default: the machine running the tests may be busy with others.
            "LIVECHAT_HOOK_TIMEOUT": "10s",
        }


class Livechat(Server):
    """The livechat binary on a port it picks (`--bind 127.0.0.1:0`), read from its log."""

    def __init__(self, workdir: Path, name: str, settings: dict):
        super().__init__(workdir, name)
        self.env = base_env() | {
            "LIVECHAT_DATA_DIR": str(workdir / f"{name}-data"),
            "LIVECHAT_API_KEY": API_KEY,
            "LIVECHAT_LOG": "info",
        } | settings
        self.address = ""

    def start(self) -> "Livechat":
        self.spawn([LIVECHAT_BIN, "--bind", "127.0.0.1:0"], self.env)
        self.address = self.read_log_until(re.compile(r"listening on http://(\S+)")).group(1)
        wait_for(lambda: self.ready(), f"{self.name} to be ready")
        return self

    def ready(self) -> bool:
        try:
            return requests.get(f"http://{self.address}/readyz", timeout=5).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def ws_url(self, room: str, query: str = "meta=1") -> str:
        return f"ws://{self.address}/ws/chat/{room}/?{query}"

    def history(self, room: str) -> list[dict]:
        """The room's history, read as a backend does (with the server key)."""
        answer = requests.get(
            f"http://{self.address}/chat/history/",
            params={"room": room, "limit": 1000},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["chat_history"]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the series `name` whose labels include `labels` (0 when there is none)."""
        text = requests.get(
            f"http://{self.address}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
        ).text
        total = 0.0
        for line in text.splitlines():
            match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
            if match and all(f'{key}="{value}"' in (match.group(1) or "") for key, value in labels.items()):
                total += float(match.group(2))
        return total


class RedisServer(Server):
    """A real redis-server on a free port, without persistence (only livechat nodes die here)."""

    def __init__(self, workdir: Path):
        super().__init__(workdir, "redis")
        self.port = free_port()

    def start(self) -> "RedisServer":
        self.spawn(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            base_env(),
        )
        wait_for(lambda: self.cli("PING") == "PONG", "redis-server to answer PING")
        return self

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/"

    def cli(self, *args: str) -> str:
        done = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return done.stdout.strip()


def sign_in(app: DjangoApp, username: str) -> str:
    """Signs in through the login form as a browser does (the form's CSRF token, its cookie, a
    POST); the Cookie header the browser then sends to livechat on the same host."""
    browser = requests.Session()
    browser.trust_env = False
    form = browser.get(app.url("/accounts/login/"), timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    answer = browser.post(
        app.url("/accounts/login/"),
        data={"csrfmiddlewaretoken": token, "username": username, "password": PASSWORD, "next": ""},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302 and answer.headers["Location"] == "/", (answer.status_code, answer.text[:500])
    home = browser.get(app.url("/"), timeout=10)
    assert f"Signed in as <strong>{username}</strong>" in home.text
    return cookie_header(browser)


def anonymous_cookie(app: DjangoApp) -> str:
    """The cookies of a visitor who opened the login page and did not sign in."""
    browser = requests.Session()
    browser.trust_env = False
    browser.get(app.url("/accounts/login/"), timeout=10)
    assert "csrftoken" in browser.cookies and "sessionid" not in browser.cookies
    return cookie_header(browser)


def signed_out_cookie(app: DjangoApp, username: str) -> str:
    """A session cookie kept after signing out (the session no longer exists)."""
    cookie = sign_in(app, username)
    sign_out(app, cookie)
    return cookie


def sign_out(app: DjangoApp, cookie: str) -> None:
    """Signs out through the app's sign-out form (a POST with the CSRF token)."""
    browser = requests.Session()
    browser.trust_env = False
    csrf = re.search(r"csrftoken=([^;]+)", cookie).group(1)
    answer = browser.post(
        app.url("/accounts/logout/"),
        data={"csrfmiddlewaretoken": csrf},
        headers={"Cookie": cookie},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302, answer.status_code


def cookie_header(browser: requests.Session) -> str:
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies)


class Chat:
    """A WebSocket to a livechat room with `?meta=1`, opened with a browser's cookies."""

    def __init__(self, socket):
        self.socket = socket
        self.others: list[dict] = []  # frames received while waiting for one's own

    @classmethod
    async def open(cls, livechat: Livechat, room: str, cookie: str) -> "Chat":
        socket = await connect(
            livechat.ws_url(room),
            additional_headers={"Cookie": cookie},
            compression=None,
            proxy=None,
            ping_interval=None,
            max_queue=None,
            open_timeout=PATIENCE,
        )
        return cls(socket)

    async def send(self, message) -> str:
        nonce = uuid.uuid4().hex
        await self.socket.send(json.dumps({"message": message, "nonce": nonce}))
        return nonce

    async def answer(self, nonce: str) -> dict:
        """The frame that answers the publish `nonce`: its echo, or the error refusing it."""
        async with asyncio.timeout(PATIENCE):
            while True:
                frame = json.loads(await self.socket.recv())
                if frame.get("nonce") == nonce:
                    return frame
                self.others.append(frame)

    async def publish(self, message) -> dict:
        """Sends `message`; its echo (with its id), failing on a refusal."""
        frame = await self.answer(await self.send(message))
        assert "error" not in frame, frame
        return frame

    async def receive(self, condition) -> dict:
        """The first frame (already received or next) that `condition` accepts."""
        for frame in self.others:
            if condition(frame):
                self.others.remove(frame)
                return frame
        async with asyncio.timeout(PATIENCE):
            while True:
                frame = json.loads(await self.socket.recv())
                if condition(frame):
                    return frame
                self.others.append(frame)

    async def closed(self) -> int:
        """The close code, once livechat has closed the connection."""
        await asyncio.wait_for(self.socket.wait_closed(), PATIENCE)
        return self.socket.close_code

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.socket.close(), 5)
        except (OSError, TimeoutError):
            pass


async def alice_and_bob(app: DjangoApp, room: str, node: Livechat, bobs_node: Livechat | None = None) -> dict:
    """alice and bob, each signed in through the form, in `room` (bob on `bobs_node` if given)."""
    return {
        "alice": await Chat.open(node, room, sign_in(app, "alice")),
        "bob": await Chat.open(bobs_node or node, room, sign_in(app, "bob")),
    }


async def close_all(chats: dict) -> None:
    await asyncio.gather(*(chat.close() for chat in chats.values()))


async def refusal(livechat: Livechat, room: str, cookie: str | None) -> tuple[int, dict]:
    """The status and JSON body of a WebSocket handshake livechat refuses."""
    try:
        socket = await connect(
            livechat.ws_url(room),
            additional_headers={"Cookie": cookie} if cookie else None,
            compression=None,
            proxy=None,
            open_timeout=PATIENCE,
        )
    except InvalidStatus as refused:
        return refused.response.status_code, json.loads(refused.response.body)
    await socket.close()
    raise AssertionError(f"livechat accepted a handshake into {room} it should have refused")
