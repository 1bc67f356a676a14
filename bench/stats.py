"""What ``GET /api/v1/stats`` and ``GET /api/v1/models`` cost on a big ledger: 1,000 nodes and
ten million entries spread over a year, received in time order as the ledger writes them, with
their jobs and steps (``python -m bench stats``; ``BENCH_STATS_ENTRIES`` for another size).

Each figure is the median of a few calls in process (the view's own work: its queries and the
JSON it builds), after one call to warm the caches, as an API process that has served before.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask
from sqlalchemy import text

ENTRIES = int(os.environ.get("BENCH_STATS_ENTRIES", "10000000"))
NODES = 1_000
#: One job (and one step) per this many entries: retries, replicas and pipelines add entries.
ENTRIES_PER_JOB = 4
SPAN_SECONDS = 365 * 86_400
REPEATS = 5


def _log(message: str) -> None:
    print(message, flush=True, file=sys.stderr)


def fill(flask_app: Flask, entries: int = ENTRIES, jobs: int | None = None, held: bool = False) -> None:
    """``NODES`` nodes, ``jobs`` finished jobs with a step each (one per ``ENTRIES_PER_JOB``
    entries unless given), and ``entries`` ledger entries spread over them and over the year up
    to now, received in time order. With ``held``, every tenth entry is held (its result awaited
    a replica's) and nine in ten of those decided a day later, a fifth refused. Also
    bench/history.py's filler. Each big table's indexes and constraints are set aside while it
    fills and built again after (``bench.metrics.bulk``); the tallies' triggers fire as they
    would for the ledger's own inserts."""
    from app import figures
    from app.extensions import db
    from bench.metrics import bulk

    jobs = jobs or max(1, entries // ENTRIES_PER_JOB)
    per_job = -(-entries // jobs)
    with flask_app.app_context():
        db.session.execute(
            text("INSERT INTO participants (email, created_at) VALUES ('stats@bench.local', now())")
        )
        _log(f"  {NODES:,} nodes…")
        # Every fifth one registered a model; a third say they are laptops, a third Raspberry Pis.
        db.session.execute(
            text(
                """
                INSERT INTO nodes (id, name, participant_id, secret_generation, created_at, approved_at,
                    last_seen_at, queues, probe, validated_streak, validated_results, invalid_results)
                SELECT md5('node' || g)::uuid::text, 'stats-' || g,
                       (SELECT id FROM participants WHERE email = 'stats@bench.local'), 1, now(), now(),
                       now() - make_interval(secs => g % 400), '["llm", "ocr"]',
                       json_build_object(
                           'machine', json_build_object('architecture', 'aarch64', 'cores', 4,
                               'ram_bytes', 8589934592,
                               'hardware_class', (ARRAY['laptop', 'raspberry-pi', 'desktop'])[g % 3 + 1]),
                           'queues', json_build_object('llm', json_build_object('can_serve', true)),
                           'model', CASE WHEN g % 5 = 0 THEN json_build_object(
                               'sha256', md5('model' || g % 7) || md5('model' || g % 7), 'file_name',
                               'model-' || g % 7 || '.gguf', 'bytes', 4000000000, 'exists', true,
                               'fits_in_ram', true, 'context_length', 8192, 'parameters', 7000000000,
                               'quantisation', 'Q4_K_M', 'architecture', 'llama') END),
                       0, 0, 0
                FROM generate_series(1, :nodes) AS g
                """
            ),
            {"nodes": NODES},
        )
        db.session.commit()
        _log(f"  {jobs:,} jobs and steps…")
        # Finished jobs are tallied by a trigger row by row (app.figures); here they are tallied
        # once, all together, with the trigger's own bucket function.
        db.session.execute(text("ALTER TABLE jobs DISABLE TRIGGER jobs_latency_tally"))
        db.session.commit()
        bulk(
            db.session,
            "jobs",
            lambda: db.session.execute(
                text(
                    """
                    INSERT INTO jobs (id, kind, state, owner, params, created_at, finished_at)
                    SELECT md5('job' || g)::uuid::text,
                           CASE WHEN g % 3 = 0 THEN 'summarise' ELSE 'ocr' END,
                           CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'succeeded' END, 'stats@bench.local', '{}',
                           now() - make_interval(secs => (:span - g::float8 * :span / :jobs)),
                           now() - make_interval(secs => (:span - g::float8 * :span / :jobs)) + interval '9 s'
                    FROM generate_series(1, :jobs) AS g
                    """
                ),
                {"jobs": jobs, "span": SPAN_SECONDS},
            ),
        )
        db.session.execute(text("ALTER TABLE jobs ENABLE TRIGGER jobs_latency_tally"))
        db.session.execute(
            text(
                """
                INSERT INTO job_latency_tallies (kind, state, le, jobs, seconds)
                SELECT kind, state, job_latency_bucket(9), count(*), 9 * count(*)
                FROM jobs WHERE owner = 'stats@bench.local' GROUP BY kind, state
                """
            )
        )
        db.session.commit()
        bulk(
            db.session,
            "job_steps",
            lambda: db.session.execute(
                text(
                    """
                    INSERT INTO job_steps (id, job_id, position, name, task_name, queue, task_id, state,
                        attempts, finished_at)
                    SELECT g, md5('job' || g)::uuid::text, 0, 'ocr', 'grid.ocr.extract', 'ocr',
                           md5('step' || g)::uuid::text, 'succeeded', 1,
                           now() - make_interval(secs => (:span - g::float8 * :span / :jobs)) + interval '9 s'
                    FROM generate_series(1, :jobs) AS g
                    """
                ),
                {"jobs": jobs, "span": SPAN_SECONDS},
            ),
        )
        _log(f"  {entries:,} ledger entries over a year, in time order…")

        def insert_entries() -> None:
            batch = 1_000_000
            for first in range(1, entries + 1, batch):
                db.session.execute(
                    text(
                        """
                        INSERT INTO ledger_entries (task_id, attempt, job_id, step_id, node_id, node,
                            capability, task_name, outcome, wall_ms, cpu_ms, unit, units, received_at,
                            claimed_ms, observed_ms, cap_ms, granted_ms, grant_basis, rate_eur_per_hour,
                            period, held)
                        SELECT md5('task' || g), 0, md5('job' || j)::uuid::text, j,
                               md5('node' || (g % :nodes + 1))::uuid::text, 'stats-bench@host',
                               CASE WHEN g % 3 = 0 THEN 'llm' ELSE 'ocr' END, 'bench',
                               CASE WHEN g % 40 = 0 THEN 'failed' ELSE 'succeeded' END,
                               1000 + g % 5000, 900, 'page', 1 + g % 4, at, 1000 + g % 5000,
                               3000 + g % 5000, 12000, 1000 + g % 5000, 'claimed',
                               CASE WHEN g % 3 = 0 THEN 1.20 ELSE 0.60 END, to_char(at, 'YYYY-MM'),
                               :held AND g % 10 = 7
                        FROM (SELECT g, (g - 1) / :per_job + 1 AS j,
                                     now() - make_interval(secs => :span - g::float8 * :span / :entries) AS at
                              FROM generate_series(:first, :last) AS g) AS s
                        """
                    ),
                    {
                        "first": first,
                        "last": min(entries, first + batch - 1),
                        "nodes": NODES,
                        "per_job": per_job,
                        "span": SPAN_SECONDS,
                        "entries": entries,
                        "held": held,
                    },
                )
                db.session.commit()
                _log(f"    {min(entries, first + batch - 1):,}")

        bulk(db.session, "ledger_entries", insert_entries)
        if held:
            _log("  decisions on held grants…")
            bulk(
                db.session,
                "grant_decisions",
                lambda: db.session.execute(
                    text(
                        """
                        INSERT INTO grant_decisions (entry_id, node_id, decision, reason, decided_at, period)
                        SELECT id, node_id, CASE WHEN id % 5 = 0 THEN 'refused' ELSE 'released' END,
                               CASE WHEN id % 5 = 0 THEN 'invalid_result' ELSE 'validated' END,
                               received_at + interval '1 day',
                               to_char(received_at + interval '1 day', 'YYYY-MM')
                        FROM ledger_entries
                        WHERE held AND id % 10 <> 0 AND received_at < now() - interval '1 day'
                        """
                    )
                ),
            )
        db.session.execute(text("SELECT setval('job_steps_id_seq', :jobs)"), {"jobs": jobs})
        figures.compact_tallies(db.session)  # as the ledger worker's upkeep does every round
        db.session.commit()
    # VACUUM cannot run in a transaction: the visibility map lets index-only scans skip the heap,
    # as autovacuum would on a ledger that only grows.
    with flask_app.app_context():
        connection = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(text("VACUUM ANALYZE"))
        connection.close()


def _median_ms(call: Callable[[], object]) -> float:
    call()  # warm
    times = []
    for _ in range(REPEATS):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def run(flask_app: Flask) -> list[str]:
    """Fill the database, then time the stats of each span, the models listing and a job's CO₂."""
    from app import catalog, footprints, stats
    from app.extensions import db

    began = time.monotonic()
    fill(flask_app)
    _log(f"  filled in {time.monotonic() - began:.0f} s")
    lines = [f"stats on {ENTRIES:,} ledger entries, {NODES:,} nodes, one year (median of {REPEATS}, ms):"]
    now = datetime.now(UTC)
    with flask_app.test_request_context():
        for name in stats.PERIODS:
            span = stats.window(name, None, None, 366, now)
            took = _median_ms(lambda s=span: stats.summary(s, money=True))
            lines.append(f"  GET /api/v1/stats?period={name:<6} {took:8.1f}")
            db.session.rollback()
        lines.append(f"  GET /api/v1/models              {_median_ms(catalog.models):8.1f}")
        job_id = str(uuid.UUID(db.session.scalar(text("SELECT md5('job' || 12345)"))))
        lines.append(
            f"  a job's co2_grams               {_median_ms(lambda: footprints.job_co2_grams(job_id)):8.1f}"
        )
        db.session.rollback()
    return lines
