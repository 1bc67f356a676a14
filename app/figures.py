"""The grid's figures for operators, computed from the database and the broker: the one home of
the queries behind ``/metrics`` (``app.metrics``) and ``GET /api/v1/stats``.

Every function takes what it reads (a SQLAlchemy session, a Redis client) and returns plain
dicts. What volunteers send counts only as the ledger entered it: compute hours are the granted
ones that count (``app.ledger.settlement.counted``), executions are the ledger's entries, never
a worker's claims or Celery events. Sums over the ledger, the refusals and finished jobs come
from running tallies kept by PostgreSQL triggers (``app.models.LedgerTally`` and the others,
docs/decisions/0012), so a call costs the same with ten rows or ten million.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, get_args

import redis
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

import celeryconfig
from app import registry
from app.ledger import intake, rules
from app.ledger.settlement import RELEASED, REVERSAL, counted
from app.ledger.values import aware
from app.models import (
    Job,
    JobLatencyTally,
    JobState,
    JobStep,
    LedgerEntry,
    LedgerTally,
    Node,
    RejectionTally,
    Reward,
    StepState,
    utcnow,
)
from app.validation.checks import INVALID_RESULT
from workers.protocol.records import CompletedBody

#: Outcomes of an execution as a node's completion record may state them (its schema's), which
#: the ledger enters as ``LedgerEntry.outcome``; reversals (``settlement.REVERSAL``) apart.
OUTCOMES: tuple[str, ...] = get_args(CompletedBody.model_fields["outcome"].annotation)
HOURS_PLACES = Decimal("0.000001")


def _hours(ms: int) -> Decimal:
    return rules.hours(int(ms)).quantize(HOURS_PLACES)


# --- nodes ----------------------------------------------------------------------------------


def nodes_by_state(session: Session, now: datetime | None = None) -> dict[str, int]:
    """How many nodes are in each of the registry's states (every state present), counted by
    the database (``registry.state_clause``): one row per state, whatever the number of nodes."""
    state = registry.state_clause(now)
    counts = dict.fromkeys(registry.STATES, 0)
    counts.update(session.execute(select(state, func.count()).group_by(state)).tuples().all())
    return counts


def nodes_online_by_capability(session: Session, now: datetime | None = None) -> dict[str, int]:
    """Online nodes serving each volunteer queue (what their workers registered)."""
    counts = dict.fromkeys(celeryconfig.VOLUNTEER_QUEUES, 0)
    online = select(Node.queues).where(registry.state_clause(now) == registry.ONLINE)
    for queues in session.scalars(online):
        for queue in set(queues or []) & set(counts):
            counts[queue] += 1
    return counts


def heartbeat_ages(session: Session, now: datetime | None = None) -> dict[str, float]:
    """Seconds since each approved, unrevoked and unpaused node was last heard from (by the
    coordinator's clock), by node name; nodes never heard from are left out."""
    now = now or utcnow()
    rows = session.execute(
        select(Node.name, Node.last_seen_at).where(
            Node.revoked_at.is_(None),
            Node.approved_at.is_not(None),
            Node.paused_at.is_(None),
            Node.last_seen_at.is_not(None),
        )
    ).all()
    return {name: max(0.0, (now - aware(seen)).total_seconds()) for name, seen in rows}


# --- the ledger -----------------------------------------------------------------------------


def _ledger_groups(session: Session) -> list[tuple[str, str, bool, str, str, int, int]]:
    """The ledger's tallies summed by group: (capability, outcome, held, decision, reason,
    entries, granted ms); ``decision`` is empty for entries, else a decision on held ones."""
    columns = (
        LedgerTally.capability,
        LedgerTally.outcome,
        LedgerTally.held,
        LedgerTally.decision,
        LedgerTally.reason,
    )
    rows = session.execute(
        select(*columns, func.sum(LedgerTally.entries), func.sum(LedgerTally.granted_ms)).group_by(*columns)
    ).all()
    return [(c, o, bool(h), d, r, int(n), int(ms)) for c, o, h, d, r, n, ms in rows]


def tasks_completed(session: Session) -> dict[str, dict[str, int]]:
    """Executions the ledger entered, by capability and outcome (reversals are not executions;
    refused records are ``refusals_by_reason``'s)."""
    counts: dict[str, dict[str, int]] = {
        capability: dict.fromkeys(OUTCOMES, 0) for capability in celeryconfig.VOLUNTEER_QUEUES
    }
    for capability, outcome, _, decision, _, entries, _ in _ledger_groups(session):
        if decision == "" and outcome != REVERSAL:
            counts.setdefault(capability, dict.fromkeys(OUTCOMES, 0))
            counts[capability][outcome] = counts[capability].get(outcome, 0) + entries
    return counts


def granted_ms_by_capability(session: Session) -> dict[str, int]:
    """Granted milliseconds that count, by capability: entries entered unheld (reversals
    included) and held ones since released, as settlement counts them."""
    totals = dict.fromkeys(celeryconfig.VOLUNTEER_QUEUES, 0)
    for capability, _, held, decision, _, _, granted_ms in _ledger_groups(session):
        if (decision == "" and not held) or decision == RELEASED:
            totals[capability] = totals.get(capability, 0) + granted_ms
    return totals


def compute_hours_by_capability(session: Session) -> dict[str, Decimal]:
    """Granted compute hours that count, by capability (``granted_ms_by_capability``)."""
    return {capability: _hours(ms) for capability, ms in granted_ms_by_capability(session).items()}


def validation(session: Session) -> dict[str, int]:
    """Results checking: steps awaiting their replicas, grants still held, and results found
    invalid (grants refused as ``invalid_result``)."""
    held = decided = invalid = 0
    for _, _, is_held, decision, reason, entries, _ in _ledger_groups(session):
        if decision == "" and is_held:
            held += entries
        elif decision:
            decided += entries
            invalid += entries if decision != RELEASED and reason == INVALID_RESULT else 0
    awaiting = session.scalar(select(func.count(JobStep.id)).where(JobStep.state == StepState.VERIFYING))
    return {
        "awaiting_validation": int(awaiting or 0),
        "grants_held": held - decided,
        "invalid_results": invalid,
    }


def refusals_by_reason(session: Session) -> dict[str, int]:
    """Records the ledger refused, by reason (every refusal is stored: app.ledger.verification)."""
    rows = session.execute(
        select(RejectionTally.reason, func.sum(RejectionTally.records)).group_by(RejectionTally.reason)
    ).all()
    return {reason: int(count) for reason, count in sorted(rows)}


def rewards_distributed(session: Session) -> dict[str, Decimal]:
    """Euros of closed periods' rewards: ``settled`` (all of them) and ``paid``."""
    settled, paid = session.execute(
        select(
            func.coalesce(func.sum(Reward.amount_eur), 0),
            func.coalesce(func.sum(Reward.amount_eur).filter(Reward.paid_at.is_not(None)), 0),
        )
    ).one()
    return {"settled": Decimal(settled), "paid": Decimal(paid)}


def rewards_by_period(session: Session, last: int = 12) -> dict[str, dict[str, Decimal]]:
    """The same for each of the ``last`` settled periods (YYYY-MM), oldest first."""
    rows = session.execute(
        select(
            Reward.period,
            func.sum(Reward.amount_eur),
            func.coalesce(func.sum(Reward.amount_eur).filter(Reward.paid_at.is_not(None)), 0),
        )
        .group_by(Reward.period)
        .order_by(Reward.period.desc())
        .limit(last)
    ).all()
    return {period: {"settled": Decimal(s), "paid": Decimal(p)} for period, s, p in reversed(rows)}


def compute_hours_per_day(session: Session, since: datetime) -> dict[datetime, Decimal]:
    """Granted compute hours that count (``settlement.counted``) of the entries received since
    ``since``, by day (UTC) of receipt: one grouped query on the index on ``received_at``. Days
    without any are left out."""
    day = func.date_trunc("day", func.timezone("UTC", LedgerEntry.received_at))
    rows = session.execute(
        select(day, func.sum(LedgerEntry.granted_ms))
        .where(LedgerEntry.received_at >= since, counted())
        .group_by(day)
    ).all()
    return {moment.replace(tzinfo=UTC): _hours(ms or 0) for moment, ms in sorted(rows)}


# --- jobs -----------------------------------------------------------------------------------


def jobs_per_hour(session: Session, since: datetime) -> dict[datetime, dict[str, int]]:
    """Jobs submitted since ``since``, by hour (UTC) of submission and by their state now: one
    grouped query on the index on ``created_at``. Hours without any are left out."""
    hour = func.date_trunc("hour", func.timezone("UTC", Job.created_at))
    rows = session.execute(
        select(hour, Job.state, func.count()).where(Job.created_at >= since).group_by(hour, Job.state)
    ).all()
    counts: dict[datetime, dict[str, int]] = {}
    for moment, state, count in sorted(rows):
        counts.setdefault(moment.replace(tzinfo=UTC), dict.fromkeys(JobState.ALL, 0))[state] = int(count)
    return counts


def jobs_by_outcome(session: Session) -> dict[str, dict[str, int]]:
    """Jobs by kind and state: finished ones from the tallies, queued and running ones counted
    (few, and indexed)."""
    counts: dict[str, dict[str, int]] = {}
    finished = session.execute(
        select(JobLatencyTally.kind, JobLatencyTally.state, func.sum(JobLatencyTally.jobs)).group_by(
            JobLatencyTally.kind, JobLatencyTally.state
        )
    ).all()
    open_jobs = session.execute(
        select(Job.kind, Job.state, func.count())
        .where(Job.state.in_((JobState.QUEUED, JobState.RUNNING)))
        .group_by(Job.kind, Job.state)
    ).all()
    for kind, state, count in [*finished, *open_jobs]:
        counts.setdefault(kind, dict.fromkeys(JobState.ALL, 0))[state] += int(count)
    return counts


def latency_bounds(session: Session) -> list[float]:
    """The job latency histogram's bucket bounds in seconds (their home: the migration's
    ``job_latency_bounds()``), ``inf`` last."""
    bounds = session.scalar(text("SELECT job_latency_bounds()"))
    return [float(bound) for bound in bounds] + [math.inf]


def job_latency(session: Session) -> dict[tuple[str, str], dict[str, Any]]:
    """Seconds from submission to end of finished jobs, by (kind, final state): cumulative
    ``buckets`` (upper bound → jobs at most that long, every bound present), ``count``, ``sum``."""
    bounds = latency_bounds(session)
    rows = session.execute(
        select(
            JobLatencyTally.kind,
            JobLatencyTally.state,
            JobLatencyTally.le,
            func.sum(JobLatencyTally.jobs),
            func.sum(JobLatencyTally.seconds),
        ).group_by(JobLatencyTally.kind, JobLatencyTally.state, JobLatencyTally.le)
    ).all()
    per_bucket: dict[tuple[str, str], dict[float, int]] = {}
    sums: dict[tuple[str, str], float] = {}
    for kind, state, le, jobs, seconds in rows:
        per_bucket.setdefault((kind, state), {})[float(le)] = int(jobs)
        sums[(kind, state)] = sums.get((kind, state), 0.0) + float(seconds)
    histograms = {}
    for key, counts in per_bucket.items():
        running, buckets = 0, {}
        for bound in bounds:
            running += counts.get(bound, 0)
            buckets[bound] = running
        histograms[key] = {"buckets": buckets, "count": running, "sum": sums[key]}
    return histograms


def compact_tallies(session: Session) -> None:
    """Fold the tallies' delta rows together (the ledger worker's upkeep; the caller commits)."""
    session.execute(text("SELECT compact_tallies()"))


# --- the broker -----------------------------------------------------------------------------


def queue_depths(broker: redis.Redis, queues: Iterable[str] = celeryconfig.ALL_QUEUES) -> dict[str, int]:
    """Messages waiting in each queue, its priority lists included (``celeryconfig.queue_lists``)."""
    with broker.pipeline(transaction=False) as pipe:
        names = list(queues)
        for name in names:
            for key in celeryconfig.queue_lists(name):
                pipe.llen(key)
        lengths = iter(pipe.execute())
    return {name: sum(next(lengths) for _ in celeryconfig.queue_lists(name)) for name in names}


#: Where the coordinator notes when it first saw each record waiting at the head of the ledger's
#: queue (or of a ledger worker's batch in flight): a hash of message digest → epoch seconds.
LEDGER_HEADS_KEY = "grid:metrics:ledger-heads"


def ledger_backlog(broker: redis.Redis, now: float | None = None) -> dict[str, float]:
    """How far behind the ledger is, by the coordinator's own sight of the broker.

    ``lag_seconds``: how long the oldest record not yet entered has been waiting where the
    ledger takes records from (the head of the ``ledger`` queue, or the head of a batch a
    ledger worker holds in flight), timed from the first time any coordinator saw that very
    message there. Nothing a node writes in a record sets it: a stopped ledger shows a lag that
    grows; an empty queue, 0. ``in_flight``: records held in batches not yet committed.
    ``workers``: ledger workers alive (their intake refreshes a key every batch).
    """
    now = time.time() if now is None else now
    heads = [broker.lindex(key, -1) for key in celeryconfig.queue_lists(celeryconfig.LEDGER_QUEUE)]
    in_flight = 0
    for key in broker.scan_iter(match=f"{intake.IN_FLIGHT_PREFIX}*", count=100):
        in_flight += broker.llen(key)
        heads.append(broker.lindex(key, 0))
    digests = [hashlib.sha256(head).hexdigest() for head in heads if head is not None]
    lag = 0.0
    if digests:
        for digest in digests:
            broker.hsetnx(LEDGER_HEADS_KEY, digest, repr(now))
        seen = broker.hmget(LEDGER_HEADS_KEY, digests)
        lag = max(now - float(first) for first in seen if first is not None)
        # Forget heads that are no longer heads (bounded: a few keys).
        stale = set(broker.hkeys(LEDGER_HEADS_KEY)) - {d.encode() for d in digests}
        if stale:
            broker.hdel(LEDGER_HEADS_KEY, *stale)
    else:
        broker.delete(LEDGER_HEADS_KEY)
    workers = sum(1 for _ in broker.scan_iter(match=f"{intake.ALIVE_PREFIX}*", count=100))
    return {"lag_seconds": max(0.0, lag), "in_flight": in_flight, "workers": workers}


__all__ = [
    "compact_tallies",
    "compute_hours_by_capability",
    "compute_hours_per_day",
    "granted_ms_by_capability",
    "heartbeat_ages",
    "job_latency",
    "jobs_by_outcome",
    "jobs_per_hour",
    "latency_bounds",
    "ledger_backlog",
    "nodes_by_state",
    "nodes_online_by_capability",
    "queue_depths",
    "refusals_by_reason",
    "rewards_by_period",
    "rewards_distributed",
    "tasks_completed",
    "validation",
]
