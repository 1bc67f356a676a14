"""The coordinator watches what it dispatched: a step whose message is nowhere any more is sent
again, as a new attempt, and a job that can no longer end is failed.

A step's message is always somewhere while the step can still progress: on its queue (waiting
for a node), in the in-flight hash (a node holds it, runs it, waits for its retry time, or died
with it and the broker will put it back), or in the ledger (its completion or retry entered).
It can vanish: a worker's main process killed between taking it off the queue and recording it
in flight (kombu's Redis transport pops first), a send that failed after the commit that
decided it, a broker that lost its last second of writes. ``revive`` finds the steps that have
shown no sign of life for ``cc.LOST_GRACE_SECONDS`` and whose task id is in no queue and not in
flight, enters their current attempt as ``lost`` (granted nothing, basis ``redispatched``: a
late record for it is refused) and sends the next attempt, or fails the job (``worker_lost``)
when no attempt is left. Run by the ledger worker's upkeep (``app.upkeep``), with the
stalled sweep (``app.jobs.fail_stalled``), wherever the ledger worker runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta

import redis
from sqlalchemy import func, select

import celeryconfig as cc
from app import broker_upkeep, jobs, lifecycle, registry
from app.extensions import db
from app.ledger import batch, periods, rules
from app.ledger.context import Context
from app.ledger.values import aware
from app.models import ExecutionSighting, Job, JobState, JobStep, LedgerEntry, Node, StepState, utcnow
from app.validation import checks
from workers.protocol import errors

log = logging.getLogger(__name__)

#: Queues, or an in-flight hash, longer than this are not scanned (the scan reads every
#: message): their steps wait for the stalled sweep.
MAX_SCANNED_MESSAGES = 50_000
_CHUNK = 1000


def _messages(admin: redis.Redis) -> Iterator[tuple[str | None, bytes]]:
    """Every volunteer task message in the broker: queued (every priority; no tag) or in flight
    (with its delivery tag)."""
    for queue in cc.VOLUNTEER_QUEUES:
        for key in cc.queue_lists(queue):
            length = admin.llen(key)
            if length > MAX_SCANNED_MESSAGES:
                raise OverflowError(f"queue {key!r} holds {length} messages")
            for start in range(0, length, _CHUNK):
                for raw in admin.lrange(key, start, start + _CHUNK - 1):
                    yield None, raw
    in_flight = admin.hlen("unacked")
    if in_flight > MAX_SCANNED_MESSAGES:
        raise OverflowError(f"{in_flight} messages in flight")
    for tag, raw in admin.hscan_iter("unacked", count=_CHUNK):
        yield tag.decode(), raw


def present(admin: redis.Redis) -> dict[str, list[str | None]]:
    """Where every volunteer task message the broker holds is, by task id: ``None`` for a copy
    on a queue, its delivery tag for one in flight."""
    found: dict[str, list[str | None]] = {}
    for tag, raw in _messages(admin):
        try:
            message = json.loads(raw)
            if isinstance(message, list):  # in flight: [message, exchange, routing key]
                message = message[0]
            found.setdefault(str(message["headers"]["id"]), []).append(tag)
        except (ValueError, KeyError, TypeError, IndexError):
            continue  # not a task message (a forged entry): nothing to find there
    return found


#: A step's last sign of life: sent, an input fetched, a record entered.
_LIFE = func.greatest(
    JobStep.dispatched_at,
    select(func.max(ExecutionSighting.first_seen_at))
    .where(ExecutionSighting.task_id == JobStep.task_id)
    .correlate(JobStep)
    .scalar_subquery(),
    select(func.max(LedgerEntry.received_at))
    .where(LedgerEntry.task_id == JobStep.task_id)
    .correlate(JobStep)
    .scalar_subquery(),
)


def _last_life(step: JobStep) -> datetime:
    """When the step last showed a sign of life (``_LIFE``), read again under its job's lock."""
    return aware(db.session.scalar(select(_LIFE).where(JobStep.id == step.id)))


def current_attempt(step: JobStep) -> int:
    """The attempt the step's message carries now: the last one started and not ended, else
    the one after the last ended."""
    started = db.session.scalar(
        select(func.max(ExecutionSighting.attempt)).where(ExecutionSighting.task_id == step.task_id)
    )
    ended = db.session.scalar(
        select(func.max(LedgerEntry.attempt)).where(
            LedgerEntry.task_id == step.task_id, LedgerEntry.attempt >= 0
        )
    )
    if started is not None and (ended is None or started > ended):
        return started
    return 0 if ended is None else ended + 1


def revive(admin: redis.Redis, url: str | None = None, now: datetime | None = None) -> list[tuple[str, str]]:
    """Send again the steps whose messages vanished, and put back at once the messages held
    by nodes that are gone; ``(task id, what was done)`` for each. Commits each decision
    before its send."""
    now = now or utcnow()
    quiet = now - timedelta(seconds=cc.LOST_GRACE_SECONDS)
    # Only steps quiet for a round are looked at, their last sign of life computed in SQL: a
    # round costs a query, not a query per running step.
    rows = db.session.execute(
        select(JobStep.id, JobStep.task_id, JobStep.state, _LIFE)
        .join(Job)
        .where(
            Job.state.in_((JobState.QUEUED, JobState.RUNNING)),
            JobStep.state.in_((StepState.QUEUED, StepState.RUNNING, StepState.RETRYING)),
            JobStep.dispatched_at.is_not(None),
            _LIFE < now - timedelta(seconds=cc.WATCHDOG_SECONDS),
        )
        .order_by(JobStep.id)
    ).all()
    candidates = [step_id for step_id, _, _, life in rows if aware(life) < quiet]
    orphans = {
        task_id
        for step_id, task_id, state, _ in rows
        if state != StepState.QUEUED and _holders_gone(db.session.get(JobStep, step_id), now)
    }
    db.session.rollback()
    if not candidates and not orphans:
        return []
    try:
        held = present(admin)
    except OverflowError as exc:
        log.warning("not looking for lost messages this round: %s", exc)
        return []
    done = []
    for task_id in sorted(orphans):
        tags = [tag for tag in held.get(task_id, []) if tag is not None]
        if tags and None not in held.get(task_id, []):
            for tag in tags:
                broker_upkeep.restore_now(url, tag)
            done.append((task_id, "put back: the node that held it is gone"))
    for step_id in candidates:
        action = _revive_one(step_id, held, quiet)
        if action is not None:
            done.append(action)
    return done


def _holders_gone(step: JobStep, now: datetime) -> bool:
    """Whether every node seen starting the step's current attempt is gone (registry)."""
    attempt = current_attempt(step)
    sightings = db.session.scalars(
        select(ExecutionSighting).where(
            ExecutionSighting.task_id == step.task_id, ExecutionSighting.attempt == attempt
        )
    ).all()
    return bool(sightings) and all(
        registry.gone_since(db.session.get(Node, s.node_id), aware(s.first_seen_at), now) for s in sightings
    )


def _revive_one(step_id: int, held: dict[str, list[str | None]], quiet: datetime) -> tuple[str, str] | None:
    step = db.session.get(JobStep, step_id)
    db.session.refresh(step.job, with_for_update=True)  # as the ledger and cancel lock it
    db.session.refresh(step)
    if (
        step.task_id in held
        or step.job.state in JobState.FINAL
        or step.state in StepState.FINAL
        or _last_life(step) >= quiet
    ):
        db.session.rollback()
        return None
    attempt = current_attempt(step)
    if attempt > cc.MAX_RETRIES:  # every attempt was entered: the ledger decides, not us
        db.session.rollback()
        return None
    received = utcnow()
    db.session.add(
        LedgerEntry(
            task_id=step.task_id,
            attempt=attempt,
            job_id=step.job_id,
            step_id=step.id,
            node_id=None,
            node="coordinator",
            capability=step.queue,
            task_name=step.task_name,
            outcome="lost",
            error_code=errors.WORKER_LOST,
            wall_ms=0,
            cpu_ms=0,
            unit=rules.UNIT_OF_CAPABILITY.get(step.queue, "unit"),
            units=0,
            received_at=received,
            claimed_ms=0,
            cap_ms=0,
            granted_ms=0,
            grant_basis="redispatched",
            period=periods.open_period_for(received, periods.closed()),
            reason=f"the message of attempt {attempt} was in no queue and not in flight",
            created_by="coordinator",
        )
    )
    if attempt + 1 > cc.MAX_RETRIES and step.is_replica:
        # A check that could not be run: its step's results are weighed without it (another
        # replica, or a decision on those in hand); the job goes on.
        ctx = Context.load()
        ctx.steps[step.task_id] = step
        ctx.lock_nodes()  # the nodes its verdict may judge, in id order, as a batch locks them
        checks.on_replica_failed(
            step,
            errors.WORKER_LOST,
            f"its work was lost {attempt + 1} times (nodes gone with it).",
            received,
            ctx,
        )
        db.session.commit()
        batch.run_after_commit(ctx)
        log.warning("replica %s lost at its last attempt: its step is decided without it", step.task_id)
        return step.task_id, "replica given up"
    if attempt + 1 > cc.MAX_RETRIES:
        lifecycle.fail_job(
            step.job,
            errors.WORKER_LOST,
            f"{step.name}: its work was lost {attempt + 1} times (nodes gone with it).",
        )
        db.session.commit()
        log.warning("task %s lost at its last attempt: job %s failed", step.task_id, step.job_id)
        return step.task_id, "failed"
    lifecycle.step_retrying(step, errors.WORKER_LOST, f"attempt {attempt} was lost; sent again")
    db.session.commit()
    try:
        jobs.send_step(step, attempt=attempt + 1)
    except Exception:  # noqa: BLE001  the next round finds it quiet and absent again
        log.exception("task %s: attempt %d could not be sent", step.task_id, attempt + 1)
        return step.task_id, f"attempt {attempt + 1} not sent"
    log.warning("task %s: attempt %d was lost, attempt %d sent", step.task_id, attempt, attempt + 1)
    return step.task_id, f"sent attempt {attempt + 1}"
