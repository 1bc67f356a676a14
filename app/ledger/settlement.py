"""Close a period into rewards, pay them, export them, and show participants their statement.

An entry's grant counts in the period it was received in, unless it was entered *held* (its
result awaited another node's, app.validation): then it counts once released, in the period of
that decision (``GrantDecision``), and never if it was refused. A grant still held when its
period closes so moves on to a later one.

Settling locks the ledger against new entries for the moment it sums (PostgreSQL), so an entry
is either in the period it was received in or, once that period is closed, in the next open
one; a closed period never changes and settling it again changes nothing.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, func, insert, or_, select, text, union
from sqlalchemy.exc import IntegrityError

from app import footprints
from app.extensions import db
from app.ledger import periods, rules
from app.models import (
    GrantDecision,
    Job,
    LedgerEntry,
    LedgerPeriod,
    NodeGrant,
    Participant,
    Reward,
    RewardLine,
    utcnow,
)

RELEASED = "released"
#: A correcting entry's outcome (and grant basis): it reverses another, and is no execution.
REVERSAL = "reversal"


def counted() -> ColumnElement[bool]:
    """Entries whose grant counts: entered unheld, or held and since released."""
    released = (
        select(GrantDecision.id)
        .where(GrantDecision.entry_id == LedgerEntry.id, GrantDecision.decision == RELEASED)
        .exists()
    )
    return or_(LedgerEntry.held.is_(False), released)


def payable_groups(in_periods: Sequence[str], node_ids: Sequence[str] | None = None) -> list[tuple]:
    """(period, node, capability, rate, granted ms, entries) of the grants that count in each of
    ``in_periods``: unheld entries received in it, and held ones released in it; of the nodes
    ``node_ids`` only when given. Two grouped queries, whatever the number of entries."""
    columns = (LedgerEntry.node_id, LedgerEntry.capability, LedgerEntry.rate_eur_per_hour)
    nodes = LedgerEntry.node_id.in_(node_ids) if node_ids is not None else LedgerEntry.node_id.is_not(None)
    unheld = db.session.execute(
        select(LedgerEntry.period, *columns, func.sum(LedgerEntry.granted_ms), func.count())
        .where(LedgerEntry.period.in_(in_periods), nodes, LedgerEntry.held.is_(False))
        .group_by(LedgerEntry.period, *columns)
    ).all()
    released = db.session.execute(
        select(GrantDecision.period, *columns, func.sum(LedgerEntry.granted_ms), func.count())
        .join(GrantDecision, GrantDecision.entry_id == LedgerEntry.id)
        # Decisions are on held entries only: said, so that the held entries' own index answers.
        .where(
            GrantDecision.period.in_(in_periods), GrantDecision.decision == RELEASED, nodes, LedgerEntry.held
        )
        .group_by(GrantDecision.period, *columns)
    ).all()
    merged: dict[tuple, list[int]] = {}
    for period, node_id, capability, rate, granted, count in [*unheld, *released]:
        sums = merged.setdefault((period, node_id, capability, rate), [0, 0])
        sums[0] += int(granted)
        sums[1] += int(count)
    return [(*key, granted, count) for key, (granted, count) in merged.items()]


def _payable_groups(period: str) -> list[tuple]:
    """(node, capability, rate, granted ms, entries) of the grants that count in ``period``."""
    return [group[1:] for group in payable_groups([period])]


def granted_ms_by_capability(node_ids: Sequence[str]) -> dict[str, int]:
    """The granted milliseconds that count (``counted``) of the nodes ``node_ids`` together, all
    periods, by capability (``granted_ms_by_node``, summed)."""
    totals: Counter[str] = Counter()
    for by_capability in granted_ms_by_node(node_ids).values():
        totals.update(by_capability)
    return dict(totals)


def granted_ms_by_node(node_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per node of ``node_ids``, its granted milliseconds that count, all periods, by capability,
    from their running sums (``node_grants``): one grouped query."""
    out: dict[str, dict[str, int]] = {}
    if not node_ids:
        return out
    for node_id, capability, ms in db.session.execute(
        select(NodeGrant.node_id, NodeGrant.capability, func.sum(NodeGrant.granted_ms))
        .where(NodeGrant.node_id.in_(list(node_ids)))
        .group_by(NodeGrant.node_id, NodeGrant.capability)
    ):
        out.setdefault(node_id, {})[capability] = int(ms)
    return out


class SettlementError(ValueError):
    """A settlement or payout that cannot be done as asked."""


def lock_ledger_for_entries() -> None:
    """Called first in a transaction that enters records: waits while a settlement sums."""
    db.session.execute(text("LOCK TABLE ledger_entries IN ROW EXCLUSIVE MODE"))


def settle(period: str, now: datetime | None = None) -> LedgerPeriod:
    """Close ``period`` into one reward per node; idempotent. The caller commits."""
    start, end = periods.bounds(period)
    now = now or utcnow()
    if end > now:
        raise SettlementError(f"{period} has not ended yet (it ends {end:%Y-%m-%d %H:%M} UTC)")
    row = _period_row(period, start, end)
    if row.closed_at is not None:
        return row  # settled already: nothing changes
    # Entries being written finish first; new ones wait until this commits and then, seeing the
    # period closed, go to the next one.
    db.session.execute(text("LOCK TABLE ledger_entries IN SHARE MODE"))
    grouped = _payable_groups(period)
    lines = [
        rules.Line(node_id, capability, int(granted), rate if rate is not None else Decimal(0))
        for node_id, capability, rate, granted, _ in grouped
    ]
    result = rules.settle(lines)
    # Inserted in two statements (the rewards, then their lines), not as ORM objects: a thousand
    # nodes' rewards cost the unit of work seconds.
    reward_ids: dict[str, int] = {}
    if result.rewards:
        reward_ids = dict(
            db.session.execute(
                insert(Reward).returning(Reward.node_id, Reward.id),
                [
                    {
                        "period": period,
                        "node_id": node_reward.node_id,
                        "period_start": start,
                        "period_end": end,
                        "exact_eur": node_reward.exact_eur,
                        "amount_eur": node_reward.amount_eur,
                    }
                    for node_reward in result.rewards
                ],
            ).all()
        )
        db.session.execute(
            insert(RewardLine),
            [
                {
                    "reward_id": reward_ids[line.node_id],
                    "capability": line.capability,
                    "rate_eur_per_hour": line.rate_eur_per_hour,
                    "granted_ms": line.granted_ms,
                    "hours": rules.hours(line.granted_ms).quantize(Decimal("0.000001")),
                    "exact_eur": rules.reward(line.granted_ms, line.rate_eur_per_hour),
                }
                for line in lines
            ],
        )
    row.closed_at = now
    row.total_exact_eur = result.total_exact_eur
    row.total_eur = result.total_eur
    row.entries = sum(int(count) for *_, count in grouped)
    db.session.flush()
    return row


def _period_row(period: str, start: datetime, end: datetime) -> LedgerPeriod:
    row = db.session.get(LedgerPeriod, period, with_for_update=True)
    if row is not None:
        return row
    try:
        with db.session.begin_nested():
            db.session.add(LedgerPeriod(period=period, starts_at=start, ends_at=end))
    except IntegrityError:
        pass  # created by a concurrent settlement: take its lock below
    return db.session.get(LedgerPeriod, period, with_for_update=True, populate_existing=True)


def settle_due(now: datetime | None = None) -> list[str]:
    """Settle every ended period that has entries and is not closed (the beat schedule's job)."""
    now = now or utcnow()
    current = periods.of(now)
    pending = set(_periods_before("ledger_entries", current)) | set(
        _periods_before("grant_decisions", current)
    )
    closed = periods.closed()
    settled = []
    for period in sorted(p for p in pending if p):
        if period and period not in closed:
            settle(period, now)
            settled.append(period)
    return settled


def _periods_before(table: str, current: str) -> list[str]:
    """The distinct periods of ``table`` (``ledger_entries`` or ``grant_decisions``) before
    ``current``, by skipping from one to the next along the index on ``period``: a dozen index
    probes a year, where DISTINCT read every one of ten million entries (2.5 s)."""
    return list(
        db.session.scalars(
            text(
                f"""
                WITH RECURSIVE found (period) AS (
                    (SELECT period FROM {table} WHERE period IS NOT NULL ORDER BY period LIMIT 1)
                    UNION ALL
                    SELECT (SELECT period FROM {table} WHERE period > found.period ORDER BY period LIMIT 1)
                    FROM found WHERE found.period < :current
                )
                SELECT period FROM found WHERE period < :current
                """
            ),
            {"current": current},
        )
    )


def pay(period: str, reference: str, node_ids: list[str] | None = None) -> list[Reward]:
    """Mark a closed period's unpaid rewards paid under a payout reference. The caller commits."""
    row = db.session.get(LedgerPeriod, period)
    if row is None or row.closed_at is None:
        raise SettlementError(f"{period} is not settled: settle it before paying it")
    if not reference.strip():
        raise SettlementError("a payout needs a reference (a bank transfer batch, a receipt number)")
    # Nothing is paid out for a reward of zero or less (a reversal can leave a node owing).
    query = select(Reward).where(Reward.period == period, Reward.paid_at.is_(None))
    if node_ids:
        query = query.where(Reward.node_id.in_(node_ids))
    unpaid = db.session.scalars(query.order_by(Reward.id).with_for_update()).all()  # one payout wins
    paid = [reward for reward in unpaid if reward.amount_eur > 0]
    now = utcnow()
    for reward in paid:
        reward.paid_at = now
        reward.payout_reference = reference.strip()[:120]
    return paid


def _reward_rows(period: str) -> list[dict[str, Any]]:
    rewards = db.session.scalars(select(Reward).where(Reward.period == period).order_by(Reward.node_id)).all()
    rows = []
    for reward in rewards:
        hours_by = {line.capability: Decimal(0) for line in reward.lines}
        for line in reward.lines:
            hours_by[line.capability] += rules.hours(line.granted_ms)
        rows.append(
            {
                "period": reward.period,
                "period_start": reward.period_start.isoformat(),
                "period_end": reward.period_end.isoformat(),
                "node_id": reward.node_id,
                "node": reward.node.name,
                "participant": reward.node.participant.email,
                "ocr_hours": str(hours_by.get("ocr", Decimal(0)).quantize(Decimal("0.000001"))),
                "llm_hours": str(hours_by.get("llm", Decimal(0)).quantize(Decimal("0.000001"))),
                "amount_eur": str(reward.amount_eur),
                "paid": reward.paid_at is not None,
                "paid_at": reward.paid_at.isoformat() if reward.paid_at else None,
                "payout_reference": reward.payout_reference,
            }
        )
    return rows


def export(period: str, fmt: str) -> str:
    """A closed period's rewards for the treasurer, as CSV or JSON."""
    row = db.session.get(LedgerPeriod, period)
    if row is None or row.closed_at is None:
        raise SettlementError(f"{period} is not settled")
    rows = _reward_rows(period)
    if fmt == "json":
        import json

        return json.dumps(
            {
                "period": period,
                "closed_at": row.closed_at.isoformat(),
                "entries": row.entries,
                "total_eur": str(row.total_eur),
                "rewards": rows,
            },
            indent=2,
            ensure_ascii=False,
        )
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["period"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: spreadsheet_safe(value) for key, value in row.items()} for row in rows)
    return out.getvalue()


#: What a statement reads of each entry.
_STATEMENT_COLUMNS = (
    LedgerEntry.id,
    LedgerEntry.received_at,
    LedgerEntry.node_id,
    LedgerEntry.task_id,
    LedgerEntry.attempt,
    LedgerEntry.job_id,
    LedgerEntry.capability,
    LedgerEntry.outcome,
    LedgerEntry.units,
    LedgerEntry.unit,
    LedgerEntry.claimed_ms,
    LedgerEntry.observed_ms,
    LedgerEntry.cap_ms,
    LedgerEntry.granted_ms,
    LedgerEntry.grant_basis,
    LedgerEntry.rate_eur_per_hour,
    LedgerEntry.reverses_id,
    LedgerEntry.reason,
    LedgerEntry.held,
    LedgerEntry.period,
)


def statement(participant: Participant, period: str) -> dict[str, Any]:
    """Every execution of the participant's nodes that counts in ``period``, line by line, with
    claimed, observed, cap and granted time, rate and euros; and the settled reward if any."""
    start, end = periods.bounds(period)
    node_ids = [node.id for node in participant.nodes]
    # The decisions of these nodes only (a decision names its entry's node): not every release
    # of the period on the grid.
    released_here = select(GrantDecision.entry_id).where(
        GrantDecision.period == period,
        GrantDecision.decision == RELEASED,
        GrantDecision.node_id.in_(node_ids),
    )
    # Two index scans (the period's entries of these nodes; their releases), not an OR that
    # no index answers.
    received_here = select(LedgerEntry.id).where(
        LedgerEntry.node_id.in_(node_ids), LedgerEntry.period == period
    )
    # The columns shown, as rows: no ORM object (nor signature) for each of thousands of lines.
    entries = db.session.execute(
        select(*_STATEMENT_COLUMNS)
        .where(LedgerEntry.node_id.in_(node_ids), LedgerEntry.id.in_(union(received_here, released_here)))
        .order_by(LedgerEntry.received_at, LedgerEntry.id)
    ).all()
    decisions = {
        d.entry_id: d
        for d in db.session.scalars(
            select(GrantDecision).where(GrantDecision.entry_id.in_([e.id for e in entries if e.held]))
        )
    }
    names = {node.id: node.name for node in participant.nodes}
    lines = []
    exact = Decimal(0)
    for entry in entries:
        status, counts = _grant_status(entry, decisions.get(entry.id), period)
        euros = rules.reward(entry.granted_ms, entry.rate_eur_per_hour or Decimal(0))
        if counts:
            exact += euros
        lines.append(
            {
                "entry_id": entry.id,
                "received_at": entry.received_at.isoformat(),
                "node": names.get(entry.node_id),
                "node_id": entry.node_id,
                "task_id": entry.task_id,
                "attempt": entry.attempt,
                "job_id": entry.job_id,
                "capability": entry.capability,
                "outcome": entry.outcome,
                "units": entry.units,
                "unit": entry.unit,
                "claimed_seconds": entry.claimed_ms / 1000,
                "observed_seconds": None if entry.observed_ms is None else entry.observed_ms / 1000,
                "cap_seconds": entry.cap_ms / 1000,
                "granted_seconds": entry.granted_ms / 1000,
                "grant_basis": entry.grant_basis,
                "grant_status": status,
                "rate_eur_per_hour": str(entry.rate_eur_per_hour)
                if entry.rate_eur_per_hour is not None
                else None,
                "amount_eur": str(euros if counts else Decimal(0)),
                "reverses_entry": entry.reverses_id,
                "reason": entry.reason,
            }
        )
    rewards = db.session.scalars(
        select(Reward).where(Reward.period == period, Reward.node_id.in_(node_ids)).order_by(Reward.node_id)
    ).all()
    closed = db.session.get(LedgerPeriod, period)
    return {
        "participant": {"id": participant.id, "email": participant.email},
        "period": period,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "settled": bool(closed and closed.closed_at),
        "entries": lines,
        "total_exact_eur": str(exact),
        "total_eur": str(rules.to_cents(exact)),
        "rewards": [
            {
                "node_id": r.node_id,
                "node": names.get(r.node_id),
                "amount_eur": str(r.amount_eur),
                "paid": r.paid_at is not None,
                "payout_reference": r.payout_reference,
            }
            for r in rewards
        ],
    }


#: A month's rewards as its participant reads them: not settled yet, nothing to pay, paid, partly
#: paid, or to be paid.
OPEN, NOTHING_DUE, PAID, PARTLY_PAID, UNPAID = "open", "nothing_due", "paid", "partly_paid", "unpaid"


def earnings(participant: Participant, in_periods: Sequence[str]) -> list[dict[str, Any]]:
    """The participant's nodes' grants that count in each of ``in_periods``, as their
    statements (``statement``) sum them: granted ms by capability, exact euros, and the euros
    owed: the settled rewards once the period is closed, else the exact euros to the cent.
    ``payment``: ``OPEN``, ``NOTHING_DUE``, ``PAID``, ``PARTLY_PAID`` or ``UNPAID``. A few
    grouped queries, whatever the number of entries."""
    node_ids = [node.id for node in participant.nodes]
    groups = payable_groups(in_periods, node_ids)
    rewards = db.session.scalars(
        select(Reward).where(Reward.period.in_(in_periods), Reward.node_id.in_(node_ids))
    ).all()
    closed = set(
        db.session.scalars(
            select(LedgerPeriod.period).where(
                LedgerPeriod.period.in_(in_periods), LedgerPeriod.closed_at.is_not(None)
            )
        )
    )
    out = []
    for period in in_periods:
        granted: dict[str, int] = {}
        exact = Decimal(0)
        for _, _, capability, rate, ms, _ in (g for g in groups if g[0] == period):
            granted[capability] = granted.get(capability, 0) + ms
            exact += rules.reward(ms, rate if rate is not None else Decimal(0))
        due = [r for r in rewards if r.period == period and r.amount_eur > 0]
        if period not in closed:
            payment, eur = OPEN, rules.to_cents(exact)
        else:
            eur = sum((r.amount_eur for r in rewards if r.period == period), Decimal("0.00"))
            paid = sum(1 for r in due if r.paid_at is not None)
            payment = (
                NOTHING_DUE if not due else PAID if paid == len(due) else PARTLY_PAID if paid else UNPAID
            )
        out.append(
            {
                "period": period,
                "granted_ms": granted,
                "exact_eur": exact,
                "eur": eur,
                "settled": period in closed,
                "payment": payment,
            }
        )
    return out


#: A statement's CSV columns: its period, then each line's fields (``statement``).
STATEMENT_FIELDS = (
    "period",
    "entry_id",
    "received_at",
    "node",
    "node_id",
    "task_id",
    "attempt",
    "job_id",
    "capability",
    "outcome",
    "units",
    "unit",
    "claimed_seconds",
    "observed_seconds",
    "cap_seconds",
    "granted_seconds",
    "grant_basis",
    "grant_status",
    "rate_eur_per_hour",
    "amount_eur",
    "reverses_entry",
    "reason",
)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: one starting like a formula (``=``, ``+``, ``-``,
    ``@``, a tab or a carriage return — a reversal's reason, a name) gets a leading apostrophe;
    numbers, negative ones included, are left as they are."""
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        Decimal(value)
        return value
    except ArithmeticError:
        return "'" + value


def statement_csv(statement_: dict[str, Any]) -> str:
    """A statement's lines (``statement``) as CSV, one execution a row, for a spreadsheet."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=STATEMENT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for line in statement_["entries"]:
        writer.writerow(
            {key: spreadsheet_safe(value) for key, value in {"period": statement_["period"], **line}.items()}
        )
    return out.getvalue()


def _grant_status(entry: Any, decision: GrantDecision | None, period: str) -> tuple[str, bool]:
    """What became of an entry's grant, seen from ``period``, and whether it counts there:
    ``counted`` (unheld), ``held`` (its result awaits another node's), ``released`` (validated:
    counted in the period of the release, shown as ``released in YYYY-MM`` elsewhere) or
    ``refused: reason``."""
    if not entry.held:
        return "counted", entry.period == period
    if decision is None:
        return "held", False
    if decision.decision != RELEASED:
        return f"refused: {decision.reason}", False
    if decision.period == period:
        return "released", True
    return f"released in {decision.period}", False


def job_entries(job_id: str) -> list[Any]:
    """Every entry of a job's executions (its steps' and their replicas'), in one query, as rows
    of what its cost and CO₂ read: ``node_id``, ``capability``, ``granted_ms``,
    ``rate_eur_per_hour``, ``metered_ms`` (``footprints.metered_ms``) and ``counts``
    (``counted``: whether its grant counts)."""
    return db.session.execute(
        select(
            LedgerEntry.node_id,
            LedgerEntry.capability,
            LedgerEntry.granted_ms,
            LedgerEntry.rate_eur_per_hour,
            footprints.metered_ms().label("metered_ms"),
            counted().label("counts"),
        ).where(LedgerEntry.job_id == job_id)
    ).all()


def job_cost(job: Job, entries: Sequence[Any] | None = None) -> dict[str, Any]:
    """What a job cost in granted compute, and how that revenue is split (seed ADR-0001):
    grants held or refused (results not validated, app.validation) cost nothing. ``entries``:
    its counted ``job_entries`` rows when the caller has read them (none, for a job just recorded)."""
    if entries is None:
        entries = [entry for entry in job_entries(job.id) if entry.counts]
    exact = sum((rules.reward(e.granted_ms, e.rate_eur_per_hour or Decimal(0)) for e in entries), Decimal(0))
    shares = {name: Decimal(str(share)) for name, share in current_app.config["REVENUE_SPLIT"].items()}
    total = rules.to_cents(exact)
    return {
        "granted_seconds": {
            cap: sum(e.granted_ms for e in entries if e.capability == cap) / 1000
            for cap in sorted({e.capability for e in entries})
        },
        "exact_eur": str(exact),
        "eur": str(total),
        "split": {name: str(amount) for name, amount in rules.split(total, shares).items()},
    }


def reverse(entry_id: int, reason: str, by: str) -> LedgerEntry:
    """A correction: an entry that takes back another one's granted time, with who and why."""
    original = db.session.get(LedgerEntry, entry_id)
    if original is None:
        raise SettlementError(f"no ledger entry {entry_id}")
    if original.reverses_id is not None:
        raise SettlementError(f"entry {entry_id} is itself a reversal")
    if original.held and not db.session.scalar(
        select(GrantDecision.id).where(
            GrantDecision.entry_id == original.id, GrantDecision.decision == RELEASED
        )
    ):
        raise SettlementError(
            f"entry {entry_id} is held (its result awaits validation) or was refused: nothing to reverse"
        )
    if not reason.strip() or not by.strip():
        raise SettlementError("a reversal needs a reason and the name of who makes it")
    lock_ledger_for_entries()
    now = utcnow()
    reversal = LedgerEntry(
        task_id=original.task_id,
        attempt=-1 - original.id,  # outside the executions' (task, attempt) space
        job_id=original.job_id,
        step_id=original.step_id,
        node_id=original.node_id,
        node=original.node,
        capability=original.capability,
        task_name=original.task_name,
        outcome=REVERSAL,
        wall_ms=0,
        cpu_ms=0,
        unit=original.unit,
        units=-original.units,
        received_at=now,
        claimed_ms=0,
        observed_ms=0,
        cap_ms=0,
        granted_ms=-original.granted_ms,
        grant_basis=REVERSAL,
        rate_eur_per_hour=original.rate_eur_per_hour,
        period=periods.open_period_for(now, periods.closed()),
        reverses_id=original.id,
        reason=reason.strip(),
        created_by=by.strip(),
    )
    try:
        with db.session.begin_nested():
            db.session.add(reversal)
    except IntegrityError:
        raise SettlementError(f"entry {entry_id} is already reversed") from None
    return reversal
