"""Work that overruns its time limit, and pool processes that die, end in the ledger and in the
job's state, never stuck `running`."""

from __future__ import annotations

import os
import signal
import subprocess

from sqlalchemy import select

from tests.documents import FRENCH_LINES, text_pdf
from tests.grid import Client


def _entries(flask_app, job_id: str):
    from app.extensions import db
    from app.models import LedgerEntry

    with flask_app.app_context():
        return db.session.scalars(
            select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.attempt)
        ).all()


def _pool_children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(line) for line in out.split()]


def test_job_over_its_time_limit_fails_with_time_limit_and_the_worker_goes_on(
    fresh_grid, make_token, flask_app
):
    fresh_grid.env.update(
        {"GRID_SOFT_TIME_LIMIT": "2", "GRID_HARD_TIME_LIMIT": "4", "GRID_VISIBILITY_TIMEOUT": "30"}
    )
    fresh_grid.ledger_worker()
    fresh_grid.worker("slow-node", "ocr")
    client = Client(fresh_grid.api(), make_token("member@koprogo.test"))

    job = client.wait(client.submit_document("ocr", text_pdf([FRENCH_LINES] * 10), languages="fra")["id"])

    assert job["state"] == "failed", job
    assert job["error"]["code"] == "time_limit"
    assert "2 s" in job["steps"][0]["error"]["message"]
    (entry,) = _entries(flask_app, job["id"])
    assert (entry.outcome, entry.error_code) == ("failed", "time_limit")
    # Ten pages cost far more than a 2 s limit allows: the limit was the coordinator's mistake,
    # so the node is paid for the time it was allowed (docs/decisions/0004).
    assert entry.grant_basis.startswith("time_limit_too_low")
    assert 0 < entry.granted_ms == min(entry.claimed_ms, entry.observed_ms, 2000)

    small = client.wait(client.submit_document("ocr", text_pdf([FRENCH_LINES[:2]]), languages="fra")["id"])
    assert small["state"] == "succeeded", small
    assert small["steps"][0]["node"].startswith("slow-node@")


def test_pool_process_killed_mid_task_is_retried_and_both_attempts_are_metered(
    fresh_grid, make_token, flask_app
):
    fresh_grid.ledger_worker()
    node = fresh_grid.worker("fragile-node", "ocr")
    client = Client(fresh_grid.api(), make_token("member@koprogo.test"))
    job = client.submit_document("ocr", text_pdf([FRENCH_LINES] * 6), languages="fra")

    client.wait_pages(job["id"], 2)
    (child,) = _pool_children(node.proc.pid)
    os.kill(child, signal.SIGKILL)

    done = client.wait(job["id"], timeout=120)

    assert done["state"] == "succeeded", done
    assert done["steps"][0]["attempts"] == 2
    lost, succeeded = _entries(flask_app, job["id"])
    assert (lost.attempt, lost.outcome, lost.error_code, lost.granted_ms) == (0, "lost", "worker_lost", 0)
    assert (succeeded.attempt, succeeded.outcome, succeeded.units) == (1, "succeeded", 6)
    assert node.alive()
