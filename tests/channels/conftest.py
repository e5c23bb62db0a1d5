"""Fixtures: per test, the livechat nodes, redis-servers and daphne processes it starts, all stopped
when it ends (their logs printed when it fails). The real parts themselves are tests/django's
(support.py) and bridge_support.py's."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "django"))

from bridge_support import Daphne, DurableRedis  # noqa: E402
from support import Servers, pytest_runtest_makereport  # noqa: E402,F401 (the hook)


class LayerServers(Servers):
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
    started = LayerServers(tmp_path)
    yield started
    started.stop_all(request)
