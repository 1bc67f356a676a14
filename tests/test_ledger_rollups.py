"""The roll-ups of the ledger (``ledger_days``, ``node_days``: migration f7a2c9e4b1d3; each
node's grants that count, ``node_grants``: a9d3e6f2c814) are the raw sums of the entries and
decisions, after entries on several days, held grants released and refused, a reversal and a
member's erasure, and after compaction; the stats of a span read from them are the stats summed
from every entry; two writers entering at once never wait on each other."""

from __future__ import annotations

import importlib.util
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

#: Day by day, what the entries and decisions sum to, and what the roll-ups hold.
RAW_DAYS = """
SELECT day, capability, outcome, held, rate_eur_per_hour, decision, sum(entries), sum(units), sum(granted_ms)
FROM (
    SELECT (received_at AT TIME ZONE 'UTC')::date AS day, capability, outcome, held, rate_eur_per_hour,
        '' AS decision, 1 AS entries, units, granted_ms
    FROM ledger_entries
    UNION ALL
    SELECT (d.decided_at AT TIME ZONE 'UTC')::date, e.capability, e.outcome, e.held, e.rate_eur_per_hour,
        d.decision, 1, e.units, e.granted_ms
    FROM grant_decisions AS d JOIN ledger_entries AS e ON e.id = d.entry_id
) AS raw
GROUP BY 1, 2, 3, 4, 5, 6
"""
ROLLED_DAYS = """
SELECT day, capability, outcome, held, rate_eur_per_hour, decision, sum(entries), sum(units), sum(granted_ms)
FROM ledger_days GROUP BY 1, 2, 3, 4, 5, 6
"""
RAW_NODE_DAYS = """
SELECT (received_at AT TIME ZONE 'UTC')::date, node_id, count(*),
    sum(least(claimed_ms, coalesce(observed_ms, 0)))
FROM ledger_entries GROUP BY 1, 2
"""
ROLLED_NODE_DAYS = "SELECT day, node_id, sum(entries), sum(metered_ms) FROM node_days GROUP BY 1, 2"
#: Each node's grants that count (``settlement.counted``: unheld, or held and released), and
#: their running sums (``node_grants``, migration a9d3e6f2c814).
RAW_NODE_GRANTS = """
SELECT e.node_id, e.capability, sum(e.granted_ms) FROM ledger_entries AS e
WHERE e.node_id IS NOT NULL AND (NOT e.held OR EXISTS (
    SELECT 1 FROM grant_decisions AS d WHERE d.entry_id = e.id AND d.decision = 'released'))
GROUP BY 1, 2
"""
ROLLED_NODE_GRANTS = "SELECT node_id, capability, sum(granted_ms) FROM node_grants GROUP BY 1, 2"

#: What each decision copied of its entry (trigger grant_decisions_copy_grant), and the entry's.
RAW_DECISION_GRANTS = (
    "SELECT d.id, e.capability, e.rate_eur_per_hour, e.granted_ms "
    "FROM grant_decisions AS d JOIN ledger_entries AS e ON e.id = d.entry_id"
)
COPIED_DECISION_GRANTS = "SELECT id, capability, rate_eur_per_hour, granted_ms FROM grant_decisions"


def _migration(revision: str):
    """The migration module of ``revision``, as Alembic would load it."""
    path = next((Path(__file__).parents[1] / "migrations" / "versions").glob(f"{revision}_*.py"))
    spec = importlib.util.spec_from_file_location(f"migration_{revision}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(session, query: str) -> set[tuple]:
    return {tuple(row) for row in session.execute(text(query))}


def _assert_rollups_are_the_raw_sums(session) -> None:
    raw, rolled = _rows(session, RAW_DAYS), _rows(session, ROLLED_DAYS)
    assert rolled == raw, (sorted(rolled - raw, key=str)[:5], sorted(raw - rolled, key=str)[:5])
    raw, rolled = _rows(session, RAW_NODE_DAYS), _rows(session, ROLLED_NODE_DAYS)
    assert rolled == raw, (sorted(rolled - raw, key=str)[:5], sorted(raw - rolled, key=str)[:5])
    raw, rolled = _rows(session, RAW_NODE_GRANTS), _rows(session, ROLLED_NODE_GRANTS)
    assert rolled == raw, (sorted(rolled - raw, key=str)[:5], sorted(raw - rolled, key=str)[:5])
    raw, copied = _rows(session, RAW_DECISION_GRANTS), _rows(session, COPIED_DECISION_GRANTS)
    assert copied == raw, (sorted(copied - raw, key=str)[:5], sorted(raw - copied, key=str)[:5])


def _assert_span_is_the_raw_sums(session, span) -> None:
    """What a stats span sums (``stats._groups``, ``stats._grants``), from the roll-ups and from
    the entries alone, equals the raw rows' sums: not only the two paths equal each other."""
    from app import stats

    bounds = {"a": span.start, "b": span.end}
    in_span = "received_at >= :a AND received_at < :b"
    raw_groups = {
        (c, o, h, None if r is None else Decimal(r), int(n), int(u), int(g))
        for c, o, h, r, n, u, g in session.execute(
            text(
                "SELECT capability, outcome, held, rate_eur_per_hour, count(*), sum(units), sum(granted_ms) "
                f"FROM ledger_entries WHERE {in_span} GROUP BY 1, 2, 3, 4"
            ),
            bounds,
        )
    }
    raw_metered = {
        node_id: int(ms)
        for node_id, ms in session.execute(
            text(
                "SELECT node_id, sum(least(claimed_ms, coalesce(observed_ms, 0))) "
                f"FROM ledger_entries WHERE {in_span} GROUP BY 1"
            ),
            bounds,
        )
    }
    raw_grants: Counter = Counter()
    for capability, rate, ms in session.execute(
        text(
            "SELECT capability, rate_eur_per_hour, granted_ms FROM ledger_entries "
            f"WHERE {in_span} AND NOT held "
            "UNION ALL SELECT e.capability, e.rate_eur_per_hour, e.granted_ms FROM grant_decisions AS d "
            "JOIN ledger_entries AS e ON e.id = d.entry_id "
            "WHERE d.decided_at >= :a AND d.decided_at < :b AND d.decision = 'released'"
        ),
        bounds,
    ):
        raw_grants[(capability, rate)] += int(ms)
    for rollups in (True, False):
        parts = stats._parts(span, rollups)
        groups, metered = stats._groups(parts)
        assert {
            (g.capability, g.outcome, g.held, g.rate, g.entries, g.units, g.granted_ms) for g in groups
        } == (raw_groups)
        assert metered == raw_metered
        assert +Counter(stats._grants(parts, groups)) == +raw_grants


def _entry(node, received: datetime, **fields):
    from app.ledger import periods
    from app.models import LedgerEntry

    values = {
        "task_id": str(uuid.uuid4()),
        "attempt": 0,
        "node_id": node.id if node is not None else None,
        "node": f"{node.name}@host" if node is not None else "coordinator",
        "capability": "ocr",
        "task_name": "grid.ocr.extract",
        "outcome": "succeeded",
        "wall_ms": 4_000,
        "cpu_ms": 3_000,
        "unit": "page",
        "units": 2,
        "received_at": received,
        "claimed_ms": 4_000,
        "observed_ms": 4_500,
        "cap_ms": 12_000,
        "granted_ms": 4_000,
        "grant_basis": "claimed",
        "rate_eur_per_hour": Decimal("0.60"),
        "period": periods.of(received),
        "signature": uuid.uuid4().hex,
    }
    values.update(fields)
    return LedgerEntry(**values)


def test_the_daily_rollups_are_the_raw_sums_after_entries_decisions_reversals_and_erasure(flask_app):
    from app import figures, gdpr, nodes, stats
    from app.extensions import db
    from app.ledger import periods, settlement
    from app.models import GrantDecision

    owner = f"rollup-{uuid.uuid4().hex[:8]}@koprogo.test"
    # Days of their own (no other test writes or settles in 2009), and now: a reversal is received now.
    day = datetime(2009, 3, 10, tzinfo=UTC)
    with flask_app.app_context():
        node = nodes.create(f"rollup-node-{uuid.uuid4().hex[:8]}", owner)
        other = nodes.create(f"rollup-other-{uuid.uuid4().hex[:8]}", f"x-{owner}")
        entries = [
            # Three whole days and the ragged ends of a span (06:00 on the 10th to 18:00 on the 13th).
            _entry(node, day + timedelta(hours=3)),  # before the span
            _entry(node, day + timedelta(hours=7), units=5),  # its first ragged end
            _entry(
                other,
                day + timedelta(days=1, hours=1),
                capability="llm",
                unit="token",
                units=300,
                rate_eur_per_hour=Decimal("1.20"),
            ),
            _entry(other, day + timedelta(days=1, hours=23, minutes=59, seconds=59), outcome="failed"),
            _entry(node, day + timedelta(days=2), observed_ms=None),  # nothing observed: nothing metered
            _entry(None, day + timedelta(days=2, hours=12), rate_eur_per_hour=None, granted_ms=0),
            _entry(node, day + timedelta(days=3, hours=17, minutes=59), held=True),  # released below
            _entry(other, day + timedelta(days=3, hours=2), held=True),  # refused below
            _entry(node, day + timedelta(days=3, hours=18)),  # after the span
        ]
        # One statement for the first ones (one firing of the statement triggers over many
        # rows), one row each for the others.
        db.session.add_all(entries[:5])
        db.session.flush()
        for entry in entries[5:]:
            db.session.add(entry)
            db.session.flush()
        db.session.add_all(
            [
                GrantDecision(
                    entry_id=entries[6].id,
                    node_id=node.id,
                    # Whatever the inserting code says, the entry's own figures are copied.
                    capability="llm",
                    granted_ms=999_999_999,
                    decision="released",
                    reason="validated",
                    decided_at=day + timedelta(days=2, hours=5),
                    period=periods.of(day),
                ),
                GrantDecision(
                    entry_id=entries[7].id,
                    node_id=other.id,
                    decision="refused",
                    reason="invalid_result",
                    decided_at=day + timedelta(days=3, hours=9),
                    period=periods.of(day),
                ),
            ]
        )
        db.session.commit()
        _assert_rollups_are_the_raw_sums(db.session)
        # What the node list and the dashboard read: the refused held grant is not there.
        assert settlement.granted_ms_by_node([node.id, other.id, str(uuid.uuid4())]) == {
            node.id: {"ocr": 5 * 4_000},
            other.id: {"llm": 4_000, "ocr": 4_000},
        }
        assert settlement.granted_ms_by_capability([node.id, other.id]) == {"ocr": 6 * 4_000, "llm": 4_000}

        span = stats.Window("custom", day + timedelta(hours=6), day + timedelta(days=3, hours=18))
        parts = stats._parts(span)
        assert parts.days == ((day + timedelta(days=1)).date(), (day + timedelta(days=3)).date())
        assert stats.summary(span, money=True) == stats.summary(span, money=True, rollups=False)
        _assert_span_is_the_raw_sums(db.session, span)
        whole = stats.summary(span, money=True)["capabilities"]
        assert whole["ocr"]["executions"] == 6 and whole["llm"]["units"] == 300
        db.session.rollback()

        # A correction is another entry, received now; an erased member's nodes keep their ids.
        settlement.reverse(entries[2].id, "metered twice", "treasurer@koprogo.test")
        db.session.commit()
        assert gdpr.erase_owner(owner) is not None
        db.session.commit()
        _assert_rollups_are_the_raw_sums(db.session)
        assert settlement.granted_ms_by_node([other.id])[other.id]["llm"] == 0  # reversed
        assert stats.summary(span, money=True) == stats.summary(span, money=True, rollups=False)
        _assert_span_is_the_raw_sums(db.session, span)
        now = datetime.now(UTC)
        today = stats.Window("custom", now - timedelta(days=3), now + timedelta(seconds=1))
        assert stats.summary(today, money=True) == stats.summary(today, money=True, rollups=False)
        _assert_span_is_the_raw_sums(db.session, today)
        db.session.rollback()

        figures.compact_tallies(db.session)  # folds today's and yesterday's delta rows
        db.session.commit()
        _assert_rollups_are_the_raw_sums(db.session)
        assert db.session.scalar(
            text(
                "SELECT max(n) FROM (SELECT count(*) AS n FROM ledger_days "
                "WHERE day >= (now() AT TIME ZONE 'UTC')::date - 1 "
                "GROUP BY day, capability, outcome, held, rate_eur_per_hour, decision) AS g"
            )
        ) in (None, 1)
        assert (
            db.session.scalar(
                text("SELECT max(n) FROM (SELECT count(*) n FROM node_grants GROUP BY node_id, capability) g")
            )
            == 1
        )
        db.session.rollback()

        # The migration's backfill, from the entries and decisions already there, is the same.
        db.session.execute(text("DELETE FROM node_grants"))
        db.session.execute(text(_migration("a9d3e6f2c814").BACKFILL))
        # Likewise the decisions' copies of their entries' figures (the guard lifted to undo them).
        db.session.execute(
            text(
                "ALTER TABLE grant_decisions DISABLE TRIGGER grant_decisions_no_update_delete; "
                "UPDATE grant_decisions SET capability = NULL, rate_eur_per_hour = NULL, granted_ms = NULL; "
                "ALTER TABLE grant_decisions ENABLE TRIGGER grant_decisions_no_update_delete"
            )
        )
        assert _rows(db.session, COPIED_DECISION_GRANTS) != _rows(db.session, RAW_DECISION_GRANTS)
        db.session.execute(text(_migration("d5b8e1f3a7c2").BACKFILL))
        with pytest.raises(Exception, match="append-only"):  # the guard is back
            with db.session.begin_nested():
                db.session.execute(text("UPDATE grant_decisions SET granted_ms = 0"))
        _assert_rollups_are_the_raw_sums(db.session)
        db.session.rollback()


def test_a_release_of_an_unheld_grant_is_not_counted_twice_by_the_nodes_sums(flask_app):
    """The ledger decides held grants only; a ``released`` decision written on an unheld entry
    all the same (by hand, in SQL) leaves its grant counted once, as ``settlement.counted`` does."""
    from app import nodes
    from app.extensions import db
    from app.ledger import periods, settlement
    from app.models import GrantDecision

    received = datetime(2008, 7, 1, 12, tzinfo=UTC)
    with flask_app.app_context():
        node = nodes.create(f"rollup-once-{uuid.uuid4().hex[:8]}", "rollup-once@koprogo.test")
        entry = _entry(node, received)
        db.session.add(entry)
        db.session.flush()
        db.session.add(
            GrantDecision(
                entry_id=entry.id,
                node_id=node.id,
                decision="released",
                reason="validated",
                decided_at=received,
                period=periods.of(received),
            )
        )
        db.session.commit()
        assert settlement.granted_ms_by_node([node.id]) == {node.id: {"ocr": 4_000}}
        _assert_rollups_are_the_raw_sums(db.session)
        db.session.rollback()


def test_two_writers_entering_at_once_never_wait_on_each_other_for_a_rollup_row(flask_app):
    """Two ledger workers enter entries of the same node, day and group at the same moment:
    the second neither waits for the first to commit nor deadlocks (the roll-ups are delta
    rows), and both are counted."""
    from sqlalchemy.orm import Session

    from app import nodes
    from app.extensions import db

    with flask_app.app_context():
        node = nodes.create(f"rollup-twice-{uuid.uuid4().hex[:8]}", "rollup-twice@koprogo.test")
        db.session.commit()
        received = datetime(2009, 5, 2, 12, tzinfo=UTC)
        first, second = Session(db.engine), Session(db.engine)
        try:
            first.add(_entry(node, received))
            first.flush()  # its roll-up rows written, its transaction open
            second.execute(text("SET LOCAL lock_timeout = '2s'"))
            second.add(_entry(node, received))
            second.flush()  # would wait (and time out) on a row the first holds
            second.commit()
            first.commit()
        finally:
            first.close()
            second.close()
        rolled = db.session.execute(
            text("SELECT sum(entries) FROM node_days WHERE day = '2009-05-02' AND node_id = :node"),
            {"node": node.id},
        ).scalar()
        assert rolled == 2
        _assert_rollups_are_the_raw_sums(db.session)
        db.session.rollback()


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_the_named_periods_read_from_the_rollups_are_the_raw_figures(flask_app, period):
    """Whatever the suite entered before (real jobs' entries, reversals, decisions): the day,
    week and month stats are the same read from the roll-ups as summed from every entry."""
    from app import stats
    from app.extensions import db

    with flask_app.test_request_context():
        now = datetime.now(UTC)
        span = stats.window(period, None, None, 366, now)
        assert stats.summary(span, money=True) == stats.summary(span, money=True, rollups=False)
        _assert_span_is_the_raw_sums(db.session, span)
        db.session.rollback()
