"""A volunteer's machine dies mid-task: the work is handed on and metered exactly once."""

from __future__ import annotations

import signal

from sqlalchemy import select

from tests.documents import FRENCH_LINES, text_pdf
from tests.grid import Client, wait_for

# Short limits for this grid only, so the dead node's message comes back in seconds; long enough
# for the rescue's six pages on a loaded two-core machine (20 s was exceeded once).
FAST_RECOVERY = {
    "GRID_SOFT_TIME_LIMIT": "30",
    "GRID_HARD_TIME_LIMIT": "35",
    "GRID_VISIBILITY_TIMEOUT": "40",
    "GRID_RESTORE_INTERVAL": "2",
}


def test_worker_killed_mid_task_job_completes_on_another_worker_metered_once(
    fresh_grid, make_token, flask_app
):
    fresh_grid.env.update(FAST_RECOVERY)
    fresh_grid.ledger_worker()
    doomed = fresh_grid.worker("doomed-node", "ocr")
    client = Client(fresh_grid.api(), make_token("member@koprogo.test"))
    pages = [FRENCH_LINES] * 6  # about a second a page: time enough to kill it mid-way

    job = client.submit_document("ocr", text_pdf(pages), "long.pdf", languages="fra")

    before = client.wait_pages(job["id"], 2)
    assert before["steps"][0]["node"].startswith("doomed-node@")
    doomed.kill(signal.SIGKILL)
    wait_for(lambda: not doomed.alive(), 10, "doomed-node to die")

    fresh_grid.worker("rescue-node", "ocr")
    done = client.wait(job["id"], timeout=120)

    assert done["state"] == "succeeded", done
    step = done["steps"][0]
    assert step["node"].startswith("rescue-node@")
    assert done["result"]["pages"] == 6

    from app.extensions import db
    from app.models import JobStep, LedgerEntry

    with flask_app.app_context():
        task_id = db.session.scalar(select(JobStep.task_id).where(JobStep.job_id == job["id"]))
        entries = db.session.scalars(select(LedgerEntry).where(LedgerEntry.task_id == task_id)).all()
    assert len(entries) == 1
    assert entries[0].node.startswith("rescue-node@")
    assert (entries[0].outcome, entries[0].units) == ("succeeded", 6)
    assert 0 < entries[0].granted_ms <= entries[0].claimed_ms  # one grant, for the completed execution
