"""When PostgreSQL or Redis is away, the API says so: 503, a stable code, ``Retry-After``; never
a 500. Its readiness check says which server is away, its liveness check that it still
answers; and once the server is back the API serves again, without a restart.

The servers are this module's own (``app.servers``, kept in a folder so they can be stopped and
started again with their data), really stopped; the API is a gunicorn process, as in
production.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

import celeryconfig
from app.servers import PostgresServer, RedisServer
from tests.grid import ROOT, Client, Grid, wait_for
from workers import protocol
from workers.protocol import signing

ADMIN = "operator@outage.test"
MEMBER = "member@outage.test"
TEXT = "Le conseil de copropriété s'est réuni le 3 mars pour examiner le budget. " * 4


class Outage:
    """This module's PostgreSQL, Redis and API, and what was made while they were up."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.postgres = PostgresServer(directory=root / "postgres")
        self.redis = RedisServer(directory=root / "redis")
        self.api: Grid | None = None

    def start(self) -> None:
        self.postgres.start()
        self.redis.start()
        self.env = {
            **os.environ,
            "GRID_DATABASE_URL": self.postgres.create_database("grid_outage"),
            "GRID_BROKER_URL": self.redis.url,
            "GRID_RETRY_AFTER_SECONDS": "7",
        }
        self.manage("db", "upgrade")
        self.admin_token = self.token(ADMIN, "admin")
        self.member_token = self.token(MEMBER, "jobs:read", "jobs:write", "nodes:write")
        (self.root / "logs").mkdir(exist_ok=True)
        self.api = Grid(self.env, self.root / "logs")
        self.api.api()
        self.admin = Client(self.api.api_url, self.admin_token)
        self.member = Client(self.api.api_url, self.member_token)
        enrolled = self.admin.post("/api/v1/nodes", json={"name": "outage-node"})
        assert enrolled.status_code == 201, enrolled.text
        self.node_id = enrolled.json()["node"]["id"]
        self.node_secret = enrolled.json()["secret"]
        # As if its worker had registered: pausing it then means telling that worker.
        with self.postgres.connect("grid_outage") as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE nodes SET worker = %s, queues = %s WHERE id = %s",
                ("outage-node@host", '["ocr"]', self.node_id),
            )
        self.participant_id = self.member.post("/api/v1/nodes", json={"name": "member-node"}).json()["node"][
            "participant"
        ]["id"]

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def token(self, owner: str, *scopes: str) -> str:
        return self.manage("tokens", "create", "--owner", owner, *(f"--scope={s}" for s in scopes)).split()[
            -1
        ]

    def start_record(self, task_id: str) -> dict:
        """What the node's worker sends to fetch a task's input (``workers.inputs``)."""
        body = protocol.body(
            "started",
            task_id=task_id,
            task_name=celeryconfig.TASK_SUMMARISE,
            node="outage-node@host",
            attempt=0,
            started_at=datetime.now(UTC).isoformat(),
        )
        return signing.sign({**body, "node_id": self.node_id}, self.node_secret)

    def submit(self) -> requests.Response:
        return self.member.post("/api/v1/jobs/summarise", json={"text": TEXT, "max_words": 20})

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
        self.redis.stop()
        self.postgres.stop()


@pytest.fixture(scope="module")
def outage(workdir: Path) -> Iterator[Outage]:
    root = workdir / "outage"
    root.mkdir()
    os.chmod(root, 0o755)  # PostgreSQL runs as its own user when the tests run as root
    running = Outage(root)
    try:
        running.start()
        yield running
    except BaseException:
        if running.api is not None:
            print(running.api.logs())
        raise
    finally:
        running.stop()


def assert_unavailable(response: requests.Response, code: str, what: str) -> None:
    assert response.status_code == 503, (what, response.status_code, response.text)
    assert response.json()["error"]["code"] == code, (what, response.text)
    assert response.headers.get("Retry-After") == "7", (what, response.headers)


def timed(call) -> tuple[requests.Response, float]:
    began = time.monotonic()
    response = call()
    return response, time.monotonic() - began


def test_with_postgresql_stopped_every_route_that_needs_it_answers_503_then_serves_again(outage):
    job_id = outage.submit().json()["id"]
    task_id = str(uuid.uuid4())
    routes = {
        "submit a job": outage.submit,
        "a job's status": lambda: outage.member.get(f"/api/v1/jobs/{job_id}"),
        "the job list": lambda: outage.member.get("/api/v1/jobs"),
        "cancel a job": lambda: outage.member.post(f"/api/v1/jobs/{job_id}/cancel"),
        "the node list": lambda: outage.admin.get("/api/v1/nodes"),
        "a node": lambda: outage.admin.get(f"/api/v1/nodes/{outage.node_id}"),
        "pause a node": lambda: outage.admin.post(f"/api/v1/nodes/{outage.node_id}/pause"),
        "enrol a node": lambda: outage.member.post("/api/v1/nodes", json={"name": "later-node"}),
        "the ledger": lambda: outage.admin.get("/api/v1/ledger/nodes"),
        "a statement": lambda: outage.member.get(f"/api/v1/participants/{outage.participant_id}/statement"),
        "a task's input": lambda: requests.post(
            f"{outage.api.api_url}/api/v1/work/{task_id}/input",
            json=outage.start_record(task_id),
            timeout=30,
        ),
    }
    outage.postgres.stop()
    try:
        for what, call in routes.items():
            response, seconds = timed(call)
            assert_unavailable(response, "database_unavailable", what)
            assert seconds < 5, (what, seconds)
        ready = requests.get(f"{outage.api.api_url}/readyz", timeout=30)
        assert_unavailable(ready, "database_unavailable", "readiness")
        assert ready.json()["checks"] == {"database": "unavailable", "broker": "ok"}
        assert requests.get(f"{outage.api.api_url}/healthz", timeout=30).status_code == 200  # alive
    finally:
        outage.postgres.start()
    # Back, without restarting the API: the pool's dead connections are replaced.
    assert requests.get(f"{outage.api.api_url}/readyz", timeout=30).json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok"},
    }
    for what in ("a job's status", "the job list", "the node list", "a node", "the ledger", "a statement"):
        response = routes[what]()
        assert response.status_code == 200, (what, response.text)
    assert outage.submit().status_code == 202
    assert routes["pause a node"]().status_code == 200
    assert routes["cancel a job"]().status_code == 200


def test_with_redis_stopped_routes_that_need_it_answer_503_and_the_others_serve(outage):
    queued = outage.submit().json()["id"]
    api = outage.api.api_url
    outage.redis.stop()
    try:
        response, seconds = timed(outage.submit)
        assert_unavailable(response, "broker_unavailable", "submit a job")
        assert seconds < 5, seconds
        # The job it recorded says why it never ran.
        failed = outage.member.get("/api/v1/jobs", params={"state": "failed", "per_page": 1}).json()
        assert failed["items"][0]["error"]["code"] == "broker_unavailable"
        for what, call in {
            "pause a node": lambda: outage.admin.post(f"/api/v1/nodes/{outage.node_id}/pause"),
            "resume a node": lambda: outage.admin.post(f"/api/v1/nodes/{outage.node_id}/resume"),
            "enrol a node (its broker user)": lambda: outage.admin.post(
                "/api/v1/nodes", json={"name": "redis-less"}
            ),
        }.items():
            response, seconds = timed(call)
            assert_unavailable(response, "broker_unavailable", what)
            assert seconds < 10, (what, seconds)
        # What needs only PostgreSQL serves, and promptly: progress is best effort.
        for what, call in {
            "a job's status": lambda: outage.member.get(f"/api/v1/jobs/{queued}"),
            "the job list": lambda: outage.member.get("/api/v1/jobs"),
            "the node list": lambda: outage.admin.get("/api/v1/nodes"),
            "the ledger": lambda: outage.admin.get("/api/v1/ledger/nodes"),
        }.items():
            response, seconds = timed(call)
            assert response.status_code == 200, (what, response.text)
            assert seconds < 3, (what, seconds)
        # A cancellation is kept; telling the workers is best effort (a cancelled job's task
        # gets no input: app.api.work).
        assert outage.member.post(f"/api/v1/jobs/{queued}/cancel").json()["state"] == "cancelled"
        ready = requests.get(f"{api}/readyz", timeout=30)
        assert_unavailable(ready, "broker_unavailable", "readiness")
        assert ready.json()["checks"] == {"database": "ok", "broker": "unavailable"}
        assert requests.get(f"{api}/healthz", timeout=30).status_code == 200
    finally:
        outage.redis.start()
    wait_for(lambda: requests.get(f"{api}/readyz", timeout=30).status_code == 200, 30, "readiness")
    assert outage.submit().status_code == 202
    assert outage.admin.post(f"/api/v1/nodes/{outage.node_id}/pause").json()["state"] == "paused"
    assert outage.admin.post(f"/api/v1/nodes/{outage.node_id}/resume").status_code == 200
