"""The operators' figures (app.figures) against the real PostgreSQL: the running tallies that
triggers keep agree with the ledger's own rows, through held grants, decisions, reversals,
refusals, finished jobs and compaction. The database is the session's: figures are compared as
differences around what a test inserts."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app import figures
from app.extensions import db
from app.ledger import settlement
from app.models import (
    GrantDecision,
    Job,
    LedgerEntry,
    LedgerRejection,
    LedgerTally,
    utcnow,
)


def _entry(capability: str, outcome: str, granted_ms: int, held: bool = False, **extra) -> LedgerEntry:
    return LedgerEntry(
        task_id=str(uuid.uuid4()),
        attempt=extra.pop("attempt", 1),
        node=f"figures@{capability}",
        capability=capability,
        task_name=f"grid.{capability}.test",
        outcome=outcome,
        wall_ms=granted_ms,
        cpu_ms=granted_ms,
        unit="page",
        units=1,
        claimed_ms=granted_ms,
        granted_ms=granted_ms,
        grant_basis="claimed",
        held=held,
        **extra,
    )


def _counted_ms(capability: str) -> int:
    """What settlement counts, summed straight from the ledger's rows (the slow way)."""
    return int(
        db.session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.granted_ms), 0)).where(
                LedgerEntry.capability == capability, settlement.counted()
            )
        )
    )


def test_tallies_follow_entries_held_grants_decisions_and_reversals(app_context):
    session = db.session
    before = figures.tasks_completed(session)["ocr"]
    granted_before = figures.granted_ms_by_capability(session)["ocr"]
    checks_before = figures.validation(session)
    assert granted_before == _counted_ms("ocr")

    plain = [_entry("ocr", "succeeded", 1000), _entry("ocr", "failed", 300), _entry("ocr", "retried", 200)]
    kept = _entry("ocr", "succeeded", 5000, held=True)
    lost = _entry("ocr", "succeeded", 7000, held=True)
    waiting = _entry("ocr", "succeeded", 11000, held=True)
    session.add_all([*plain, kept, lost, waiting])
    session.flush()
    session.add_all(
        [
            GrantDecision(entry_id=kept.id, decision="released", reason="validated"),
            GrantDecision(entry_id=lost.id, decision="refused", reason="invalid_result"),
        ]
    )
    session.add(
        _entry(
            "ocr", "reversal", -1000, attempt=-1, reverses_id=plain[0].id, reason="test", created_by="figures"
        )
    )
    session.commit()

    after = figures.tasks_completed(session)["ocr"]
    assert after["succeeded"] - before["succeeded"] == 4  # the reversal is not an execution
    assert after["failed"] - before["failed"] == 1
    assert after["retried"] - before["retried"] == 1
    granted = figures.granted_ms_by_capability(session)["ocr"]
    assert granted - granted_before == 1000 + 300 + 200 + 5000 - 1000  # held ones only once released
    assert granted == _counted_ms("ocr")
    assert figures.compute_hours_by_capability(session)["ocr"] == (Decimal(granted) / 3_600_000).quantize(
        Decimal("0.000001")
    )
    checks = figures.validation(session)
    assert checks["grants_held"] - checks_before["grants_held"] == 1
    assert checks["invalid_results"] - checks_before["invalid_results"] == 1

    # Folding the delta rows together changes no figure.
    rows = session.scalar(select(func.count(LedgerTally.id)))
    figures.compact_tallies(session)
    session.commit()
    assert session.scalar(select(func.count(LedgerTally.id))) <= rows
    assert figures.tasks_completed(session)["ocr"] == after
    assert figures.granted_ms_by_capability(session)["ocr"] == granted
    assert figures.validation(session) == checks


def test_refusals_and_finished_jobs_are_tallied_once(app_context):
    session = db.session
    refusals = figures.refusals_by_reason(session)
    latency = figures.job_latency(session)
    outcomes = figures.jobs_by_outcome(session).get("translate", {})

    session.add_all([LedgerRejection(kind="completed", reason="bad_signature") for _ in range(3)])
    created = utcnow() - timedelta(seconds=40)
    quick = Job(kind="translate", state="queued", owner="figures@koprogo.test", created_at=created)
    session.add(quick)
    session.commit()
    quick.state, quick.finished_at = "succeeded", created + timedelta(seconds=3)
    session.commit()
    quick.finished_at = created + timedelta(seconds=4000)  # a later change is not a second end
    session.commit()
    # A job inserted already over (a submission the broker refused) counts too.
    session.add(
        Job(
            kind="translate",
            state="failed",
            owner="figures@koprogo.test",
            created_at=created,
            finished_at=created + timedelta(seconds=40),
        )
    )
    session.commit()

    assert figures.refusals_by_reason(session)["bad_signature"] == refusals.get("bad_signature", 0) + 3
    now = figures.job_latency(session)
    was = latency.get(("translate", "succeeded"), {"buckets": {}, "count": 0, "sum": 0.0})
    got = now[("translate", "succeeded")]
    assert got["count"] == was["count"] + 1
    assert got["buckets"][2.0] == was["buckets"].get(2.0, 0)  # 3 s is above the 2 s bound …
    assert got["buckets"][5.0] == was["buckets"].get(5.0, 0) + 1  # … and within 5 s
    assert got["sum"] - was["sum"] == pytest.approx(3.0)
    failed = now[("translate", "failed")]
    assert failed["buckets"][float("inf")] == failed["count"]
    jobs = figures.jobs_by_outcome(session)["translate"]
    assert jobs["succeeded"] == outcomes.get("succeeded", 0) + 1
    assert jobs["failed"] == outcomes.get("failed", 0) + 1
    assert list(now[("translate", "failed")]["buckets"]) == figures.latency_bounds(session)
