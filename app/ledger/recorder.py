"""Apply what volunteers report to the database: step and job states, and ledger entries.

Called by the ``ledger`` queue's tasks inside an application context; the caller commits.
Records may arrive out of order (a retry's start before the failed attempt's record) and more
than once (a redelivered message): every change here is idempotent and never moves a step or a
job back from a final state.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.ledger import rules
from app.models import Job, JobState, JobStep, LedgerEntry, StepState, utcnow

log = logging.getLogger(__name__)


def _when(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ms(seconds: Any) -> int:
    try:
        return max(0, round(float(seconds) * 1000))
    except (TypeError, ValueError):
        return 0


def _step(task_id: str) -> JobStep | None:
    return db.session.scalar(select(JobStep).where(JobStep.task_id == str(task_id)))


def on_started(record: dict[str, Any]) -> None:
    """A node began an execution: the step is running there."""
    step = _step(record.get("task_id", ""))
    if step is None:
        log.warning("start of a task we never dispatched: %s", record.get("task_id"))
        return
    if step.state in StepState.FINAL or step.job.state in JobState.FINAL:
        return
    now = utcnow()
    step.state = StepState.RUNNING
    step.node = str(record.get("node", ""))[:200]
    step.attempts = max(step.attempts, int(record.get("attempt", 0)) + 1)
    step.started_at = step.started_at or now
    job = step.job
    if job.state == JobState.QUEUED:
        job.state = JobState.RUNNING
        job.started_at = now


def on_completed(record: dict[str, Any]) -> LedgerEntry | None:
    """An execution ended: enter it in the ledger once, then move its step and job on."""
    step = _step(record.get("task_id", ""))
    if step is None:
        log.warning("record for a task we never dispatched: %s", record.get("task_id"))
        return None
    entry = _enter(step, record)
    if entry is None:
        return None  # this execution is already in the ledger
    job = step.job
    if job.state in JobState.FINAL or step.state in StepState.FINAL:
        return entry  # a cancelled job, or a late duplicate of a finished step
    outcome = entry.outcome
    error = record.get("error") or {}
    step.node = entry.node
    step.attempts = max(step.attempts, entry.attempt + 1)
    if outcome == "succeeded":
        step.state = StepState.SUCCEEDED
        step.result = record.get("result")
        step.error_code = step.error_message = None
        step.finished_at = utcnow()
        step.wall_ms, step.cpu_ms = entry.wall_ms, entry.cpu_ms
        if all(s.state == StepState.SUCCEEDED for s in job.steps):
            job.state = JobState.SUCCEEDED
            job.finished_at = step.finished_at
        elif job.state == JobState.QUEUED:
            job.state = JobState.RUNNING
    elif record.get("final"):
        step.state = StepState.FAILED
        step.error_code = str(error.get("code") or "internal_error")[:64]
        step.error_message = str(error.get("message") or "")
        step.finished_at = utcnow()
        step.wall_ms, step.cpu_ms = entry.wall_ms, entry.cpu_ms
        fail_job(job, step.error_code, f"{step.name}: {step.error_message}")
    else:  # retried or lost: it will run again
        step.state = StepState.RETRYING
        step.error_code = str(error.get("code") or "")[:64] or None
        step.error_message = error.get("message")
    return entry


def fail_job(job: Job, code: str, message: str) -> None:
    job.state = JobState.FAILED
    job.error_code = code
    job.error_message = message
    job.finished_at = utcnow()
    for other in job.steps:
        if other.state not in StepState.FINAL:
            other.state = StepState.SKIPPED


def _enter(step: JobStep, record: dict[str, Any]) -> LedgerEntry | None:
    attempt = int(record.get("attempt", 0))
    exists = db.session.scalar(
        select(LedgerEntry.id).where(LedgerEntry.task_id == step.task_id, LedgerEntry.attempt == attempt)
    )
    if exists is not None:
        log.info("duplicate record for %s attempt %s ignored", step.task_id, attempt)
        return None
    outcome = str(record.get("outcome", "failed"))
    claimed_ms = _ms(record.get("wall_seconds"))
    granted = rules.grant(outcome, claimed_ms)
    capability = step.queue
    error = record.get("error") or {}
    entry = LedgerEntry(
        task_id=step.task_id,
        attempt=attempt,
        job_id=step.job_id,
        step_id=step.id,
        node=str(record.get("node", ""))[:200],
        capability=capability,
        task_name=step.task_name,
        outcome=outcome[:16],
        error_code=(str(error["code"])[:64] if error.get("code") else None),
        started_at=_when(record.get("started_at")),
        finished_at=_when(record.get("finished_at")),
        wall_ms=claimed_ms,
        cpu_ms=_ms(record.get("cpu_seconds")),
        unit=rules.UNIT_OF_CAPABILITY.get(capability, "unit"),
        units=rules.units_of(capability, record.get("units") or {}),
        claimed_ms=claimed_ms,
        granted_ms=granted.granted_ms,
        grant_basis=granted.basis,
        signature=record.get("signature"),
    )
    try:
        with db.session.begin_nested():  # a concurrent ledger worker may enter it first
            db.session.add(entry)
    except IntegrityError:
        log.info("duplicate record for %s attempt %s ignored", step.task_id, attempt)
        return None
    return entry
