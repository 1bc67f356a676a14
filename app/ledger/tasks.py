"""The coordinator's tasks.

``started`` and ``record`` are the names of the ``ledger`` queue's messages; the ledger worker
enters them in batches (``app.ledger.consumer``), and these tasks enter one at a time whatever
a plain Celery worker would take. A record must never be lost: database faults are retried
without limit, and the message is acknowledged only once the record is committed.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from sqlalchemy.exc import OperationalError

import celeryconfig
from app.extensions import db
from app.ledger import recorder, settlement

_RETRY = {
    "autoretry_for": (OperationalError,),
    "max_retries": None,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "ignore_result": True,
}


@shared_task(name=celeryconfig.TASK_LEDGER_STARTED, **_RETRY)
def started(record: dict[str, Any]) -> None:
    """A volunteer began an execution."""
    recorder.apply([("started", record)])


@shared_task(name=celeryconfig.TASK_LEDGER_RECORD, **_RETRY)
def record(record: dict[str, Any]) -> None:
    """A volunteer finished an execution: enter it in the ledger and move the job on."""
    recorder.apply([("completed", record)])


@shared_task(name=celeryconfig.TASK_LEDGER_SETTLE_DUE, **_RETRY)
def settle_due() -> list[str]:
    """Close every ended period that is still open (run daily by the beat schedule)."""
    try:
        settled = settlement.settle_due()
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return settled
