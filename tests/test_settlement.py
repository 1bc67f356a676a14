"""Settlement, payouts, exports, statements, job costs, rates and corrections, against the
session's real PostgreSQL (and, for HTTP, the real API server).

Periods are global, so every test works in past periods of its own (2000–2002: the seed rates
are in force from 2000-01-01) and enrols nodes and participants with unique names.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from tests.grid import Client, manage

OCR, LLM = "ocr", "llm"
TASK_OF = {OCR: "grid.ocr.extract", LLM: "grid.llm.summarise"}


def _suffix() -> str:
    return uuid.uuid4().hex[:10]


def _node(prefix: str = "node", email: str | None = None):
    """A newly enrolled node (and participant); flushed, not committed."""
    from app import nodes

    name = f"{prefix}-{_suffix()}"
    return nodes.create(name, email or f"{name}@koprogo.test")


def _entry(
    node, period: str, capability: str, granted_ms: int, rate: str, *, job=None, step=None, held: bool = False
):
    """A ledger entry as the ledger would enter it, counted in ``period``; added and flushed."""
    from app.extensions import db
    from app.ledger import rules
    from app.models import LedgerEntry

    entry = LedgerEntry(
        task_id=step.task_id if step is not None else str(uuid.uuid4()),
        attempt=0,
        job_id=job.id if job is not None else None,
        step_id=step.id if step is not None else None,
        node_id=node.id,
        node=f"{node.name}@host",
        capability=capability,
        task_name=TASK_OF[capability],
        outcome="succeeded",
        wall_ms=granted_ms,
        cpu_ms=granted_ms,
        unit=rules.UNIT_OF_CAPABILITY[capability],
        units=1,
        claimed_ms=granted_ms,
        observed_ms=granted_ms + 2000,
        cap_ms=granted_ms * 10,
        granted_ms=granted_ms,
        grant_basis="claimed",
        rate_eur_per_hour=Decimal(rate),
        period=period,
        signature=uuid.uuid4().hex,
        held=held,
    )
    db.session.add(entry)
    db.session.flush()
    return entry


def _rewards(period: str) -> list:
    from app.extensions import db
    from app.models import Reward

    return db.session.scalars(select(Reward).where(Reward.period == period).order_by(Reward.node_id)).all()


def _counts(period: str) -> tuple[int, int]:
    from app.extensions import db
    from app.models import Reward, RewardLine

    rewards = db.session.scalar(select(func.count()).select_from(Reward).where(Reward.period == period))
    lines = db.session.scalar(
        select(func.count()).select_from(RewardLine).join(Reward).where(Reward.period == period)
    )
    return rewards, lines


# --- settle -----------------------------------------------------------------------------------


def test_settling_makes_one_reward_per_node_whose_cents_carry_the_remainder_and_add_up(flask_app):
    """Three nodes each earn 1.333… cents: rounding each alone pays 3 cents of a 4-cent period;
    carrying the remainder pays 1 + 2 + 1 in node-id order."""
    from app.extensions import db
    from app.ledger import settlement
    from app.models import LedgerPeriod

    period = "2001-01"
    with flask_app.app_context():
        a, b, c = _node("carry"), _node("carry"), _node("carry")
        # a: one capability at two rates (a rate change never rewrites what was earned before)
        _entry(a, period, OCR, 40_000, "0.60")  # 0.00666… €
        _entry(a, period, OCR, 32_000, "0.75")  # 0.00666… €
        # b: two capabilities, one of them in two executions
        _entry(b, period, OCR, 30_000, "0.60")
        _entry(b, period, OCR, 10_000, "0.60")  # 40,000 ms of OCR: 0.00666… €
        _entry(b, period, LLM, 20_000, "1.20")  # 0.00666… €
        _entry(c, period, LLM, 40_000, "1.20")  # 0.01333… €
        settlement.settle(period)
        db.session.commit()
        ids = {node.id: node for node in (a, b, c)}

    with flask_app.app_context():
        row = db.session.get(LedgerPeriod, period)
        assert row.closed_at is not None
        assert row.entries == 6
        assert row.total_exact_eur == Decimal("0.04")
        assert row.total_eur == Decimal("0.04")
        rewards = _rewards(period)
        assert sorted(r.node_id for r in rewards) == sorted(ids)
        assert [r.amount_eur for r in rewards] == [Decimal("0.01"), Decimal("0.02"), Decimal("0.01")]
        assert sum(r.amount_eur for r in rewards) == row.total_eur
        for reward in rewards:
            assert reward.exact_eur == Decimal("0.013333333333")  # NUMERIC(30, 12)
            assert abs(reward.amount_eur - reward.exact_eur) < Decimal("0.01")
            assert reward.period_start == datetime(2001, 1, 1, tzinfo=UTC)
            assert reward.period_end == datetime(2001, 2, 1, tzinfo=UTC)
            assert reward.paid_at is None and reward.payout_reference is None
        lines = {
            r.node_id: [(x.capability, x.rate_eur_per_hour, x.granted_ms) for x in r.lines] for r in rewards
        }
        assert sorted(lines[a.id]) == [(OCR, Decimal("0.60"), 40_000), (OCR, Decimal("0.75"), 32_000)]
        assert sorted(lines[b.id]) == [(LLM, Decimal("1.20"), 20_000), (OCR, Decimal("0.60"), 40_000)]
        assert lines[c.id] == [(LLM, Decimal("1.20"), 40_000)]
        by_cap = {(r.node_id, x.capability, x.rate_eur_per_hour): x for r in rewards for x in r.lines}
        ocr_b = by_cap[(b.id, OCR, Decimal("0.60"))]
        assert ocr_b.hours == Decimal("0.011111")
        assert ocr_b.exact_eur == Decimal("0.006666666667")
        for reward in rewards:  # the lines explain the reward to the last stored digit
            assert abs(sum(x.exact_eur for x in reward.lines) - reward.exact_eur) < Decimal("0.000000000003")


def test_a_half_cent_rounds_to_even(flask_app):
    from app.extensions import db
    from app.ledger import settlement

    period = "2001-02"
    with flask_app.app_context():
        node = _node("even")
        _entry(node, period, OCR, 150_000, "0.60")  # exactly 0.025 €
        row = settlement.settle(period)
        db.session.commit()
        assert row.total_exact_eur == Decimal("0.025")
        assert row.total_eur == Decimal("0.02")  # half-up would pay 0.03
        (reward,) = _rewards(period)
        assert reward.amount_eur == Decimal("0.02")


def test_settling_twice_changes_nothing(flask_app):
    from app.extensions import db
    from app.ledger import settlement
    from app.models import LedgerPeriod

    period = "2001-03"
    with flask_app.app_context():
        a, b = _node("twice"), _node("twice")
        _entry(a, period, OCR, 123_456, "0.60")
        _entry(b, period, LLM, 654_321, "1.20")
        first = settlement.settle(period)
        db.session.commit()
        closed_at, total = first.closed_at, first.total_eur
        counts = _counts(period)
        assert counts == (2, 2)

    with flask_app.app_context():
        again = settlement.settle(period)
        db.session.commit()
        assert again.period == period
        assert again.closed_at == closed_at and again.total_eur == total
        assert _counts(period) == counts
        assert (
            db.session.scalar(
                select(func.count()).select_from(LedgerPeriod).where(LedgerPeriod.period == period)
            )
            == 1
        )


def test_a_period_that_has_not_ended_cannot_be_settled(flask_app):
    from app.extensions import db
    from app.ledger import periods, settlement
    from app.models import LedgerPeriod, utcnow

    now = utcnow()
    current = periods.of(now)
    with flask_app.app_context():
        for period in (current, periods.following(current)):
            with pytest.raises(settlement.SettlementError, match="has not ended"):
                settlement.settle(period)
            db.session.rollback()
            assert (
                db.session.get(LedgerPeriod, period) is None
                or db.session.get(LedgerPeriod, period).closed_at is None
            )
        # the last instant of a month is still inside it
        start, end = periods.bounds("2002-04")
        with pytest.raises(settlement.SettlementError):
            settlement.settle("2002-04", now=end - timedelta(microseconds=1))
        db.session.rollback()
        with pytest.raises(ValueError, match="YYYY-MM"):
            settlement.settle("2002-4")
        db.session.rollback()


def test_settle_from_the_command_line_prints_a_summary_and_again_changes_nothing(flask_app):
    from app.extensions import db

    period = "2001-05"
    with flask_app.app_context():
        a, b = _node("cli-settle"), _node("cli-settle")
        _entry(a, period, OCR, 120_000, "0.60")  # 0.02 €
        _entry(a, period, LLM, 300_000, "1.20")  # 0.10 €
        _entry(b, period, LLM, 600_000, "1.20")  # 0.20 €
        a_id, b_id = a.id, b.id
        db.session.commit()

    first = manage("ledger", "settle", "--period", period)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"{period} closed at ")
    assert ": 3 entries, 2 rewards, 0.32 € in all" in first.stdout

    with flask_app.app_context():
        assert _counts(period) == (2, 3)
        assert {r.node_id: r.amount_eur for r in _rewards(period)} == {
            a_id: Decimal("0.12"),
            b_id: Decimal("0.20"),
        }

    again = manage("ledger", "settle", "--period", period)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    with flask_app.app_context():
        assert _counts(period) == (2, 3)

    unended = manage("ledger", "settle", "--period", "2999-01")
    assert unended.returncode == 1
    assert "has not ended" in unended.stderr
    malformed = manage("ledger", "settle", "--period", "2001-13")
    assert malformed.returncode == 1
    assert "YYYY-MM" in malformed.stderr and "Traceback" not in malformed.stderr


def test_the_beat_schedule_settles_every_ended_open_period_once(flask_app):
    import celeryconfig
    from app.extensions import db
    from app.ledger import settlement
    from app.models import LedgerPeriod

    schedule = [
        s for s in celeryconfig.beat_schedule.values() if s["task"] == celeryconfig.TASK_LEDGER_SETTLE_DUE
    ]
    assert schedule and schedule[0]["options"]["queue"] == celeryconfig.COORDINATOR_QUEUE

    now = datetime(2000, 9, 1, 2, 15, tzinfo=UTC)  # the night 2000-08 ended
    with flask_app.app_context():
        node = _node("due")
        _entry(node, "2000-06", OCR, 60_000, "0.60")
        _entry(node, "2000-08", OCR, 60_000, "0.60")
        _entry(node, "2000-09", OCR, 60_000, "0.60")  # still open at that moment
        settled = settlement.settle_due(now)
        db.session.commit()
        assert {"2000-06", "2000-08"} <= set(settled)
        assert "2000-09" not in settled and "2000-07" not in settled  # no entries: nothing to close
        assert db.session.get(LedgerPeriod, "2000-09") is None
        assert db.session.get(LedgerPeriod, "2000-06").total_eur == Decimal("0.01")
        assert not {"2000-06", "2000-08"} & set(settlement.settle_due(now))
        db.session.commit()


# --- late entries and closed periods ----------------------------------------------------------


def test_late_entries_go_to_the_next_open_period_and_a_closed_period_never_changes(flask_app):
    from app.extensions import db
    from app.ledger import periods, settlement
    from app.models import LedgerPeriod, Node

    period = "2001-04"
    during = datetime(2001, 4, 30, 23, 59, 59, tzinfo=UTC)
    with flask_app.app_context():
        assert periods.open_period_for(during, set()) == period
        node_id = _node("late").id
        _entry(db.session.get(Node, node_id), period, OCR, 90_000, "0.60")
        settlement.settle(period)
        db.session.commit()

    with flask_app.app_context():
        closed = periods.closed()
        assert period in closed
        assert periods.open_period_for(during, closed) not in closed
        assert periods.open_period_for(during, closed) > period
        assert periods.open_period_for(during, {period}) == "2001-05"
        assert periods.open_period_for(during, {period, "2001-05", "2001-06"}) == "2001-07"
        assert periods.open_period_for(datetime(2001, 12, 31, 23, 0, tzinfo=UTC), {"2001-12"}) == "2002-01"
        before = db.session.get(LedgerPeriod, period)
        snapshot = (before.closed_at, before.total_exact_eur, before.total_eur, before.entries)
        (reward,) = _rewards(period)
        paid = (
            reward.id,
            reward.exact_eur,
            reward.amount_eur,
            [(x.capability, x.granted_ms) for x in reward.lines],
        )
        # an entry written into the closed period anyway (by a writer that did not check):
        # PostgreSQL refuses it
        with pytest.raises(DBAPIError, match="is settled"):
            _entry(db.session.get(Node, node_id), period, OCR, 3_600_000, "0.60")
            db.session.flush()
        db.session.rollback()
        # nor can the settled reward be changed, other than marked paid once
        with pytest.raises(DBAPIError, match="settled periods never change"):
            db.session.execute(text("UPDATE rewards SET amount_eur = 999 WHERE period = :p"), {"p": period})
        db.session.rollback()
        with pytest.raises(DBAPIError, match="settled periods never change"):
            db.session.execute(
                text("UPDATE ledger_periods SET closed_at = NULL WHERE period = :p"), {"p": period}
            )
        db.session.rollback()

    with flask_app.app_context():
        row = settlement.settle(period)
        db.session.commit()
        assert (row.closed_at, row.total_exact_eur, row.total_eur, row.entries) == snapshot
        (reward,) = _rewards(period)
        assert (
            reward.id,
            reward.exact_eur,
            reward.amount_eur,
            [(x.capability, x.granted_ms) for x in reward.lines],
        ) == paid


# --- payout -----------------------------------------------------------------------------------


def test_paying_marks_a_settled_periods_rewards_paid_once(flask_app):
    from app.extensions import db
    from app.ledger import settlement

    period = "2001-06"
    with flask_app.app_context():
        a, b, c = _node("pay"), _node("pay"), _node("pay")
        a_id, b_id, c_id = a.id, b.id, c.id
        for node in (a, b, c):
            _entry(node, period, OCR, 600_000, "0.60")
        with pytest.raises(settlement.SettlementError, match="not settled"):
            settlement.pay(period, "TOO-EARLY")
        settlement.settle(period)
        db.session.commit()

        with pytest.raises(settlement.SettlementError, match="reference"):
            settlement.pay(period, "   ")
        db.session.rollback()

        first = settlement.pay(period, "  SEPA-2001-06-A ", node_ids=[a_id])
        db.session.commit()
        assert [r.node_id for r in first] == [a_id]
        rest = settlement.pay(period, "SEPA-2001-06-B")
        db.session.commit()
        assert sorted(r.node_id for r in rest) == sorted([b_id, c_id])
        assert settlement.pay(period, "SEPA-2001-06-C") == []
        db.session.commit()

    with flask_app.app_context():
        paid = {r.node_id: r for r in _rewards(period)}
        assert paid[a_id].payout_reference == "SEPA-2001-06-A"
        assert paid[b_id].payout_reference == paid[c_id].payout_reference == "SEPA-2001-06-B"
        assert all(r.paid_at is not None for r in paid.values())
        assert paid[a_id].paid_at <= paid[b_id].paid_at

    with flask_app.app_context():
        with pytest.raises(settlement.SettlementError, match="not settled"):
            settlement.pay("2001-07", "NOTHING")


def test_pay_from_the_command_line(flask_app):
    from app.extensions import db
    from app.ledger import settlement

    period = "2001-08"
    with flask_app.app_context():
        for node in (_node("cli-pay"), _node("cli-pay")):
            _entry(node, period, LLM, 300_000, "1.20")

        db.session.commit()
    unsettled = manage("ledger", "pay", "--period", period, "--reference", "EARLY")
    assert unsettled.returncode == 1
    assert "not settled" in unsettled.stderr

    with flask_app.app_context():
        settlement.settle(period)
        db.session.commit()

    paid = manage("ledger", "pay", "--period", period, "--reference", "BANK-42")
    assert paid.returncode == 0, paid.stderr
    assert paid.stdout.strip() == f"2 rewards of {period} marked paid (BANK-42)"
    again = manage("ledger", "pay", "--period", period, "--reference", "BANK-43")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"0 rewards of {period} marked paid (BANK-43)"
    with flask_app.app_context():
        assert {(r.payout_reference, r.paid_at is not None) for r in _rewards(period)} == {("BANK-42", True)}


# --- export -----------------------------------------------------------------------------------


def test_export_for_the_treasurer_as_csv_and_json(flask_app):
    from app.extensions import db
    from app.ledger import settlement

    period = "2001-09"
    with flask_app.app_context():
        a, b = _node("export"), _node("export")
        _entry(a, period, OCR, 1_800_000, "0.60")  # 0.5 h: 0.30 €
        _entry(a, period, LLM, 900_000, "1.20")  # 0.25 h: 0.30 €
        _entry(b, period, OCR, 100_000, "0.60")  # 0.027778 h: 0.016666… €
        db.session.commit()
        a_id = a.id
        expected = {
            a.id: {"node": a.name, "participant": a.participant.email},
            b.id: {"node": b.name, "participant": b.participant.email},
        }

    unsettled = manage("ledger", "export", "--period", period, "--format", "json")
    assert unsettled.returncode == 1 and "not settled" in unsettled.stderr

    with flask_app.app_context():
        settlement.settle(period)
        settlement.pay(period, "EXPORT-REF", node_ids=[a_id])
        db.session.commit()

    as_json = manage("ledger", "export", "--period", period, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["period"] == period and body["entries"] == 3
    rows = {row["node_id"]: row for row in body["rewards"]}
    assert set(rows) == set(expected)
    assert rows[a_id]["ocr_hours"] == "0.500000" and rows[a_id]["llm_hours"] == "0.250000"
    assert rows[b.id]["ocr_hours"] == "0.027778" and rows[b.id]["llm_hours"] == "0.000000"
    amounts = {node_id: Decimal(row["amount_eur"]) for node_id, row in rows.items()}
    assert sorted(amounts.values()) == [Decimal("0.02"), Decimal("0.60")]
    assert Decimal(body["total_eur"]) == sum(amounts.values()) == Decimal("0.62")
    assert rows[a_id]["paid"] is True and rows[a_id]["payout_reference"] == "EXPORT-REF"
    assert rows[b.id]["paid"] is False and rows[b.id]["payout_reference"] is None
    for node_id, row in rows.items():
        assert row["node"] == expected[node_id]["node"]
        assert row["participant"] == expected[node_id]["participant"]
        assert row["period_start"].startswith("2001-09-01") and row["period_end"].startswith("2001-10-01")

    as_csv = manage("ledger", "export", "--period", period, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {row["node_id"] for row in table} == set(expected)
    for row in table:
        from_json = rows[row["node_id"]]
        for key in ("node", "participant", "ocr_hours", "llm_hours", "amount_eur"):
            assert row[key] == from_json[key]
        assert row["paid"] == str(from_json["paid"])
        assert row["payout_reference"] == (from_json["payout_reference"] or "")
    assert sum(Decimal(row["amount_eur"]) for row in table) == Decimal(body["total_eur"])

    default = manage("ledger", "export", "--period", period)
    assert default.returncode == 0 and default.stdout == as_csv.stdout


# --- statement --------------------------------------------------------------------------------


def test_a_participant_reconciles_their_statement_with_their_nodes_executions(
    flask_app, grid, make_token, admin
):
    from app.extensions import db
    from app.ledger import rules, settlement

    period = "2001-11"
    member = f"member-{_suffix()}@koprogo.test"
    other = f"other-{_suffix()}@koprogo.test"
    with flask_app.app_context():
        n1, n2 = _node("stmt", member), _node("stmt", member)
        n3 = _node("stmt", other)
        # every node's period total is a whole number of cents, its lines are not
        mine = [
            _entry(n1, period, OCR, 40_000, "0.60"),  # 0.00666… €
            _entry(n1, period, LLM, 40_000, "1.20"),  # 0.01333… €
            _entry(n2, period, OCR, 100_000, "0.60"),  # 0.01666… €
            _entry(n2, period, OCR, 20_000, "0.60"),  # 0.00333… €
        ]
        _entry(n3, period, LLM, 3_000_000, "1.20")  # 1.00 € (someone else's)
        _entry(n1, "2001-12", OCR, 60_000, "0.60")  # another period
        db.session.commit()
        member_id, other_id = n1.participant_id, n3.participant_id
        mine_ids = [e.id for e in mine]
        n3_id = n3.id
        names = {n1.id: n1.name, n2.id: n2.name}
    assert member_id != other_id

    client = Client(grid.api_url, make_token(member, ("jobs:read",)))
    url = f"/api/v1/participants/{member_id}/statement?period={period}"
    response = client.get(url)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["participant"] == {"id": member_id, "email": member}
    assert body["period"] == period and body["settled"] is False and body["rewards"] == []
    assert body["period_start"].startswith("2001-11-01") and body["period_end"].startswith("2001-12-01")
    lines = body["entries"]
    assert [line["entry_id"] for line in lines] == mine_ids
    assert {line["node_id"] for line in lines} == set(names)
    assert all(line["node"] == names[line["node_id"]] for line in lines)
    exact = sum((Decimal(line["amount_eur"]) for line in lines), Decimal(0))
    assert exact == Decimal(body["total_exact_eur"])
    assert Decimal(body["total_eur"]) == rules.to_cents(exact) == Decimal("0.04")
    for line in lines:  # each line recomputes from what it shows
        granted_ms = int(round(line["granted_seconds"] * 1000))
        assert Decimal(line["amount_eur"]) == rules.reward(granted_ms, Decimal(line["rate_eur_per_hour"]))
        assert line["outcome"] == "succeeded" and line["grant_basis"] == "claimed"

    with flask_app.app_context():
        settlement.settle(period)
        db.session.commit()

    settled = client.get(url).json()
    assert settled["settled"] is True
    assert settled["entries"] == lines
    rewards = {r["node_id"]: r for r in settled["rewards"]}
    assert set(rewards) == set(names)
    for node_id, reward in rewards.items():
        node_exact = sum(
            (Decimal(line["amount_eur"]) for line in lines if line["node_id"] == node_id), Decimal(0)
        )
        assert Decimal(reward["amount_eur"]) == rules.to_cents(node_exact) == Decimal("0.02")
        assert reward["paid"] is False and reward["payout_reference"] is None
    assert sum(Decimal(r["amount_eur"]) for r in rewards.values()) == Decimal(settled["total_eur"])

    theirs = client.get(f"/api/v1/participants/{other_id}/statement?period={period}")
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "not_found"
    for nobody in (999_999_999, 2**40):
        missing = client.get(f"/api/v1/participants/{nobody}/statement?period={period}")
        assert missing.status_code == 404, missing.text

    as_admin = admin.get(f"/api/v1/participants/{other_id}/statement?period={period}")
    assert as_admin.status_code == 200, as_admin.text
    assert [line["node_id"] for line in as_admin.json()["entries"]] == [n3_id]
    assert as_admin.json()["total_eur"] == "1.00"

    for bad in (
        "2001-13",
        "2001-1",
        "November",
        "2001-11-01",
        "2001-11\n",
        "２００１-11",
        "0000-01",
        "9999-12",
    ):
        refused = client.get(f"/api/v1/participants/{member_id}/statement", params={"period": bad})
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["error"]["code"] == "invalid_parameter"

    current = client.get(f"/api/v1/participants/{member_id}/statement")
    assert current.status_code == 200
    assert current.json()["period"] == datetime.now(UTC).strftime("%Y-%m")


# --- job cost ---------------------------------------------------------------------------------


def _job_with_steps(owner: str):
    from app.extensions import db
    from app.models import Job, JobState, JobStep, StepState

    job = Job(kind="pipeline", owner=owner, params={}, state=JobState.SUCCEEDED)
    job.steps = [
        JobStep(position=0, name="ocr", task_name=TASK_OF[OCR], queue=OCR, state=StepState.SUCCEEDED),
        JobStep(position=1, name="summarise", task_name=TASK_OF[LLM], queue=LLM, state=StepState.SUCCEEDED),
    ]
    db.session.add(job)
    db.session.flush()
    return job


def test_a_job_shows_its_cost_and_the_revenue_split(flask_app, grid, make_token):
    """The seed's example: 2 min of OCR and 5 min of LLM work cost 0.12 €; 80 % of it is
    0.096 €, rounded half-even to 0.10 €, and the solidarity fund gets the remaining 0.02 €."""
    from app.extensions import db
    from app.ledger import settlement

    owner = f"payer-{_suffix()}@koprogo.test"
    with flask_app.app_context():
        node = _node("cost")
        job = _job_with_steps(owner)
        ocr_step, llm_step = job.steps
        _entry(node, "2002-01", OCR, 120_000, "0.60", job=job, step=ocr_step)
        _entry(node, "2002-01", LLM, 300_000, "1.20", job=job, step=llm_step)
        db.session.commit()
        cost = settlement.job_cost(job)
        job_id = job.id
    assert cost == {
        "granted_seconds": {"llm": 300.0, "ocr": 120.0},
        "exact_eur": cost["exact_eur"],
        "eur": "0.12",
        "split": {"cooperative": "0.10", "solidarity_fund": "0.02"},
    }
    assert Decimal(cost["exact_eur"]) == Decimal("0.12")

    shown = Client(grid.api_url, make_token(owner, ("jobs:read",))).job(job_id)
    assert shown["cost"] == cost

    split = flask_app.config["REVENUE_SPLIT"]
    try:  # configurable
        flask_app.config["REVENUE_SPLIT"] = {"cooperative": "0.70", "solidarity_fund": "0.30"}
        with flask_app.app_context():
            other = settlement.job_cost(db.session.get(type(job), job_id))
        assert other["split"] == {"cooperative": "0.08", "solidarity_fund": "0.04"}
        flask_app.config["REVENUE_SPLIT"] = {"cooperative": "0.70", "solidarity_fund": "0.20"}
        with flask_app.app_context(), pytest.raises(ValueError, match="add up to 1"):
            settlement.job_cost(db.session.get(type(job), job_id))
    finally:
        flask_app.config["REVENUE_SPLIT"] = split

    with flask_app.app_context():  # a job nothing was granted for costs nothing
        empty = settlement.job_cost(_job_with_steps(owner))
        db.session.rollback()
    assert empty["eur"] == "0.00" and empty["granted_seconds"] == {}
    assert empty["split"] == {"cooperative": "0.00", "solidarity_fund": "0.00"}


# --- rates ------------------------------------------------------------------------------------


def test_a_new_rate_applies_from_its_date_on_and_never_to_the_past(flask_app):
    from app.extensions import db
    from app.ledger import rules
    from app.ledger.context import Context
    from app.models import Rate, utcnow

    when = datetime(2990, 6, 1, tzinfo=UTC) + timedelta(seconds=uuid.uuid4().int % 86_400)
    by = f"treasurer-{_suffix()}@x"
    with flask_app.app_context():
        before_count = db.session.scalar(select(func.count()).select_from(Rate))

    past = manage("rates", "set", "ocr", "0.75", "--by", by, "--from", "2001-01-01")
    assert past.returncode == 1
    assert "past" in past.stderr
    runner = flask_app.test_cli_runner()  # the same command in-process: refusals, quickly
    future = when.isoformat()
    for amount, when_text, why in [
        ("abc", future, "not a decimal amount"),
        ("-1", future, "a rate is ≥ 0"),
        ("0.1234567", future, "at most 6 decimal places"),
        ("NaN", future, "a rate is ≥ 0"),
        ("Infinity", future, "a rate is ≥ 0"),
        ("1000000", future, "below 1,000,000"),
        ("0.75", "next tuesday", "not an ISO date"),
        ("0.75", (datetime.now(UTC) - timedelta(minutes=5)).isoformat(), "in the past"),
    ]:
        refused = runner.invoke(args=["rates", "set", "--by", by, "--from", when_text, "--", "ocr", amount])
        assert refused.exit_code == 1, (amount, when_text, refused.output)
        assert isinstance(refused.exception, SystemExit), refused.exception  # a message, no traceback
        assert why in refused.output, (amount, when_text, refused.output)
    with flask_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Rate)) == before_count

    created = manage("rates", "set", "ocr", "0.75", "--by", by, "--from", when.isoformat())
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("ocr: 0.75 €/h from 2990-06-01")
    try:
        listed = manage("rates", "list")
        assert listed.returncode == 0, listed.stderr
        assert "0.600000 €/h from 2000-01-01 00:00 UTC" in listed.stdout
        assert "0.750000 €/h from 2990-06-01" in listed.stdout
        with flask_app.app_context():
            (row,) = db.session.scalars(select(Rate).where(Rate.created_by == by)).all()
            assert row.capability == OCR and row.eur_per_hour == Decimal("0.75")
            assert row.effective_from == when
            ctx = Context.load()
            db.session.rollback()
            now = utcnow()
            in_force = rules.rate_at(ctx.rates, OCR, now)
            assert rules.rate_at(ctx.rates, OCR, datetime(2001, 1, 1, tzinfo=UTC)) == Decimal("0.60")
            assert rules.rate_at(ctx.rates, OCR, when - timedelta(microseconds=1)) == in_force
            assert rules.rate_at(ctx.rates, OCR, when) == Decimal("0.75")
            assert rules.rate_at(ctx.rates, OCR, when + timedelta(days=400)) == Decimal("0.75")
            assert rules.rate_at(ctx.rates, LLM, when) == rules.rate_at(ctx.rates, LLM, now)
    finally:
        with flask_app.app_context():  # a rate in 2990 is harmless, but leave the session as found
            db.session.execute(text("DELETE FROM rates WHERE created_by = :by"), {"by": by})
            db.session.commit()


# --- append-only ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET granted_ms = granted_ms + 3600000 WHERE id = :id",
        "UPDATE ledger_entries SET rate_eur_per_hour = 100 WHERE id = :id",
        "DELETE FROM ledger_entries WHERE id = :id",
        "TRUNCATE ledger_entries",
        "TRUNCATE ledger_entries CASCADE",
    ],
    ids=["update-time", "update-rate", "delete", "truncate", "truncate-cascade"],
)
def test_postgresql_refuses_to_change_or_remove_a_ledger_entry(flask_app, statement):
    from app.extensions import db
    from app.models import LedgerEntry

    with flask_app.app_context():
        assert db.engine.dialect.name == "postgresql"
        entry = _entry(_node("append"), "2002-02", OCR, 60_000, "0.60")
        db.session.commit()
        entry_id = entry.id
        total = db.session.scalar(select(func.count()).select_from(LedgerEntry))

    with flask_app.app_context():
        db.session.execute(text("SET LOCAL lock_timeout = '20s'"))
        with pytest.raises(DBAPIError) as refused:
            db.session.execute(text(statement), {"id": entry_id})
        if statement == "TRUNCATE ledger_entries":
            # Decisions on held grants refer to entries: PostgreSQL refuses before the trigger.
            assert "grant_decisions" in str(refused.value)
        else:
            assert "append-only" in str(refused.value)
            assert "record a reversing entry instead" in str(refused.value)
        db.session.rollback()

    with flask_app.app_context():
        row = db.session.get(LedgerEntry, entry_id)
        assert row.granted_ms == 60_000 and row.rate_eur_per_hour == Decimal("0.60")
        assert db.session.scalar(select(func.count()).select_from(LedgerEntry)) >= total


def test_the_orm_cannot_change_or_delete_an_entry_either(flask_app):
    from app.extensions import db
    from app.models import LedgerEntry

    with flask_app.app_context():
        entry = _entry(_node("append-orm"), "2002-02", LLM, 60_000, "1.20")
        db.session.commit()
        entry.granted_ms = 0
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.commit()
        db.session.rollback()
        db.session.delete(db.session.get(LedgerEntry, entry.id))
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.commit()
        db.session.rollback()
        db.session.expire_all()
        assert db.session.get(LedgerEntry, entry.id).granted_ms == 60_000


# --- corrections ------------------------------------------------------------------------------


def test_a_correction_is_a_reversing_entry_in_the_open_period_with_who_and_why(flask_app):
    from app.extensions import db
    from app.ledger import periods, settlement
    from app.models import LedgerEntry, utcnow

    with flask_app.app_context():
        node = _node("reverse")
        original = _entry(node, "2002-03", OCR, 75_000, "0.60")
        db.session.commit()
        original_id = original.id

        with pytest.raises(settlement.SettlementError, match="reason"):
            settlement.reverse(original_id, "  ", "treasurer@koprogo.test")
        with pytest.raises(settlement.SettlementError, match="reason"):
            settlement.reverse(original_id, "double count", "")
        with pytest.raises(settlement.SettlementError, match="no ledger entry"):
            settlement.reverse(10**12, "double count", "treasurer@koprogo.test")
        db.session.rollback()

        reversal = settlement.reverse(original_id, " counted twice ", " treasurer@koprogo.test ")
        db.session.commit()
        reversal_id = reversal.id

    with flask_app.app_context():
        reversal = db.session.get(LedgerEntry, reversal_id)
        original = db.session.get(LedgerEntry, original_id)
        assert reversal.reverses_id == original_id
        assert reversal.granted_ms == -75_000
        assert reversal.units == -original.units
        assert reversal.outcome == "reversal" and reversal.grant_basis == "reversal"
        assert reversal.reason == "counted twice"
        assert reversal.created_by == "treasurer@koprogo.test"
        assert reversal.node_id == original.node_id and reversal.capability == OCR
        assert reversal.rate_eur_per_hour == Decimal("0.60")
        assert reversal.period == periods.open_period_for(utcnow(), periods.closed()) == periods.of(utcnow())
        assert original.granted_ms == 75_000 and original.period == "2002-03"  # untouched

        with pytest.raises(settlement.SettlementError, match="already reversed"):
            settlement.reverse(original_id, "again", "treasurer@koprogo.test")
        db.session.rollback()
        with pytest.raises(settlement.SettlementError, match="itself a reversal"):
            settlement.reverse(reversal_id, "undo", "treasurer@koprogo.test")
        db.session.rollback()
        assert (
            db.session.scalar(
                select(func.count()).select_from(LedgerEntry).where(LedgerEntry.reverses_id == original_id)
            )
            == 1
        )


def test_a_reversal_of_a_settled_entry_counts_in_the_open_period(flask_app):
    """The period the entry was paid in stays closed and unchanged; the correction is a negative
    line in the period open now."""
    from app.extensions import db
    from app.ledger import periods, settlement
    from app.models import LedgerPeriod, utcnow

    period = "2002-05"
    with flask_app.app_context():
        node = _node("reverse-settled")
        original = _entry(node, period, LLM, 300_000, "1.20")
        settlement.settle(period)
        db.session.commit()
        total = db.session.get(LedgerPeriod, period).total_eur
        reversal = settlement.reverse(original.id, "the job was a duplicate", "treasurer@koprogo.test")
        db.session.commit()
        assert reversal.period == periods.of(utcnow())
        assert db.session.get(LedgerPeriod, period).total_eur == total == Decimal("0.10")
        statement = settlement.statement(node.participant, reversal.period)
        assert [line["granted_seconds"] for line in statement["entries"]] == [-300.0]
        assert Decimal(statement["total_exact_eur"]) == Decimal("-0.1")
        assert statement["entries"][0]["reverses_entry"] == original.id


def test_reverse_from_the_command_line(flask_app):
    from app.extensions import db
    from app.models import LedgerEntry

    with flask_app.app_context():
        entry = _entry(_node("cli-reverse"), "2002-06", OCR, 30_000, "0.60")
        db.session.commit()
        entry_id = entry.id

    done = manage("ledger", "reverse", str(entry_id), "--reason", "node clock skew", "--by", "treasurer@x")
    assert done.returncode == 0, done.stderr
    current = datetime.now(UTC).strftime("%Y-%m")
    assert done.stdout.strip().endswith(f"reverses entry {entry_id} in {current}")
    with flask_app.app_context():
        (reversal,) = db.session.scalars(select(LedgerEntry).where(LedgerEntry.reverses_id == entry_id)).all()
        assert done.stdout.startswith(f"entry {reversal.id} ")
        assert (reversal.reason, reversal.created_by, reversal.granted_ms) == (
            "node clock skew",
            "treasurer@x",
            -30_000,
        )

    again = manage("ledger", "reverse", str(entry_id), "--reason", "again", "--by", "treasurer@x")
    assert again.returncode == 1
    assert "already reversed" in again.stderr
    missing = manage("ledger", "reverse", "999999999999", "--reason", "x", "--by", "y")
    assert missing.returncode == 1 and "no ledger entry" in missing.stderr


def test_a_reward_of_zero_or_less_is_never_paid_out(flask_app):
    from app.extensions import db
    from app.ledger import settlement

    period = "2002-09"
    with flask_app.app_context():
        earner, debtor = _node("earner"), _node("debtor")
        _entry(earner, period, OCR, 3_600_000, "0.60")
        _entry(debtor, period, OCR, -600_000, "0.60")  # a reversal counted in this period
        settlement.settle(period)
        db.session.commit()
        paid = settlement.pay(period, "SEPA 2002-10")
        db.session.commit()

        assert [r.node_id for r in paid] == [earner.id]
        amounts = {r.node_id: (r.amount_eur, r.paid_at is not None) for r in _rewards(period)}
        assert amounts[debtor.id] == (Decimal("-0.10"), False)


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_written_as_text():
    from app.ledger.settlement import spreadsheet_safe

    for formula in ('=HYPERLINK("http://x")', "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert spreadsheet_safe(formula) == "'" + formula
    for kept in ("-0.75", "+1", "12.5", "node-a", "counted", 3, None):
        assert spreadsheet_safe(kept) == kept
