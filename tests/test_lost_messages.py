"""Nothing stuck: a step whose message vanished (a worker killed between taking it and
recording it in flight, a send that failed after its commit) is sent again by the coordinator
as a new attempt; a message that only waits for a node is left alone; a step lost at every
attempt fails its job with a reason."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import redis
from sqlalchemy import select

import celeryconfig
from tests.documents import FRENCH_LINES, text_pdf
from tests.grid import ROOT, Client, wait_for

DB = 10
FAST = {"GRID_LOST_GRACE": "3", "GRID_WATCHDOG_SECONDS": "1"}


@pytest.fixture
def own_database(postgres, fresh_grid, request):
    """A database of this test's own for its grid: the watchdog looks at every job of its
    database, and the session's holds other tests' jobs, dispatched on other Redis databases."""
    name = f"grid_lost_{request.node.name[5:20].replace('-', '_').strip('_')}_{os.getpid()}"
    url = postgres.create_database(name)
    fresh_grid.env.update({**FAST, "GRID_DATABASE_URL": url})
    migrated = subprocess.run(
        [sys.executable, "manage.py", "db", "upgrade"],
        cwd=ROOT,
        env=fresh_grid.env,
        capture_output=True,
        text=True,
    )
    assert migrated.returncode == 0, migrated.stderr
    from app import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": url.replace("postgresql://", "postgresql+psycopg2://", 1)})


def _token(grid) -> str:
    made = subprocess.run(
        [sys.executable, "manage.py", "tokens", "create", "--owner", "member@koprogo.test",
         "--scope", "jobs:read", "--scope", "jobs:write"],
        cwd=ROOT, env=grid.env, capture_output=True, text=True,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def _worker(grid, flask_app, name: str):
    """A volunteer enrolled in this test's database."""
    from app import nodes
    from app.extensions import db

    with flask_app.app_context():
        node = nodes.create(name, "volunteer@koprogo.test", broker_url=grid.env["GRID_BROKER_URL"])
        db.session.commit()
        env = {"GRID_NODE_ID": node.id, "GRID_NODE_SECRET": nodes.node_secret(node)}
    return grid.worker(name, "ocr", env=env)


def _entries(flask_app, job_id: str) -> list[tuple[int, str, str, int]]:
    from app.extensions import db
    from app.models import LedgerEntry

    with flask_app.app_context():
        rows = db.session.scalars(
            select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.attempt)
        ).all()
        return [(e.attempt, e.outcome, e.grant_basis, e.granted_ms) for e in rows]


def _lose(admin: redis.Redis, queue: str = "ocr") -> int:
    """What a worker killed between BRPOP and recording the message in flight does."""
    return sum(
        len([admin.rpop(key) for _ in range(admin.llen(key))]) for key in celeryconfig.queue_lists(queue)
    )


def _queued(admin: redis.Redis, queue: str = "ocr") -> int:
    return sum(admin.llen(key) for key in celeryconfig.queue_lists(queue))


@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_a_vanished_message_is_sent_again_and_a_waiting_one_is_left_alone(fresh_grid, own_database):
    flask_app = own_database
    admin = redis.Redis.from_url(fresh_grid.env["GRID_BROKER_URL"])
    admin.delete(*celeryconfig.queue_lists("ocr"))
    fresh_grid.ledger_worker()
    client = Client(fresh_grid.api(), _token(fresh_grid))
    waiting = client.submit_document("ocr", text_pdf([FRENCH_LINES[:2]]), languages="fra")
    time.sleep(6)  # past the grace: its message is still on the queue, nobody serves it yet
    assert _entries(flask_app, waiting["id"]) == [] and _queued(admin) == 1
    assert _lose(admin) == 1

    resent = wait_for(lambda: _queued(admin) == 1 and _entries(flask_app, waiting["id"]), 30, "a resend")

    assert resent == [(0, "lost", "redispatched", 0)]
    assert client.job(waiting["id"])["steps"][0]["state"] == "retrying"
    _worker(fresh_grid, flask_app, "lost-ocr-node")
    done = client.wait(waiting["id"], timeout=90)
    assert done["state"] == "succeeded", done
    assert done["steps"][0]["attempts"] == 2
    attempts = _entries(flask_app, waiting["id"])
    assert [(a, outcome) for a, outcome, _, _ in attempts] == [(0, "lost"), (1, "succeeded")]
    assert attempts[1][3] > 0  # the attempt that ran is paid, once


@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_a_step_lost_at_every_attempt_fails_its_job_with_a_reason(fresh_grid, own_database):
    import celeryconfig

    flask_app = own_database
    admin = redis.Redis.from_url(fresh_grid.env["GRID_BROKER_URL"])
    admin.delete(*celeryconfig.queue_lists("ocr"))
    fresh_grid.ledger_worker()
    client = Client(fresh_grid.api(), _token(fresh_grid))
    job = client.submit_document("ocr", text_pdf([FRENCH_LINES[:2]]), languages="fra")

    def lost_again() -> str | None:
        _lose(admin)
        state = client.job(job["id"])["state"]
        return state if state in ("failed", "succeeded") else None

    assert wait_for(lost_again, 120, "the job to end", interval=0.5) == "failed"
    failed = client.job(job["id"])
    assert failed["error"]["code"] == "worker_lost", failed
    attempts = _entries(flask_app, job["id"])
    assert [a for a, *_ in attempts] == list(range(celeryconfig.MAX_RETRIES + 1))
    assert all(outcome == "lost" and granted == 0 for _, outcome, _, granted in attempts)


@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_a_node_restarted_after_a_kill_gets_its_task_back_without_waiting_the_visibility_timeout(
    fresh_grid, own_database
):
    import signal

    flask_app = own_database
    # A long visibility timeout (as in production): without the coordinator's help, the task
    # would wait five minutes for the broker to hand it on.
    fresh_grid.env.update({"GRID_VISIBILITY_TIMEOUT": "300", "GRID_RESTORE_INTERVAL": "1"})
    fresh_grid.ledger_worker()
    node = _worker(fresh_grid, flask_app, "restarted-node")
    client = Client(fresh_grid.api(), _token(fresh_grid))
    job = client.submit_document("ocr", text_pdf([FRENCH_LINES] * 6), "long.pdf", languages="fra")
    client.wait_pages(job["id"], 1)
    node.kill(signal.SIGKILL)  # the whole worker, main process included: its message stays in flight
    wait_for(lambda: not node.alive(), 10, "the node's worker to die")
    killed_at = time.monotonic()

    fresh_grid.worker("restarted-node", "ocr", env=node.env)  # systemd starts it again; it registers
    done = client.wait(job["id"], timeout=120)

    assert done["state"] == "succeeded", done
    assert time.monotonic() - killed_at < 100  # well within the 300 s visibility timeout
    entries = _entries(flask_app, job["id"])
    assert [(attempt, outcome) for attempt, outcome, _, _ in entries] == [(0, "succeeded")]
