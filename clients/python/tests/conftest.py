"""Real parts for the client's tests: the livechat binary (target/debug/livechat, or
LIVECHAT_BIN) on a port it picks, read back from its log, restarted on the same port and data
directory; and a TCP relay between a client and the server that can refuse connections, hold
back what flows one way, and cut every connection (a network that drops)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from livechat import HTTPClient

ROOT = Path(__file__).resolve().parents[3]
BINARY = Path(os.environ.get("LIVECHAT_BIN", ROOT / "target" / "debug" / "livechat"))
API_KEY = "the server key of the client tests"
JWT_SECRET = "the HS256 secret of the client tests, 32+ bytes"
PATIENCE = 20.0  # seconds: the longest a condition is waited for

T = TypeVar("T")


class LivechatServer:
    """The livechat binary with a data directory of its own; `restart()` keeps port and data."""

    def __init__(self, data_dir: Path, args: list[str]):
        self.data_dir = data_dir
        self.args = args
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def start(self) -> LivechatServer:
        self.process = subprocess.Popen(
            [BINARY, "--bind", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir), *self.args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env={key: value for key, value in os.environ.items() if not key.startswith(("LIVECHAT_", "REDIS_"))}
            | {"LIVECHAT_LOG": "info"},
        )
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        else:
            raise AssertionError("livechat did not start:\n" + "".join(self.log[-30:]))
        # Keep reading its log, so that the pipe never fills.
        threading.Thread(target=self._drain, args=(self.process,), daemon=True).start()
        return self

    def _drain(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self.log.append(line)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=PATIENCE)
        self.process = None

    def restart(self, data_dir: Path | None = None) -> None:
        self.stop()
        if data_dir is not None:
            self.data_dir = data_dir
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http(self, **options: Any) -> HTTPClient:
        """The server API with the server key (or as `options` say)."""
        if not options:
            options = {"api_key": API_KEY}
        return HTTPClient(self.url, **options)


@pytest.fixture
def livechat(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., LivechatServer]]:
    """Starts livechat servers (`livechat("--rate-limit", "1/s")`); stops them after the test,
    and prints their logs when it failed."""
    started: list[LivechatServer] = []

    def start(*args: str, key: bool = True) -> LivechatServer:
        extra = ["--api-key", API_KEY] if key else []
        server = LivechatServer(tmp_path / f"data-{len(started)}", [*extra, *args])
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
        if getattr(request.node, "failed", False):
            print(f"--- livechat on port {server.port} ---\n" + "".join(server.log[-60:]))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.failed = report.failed  # type: ignore[attr-defined]
    return report


class RedisServer:
    """A redis-server on a free port, without persistence, for livechat nodes to share."""

    def __init__(self, workdir: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + PATIENCE
        while subprocess.run(["redis-cli", "-p", str(self.port), "PING"], capture_output=True, text=True).stdout.strip() != "PONG":
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (scripts/test.sh installs it)")
    server = RedisServer(tmp_path)
    yield server
    server.stop()


class Relay:
    """A TCP relay to 127.0.0.1:`target`: `refusing` closes new connections at once; `hold("down")`
    keeps what the server sends from the client (`hold("up")` the other way) until `release()`;
    `cut()` drops every connection without a close frame, with whatever was held. `received`
    counts the bytes read from each side ("up": from clients)."""

    def __init__(self, target: int):
        self.target = target
        self.port = 0
        self.refusing = False
        self.flowing = {"up": asyncio.Event(), "down": asyncio.Event()}
        for flowing in self.flowing.values():
            flowing.set()
        self.received = {"up": 0, "down": 0}
        self.links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.accepted = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def hold(self, direction: str) -> None:
        self.flowing[direction].clear()

    def release(self) -> None:
        for flowing in self.flowing.values():
            flowing.set()

    def cut(self) -> None:
        for client, upstream in list(self.links):
            client.transport.abort()
            upstream.transport.abort()
        self.links.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        link = (writer, up_writer)
        self.links.add(link)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, "up")),
            asyncio.create_task(self._pump(up_reader, writer, "down")),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        writer.transport.abort()
        up_writer.transport.abort()
        self.links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        try:
            while data := await reader.read(65536):
                self.received[direction] += len(data)
                await self.flowing[direction].wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass


async def until(condition: Callable[[], T | Awaitable[T]], what: str, timeout: float = PATIENCE) -> T:
    """Polls `condition()` (sync, run in a thread, or async) until it is true; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value: Any = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}; last seen: {value!r}")
        await asyncio.sleep(0.05)


def run(scenario: Awaitable[T], timeout: float = 60) -> T:
    """Runs a test's scenario on a fresh event loop, within `timeout` seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario, timeout)

    return asyncio.run(bounded())
