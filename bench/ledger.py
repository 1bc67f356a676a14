"""Ledger benchmarks: settling a million entries, and the ledger worker's sustained grant rate
against the rate at which one worker completes no-op tasks (the ledger must never be the
bottleneck: ratio ≥ 1).

Both sides of the rate comparison are measured the same way, in the same run: the queue is
filled first, then the consumer starts, and the rate is taken from its first to its last
completion, so producers and start-up do not count.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import redis
from flask import Flask
from sqlalchemy import func, insert, select, text

import celeryconfig
from tests.grid import CELERY, GridProcess, enrolment, wait_for

SETTLEMENT_ENTRIES = 1_000_000
SETTLEMENT_NODES = 1_000
SETTLEMENT_PERIOD = "2025-01"
LEDGER_EXECUTIONS = 3_000
BARE_TASKS = 3_000


def _log(message: str) -> None:
    print(message, flush=True, file=__import__("sys").stderr)


def settlement_seconds(flask_app: Flask) -> tuple[float, int, str]:
    """Seconds to settle a period of ``SETTLEMENT_ENTRIES`` entries over ``SETTLEMENT_NODES`` nodes."""
    from app.extensions import db
    from app.ledger import settlement
    from app.models import LedgerEntry, LedgerPeriod, Node, Participant

    with flask_app.app_context():
        participant = Participant(email=f"bench-{uuid.uuid4().hex[:6]}@bench.local")
        db.session.add(participant)
        db.session.flush()
        node_ids = [str(uuid.uuid4()) for _ in range(SETTLEMENT_NODES)]
        db.session.execute(
            insert(Node),
            [{"id": nid, "name": f"bench-{nid[:13]}", "participant_id": participant.id} for nid in node_ids],
        )
        db.session.commit()
        _log(f"  writing {SETTLEMENT_ENTRIES:,} entries in {SETTLEMENT_PERIOD}…")
        # generate_series writes a million rows in seconds; nodes are picked by index.
        db.session.execute(
            text(
                """
                CREATE TEMP TABLE bench_nodes AS
                SELECT row_number() OVER () - 1 AS i, id FROM nodes WHERE name LIKE 'bench-%'
                """
            )
        )
        db.session.execute(
            text(
                """
                INSERT INTO ledger_entries (task_id, attempt, node_id, node, capability, task_name, outcome,
                    wall_ms, cpu_ms, unit, units, received_at, claimed_ms, observed_ms, cap_ms, granted_ms,
                    grant_basis, rate_eur_per_hour, period)
                SELECT md5(g::text), 0, n.id, 'settlement-bench@host',
                       CASE WHEN g % 3 = 0 THEN 'llm' ELSE 'ocr' END, 'bench', 'succeeded',
                       1000 + g % 5000, 900, 'page', 1, TIMESTAMPTZ '2025-01-15', 1000 + g % 5000,
                       9000, 12000, 1000 + g % 5000, 'claimed',
                       CASE WHEN g % 3 = 0 THEN 1.20 ELSE 0.60 END, :period
                FROM generate_series(1, :count) AS g
                JOIN bench_nodes n ON n.i = g % :nodes
                """
            ),
            {"period": SETTLEMENT_PERIOD, "count": SETTLEMENT_ENTRIES, "nodes": SETTLEMENT_NODES},
        )
        db.session.commit()
        db.session.execute(text("ANALYZE ledger_entries"))
        db.session.commit()
        started = time.perf_counter()
        row = settlement.settle(SETTLEMENT_PERIOD)
        db.session.commit()
        seconds = time.perf_counter() - started
        rewards = db.session.scalar(select(func.count()).where(LedgerPeriod.period == SETTLEMENT_PERIOD))
        assert rewards == 1 and row.entries == SETTLEMENT_ENTRIES, (rewards, row.entries)
        again = time.perf_counter()
        settlement.settle(SETTLEMENT_PERIOD)  # idempotent, and cheap
        db.session.commit()
        total = str(row.total_eur)
        count = db.session.scalar(
            select(func.count(LedgerEntry.id)).where(LedgerEntry.period == SETTLEMENT_PERIOD)
        )
        _log(f"  settled in {seconds:.2f} s; settling again took {time.perf_counter() - again:.3f} s")
        return seconds, count, total


def _signed_records(flask_app: Flask, count: int) -> list[tuple[dict, dict]]:
    """Dispatched one-page OCR steps and, for each, the start and completion a node signs."""
    node = enrolment("bench-ledger-node")
    now = datetime.now(UTC)
    with flask_app.app_context():
        steps = dispatched_ocr_steps("ledger@bench.local", count, now)
        return [signed_ocr_records(step, "bench-ledger-node@host", node, now) for step in steps[-count:]]


def dispatched_ocr_steps(owner: str, count: int, now: datetime) -> list:
    """``count`` one-page OCR jobs of ``owner``, their step marked dispatched ``now``, committed;
    every step of ``owner``'s jobs, oldest first (in an app context)."""
    from app.extensions import db
    from app.models import Job, JobStep

    for _ in range(count):
        job = Job(kind="ocr", owner=owner, params={}, input_pages=1)
        job.steps.append(
            JobStep(position=0, name="ocr", task_name=celeryconfig.TASK_OCR, queue="ocr", dispatched_at=now)
        )
        db.session.add(job)
    db.session.commit()
    return list(db.session.scalars(select(JobStep).join(Job).where(Job.owner == owner).order_by(JobStep.id)))


def signed_ocr_records(step, worker: str, node: dict[str, str], now: datetime) -> tuple[dict, dict]:
    """The start and the completion of a one-page OCR execution of ``step`` by ``worker``, each
    signed with the enrolled ``node``'s secret, as that node would send them."""
    from workers import protocol
    from workers.protocol import signing

    base = {"task_id": step.task_id, "task_name": step.task_name, "node": worker}
    started = protocol.body("started", **base, attempt=0, started_at=now.isoformat())
    completed = protocol.body(
        "completed",
        **base,
        attempt=0,
        capability="ocr",
        outcome="succeeded",
        final=True,
        started_at=now.isoformat(),
        finished_at=now.isoformat(),
        wall_seconds=0.001,
        cpu_seconds=0.001,
        units={"pages": 1},
        result={"text": "x", "pages": 1},
    )
    started["node_id"] = completed["node_id"] = node["GRID_NODE_ID"]
    secret = node["GRID_NODE_SECRET"]
    return signing.sign(started, secret), signing.sign(completed, secret)


def ledger_rate(flask_app: Flask, log_dir: Path) -> float:
    """Executions per second the ledger worker enters (each a completion record, its start seen)."""
    from app.extensions import db
    from app.ledger import executions
    from app.ledger.context import Context
    from app.models import LedgerEntry

    records = _signed_records(flask_app, LEDGER_EXECUTIONS)
    celery = flask_app.extensions["celery"]
    with flask_app.app_context():
        before = db.session.scalar(select(func.count(LedgerEntry.id)))
        ctx = Context.load([started for started, _ in records])
        for started, _ in records:  # as each node's input fetch does (app.api.work)
            executions.on_started(started, ctx)
        db.session.commit()
    with celery.producer_or_acquire() as producer:
        for _, completed in records:
            celery.send_task(
                celeryconfig.TASK_LEDGER_RECORD,
                args=[completed],
                queue=celeryconfig.LEDGER_QUEUE,
                producer=producer,
            )
    worker = GridProcess(
        "bench-ledger",
        [
            CELERY,
            "-A",
            "app.ledger_worker",
            "worker",
            "-n",
            "bench-ledger@%h",
            "--loglevel=WARNING",
            "--without-mingle",
            "--without-gossip",
        ],
        dict(os.environ),
        log_dir,
    ).start()
    try:

        def entered() -> int:
            with flask_app.app_context():
                return db.session.scalar(select(func.count(LedgerEntry.id))) - before

        wait_for(
            lambda: entered() >= LEDGER_EXECUTIONS, 600, "the ledger to enter every record", interval=0.5
        )
    finally:
        worker.stop()
    with flask_app.app_context():
        first, last = db.session.execute(
            select(func.min(LedgerEntry.received_at), func.max(LedgerEntry.received_at)).where(
                LedgerEntry.node == "bench-ledger-node@host"
            )
        ).one()
    return (LEDGER_EXECUTIONS - 1) / (last - first).total_seconds()


def noop_rate(log_dir: Path) -> float:
    """No-op tasks per second one bare Celery worker (prefork, default concurrency) completes."""
    from bench import bare

    counter = redis.Redis.from_url(os.environ[bare.BROKER_ENV])
    counter.set(bare.COUNTER_KEY, 0)
    with bare.app.producer_or_acquire() as producer:
        for _ in range(BARE_TASKS):
            bare.noop.apply_async(producer=producer)
    worker = GridProcess(
        "bench-bare",
        [
            CELERY,
            "-A",
            "bench.bare",
            "worker",
            "-Q",
            bare.QUEUE,
            "-n",
            "bench-bare@%h",
            "--loglevel=WARNING",
            "--without-mingle",
            "--without-gossip",
        ],
        dict(os.environ),
        log_dir,
    ).start()
    try:

        def done() -> int:
            return int(counter.get(bare.COUNTER_KEY) or 0)

        wait_for(lambda: done() >= 1, 120, "the first no-op", interval=0.001)
        first = time.perf_counter()
        wait_for(lambda: done() >= BARE_TASKS, 300, "every no-op", interval=0.001)
        return (BARE_TASKS - 1) / (time.perf_counter() - first)
    finally:
        worker.stop()
        counter.close()


def run(flask_app: Flask, log_dir: Path, settle: bool = True) -> list[str]:
    """The ledger benchmarks' lines for the table."""
    lines = []
    if settle:
        _log(f"4. ledger: settling {SETTLEMENT_ENTRIES:,} entries")
        seconds, count, total = settlement_seconds(flask_app)
        lines.append(
            f"settlement of {count:,} entries over {SETTLEMENT_NODES:,} nodes on PostgreSQL: {seconds:.2f} s "
            f"(goal < 2 s: {'met' if seconds < 2 else 'NOT met'}), total {total} €"
        )
    _log(f"5. ledger: grant rate over {LEDGER_EXECUTIONS} executions vs {BARE_TASKS} bare no-op tasks")
    ledger = ledger_rate(flask_app, log_dir)
    noop = noop_rate(log_dir)
    lines.append(
        f"ledger grant rate vs one worker's no-op rate: {ledger:.0f} vs {noop:.0f} executions/s → ratio "
        f"{ledger / noop:.2f} (goal ≥ 1: {'met' if ledger >= noop else 'NOT met'})"
    )
    return lines
