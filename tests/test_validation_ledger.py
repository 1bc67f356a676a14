"""Validation as the ledger applies it, against the session's PostgreSQL: who may run a replica,
how often a trusted node is spot-checked (over hundreds of results), and how held grants are
settled. Records are signed exactly as a worker signs them (tests/test_ledger_verification.py).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select

import celeryconfig
from app import nodes
from app.extensions import db
from app.ledger import settlement
from app.models import GrantDecision, Job, JobStep, LedgerEntry, Node, Reward, StepState
from tests.test_ledger_verification import completion, ocr_job, start
from tests.test_settlement import _entry


@pytest.fixture
def checking(app_context, flask_app, monkeypatch):
    """Validation on, with the default policy."""
    monkeypatch.setitem(flask_app.config, "VALIDATION", True)
    return flask_app


def _member_node(owner: str, *, queues=("ocr",), model: str | None = None) -> Node:
    node = nodes.create(f"v-{uuid.uuid4().hex[:8]}", owner)
    node.queues = list(queues)
    node.last_seen_at = datetime.now(UTC)
    node.probe = {"model": {"sha256": model}} if model else {}
    db.session.commit()
    return node


def _owner() -> str:
    return f"member-{uuid.uuid4().hex[:8]}@koprogo.test"


def _run(step: JobStep, node: Node, text: str = "Procès-verbal de l'assemblée", **extra) -> str | None:
    """``node`` fetches the step's input and sends its result; returns why the start was
    refused, if it was."""
    from app.ledger import executions
    from app.ledger.context import Context

    _, refused = executions.on_started(start(step, node))
    db.session.commit()
    if refused is not None:
        return refused.reason
    executions.on_completed(
        completion(step, node, result={"text": text, "pages": 1}, **extra), Context.load()
    )
    db.session.commit()
    return None


def _replica(step: JobStep) -> JobStep | None:
    db.session.expire_all()
    return db.session.scalars(
        select(JobStep).where(JobStep.replica_of_id == step.id).order_by(JobStep.id)
    ).first()


def test_a_replica_goes_to_another_node_of_another_member_when_one_is_online(checking):
    alice, bob = _owner(), _owner()
    producer, same_owner, other = _member_node(alice), _member_node(alice), _member_node(bob)
    step = ocr_job()
    assert _run(step, producer) is None
    replica = _replica(step)
    assert db.session.get(JobStep, step.id).state == StepState.VERIFYING and replica is not None

    assert _run(replica, producer) == "same_node"
    assert _run(replica, same_owner) == "same_owner"  # bob's node is online to take it
    assert _run(replica, other) is None

    checked = db.session.get(JobStep, step.id)
    assert checked.state == StepState.SUCCEEDED and checked.verdict == "valid"
    assert db.session.get(JobStep, replica.id).verdict == "valid"


def _summary_step() -> JobStep:
    from app.models import JobInput

    job = Job(kind="summarise", owner="member@koprogo.test", params={"language": "fr", "max_words": 50})
    step = JobStep(position=0, name="summarise", task_name=celeryconfig.TASK_SUMMARISE, queue="llm")
    job.steps.append(step)
    db.session.add(job)
    db.session.flush()
    db.session.add(JobInput(job_id=job.id, kind="text", data="Le budget est voté.".encode()))
    db.session.commit()
    return step


def _summarise(node: Node, task: JobStep) -> str | None:
    from app.ledger import executions
    from app.ledger.context import Context

    _, refused = executions.on_started(start(task, node))
    db.session.commit()
    if refused:
        return refused.reason
    record = completion(
        task,
        node,
        result={"summary": "Budget voté.", "language": "fr", "tokens": 20},
        capability="llm",
        units={"prompt_tokens": 12, "completion_tokens": 8},
        task_name=task.task_name,
    )
    executions.on_completed(record, Context.load())
    db.session.commit()
    return None


def test_an_llm_replica_goes_to_another_member_s_node_with_the_same_model_file(checking):
    model = uuid.uuid4().hex  # a model file only these nodes have
    alice = _owner()
    producer = _member_node(alice, queues=("llm",), model=model)
    sibling = _member_node(alice, queues=("llm",), model=model)
    stranger = _member_node(_owner(), queues=("llm",), model=uuid.uuid4().hex)
    matching = _member_node(_owner(), queues=("llm",), model=model)
    step = _summary_step()
    assert _summarise(producer, step) is None
    replica = _replica(step)

    assert _summarise(sibling, replica) == "same_owner"
    assert _summarise(stranger, replica) == "other_model"  # its summaries would not compare
    assert _summarise(matching, replica) is None
    assert db.session.get(JobStep, step.id).state == StepState.SUCCEEDED


def test_a_model_file_a_member_claims_alone_keeps_no_other_member_away(checking):
    # Two nodes of one member registering a model file nobody else has cannot check each other:
    # another member's node checks them, whatever model it registered.
    claimed, mallory = uuid.uuid4().hex, _owner()
    producer = _member_node(mallory, queues=("llm",), model=claimed)
    accomplice = _member_node(mallory, queues=("llm",), model=claimed)
    honest = _member_node(_owner(), queues=("llm",), model=uuid.uuid4().hex)
    step = _summary_step()
    assert _summarise(producer, step) is None
    replica = _replica(step)

    assert _summarise(accomplice, replica) == "same_owner"
    assert _summarise(honest, replica) is None


def test_a_paused_node_and_a_step_under_check_take_no_new_start(checking):
    node, other = _member_node(_owner()), _member_node(_owner())
    step = ocr_job()
    assert _run(step, node) is None
    assert db.session.get(JobStep, step.id).state == StepState.VERIFYING
    assert _run(step, other, attempt=1) == "step_finished"  # not reopened under the check
    replica = _replica(step)
    other.paused_at, other.paused_by = datetime.now(UTC), "owner"
    db.session.commit()
    assert _run(replica, other) == "node_paused"


def _checks_expected(results: int, start_streak: int, floor: float) -> list[float]:
    """The exact distribution of the number of spot checks among ``results`` results of an
    honest trusted node (every check validated: its streak is ``start_streak`` + checks)."""
    dist = {0: 1.0}
    for _ in range(results):
        after: dict[int, float] = {}
        for checks, p_state in dist.items():
            p = max(1 / (start_streak + checks), floor)
            after[checks + 1] = after.get(checks + 1, 0.0) + p_state * p
            after[checks] = after.get(checks, 0.0) + p_state * (1 - p)
        dist = after
    return [dist.get(k, 0.0) for k in range(results + 1)]


def test_a_new_node_earns_trust_then_is_spot_checked_at_the_configured_rate(checking):
    rules = checking.config
    probation, floor = rules["VALIDATION_PROBATION_RESULTS"], rules["VALIDATION_SPOT_CHECK_FLOOR"]
    node, checker = _member_node(_owner()), _member_node(_owner())
    total = 300
    checked = []
    for index in range(total):
        step = ocr_job()
        assert _run(step, node) is None
        replica = _replica(step)
        checked.append(replica is not None)
        if replica is not None:
            assert _run(replica, checker) is None
        assert db.session.get(JobStep, step.id).state == StepState.SUCCEEDED
        if index == probation - 1:
            assert db.session.get(Node, node.id).validated_streak == probation  # trusted now

    assert all(checked[:probation])  # on probation: every result re-run
    spot = sum(checked[probation:])
    dist = _checks_expected(total - probation, probation, floor)
    low = next(k for k in range(len(dist)) if sum(dist[: k + 1]) > 0.0005)
    high = next(k for k in range(len(dist)) if sum(dist[: k + 1]) > 0.9995)
    mean = sum(k * p for k, p in enumerate(dist))
    assert low <= spot <= high, (spot, low, high, mean)
    assert db.session.get(Node, node.id).validated_streak == probation + spot
    # Overhead in steady state: re-runs over results, within the 10 % the grid allows.
    assert spot / (total - probation) <= 0.10


def test_settlement_pays_released_grants_in_the_period_they_were_released_in(checking):
    from tests.test_settlement import _node

    node = _node("held")
    db.session.flush()
    paid = _entry(node, "2004-03", "ocr", 3_600_000, "0.60")  # a trusted node's result: counted
    held = [_entry(node, "2004-03", "ocr", 1_800_000, "0.60", held=True) for _ in range(3)]
    released, refused, waiting = held
    db.session.add(GrantDecision(entry=released, node_id=node.id, decision="released", reason="validated",
                                 decided_at=datetime(2004, 4, 2, tzinfo=UTC), period="2004-04"))  # fmt: skip
    db.session.add(GrantDecision(entry=refused, node_id=node.id, decision="refused", reason="invalid_result",
                                 decided_at=datetime(2004, 3, 20, tzinfo=UTC), period="2004-03"))  # fmt: skip
    db.session.commit()

    march = settlement.settle("2004-03")
    april = settlement.settle("2004-04")
    db.session.commit()

    def reward(period: str) -> Decimal:
        row = db.session.scalar(select(Reward).where(Reward.period == period, Reward.node_id == node.id))
        return row.amount_eur if row else Decimal(0)

    assert reward("2004-03") == Decimal("0.60")  # only the unheld hour
    assert reward("2004-04") == Decimal("0.30")  # the half hour released in April
    assert march.entries == 1 and april.entries == 1
    statement = settlement.statement(node.participant, "2004-03")
    statuses = {line["entry_id"]: line["grant_status"] for line in statement["entries"]}
    assert statuses == {
        paid.id: "counted",
        released.id: "released in 2004-04",
        refused.id: "refused: invalid_result",
        waiting.id: "held",
    }
    assert statement["total_eur"] == "0.60"
    assert settlement.statement(node.participant, "2004-04")["total_eur"] == "0.30"
    with pytest.raises(settlement.SettlementError, match="held"):
        settlement.reverse(waiting.id, "wrong", "treasurer@koprogo.test")


def test_a_failed_replica_is_unpaid_and_another_one_checks_the_result(checking):
    node, flaky, checker = _member_node(_owner()), _member_node(_owner()), _member_node(_owner())
    step = ocr_job()
    assert _run(step, node) is None
    first = _replica(step)
    from app.ledger import executions
    from app.ledger.context import Context

    executions.on_started(start(first, flaky))
    db.session.commit()
    broken = completion(first, flaky, outcome="failed", error={"code": "ocr_failed", "message": "no"})
    entry = executions.on_completed(broken, Context.load())
    db.session.commit()

    assert (entry.granted_ms, entry.grant_basis) == (0, "replica_not_completed")
    assert db.session.get(Job, step.job_id).state == "running"  # the job goes on
    second = db.session.scalars(
        select(JobStep).where(JobStep.replica_of_id == step.id, JobStep.id != first.id)
    ).one()
    assert _run(second, checker) is None
    assert db.session.get(JobStep, step.id).state == StepState.SUCCEEDED


def test_held_grants_of_a_cancelled_job_are_refused_not_left_held(checking):
    from app import lifecycle
    from app.validation import checks

    node = _member_node(_owner())
    step = ocr_job()
    assert _run(step, node) is None
    lifecycle.cancel_job(db.session.get(Job, step.job_id))
    db.session.commit()

    assert checks.refuse_stranded() >= 1
    db.session.commit()
    entry = db.session.scalars(select(LedgerEntry).where(LedgerEntry.task_id == step.task_id)).one()
    decision = db.session.scalars(select(GrantDecision).where(GrantDecision.entry_id == entry.id)).one()
    assert entry.held and (decision.decision, decision.reason) == ("refused", "job_ended")
