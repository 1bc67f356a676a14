"""Test session: throwaway Redis and PostgreSQL servers, the tiny GGUF model, the schema.

Servers start in ``pytest_configure``, before any test module imports ``celeryconfig`` or the
app, because both read their URLs from the environment at import.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.servers import PostgresServer, RedisServer
from tests.grid import Client, Grid, manage

_state: dict = {}


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    workdir = Path(tempfile.mkdtemp(prefix="grid-tests-"))
    os.chmod(workdir, 0o755)
    redis = RedisServer().start()
    _state["redis"] = redis
    postgres = PostgresServer().start()
    _state["postgres"] = postgres
    database_url = postgres.create_database("grid_test")
    _state["workdir"] = workdir
    (workdir / "logs").mkdir()
    model = workdir / "tiny.gguf"
    from workers.tinymodel import build_tiny_model

    build_tiny_model(model)
    os.environ.update(
        {
            "GRID_BROKER_URL": redis.url,
            "GRID_DATABASE_URL": database_url,
            "GRID_DATA_DIR": str(workdir / "var"),
            "GRID_LLM_MODEL": str(model),
            "GRID_LLM_CONTEXT": "512",
            "GRID_LLM_THREADS": "1",
            "GRID_SECRET_KEY": "test-coordinator-key-not-for-production",
            "GRID_SOFT_TIME_LIMIT": "60",
            "GRID_HARD_TIME_LIMIT": "90",
            "GRID_VISIBILITY_TIMEOUT": "120",
            "GRID_RETRY_BACKOFF": "1",
            "OMP_THREAD_LIMIT": "1",
            # Nodes take as many tasks as they are sent; tests/test_rate_limit.py sets a limit.
            "GRID_NODE_RATE_LIMIT": "0",
            # Grids of many tests share this database, each on a Redis database of its own: a
            # watchdog would take the others' jobs for lost. Tests of the watchdog run with a
            # database of their own (tests/test_lost_messages.py, the chaos suite).
            "GRID_WATCHDOG_SECONDS": "3600",
            # Most tests' grids have one node per capability, which no other node can check:
            # results are taken as they come there. Checking results by replicas is tested on
            # grids of several nodes and owners (tests/test_validation.py, the demo).
            "GRID_VALIDATION": "false",
            # Every test speaks from 127.0.0.1, many with one token, polling jobs: the API's limits
            # are far above what the suite sends. tests/test_api_limits_and_tokens.py sets small ones.
            "GRID_API_SUBMIT_LIMIT": "100000 per minute",
            "GRID_API_READ_LIMIT": "100000 per minute",
            "GRID_API_ADDRESS_LIMIT": "100000 per minute",
            "GRID_API_AUTH_FAILURE_LIMIT": "100000 per minute",
            "GRID_API_WORK_LIMIT": "100000 per minute",
            # Webhooks to the tests' receivers on http://127.0.0.1 (refused in production), retried
            # for seconds, not an hour. tests/test_webhooks.py checks the production defaults too.
            "GRID_WEBHOOK_ALLOW_HTTP": "true",
            "GRID_WEBHOOK_ALLOW_PRIVATE": "true",
            "GRID_WEBHOOK_RETRY_SECONDS": "6",
            "GRID_WEBHOOK_RETRY_BASE_SECONDS": "0.3",
            "GRID_WEBHOOK_TIMEOUT_SECONDS": "2",
        }
    )
    upgrade = manage("db", "upgrade")
    if upgrade.returncode != 0:
        raise pytest.UsageError(f"database migration failed:\n{upgrade.stdout}\n{upgrade.stderr}")


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in ("postgres", "redis"):
        server = _state.pop(name, None)
        if server is not None:
            server.stop()
    workdir = _state.pop("workdir", None)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def workdir() -> Path:
    return _state["workdir"]


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _state["redis"].url


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    return _state["postgres"]


@pytest.fixture(scope="session")
def flask_app():
    from app import create_app

    return create_app()


@pytest.fixture
def app_context(flask_app):
    with flask_app.app_context():
        yield flask_app


@pytest.fixture(scope="session")
def make_token(flask_app):
    """Create an API token for an owner with scopes; returns the token string."""
    from app.auth import create_token
    from app.extensions import db

    def make(
        owner: str = "member@koprogo.test", scopes: tuple[str, ...] = ("jobs:read", "jobs:write")
    ) -> str:
        with flask_app.app_context():
            _, token = create_token("test", owner, list(scopes))
            db.session.commit()
        return token

    return make


@pytest.fixture(scope="session")
def grid(workdir: Path) -> Iterator[Grid]:
    """The shared grid: API, ledger worker, an OCR-only node and an LLM-only node."""
    running = Grid(dict(os.environ), workdir / "logs")
    try:
        running.ledger_worker()
        running.worker("ocr-node", "ocr")
        running.worker("llm-node", "llm")
        running.api()
        yield running
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.stop()


@pytest.fixture(scope="session")
def client(grid: Grid, make_token) -> Client:
    return Client(grid.api_url, make_token("member@koprogo.test"))


@pytest.fixture(scope="session")
def admin(grid: Grid, make_token) -> Client:
    return Client(grid.api_url, make_token("treasurer@koprogo.test", ("admin",)))


@pytest.fixture
def fresh_grid(workdir: Path, request) -> Iterator[Grid]:
    """A grid of this test's own, on Redis database ``N`` so the shared nodes never see its work."""
    db_index = getattr(request, "param", 1)
    env = dict(os.environ)
    env["GRID_BROKER_URL"] = env["GRID_BROKER_URL"].rsplit("/", 1)[0] + f"/{db_index}"
    log_dir = workdir / "logs" / request.node.name
    log_dir.mkdir(parents=True, exist_ok=True)
    running = Grid(env, log_dir)
    try:
        yield running
    finally:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            print(running.logs())
        running.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
