"""The ledger treats what nodes report as claims: forged, replayed, cross-node, inflated and
never-dispatched records are refused or capped, and the reason is stored.

Records are built and signed here exactly as a worker's metering signals build them, and
applied as the ledger worker applies them, against the session's PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

import celeryconfig
from app import lifecycle, nodes
from app.extensions import db
from app.ledger import batch, executions, rules
from app.ledger.context import Context
from app.models import (
    ExecutionSighting,
    Job,
    JobState,
    JobStep,
    LedgerEntry,
    LedgerRejection,
    Node,
    StepState,
)
from workers import protocol
from workers.protocol import signing


@pytest.fixture
def ledger(app_context):
    """Apply records as the ledger worker does: one transaction each."""

    class Ledger:
        def started(self, record: dict) -> str | None:
            """A node fetches its input (app.api.work): the coordinator sees the start. Returns
            why it is refused, if it is (stored only when a node's signature is on it)."""
            _, refused = executions.on_started(record)
            db.session.commit()
            return refused.reason if refused else None

        def completed(self, record: dict) -> LedgerEntry | None:
            entry = executions.on_completed(record, Context.load())
            db.session.commit()
            return entry

        def together(self, *messages: tuple[str, dict]) -> None:
            """Records that reach the ledger in one batch (it was catching up)."""
            batch.apply(list(messages))

        def rejections(self, task_id: str) -> list[str]:
            rows = db.session.scalars(
                select(LedgerRejection).where(LedgerRejection.task_id == task_id).order_by(LedgerRejection.id)
            )
            return [row.reason for row in rows]

        def entries(self, task_id: str) -> list[LedgerEntry]:
            return db.session.scalars(
                select(LedgerEntry).where(LedgerEntry.task_id == task_id).order_by(LedgerEntry.id)
            ).all()

    return Ledger()


def enrol(prefix: str) -> Node:
    node = nodes.create(f"{prefix}-{uuid.uuid4().hex[:8]}", "volunteer@koprogo.test")
    db.session.commit()
    return node


def ocr_job(pages: int = 1, dispatched_ago: float = 5.0) -> JobStep:
    """A dispatched one-step OCR job of ``pages`` pages, as the API would have recorded it."""
    job = Job(kind="ocr", owner="member@koprogo.test", params={}, input_pages=pages)
    step = JobStep(
        position=0,
        name="ocr",
        task_name=celeryconfig.TASK_OCR,
        queue="ocr",
        dispatched_at=datetime.now(UTC) - timedelta(seconds=dispatched_ago),
    )
    job.steps.append(step)
    db.session.add(job)
    db.session.commit()
    return step


def start(step: JobStep, node: Node, attempt: int = 0) -> dict:
    body = protocol.body(
        "started",
        task_id=step.task_id,
        task_name=step.task_name,
        node=f"{node.name}@host",
        attempt=attempt,
        started_at=datetime.now(UTC).isoformat(),
    )
    return signing.sign({**body, "node_id": node.id}, nodes.node_secret(node))


def completion(
    step: JobStep, node: Node, *, attempt: int = 0, wall: float = 0.8, pages: int = 1, **extra
) -> dict:
    record = {
        "v": protocol.VERSION,
        "task_id": step.task_id,
        "task_name": step.task_name,
        "capability": "ocr",
        "node": f"{node.name}@host",
        "node_id": node.id,
        "attempt": attempt,
        "outcome": "succeeded",
        "final": True,
        "started_at": datetime.now(UTC).isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "wall_seconds": wall,
        "cpu_seconds": wall,
        "units": {"pages": pages},
        "result": {"text": "Procès-verbal", "pages": pages},
        **extra,
    }
    return signing.sign(record, nodes.node_secret(node))


def _started_ago(step: JobStep, seconds: float) -> None:
    """Move the coordinator's sight of the step's start back in time (the work took that long)."""
    for sighting in db.session.scalars(
        select(ExecutionSighting).where(ExecutionSighting.task_id == step.task_id)
    ):
        sighting.first_seen_at -= timedelta(seconds=seconds)
    db.session.commit()


def test_an_honest_execution_is_granted_its_claim(ledger):
    node, step = enrol("honest"), ocr_job()
    ledger.started(start(step, node))
    entry = ledger.completed(completion(step, node, wall=0.8))

    assert entry is not None and entry.node_id == node.id
    assert (entry.claimed_ms, entry.granted_ms, entry.grant_basis) == (800, 800, "claimed")
    assert entry.observed_ms >= 800 and entry.cap_ms == 12_000  # 1 page × 4 s × slack 3
    assert entry.rate_eur_per_hour is not None and entry.period
    assert db.session.get(JobStep, step.id).state == StepState.SUCCEEDED
    assert ledger.rejections(step.task_id) == []


def test_an_unsigned_record_is_refused_and_changes_nothing(ledger):
    node, step = enrol("unsigned"), ocr_job()
    record = completion(step, node)
    del record["signature"]

    assert ledger.completed(record) is None
    assert ledger.rejections(step.task_id) == ["missing_signature"]
    assert ledger.entries(step.task_id) == []
    assert db.session.get(JobStep, step.id).state == StepState.QUEUED


def test_a_forged_or_tampered_record_is_refused(ledger):
    node, step = enrol("victim"), ocr_job()
    forged = completion(step, node)
    forged["signature"] = signing.signature(forged, "a secret the forger guessed")
    tampered = completion(step, node, wall=1.0)
    tampered["wall_seconds"] = 3600.0  # inflated after signing

    assert ledger.completed(forged) is None
    assert ledger.completed(tampered) is None
    assert ledger.rejections(step.task_id) == ["bad_signature", "bad_signature"]
    assert ledger.entries(step.task_id) == []


def test_a_replayed_record_is_refused_and_granted_once(ledger):
    node, step = enrol("replayer"), ocr_job()
    ledger.started(start(step, node))
    record = completion(step, node)

    assert ledger.completed(record) is not None
    assert ledger.completed(dict(record)) is None

    assert ledger.rejections(step.task_id) == ["replay"]
    assert len(ledger.entries(step.task_id)) == 1


def test_a_node_claiming_another_nodes_execution_is_refused(ledger):
    worker, thief, step = enrol("worker"), enrol("thief"), ocr_job()
    ledger.started(start(step, worker))

    assert ledger.completed(completion(step, thief, result={"text": "overwritten!", "pages": 1})) is None
    assert ledger.rejections(step.task_id) == ["cross_node"]
    # The thief cannot overwrite the result: the real node's completion still lands.
    assert ledger.completed(completion(step, worker)) is not None
    assert db.session.get(JobStep, step.id).result["text"] == "Procès-verbal"


def test_a_record_for_a_task_never_dispatched_is_refused(ledger):
    node, step = enrol("inventor"), ocr_job()
    invented = {**completion(step, node), "task_id": str(uuid.uuid4())}
    invented = signing.sign(invented, nodes.node_secret(node))

    assert ledger.completed(invented) is None
    assert ledger.rejections(invented["task_id"]) == ["never_dispatched"]


def test_a_record_for_a_cancelled_job_is_refused(ledger):
    node, step = enrol("late"), ocr_job()
    ledger.started(start(step, node))
    step.job.state = JobState.CANCELLED
    db.session.commit()

    assert ledger.completed(completion(step, node)) is None
    assert ledger.rejections(step.task_id) == ["job_cancelled"]


def test_a_revoked_node_is_refused(ledger):
    node, step = enrol("revoked"), ocr_job()
    nodes.revoke(node)
    db.session.commit()

    assert ledger.started(start(step, node)) == "unknown_node"
    assert ledger.completed(completion(step, node)) is None
    assert ledger.rejections(step.task_id) == ["unknown_node"]  # the start was not even signed by a node


def test_an_inflated_time_claim_is_capped_by_what_the_coordinator_observed(ledger):
    node, step = enrol("inflater"), ocr_job()
    ledger.started(start(step, node))
    entry = ledger.completed(completion(step, node, wall=3600.0))

    assert entry.claimed_ms == 3_600_000
    assert entry.granted_ms == min(entry.observed_ms, entry.cap_ms) < 15_000
    assert entry.grant_basis in ("observed", "cap")


def test_inflated_units_are_capped_by_the_pages_the_coordinator_sent(ledger):
    node, step = enrol("padder"), ocr_job(pages=1)
    ledger.started(start(step, node))
    _started_ago(step, 600)  # long enough that the observation does not bound it first
    ledger.completed(completion(step, node, wall=500.0, pages=1000))
    (entry,) = ledger.entries(step.task_id)

    assert entry.units == 1
    assert (entry.cap_ms, entry.granted_ms, entry.grant_basis) == (12_000, 12_000, "cap")


def test_claimed_llm_tokens_are_bounded_by_the_text_the_coordinator_sent(ledger):
    from app.ledger import rules
    from app.models import JobInput

    node, text = enrol("token-padder"), "Le conseil approuve le budget des travaux. " * 20
    job = Job(kind="summarise", owner="member@koprogo.test", params={"language": "fr", "max_words": 50})
    step = JobStep(
        position=0,
        name="summarise",
        task_name=celeryconfig.TASK_SUMMARISE,
        queue="llm",
        dispatched_at=datetime.now(UTC),
    )
    job.steps.append(step)
    db.session.add(job)
    db.session.flush()
    db.session.add(JobInput(job_id=job.id, kind="text", data=text.encode()))
    db.session.commit()
    ledger.started(start(step, node))
    _started_ago(step, 600)

    entry = ledger.completed(
        completion(
            step,
            node,
            wall=300.0,
            capability="llm",
            units={"prompt_tokens": 10**9, "completion_tokens": 10**9},
            result={"summary": "Budget approuvé.", "engine": {"model_bytes": 4 * 10**9}},
        )
    )

    assert entry.units == rules.llm_units_bound(len(text.encode())) < 10**9
    assert entry.granted_ms <= entry.cap_ms < 300_000


def test_a_start_record_on_the_ledger_queue_is_refused_the_start_is_the_input_fetch(ledger):
    node, step = enrol("queue-starter"), ocr_job()

    ledger.together(("started", start(step, node)))

    assert ledger.rejections(step.task_id) == ["wrong_channel"]
    assert db.session.get(JobStep, step.id).state == StepState.QUEUED


def test_no_execution_is_granted_beyond_the_hard_time_limit(ledger):
    node, step = enrol("overtime"), ocr_job(pages=100)
    ledger.started(start(step, node))
    _started_ago(step, 10 * celeryconfig.task_time_limit)
    entry = ledger.completed(completion(step, node, wall=5.0 * celeryconfig.task_time_limit, pages=100))

    assert entry.cap_ms == celeryconfig.task_time_limit * 1000
    assert entry.granted_ms == entry.cap_ms


def test_a_machine_that_vanished_is_relieved_after_the_visibility_timeout_and_paid_once(ledger):
    first, second, step = enrol("first"), enrol("second"), ocr_job()
    long_ago = datetime.now(UTC) - timedelta(seconds=celeryconfig.VISIBILITY_TIMEOUT + 5)
    db.session.add(
        ExecutionSighting(task_id=step.task_id, attempt=0, node_id=first.id, first_seen_at=long_ago)
    )
    db.session.commit()
    ledger.started(start(step, second))  # the broker handed the task on: allowed

    assert ledger.completed(completion(step, second)) is not None
    assert ledger.completed(completion(step, first)) is None  # the first comes back too late

    assert ledger.rejections(step.task_id) == ["duplicate_execution"]
    assert len(ledger.entries(step.task_id)) == 1


def test_a_node_cannot_start_an_execution_another_node_is_running(ledger):
    worker, thief, step = enrol("runner"), enrol("racer"), ocr_job()
    ledger.started(start(step, worker))
    ledger.started(start(step, thief))

    assert ledger.rejections(step.task_id) == ["cross_node"]


def test_a_completion_without_a_start_or_with_an_invented_attempt_is_refused(ledger):
    worker, thief, step = enrol("owner"), enrol("forger"), ocr_job()
    ledger.started(start(step, worker))
    failed = {"outcome": "failed", "result": None, "error": {"code": "corrupt_document", "message": "no"}}

    assert ledger.completed(completion(step, thief, attempt=7, **failed)) is None
    assert ledger.completed(completion(step, thief, attempt=1, **failed)) is None
    assert ledger.completed(completion(step, thief, attempt=0, **failed)) is None

    assert ledger.rejections(step.task_id) == ["bad_attempt", "not_started", "cross_node"]
    assert db.session.get(Job, step.job_id).state == JobState.RUNNING  # nobody failed the job
    assert ledger.completed(completion(step, worker)) is not None


def test_a_retry_is_a_new_attempt_only_after_the_previous_one_ended(ledger):
    node, step = enrol("retrier"), ocr_job()
    assert ledger.started(start(step, node, attempt=0)) is None
    early = ledger.started(start(step, node, attempt=1))  # attempt 0 has not ended: no retry yet
    assert early == "previous_attempt_pending"  # the worker hands the task back and asks again
    ledger.completed(
        completion(
            step,
            node,
            attempt=0,
            outcome="lost",
            final=False,
            result=None,
            error={"code": "worker_lost", "message": "died"},
        )
    )
    ledger.started(start(step, node, attempt=1))
    ledger.completed(completion(step, node, attempt=1))

    entries = ledger.entries(step.task_id)
    assert [(e.attempt, e.outcome, e.granted_ms > 0) for e in entries] == [
        (0, "lost", False),
        (1, "succeeded", True),
    ]
    assert ledger.rejections(step.task_id) == []


def test_time_limit_credit_cannot_be_farmed_with_invented_attempts(ledger):
    node, step = enrol("farmer"), ocr_job(pages=500)  # far more than any time limit allows
    timed_out = {"outcome": "failed", "result": None, "error": {"code": "time_limit", "message": "stopped"}}
    ledger.started(start(step, node))
    first = ledger.completed(completion(step, node, wall=60.0, **timed_out))
    for attempt in (1, 2, 3):
        ledger.started(start(step, node, attempt=attempt))
        ledger.completed(completion(step, node, attempt=attempt, wall=60.0, **timed_out))

    assert first.granted_ms > 0 and first.grant_basis.startswith("time_limit_too_low")
    assert sum(e.granted_ms for e in ledger.entries(step.task_id)) == first.granted_ms


def test_a_poison_record_is_refused_and_the_batch_goes_on(ledger):
    node, step = enrol("poison"), ocr_job()
    poison = {"task_id": "bad\x00id", "node_id": "\x00", "attempt": float("nan"), "signature": "x\x00"}
    ledger.started(start(step, node))
    batch.apply_safely([("completed", poison), ("completed", completion(step, node))])

    assert len(ledger.entries(step.task_id)) == 1
    refused = db.session.scalars(select(LedgerRejection).where(LedgerRejection.node_id == "\\0")).all()
    assert refused and refused[-1].reason == "malformed"


def test_a_forged_start_is_refused_and_does_not_move_the_job(ledger):
    node, step = enrol("starter"), ocr_job()
    record = start(step, node)
    record["node_id"] = str(uuid.uuid4())

    assert ledger.started(record) == "unknown_node"
    assert ledger.rejections(step.task_id) == []  # an unsigned knock is not kept
    assert db.session.get(JobStep, step.id).state == StepState.QUEUED


def test_an_execution_that_ends_after_its_job_stalled_earns_nothing(ledger):
    node, step = enrol("latecomer"), ocr_job()
    ledger.started(start(step, node))
    lifecycle.fail_job(db.session.get(Job, step.job_id), "stalled", "No verified result arrived.")
    db.session.commit()

    entry = ledger.completed(completion(step, node))

    assert (entry.outcome, entry.granted_ms, entry.grant_basis) == ("succeeded", 0, "job_failed")
    assert db.session.get(Job, step.job_id).error_code == "stalled"  # nothing moves it back


def test_a_failed_execution_earns_nothing(ledger):
    node, step = enrol("failer"), ocr_job()
    ledger.started(start(step, node))
    entry = ledger.completed(
        completion(
            step,
            node,
            outcome="failed",
            result=None,
            error={"code": "corrupt_document", "message": "The PDF is damaged."},
        )
    )
    assert (entry.outcome, entry.granted_ms, entry.grant_basis) == ("failed", 0, "not_granted_failed")
    assert db.session.get(Job, step.job_id).state == JobState.FAILED


def test_a_rotated_secret_stops_the_old_one_verifying(ledger):
    node, step = enrol("rotated"), ocr_job()
    old = start(step, node)
    nodes.rotate_secret(node)
    db.session.commit()

    assert ledger.started(old) == "bad_signature"
    assert ledger.started(start(step, node)) is None  # signed with the new secret
    assert ledger.rejections(step.task_id) == []


def _register(node: Node, concurrency: int) -> None:
    """The node's worker registers how many tasks it runs at once (a signed notice)."""
    import os
    import time

    body = protocol.body(
        "register",
        worker=f"{node.name}@host",
        sent_at=time.time(),
        nonce=os.urandom(16).hex(),
        queues=["ocr"],
        concurrency=concurrency,
        probe={},
    )
    batch.apply([("register", signing.sign({**body, "node_id": node.id}, nodes.node_secret(node)))])


@pytest.mark.parametrize("registered, paid_in_full", [(1, 1), (3, 3)])
def test_executions_held_at_once_beyond_the_registered_concurrency_are_not_paid(
    ledger, registered, paid_in_full
):
    node = enrol("hoarder")
    _register(node, registered)
    assert db.session.get(Node, node.id).concurrency == registered
    steps = [ocr_job(pages=5) for _ in range(3)]
    for step in steps:  # three inputs fetched at once, each then "worked on" for ten seconds
        assert ledger.started(start(step, node)) is None
        _started_ago(step, 10)

    entries = [ledger.completed(completion(step, node, wall=10.0, pages=5)) for step in steps]

    granted = [entry.granted_ms for entry in entries]
    assert granted[:paid_in_full] == [10_000] * paid_in_full
    if paid_in_full < 3:
        assert [entry.grant_basis for entry in entries[1:]] == ["concurrency"] * 2
        # One slot gave ten seconds: the rest is the observation's allowance, once.
        assert sum(granted) <= 10_000 + rules.OBSERVATION_ALLOWANCE_MS + 500
    assert all(entry.outcome == "succeeded" for entry in entries)  # the results stand


def test_a_redelivery_seen_before_the_window_is_handed_back_then_taken_over_and_paid(ledger):
    """The chaos run's timeline: the broker delivered attempt 0 to node B some seconds before B
    fetched its input; B died; the broker redelivered to A one visibility timeout after its
    delivery, so a little before one after the coordinator's sighting. A is told 409 (its
    worker hands the message back, unrun), asks again once the window has passed, runs it,
    and its success is entered; nothing A did is thrown away."""
    b, a, step = enrol("killed"), enrol("redelivered"), ocr_job()
    assert ledger.started(start(step, b)) is None
    _started_ago(step, celeryconfig.VISIBILITY_TIMEOUT - 3)  # B fetched 3 s after delivery

    assert ledger.started(start(step, a)) == "cross_node"  # 409: handed back, not run
    _started_ago(step, 4)  # the next delivery, after the worker's pause

    assert ledger.started(start(step, a)) is None
    entry = ledger.completed(completion(step, a))
    assert entry is not None and entry.node_id == a.id and entry.granted_ms > 0
    assert db.session.get(JobStep, step.id).state == StepState.SUCCEEDED


def test_an_attempt_the_coordinator_gave_up_as_lost_is_over_for_every_node(ledger):
    node, step = enrol("late"), ocr_job()
    db.session.add(
        LedgerEntry(
            task_id=step.task_id, attempt=0, job_id=step.job_id, step_id=step.id, node="coordinator",
            capability="ocr", task_name=step.task_name, outcome="lost", wall_ms=0, cpu_ms=0,
            unit="page", units=0, claimed_ms=0, granted_ms=0, grant_basis="redispatched",
        )
    )  # fmt: skip
    db.session.commit()

    assert ledger.started(start(step, node)) == "attempt_over"  # its old message: let go (410)
    assert ledger.started(start(step, node, attempt=1)) is None  # the attempt sent again


def test_an_attempt_held_by_a_node_that_restarted_or_fell_silent_may_be_taken_over_at_once(ledger):
    restarted, silent, rescuer = enrol("restarted"), enrol("silent"), enrol("rescuer")
    first, second = ocr_job(), ocr_job()
    assert ledger.started(start(first, restarted)) is None
    assert ledger.started(start(second, silent)) is None
    assert ledger.started(start(first, rescuer)) == "cross_node"  # its holder is working

    _register(restarted, 1)  # its worker started again: what it held is gone
    db.session.get(Node, silent.id).last_seen_at = datetime.now(UTC) - timedelta(hours=1)
    _started_ago(second, celeryconfig.NODE_OFFLINE_AFTER_SECONDS + 1)  # and silent since
    db.session.commit()

    assert ledger.started(start(first, rescuer)) is None
    assert ledger.started(start(second, rescuer)) is None


def test_an_attempt_whose_process_died_before_its_fetch_is_ended_unpaid_and_the_next_one_runs(ledger):
    """A pool process killed before it fetched its input: the worker reports the attempt lost,
    the retry carries the next attempt number; nothing waits for an end that cannot come."""
    node, step = enrol("early-death"), ocr_job()
    lost = {
        "outcome": "lost",
        "final": False,
        "result": None,
        "error": {"code": "worker_lost", "message": "x"},
    }

    entry = ledger.completed(completion(step, node, attempt=0, **lost))

    assert (entry.outcome, entry.granted_ms, entry.grant_basis) == ("lost", 0, "not_started")
    assert ledger.started(start(step, node, attempt=2)) is None  # attempt 1 died unseen too
    assert ledger.completed(completion(step, node, attempt=2)).granted_ms > 0
    assert ledger.completed(completion(step, node, attempt=0)) is None  # attempt 0 is over
    other, unstarted = enrol("bystander"), ocr_job()
    assert ledger.completed(completion(unstarted, other, attempt=0)) is None  # a success needs a start
