"""Fixtures: one example app for the whole run (its users alice and bob), and per test the
livechat nodes and redis-servers it starts, all stopped when the test ends; their logs are
printed when it fails."""
import pytest

from support import DjangoApp, Servers, pytest_runtest_makereport  # noqa: F401 (the hook)


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    app = DjangoApp(tmp_path_factory.mktemp("django"))
    app.manage("migrate", "--noinput")
    app.create_users()
    app.start()
    yield app
    app.stop()


@pytest.fixture
def app(app_server, request):
    """The example app, running (a test may have stopped it)."""
    app_server.ensure_running()
    yield app_server
    if getattr(request.node, "failed", False):
        print(f"--- {app_server.log} ---\n{app_server.log_tail()}")


class AppServers(Servers):
    def django(self, name: str, db, **settings: str) -> DjangoApp:
        """Another instance of the example app with settings of its own, on the database `db`."""
        app = DjangoApp(self.workdir, name, db, **settings)
        self.started.append(app)
        app.start()
        return app


@pytest.fixture
def servers(tmp_path, request):
    """Starts livechat nodes and redis-servers for a test; stops them after it."""
    started = AppServers(tmp_path)
    yield started
    started.stop_all(request)
