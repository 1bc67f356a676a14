"""Every change of a job's or a step's state, in one place.

A job is ``queued``, ``running``, then ``succeeded``, ``failed`` or ``cancelled``; each of its
steps ``queued``, ``running`` (a node fetched its input), ``retrying``, then ``verifying``
(its result is in and another node re-runs it, ``app.validation``), then ``succeeded``,
``failed``, ``cancelled`` or ``skipped`` (``app.models.JobState``, ``StepState``). A replica of
a step (a row of its own, ``JobStep.replica_of``) goes ``queued``, ``running``, ``retrying``,
then ``succeeded``, ``failed``, ``cancelled`` or ``skipped`` without moving its job: only the
step it checks does, once its results are compared. The API and
``manage.py`` (``app.jobs``: submit, cancel), the ledger (``app.ledger.executions``: a start,
an entered completion) and the sweeper of stalled jobs (``app.jobs.fail_stalled``) all move
jobs and steps through these functions, and nothing else assigns a state.

The callers check what may happen (a final job or step is never moved back: the ledger refuses
or ignores late records, a cancel of a finished job is a conflict) and commit; these functions
only change the rows, and take every time they record from the caller or from ``utcnow``.
A job that ends lets its input go: no step will fetch it again, and the coordinator keeps a
member's document no longer than the work needs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, event
from sqlalchemy.orm import Session

from app import webhooks
from app.extensions import db
from app.models import Job, JobInput, JobState, JobStep, StepState, utcnow


def step_dispatched(step: JobStep, at: datetime) -> None:
    """The step was sent (or is about to be, once the transaction commits) to its queue."""
    step.dispatched_at = at


def step_started(step: JobStep, worker: str, attempt: int, at: datetime, node_id: str | None = None) -> None:
    """A node began an attempt of the step (the coordinator saw it fetch its input); its job
    runs from the first one."""
    step.state = StepState.RUNNING
    step.node = worker
    step.node_id = node_id or step.node_id
    step.attempts = max(step.attempts, attempt + 1)
    step.started_at = step.started_at or at
    job = step.job
    if job.state == JobState.QUEUED:
        job.state = JobState.RUNNING
        job.started_at = at
        webhooks.job_changed(job)


def step_succeeded(
    step: JobStep, result: Any, *, at: datetime, wall_ms: int | None = None, cpu_ms: int | None = None
) -> JobStep | None:
    """The step's result is entered (or, checked, validated). Returns the step that works on it,
    marked dispatched, for the caller to send once committed (None if there is none, or it was
    sent already); the job succeeds with its last step."""
    step.state = StepState.SUCCEEDED
    step.result = result
    step.error_code = step.error_message = None
    step.finished_at = at
    if wall_ms is not None:
        step.wall_ms, step.cpu_ms = wall_ms, cpu_ms
    job = step.job
    following = [s for s in job.steps if s.position == step.position + 1]
    send = None
    if following and following[0].dispatched_at is None:
        send = following[0]
        step_dispatched(send, at)
    if all(s.state == StepState.SUCCEEDED for s in job.steps):
        succeed_job(job, step.finished_at)
    elif job.state == JobState.QUEUED:
        job.state = JobState.RUNNING
        webhooks.job_changed(job)
    return send


def step_verifying(step: JobStep, result: Any, *, wall_ms: int, cpu_ms: int) -> None:
    """The step's result is in and is re-run on another node: it is held back from the user
    (``app.jobs.result_of`` shows succeeded steps only) until the results are compared."""
    step.state = StepState.VERIFYING
    step.result = result
    step.error_code = step.error_message = None
    step.wall_ms, step.cpu_ms = wall_ms, cpu_ms


def replica_succeeded(replica: JobStep, result: Any, *, at: datetime, wall_ms: int, cpu_ms: int) -> None:
    """A replica's result is entered: it waits to be compared with its step's."""
    replica.state = StepState.SUCCEEDED
    replica.result = result
    replica.error_code = replica.error_message = None
    replica.finished_at = at
    replica.wall_ms, replica.cpu_ms = wall_ms, cpu_ms


def replica_failed(replica: JobStep, code: str, message: str, *, at: datetime) -> None:
    """A replica failed for good: its step's job goes on (another replica may be asked for)."""
    replica.state = StepState.FAILED
    replica.error_code = code
    replica.error_message = message
    replica.finished_at = at


def step_failed(step: JobStep, code: str, message: str, *, at: datetime, wall_ms: int, cpu_ms: int) -> None:
    """The step failed for good (no retry left, or an error retrying cannot mend): so does its job."""
    step.state = StepState.FAILED
    step.error_code = code
    step.error_message = message
    step.finished_at = at
    step.wall_ms, step.cpu_ms = wall_ms, cpu_ms
    fail_job(step.job, step.error_code, f"{step.name}: {step.error_message}")


def step_retrying(step: JobStep, code: str | None, message: str | None) -> None:
    """An attempt failed or its process was lost: the step runs again."""
    step.state = StepState.RETRYING
    step.error_code = code
    step.error_message = message


def succeed_job(job: Job, at: datetime) -> None:
    job.state = JobState.SUCCEEDED
    job.finished_at = at
    _forget_input(job)
    webhooks.job_changed(job)


_TO_FORGET = "grid_inputs_to_forget"


def _forget_input(job: Job) -> None:
    """The job is over: its document or text is deleted (its steps' results stay), in one
    statement for all the jobs a transaction ended, as it commits."""
    db.session.info.setdefault(_TO_FORGET, set()).add(job.id)


@event.listens_for(Session, "before_commit")
def _delete_forgotten_inputs(session: Session) -> None:
    ended = session.info.pop(_TO_FORGET, None)
    if ended:
        session.execute(
            delete(JobInput).where(JobInput.job_id.in_(ended)).execution_options(synchronize_session=False)
        )


@event.listens_for(Session, "after_rollback")
def _keep_inputs_of_rolled_back_ends(session: Session) -> None:
    session.info.pop(_TO_FORGET, None)


def fail_job(job: Job, code: str, message: str) -> None:
    """The job failed (a step failed, it could not be queued, or it stalled): its steps not
    finished yet are skipped."""
    job.state = JobState.FAILED
    job.error_code = code
    job.error_message = message
    job.finished_at = utcnow()
    for other in job.steps:
        for row in (other, *other.replicas):
            if row.state not in StepState.FINAL:
                row.state = StepState.SKIPPED
    _forget_input(job)
    webhooks.job_changed(job)


def cancel_job(job: Job) -> list[JobStep]:
    """The submitter cancelled the job: it and its unfinished steps (and their replicas) are
    cancelled. Returns those, whose tasks the caller revokes once committed."""
    pending = [
        row for step in job.steps for row in (step, *step.replicas) if row.state not in StepState.FINAL
    ]
    job.state = JobState.CANCELLED
    job.finished_at = utcnow()
    job.error_code, job.error_message = "cancelled", "Cancelled at the submitter's request."
    for step in pending:
        step.state = StepState.CANCELLED
    _forget_input(job)
    webhooks.job_changed(job)
    return pending
