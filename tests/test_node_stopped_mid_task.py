"""A member stops their node mid-task the way systemd does: SIGTERM to every process of the
service. The work had no outcome there; it is handed on, not failed."""

from __future__ import annotations

import signal

from sqlalchemy import select

from tests.documents import FRENCH_LINES, text_pdf
from tests.grid import Client, wait_for


def _entries(flask_app, job_id: str):
    from app.extensions import db
    from app.models import LedgerEntry

    with flask_app.app_context():
        return db.session.scalars(
            select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.attempt)
        ).all()


def test_a_node_stopped_with_sigterm_mid_task_hands_the_job_on_instead_of_failing_it(
    fresh_grid, make_token, flask_app
):
    fresh_grid.ledger_worker()
    stopping = fresh_grid.worker("stopping-node", "ocr")
    client = Client(fresh_grid.api(), make_token("member@koprogo.test"))
    job = client.submit_document("ocr", text_pdf([FRENCH_LINES] * 6), languages="fra")

    client.wait_pages(job["id"], 2)
    stopping.kill(signal.SIGTERM)  # the whole process group, as systemd's KillMode=control-group
    wait_for(lambda: not stopping.alive(), 30, "stopping-node to exit")
    fresh_grid.worker("rescue-node", "ocr")

    done = client.wait(job["id"], timeout=120)

    # The dying pool process must not report the interruption as a final failure
    # (internal_error): that failed the job while Celery was already retrying it.
    assert done["state"] == "succeeded", done
    assert done["steps"][0]["node"].startswith("rescue-node@")
    assert done["steps"][0]["attempts"] == 2
    lost, succeeded = _entries(flask_app, job["id"])
    assert (lost.attempt, lost.outcome, lost.error_code, lost.granted_ms) == (0, "lost", "worker_lost", 0)
    assert lost.node.startswith("stopping-node@")
    assert (succeeded.attempt, succeeded.outcome, succeeded.units) == (1, "succeeded", 6)
