"""The coordinator's own tasks, on the ``coordinator`` queue: settlement, the sweep of stalled
jobs and the erasure of expired content, run by the ledger worker on the beat schedule. (The
``ledger`` queue's records are not tasks: the ledger worker enters them in batches,
``app.ledger.intake``.)
"""

from __future__ import annotations

from celery import shared_task
from sqlalchemy.exc import OperationalError

import celeryconfig
from app import jobs
from app.extensions import db
from app.ledger import settlement

_RETRY = {
    "autoretry_for": (OperationalError,),
    "max_retries": None,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "ignore_result": True,
}


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


@shared_task(name=celeryconfig.TASK_SWEEP_STALLED, **_RETRY)
def sweep_stalled() -> list[str]:
    """Fail the jobs no verified result can reach any more (run every few minutes)."""
    try:
        failed = jobs.fail_stalled()
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return failed


@shared_task(name=celeryconfig.TASK_ERASE_EXPIRED, **_RETRY)
def erase_expired() -> int:
    """Erase the content of jobs ended more than ``RETENTION_DAYS`` ago, one batch (run hourly by
    the beat schedule; app.gdpr). Returns how many: never their ids' content, nor anything of it."""
    from app import gdpr

    try:
        return len(gdpr.erase_expired())
    except Exception:
        db.session.rollback()
        raise
