"""Real parts for the Channels layer bridge's tests, beside those of tests/django (livechat, redis-server):
the reference app (bench/peers/django: Django Channels + channels_redis) under daphne and in a Django
shell, a redis-server that keeps its data across kill -9 (the append-only file, fsynced at every
write), and WebSocket clients of either server speaking the original protocol ({"message": X})."""
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import requests
from websockets.asyncio.client import connect

from support import PATIENCE, ROOT, RedisServer, Server, accepts, base_env, free_port, wait_for

APP = ROOT / "bench" / "peers" / "django"
HERE = Path(__file__).resolve().parent
PYTHON = Path(sys.executable)


def layer_env(hosts: list[str], keys: list[str] | None = None) -> dict:
    """The reference app's environment, its channel layer on `hosts` (tests/channels/layer_settings.py)."""
    env = base_env() | {
        "DJANGO_SETTINGS_MODULE": "layer_settings",
        "PYTHONPATH": f"{HERE}{os.pathsep}{APP}",
        "CHANNELS_HOSTS": ",".join(hosts),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if keys:
        env["CHANNELS_KEYS"] = ",".join(keys)
    return env


def django_shell_group_send(env: dict, group: str, messages: list) -> None:
    """`manage.py shell -c`: the app's own code sending `{"type": "chat.message", "message": X}` to a
    group for each X, as its views, tasks and signals do."""
    script = (
        "import json, sys\n"
        "from asgiref.sync import async_to_sync\n"
        "from channels.layers import get_channel_layer\n"
        "layer = get_channel_layer()\n"
        f"for message in json.loads({json.dumps(json.dumps(messages))}):\n"
        f"    async_to_sync(layer.group_send)({group!r}, {{'type': 'chat.message', 'message': message}})\n"
    )
    done = subprocess.run(
        [PYTHON, "manage.py", "shell", "--no-imports", "-c", script],
        cwd=APP, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, f"the Django shell failed:\n{done.stdout}{done.stderr}"


class Daphne(Server):
    """The reference app under daphne, on a free port."""

    def __init__(self, workdir: Path, env: dict, name: str = "daphne"):
        super().__init__(workdir, name)
        self.env = env
        self.port = free_port()

    def start(self) -> "Daphne":
        self.spawn(
            [PYTHON.parent / "daphne", "-b", "127.0.0.1", "-p", str(self.port), "chatproject.asgi:application"],
            self.env,
            cwd=APP,
        )
        # The app logs warnings only (its settings): ready when its port answers.
        wait_for(lambda: self.process.poll() is None and accepts(self.port) or self.exited(), f"{self.name} to listen")
        return self

    def exited(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
        return False

    def ws_url(self, room: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/{room}/"


class DurableRedis(RedisServer):
    """A redis-server in a directory of its own whose append-only file is fsynced at every write,
    so that it comes back from kill -9 with the layer's groups and channels."""

    def __init__(self, workdir: Path, name: str):
        super().__init__(workdir)
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir()

    def start(self) -> "DurableRedis":
        self.spawn(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            base_env(),
        )
        wait_for(lambda: self.cli("PING") == "PONG", f"{self.name} to answer PING")
        return self


class Client:
    """A WebSocket to a room (livechat or daphne) in the original protocol; every frame kept."""

    def __init__(self, socket, name: str):
        self.socket = socket
        self.name = name
        self.frames: list[dict] = []

    @classmethod
    async def open(cls, url: str, name: str) -> "Client":
        socket = await connect(url, compression=None, proxy=None, ping_interval=None, max_queue=None,
                               open_timeout=PATIENCE)
        return cls(socket, name)

    async def send(self, message) -> None:
        await self.socket.send(json.dumps({"message": message}))

    async def until(self, condition, what: str) -> list[dict]:
        """Reads frames until `condition(frames)` holds; all frames received so far."""
        async with asyncio.timeout(PATIENCE):
            while not condition(self.frames):
                self.frames.append(json.loads(await self.socket.recv()))
        return self.frames

    def messages(self) -> list:
        return [frame["message"] for frame in self.frames if "message" in frame]

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.socket.close(), 5)
        except (OSError, TimeoutError):
            pass


def in_group(redis: RedisServer, group: str, prefix: str = "asgi") -> list[str]:
    """The channels in a group of the layer, as its sorted set has them."""
    members = redis.cli("ZRANGE", f"{prefix}:group:{group}", "0", "-1")
    return [line for line in members.splitlines() if line]


def readyz(livechat) -> dict:
    try:
        return requests.get(f"http://{livechat.address}/readyz", timeout=5).json()
    except (requests.ConnectionError, requests.Timeout, ValueError):
        return {}
