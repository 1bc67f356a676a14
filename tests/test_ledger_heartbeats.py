"""Heartbeats in batches (docs/decisions/0007): a batch of nodes' notices only is entered without
the ledger's entry lock, its heartbeat intervals in one statement (an interval already seen
kept once), beside completions too; and every check on a notice still holds in such a batch: a
wrong signature, another node's id, a future or stale heartbeat and a replay are refused with
their reason, and change nothing. On the session's PostgreSQL, as the ledger worker applies
batches (app.ledger.batch)."""

from __future__ import annotations

import os
import time

from sqlalchemy import event, select

from app import registry
from app.extensions import db
from app.ledger import batch
from app.models import LedgerRejection, Node, NodeHeartbeat, NodeHeartbeatCount
from tests.test_ledger_verification import completion, enrol, ocr_job, start
from tests.test_ledger_verification import ledger as ledger  # the fixture
from workers import protocol
from workers.protocol import signing


def heartbeat(node: Node, *, sent_at: float | None = None, nonce: str | None = None, **changes) -> dict:
    body = protocol.body(
        "heartbeat",
        worker=f"{node.name}@host",
        sent_at=time.time() if sent_at is None else sent_at,
        nonce=nonce or os.urandom(16).hex(),
    )
    record = signing.sign({**body, "node_id": node.id}, registry.nodes.node_secret(node))
    return {**record, **changes}


def _slots(node: Node) -> list[int]:
    return db.session.scalars(select(NodeHeartbeat.slot).where(NodeHeartbeat.node_id == node.id)).all()


def _reasons(node: Node) -> list[str]:
    rows = db.session.scalars(
        select(LedgerRejection.reason).where(LedgerRejection.node_id == node.id).order_by(LedgerRejection.id)
    )
    return list(rows)


def _statements(run) -> list[str]:
    sent: list[str] = []

    def keep(_conn, _cursor, statement, *_args) -> None:
        sent.append(statement)

    engine = db.session.get_bind()
    event.listen(engine, "before_cursor_execute", keep)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    return sent


def test_a_batch_of_heartbeats_is_entered_in_a_few_statements_each_interval_once(ledger):
    nodes_beating = [enrol("beating") for _ in range(12)]
    first = [("heartbeat", heartbeat(node)) for node in nodes_beating]
    sent = _statements(lambda: batch.apply(first))
    assert not any("LOCK TABLE" in statement for statement in sent)  # no entry: no settlement lock
    assert len(sent) <= 5, sent  # whatever the number of heartbeats
    for node in nodes_beating:
        db.session.refresh(node)
        assert node.last_seen_at is not None and _slots(node) == [registry.slot_of(node.last_seen_at)]

    # The same interval again, in a later batch and twice in one: still one row each.
    batch.apply([("heartbeat", heartbeat(node)) for node in nodes_beating[:3] for _ in range(2)])
    assert all(len(_slots(node)) == 1 for node in nodes_beating)
    assert all(_reasons(node) == [] for node in nodes_beating)
    # Counted once in its run too (uptime over long windows reads the runs: migration c4e7a1d9b2f6).
    for node in nodes_beating:
        counted = select(NodeHeartbeatCount.run, NodeHeartbeatCount.seen)
        runs = db.session.execute(counted.where(NodeHeartbeatCount.node_id == node.id)).all()
        assert runs == [(_slots(node)[0] // registry.SLOTS_PER_RUN, 1)], runs


def test_heartbeats_beside_a_completion_are_entered_with_it(ledger):
    worker, beating = enrol("worker"), enrol("beating")
    step = ocr_job()
    assert ledger.started(start(step, worker)) is None
    sent = _statements(
        lambda: ledger.together(
            ("heartbeat", heartbeat(beating)),
            ("completed", completion(step, worker)),
            ("heartbeat", heartbeat(worker)),
        )
    )
    assert any("LOCK TABLE" in statement for statement in sent)  # an entry: the settlement lock taken
    assert len(ledger.entries(step.task_id)) == 1
    assert len(_slots(beating)) == len(_slots(worker)) == 1


def test_a_forged_or_replayed_heartbeat_is_refused_in_a_batch_of_notices(ledger):
    honest, other = enrol("honest"), enrol("other")
    sent = heartbeat(honest)
    batch.apply([("heartbeat", sent)])
    db.session.refresh(honest)
    seen, slots = honest.last_seen_at, _slots(honest)

    wrong_secret = {**heartbeat(honest), "signature": signing.signature(heartbeat(honest), "not-its-secret")}
    as_other = {**heartbeat(honest), "node_id": other.id}  # another node's id, the first's signature
    other_worker = heartbeat(honest, worker=f"{other.name}@host")  # names the other's worker, unsigned
    signed_other_worker = signing.sign(
        {
            **protocol.body(
                "heartbeat", worker=f"{other.name}@host", sent_at=time.time(), nonce=os.urandom(16).hex()
            ),
            "node_id": honest.id,
        },
        registry.nodes.node_secret(honest),
    )
    future = heartbeat(honest, sent_at=time.time() + 3600)
    stale = heartbeat(honest, sent_at=time.time() - 3600)
    batch.apply(
        [
            ("heartbeat", wrong_secret),
            ("heartbeat", as_other),
            ("heartbeat", other_worker),
            ("heartbeat", signed_other_worker),
            ("heartbeat", sent),  # the very same record again
            ("heartbeat", future),
            ("heartbeat", stale),
        ]
    )
    assert _reasons(honest) == [
        "bad_signature",
        "bad_signature",
        "wrong_worker_name",
        "replay",
        "clock_skew",
        "stale",
    ]
    assert _reasons(other) == ["bad_signature"]
    db.session.refresh(honest)
    db.session.refresh(other)
    assert honest.last_seen_at == seen and _slots(honest) == slots  # nothing of them was taken
    assert other.last_seen_at is None and _slots(other) == []
