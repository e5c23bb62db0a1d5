"""Fixtures: per test, the livechat nodes, redis-servers and daphne processes it starts, all stopped
when it ends (their logs printed when it fails). The real parts themselves are tests/django's
(support.py) and bridge_support.py's."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "django"))

from bridge_support import Daphne, DurableRedis  # noqa: E402
from support import Livechat, RedisServer  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.failed = report.failed
    return report


class Servers:
    def __init__(self, workdir):
        self.workdir = workdir
        self.started = []

    def livechat(self, name: str = "livechat", **settings: str) -> Livechat:
        node = Livechat(self.workdir, name, settings)
        self.started.append(node)
        return node.start()

    def redis(self) -> RedisServer:
        redis = RedisServer(self.workdir)
        redis.name = f"redis{len(self.started)}"
        self.started.append(redis)
        return redis.start()

    def durable_redis(self, name: str) -> DurableRedis:
        redis = DurableRedis(self.workdir, name)
        self.started.append(redis)
        return redis.start()

    def daphne(self, env: dict) -> Daphne:
        daphne = Daphne(self.workdir, env)
        self.started.append(daphne)
        return daphne.start()


@pytest.fixture
def servers(tmp_path, request):
    started = Servers(tmp_path)
    yield started
    for server in reversed(started.started):
        server.kill9()
        if getattr(request.node, "failed", False):
            print(f"--- {server.log} ---\n{server.log_tail()}")
