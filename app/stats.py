"""What the grid did in a span of time, for everyone (``GET /api/v1/stats``) and for operators
with the money (``manage.py stats``): requests and tokens by capability, job latency and
outcomes, compute hours, euros, nodes online, and CO₂ (``app.carbon``).

Every figure is one aggregate query over the span, on indexed time columns (entries by
``received_at``, decisions by ``decided_at``, jobs by ``created_at``, rewards by ``paid_at``):
no ledger entry is read into Python. Figures about now (nodes by state) and the totals since
the grid began are ``app.figures``' (running tallies).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, extract, func, literal, null, select, tuple_, union_all

import celeryconfig
from app import carbon, figures, footprints
from app.extensions import db
from app.ledger import rules
from app.ledger.settlement import RELEASED, REVERSAL
from app.models import (
    GrantDecision,
    Job,
    JobState,
    JobStep,
    LedgerDay,
    LedgerEntry,
    NodeDay,
    Reward,
    StepState,
    utcnow,
)

#: Named spans, ending now.
PERIODS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}
DEFAULT_PERIOD = "day"
HOURS_SHOWN = Decimal("0.000001")
SUCCEEDED = StepState.SUCCEEDED  # an execution's outcome, as a step's state
EUR_SHOWN = Decimal("0.000001")
#: Times a span may start or end at: what the database stores and compares.
_YEARS = (2000, 2200)


class BadPeriod(ValueError):
    """A span that cannot be summed: unknown name, malformed or reversed bounds, too long."""


@dataclass(frozen=True)
class Window:
    name: str
    start: datetime
    end: datetime

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "from": self.start.isoformat(), "to": self.end.isoformat()}


def _moment(name: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadPeriod(
            f"{name} must be an ISO 8601 date or time, e.g. 2026-11-01 or 2026-11-01T08:00Z"
        ) from None
    if not _YEARS[0] <= moment.year <= _YEARS[1]:
        raise BadPeriod(f"{name} must fall between the years {_YEARS[0]} and {_YEARS[1]}")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def window(
    period: str | None,
    start: str | None,
    end: str | None,
    max_days: int,
    now: datetime | None = None,
) -> Window:
    """The span asked for: ``period`` (``day``, ``week``, ``month``: the last 24 hours, 7 or 30
    days) or ``start``/``end`` (ISO 8601, UTC unless an offset is given; ``end`` defaults to
    now), never both; ``BadPeriod`` otherwise."""
    now = now or utcnow()
    if start is None and end is None:
        name = DEFAULT_PERIOD if period is None else period
        if name not in PERIODS:
            raise BadPeriod(
                f"period must be one of {', '.join(PERIODS)} (or give from and to), not {name[:40]!r}"
            )
        return Window(name, now - PERIODS[name], now)
    if period is not None:
        raise BadPeriod("give either period or from/to, not both")
    if start is None:
        raise BadPeriod("from is needed with to")
    begin = _moment("from", start)
    finish = _moment("to", end) if end is not None else now
    if begin >= finish:
        raise BadPeriod("from must come before to")
    if finish - begin > timedelta(days=max_days):
        raise BadPeriod(f"a span is at most {max_days} days")
    return Window("custom", begin, finish)


def _in(column: Any, span: Window) -> ColumnElement[bool]:
    return (column >= span.start) & (column < span.end)


def _hours(ms: int) -> str:
    return str(rules.hours(int(ms)).quantize(HOURS_SHOWN))


def _eur(amount: Decimal) -> str:
    return str(amount.quantize(EUR_SHOWN))


@dataclass(frozen=True)
class _Group:
    """A span's entries of one capability, outcome, grant state and rate, summed."""

    capability: str
    outcome: str
    held: bool
    rate: Decimal | None
    entries: int
    units: int
    granted_ms: int


@dataclass(frozen=True)
class _Parts:
    """A span cut where the daily roll-ups can answer: its whole UTC days ``days`` (first and
    last + 1, or None), and the ragged ends ``edges`` read from the entries themselves."""

    days: tuple[date, date] | None
    edges: tuple[tuple[datetime, datetime], ...]


def _parts(span: Window, rollups: bool = True) -> _Parts:
    start, end = span.start.astimezone(UTC), span.end.astimezone(UTC)
    first = datetime.combine(start.date(), time(), UTC)
    first += timedelta(days=1) if first < start else timedelta(0)
    last = datetime.combine(end.date(), time(), UTC)
    if not rollups or first >= last:
        return _Parts(None, ((start, end),))
    edges = tuple((a, b) for a, b in ((start, first), (last, end)) if a < b)
    return _Parts((first.date(), last.date()), edges)


def _between(column: Any, start: datetime, end: datetime) -> ColumnElement[bool]:
    return (column >= start) & (column < end)


def _groups(parts: _Parts) -> tuple[list[_Group], dict[str | None, int]]:
    """The span's entries summed by group, and their metered ms by node, in one statement: its
    ragged ends read once from the index on ``received_at`` (which carries the columns read),
    summed both ways at once (GROUPING SETS), and its whole days from the daily roll-ups
    (``LedgerDay``, ``NodeDay``), the pieces then summed by group or node (``by_node``)."""
    keys = ("capability", "outcome", "held", "rate_eur_per_hour")
    pieces: list[Any] = []
    if parts.edges:
        edges = union_all(
            *(
                select(
                    LedgerEntry.node_id,
                    *(getattr(LedgerEntry, key) for key in keys),
                    LedgerEntry.units,
                    LedgerEntry.granted_ms,
                    footprints.metered_ms().label("ms"),
                ).where(_between(LedgerEntry.received_at, start, end))
                for start, end in parts.edges
            )
        ).subquery()
        grouped = [edges.c[key] for key in keys]
        pieces.append(
            select(
                func.grouping(edges.c.node_id).op("=")(0).label("by_node"),
                edges.c.node_id,
                *grouped,
                func.count().label("entries"),
                func.coalesce(func.sum(edges.c.units), 0).label("units"),
                func.coalesce(func.sum(edges.c.granted_ms), 0).label("granted_ms"),
                func.coalesce(func.sum(edges.c.ms), 0).label("ms"),
            ).group_by(func.grouping_sets(tuple_(*grouped), tuple_(edges.c.node_id)))
        )
    if parts.days is not None:
        first, last = parts.days
        day_keys = [getattr(LedgerDay, key) for key in keys]
        pieces.append(
            select(
                literal(False).label("by_node"),
                null().label("node_id"),
                *day_keys,
                func.sum(LedgerDay.entries).label("entries"),
                func.sum(LedgerDay.units).label("units"),
                func.sum(LedgerDay.granted_ms).label("granted_ms"),
                literal(0).label("ms"),
            )
            .where(LedgerDay.day >= first, LedgerDay.day < last, LedgerDay.decision == "")
            .group_by(*day_keys)
        )
        pieces.append(
            select(
                literal(True),
                NodeDay.node_id,
                *(null() for _ in keys),
                literal(0),
                literal(0),
                literal(0),
                func.sum(NodeDay.metered_ms),
            )
            .where(NodeDay.day >= first, NodeDay.day < last)
            .group_by(NodeDay.node_id)
        )
    union = union_all(*pieces).subquery()
    columns = [union.c[name] for name in ("by_node", "node_id", *keys)]
    sums = [func.sum(union.c[name]) for name in ("entries", "units", "granted_ms", "ms")]
    groups: list[_Group] = []
    metered: dict[str | None, int] = {}
    rows = db.session.execute(select(*columns, *sums).group_by(*columns))
    for by_node, node_id, capability, outcome, held, rate, entries, units, granted_ms, ms in rows:
        if by_node:
            metered[node_id] = int(ms)
        else:
            groups.append(
                _Group(capability, outcome, bool(held), rate, int(entries), int(units), int(granted_ms))
            )
    return groups, metered


def _executions(groups: list[_Group]) -> dict[str, dict[str, Any]]:
    """Executions entered in the span by capability: how many, how many succeeded, and the
    work units (pages, tokens) of those that did."""
    counts: dict[str, Counter[str]] = {}
    for group in groups:
        if group.outcome == REVERSAL:
            continue
        line = counts.setdefault(group.capability, Counter())
        line["executions"] += group.entries
        if group.outcome == SUCCEEDED:
            line["succeeded"] += group.entries
            line["units"] += group.units
    return {
        capability: {
            "executions": counts.get(capability, Counter())["executions"],
            "succeeded": counts.get(capability, Counter())["succeeded"],
            "units": counts.get(capability, Counter())["units"],
            "unit": rules.UNIT_OF_CAPABILITY.get(capability, "unit"),
        }
        for capability in sorted({*celeryconfig.VOLUNTEER_QUEUES, *counts})
    }


def _grants(parts: _Parts, groups: list[_Group]) -> dict[tuple[str, Decimal | None], int]:
    """Granted ms that count in the span, by capability and rate: unheld entries received in
    it (reversals included), and held ones released in it (as settlement counts them)."""
    # The releases carry their entry's capability, rate and grant (migration d5b8e1f3a7c2): read
    # from the partial index on their decided_at, no probe into the ledger per release.
    group = (GrantDecision.capability, GrantDecision.rate_eur_per_hour)
    released: list[Any] = []
    for start, end in parts.edges:
        released += db.session.execute(
            select(*group, func.sum(GrantDecision.granted_ms))
            .where(_between(GrantDecision.decided_at, start, end), GrantDecision.decision == RELEASED)
            .group_by(*group)
        ).all()
    if parts.days is not None:
        first, last = parts.days
        released += db.session.execute(
            select(LedgerDay.capability, LedgerDay.rate_eur_per_hour, func.sum(LedgerDay.granted_ms))
            .where(LedgerDay.day >= first, LedgerDay.day < last, LedgerDay.decision == RELEASED)
            .group_by(LedgerDay.capability, LedgerDay.rate_eur_per_hour)
        ).all()
    sums: Counter[tuple[str, Decimal | None]] = Counter()
    for entries in groups:
        if not entries.held:
            sums[(entries.capability, entries.rate)] += entries.granted_ms
    for capability, rate, ms in released:
        sums[(capability, rate)] += int(ms or 0)
    return sums


def _requests(span: Window) -> int:
    """Job steps that succeeded in the span (their replicas not counted): what a cloud service
    would have been asked."""
    return db.session.scalar(
        select(func.count()).where(
            _in(JobStep.finished_at, span),
            JobStep.replica_of_id.is_(None),
            JobStep.state == StepState.SUCCEEDED,
        )
    )


def _jobs(span: Window) -> dict[str, Any]:
    """Jobs submitted in the span: by kind, by state now, and the latency of those that ended."""
    by_kind_state = db.session.execute(
        select(Job.kind, Job.state, func.count())
        .where(_in(Job.created_at, span))
        .group_by(Job.kind, Job.state)
    ).all()
    kinds: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for kind, state, count in by_kind_state:
        kinds[kind] += count
        states[state] += count
    elapsed = extract("epoch", Job.finished_at - Job.created_at)
    latency = db.session.execute(
        select(
            func.count(),
            func.avg(elapsed),
            func.percentile_cont(0.95).within_group(elapsed),
        ).where(_in(Job.created_at, span), Job.finished_at.is_not(None), Job.state == JobState.SUCCEEDED)
    ).one()
    ended, average, p95 = latency
    return {
        "submitted": sum(kinds.values()),
        "by_kind": dict(sorted(kinds.items())),
        "by_outcome": {state: states.get(state, 0) for state in JobState.ALL},
        "latency_seconds": {
            "jobs": ended,
            "average": round(float(average), 3) if average is not None else None,
            "p95": round(float(p95), 3) if p95 is not None else None,
        },
    }


def _money(span: Window, grants: Mapping[tuple[str, Decimal | None], int]) -> dict[str, Any]:
    earned: Counter[str] = Counter()
    for (capability, rate), ms in grants.items():
        earned[capability] += rules.reward(ms, rate or Decimal(0))
    paid, rewards = db.session.execute(
        select(func.coalesce(func.sum(Reward.amount_eur), 0), func.count()).where(_in(Reward.paid_at, span))
    ).one()
    return {
        "earned_eur": {capability: _eur(Decimal(amount)) for capability, amount in sorted(earned.items())},
        "earned_exact_eur": str(sum(earned.values(), Decimal(0))),
        "distributed_eur": str(Decimal(paid).quantize(rules.CENT)),
        "rewards_paid": rewards,
    }


def summary(span: Window, *, money: bool, rollups: bool = True) -> dict[str, Any]:
    """The span's figures; the euros only with ``money`` (operators). Its whole days are read
    from the daily roll-ups unless ``rollups`` is False (every entry of the span summed: what
    the tests compare them with)."""
    model = footprints.assumptions()
    parts = _parts(span, rollups)
    groups, metered = _groups(parts)
    capabilities = _executions(groups)
    grants = _grants(parts, groups)
    granted: Counter[str] = Counter()
    for (capability, _), ms in grants.items():
        granted[capability] += ms
    for capability, line in capabilities.items():
        line["compute_hours"] = _hours(granted.get(capability, 0))
    requests = _requests(span) or 0
    emitted = footprints.of_nodes(metered, model)
    nodes = figures.nodes_by_state(db.session)
    out: dict[str, Any] = {
        "period": span.as_dict(),
        "requests": requests,
        "tokens": capabilities.get(celeryconfig.LLM_QUEUE, {}).get("units", 0),
        "capabilities": capabilities,
        "jobs": _jobs(span),
        "compute_hours": _hours(sum(granted.values())),
        "nodes": {"online": nodes.get("online", 0), "by_state": nodes},
        "co2": {
            "co2_grams": carbon.shown(emitted.grams),
            "co2_saved_grams": carbon.shown(carbon.saved_grams(requests, emitted.grams, model)),
            "energy_wh": float(emitted.wh.quantize(carbon.WH_SHOWN)),
            "cloud_reference_grams": carbon.shown(Decimal(requests) * model.cloud_g_per_request),
            "by_hardware_class": emitted.as_dict(),
            "assumptions": model.as_dict(),
        },
    }
    out["all_time"] = _all_time(money=money)
    if money:
        out["money"] = _money(span, grants)
    return out


def _all_time(*, money: bool) -> dict[str, Any]:
    """Totals since the grid began, from ``app.figures``' running tallies (as cheap at ten
    million entries as at ten)."""
    totals: dict[str, Any] = {
        "compute_hours": {
            capability: str(hours)
            for capability, hours in figures.compute_hours_by_capability(db.session).items()
        },
        "executions": figures.tasks_completed(db.session),
        "jobs": figures.jobs_by_outcome(db.session),
    }
    if money:
        totals["rewards_eur"] = {
            name: str(amount) for name, amount in figures.rewards_distributed(db.session).items()
        }
    return totals
