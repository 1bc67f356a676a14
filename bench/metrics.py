"""What a Prometheus scrape of the API's /metrics costs on a big grid: 1,000 nodes and
10 million ledger entries (with held grants and their decisions, refusals, a million finished
jobs and their steps, a year of rewards), against computing the same ledger figures straight
from ``ledger_entries`` (what the running tallies of docs/decisions/0012 spare).

    python -m bench.metrics                 # about seven minutes, most of it filling the database
    BENCH_METRICS_ENTRIES=1000000 python -m bench.metrics

It starts a throwaway Redis and PostgreSQL of its own, fills PostgreSQL with SQL
(generate_series, in chunks of a million rows: the ledger's triggers keep the tallies as they
would in production), and scrapes /metrics in process (Flask's test client: the collector and
the exposition, without HTTP) with the cache off, then with it on.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ENTRIES = int(os.environ.get("BENCH_METRICS_ENTRIES", "10000000"))
NODES = 1_000
JOBS = min(1_000_000, ENTRIES)
REJECTIONS = 100_000
CHUNK = 1_000_000
PERIODS = 12
SCRAPES = 20


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(what: str, run) -> float:
    began = time.perf_counter()
    run()
    seconds = time.perf_counter() - began
    _log(f"  {what}: {seconds:.1f} s" if seconds >= 1 else f"  {what}: {seconds * 1000:.1f} ms")
    return seconds


def bulk(session, table: str, run) -> None:
    """``run`` with ``table``'s indexes and constraints, its primary key apart, set aside, then
    built and checked again: a sort and a join beat millions of random insertions and lookups.
    Its triggers (the tallies') stay on. Also bench/stats.py's and bench/history.py's filler."""
    from sqlalchemy import text

    def sql(statement: str) -> None:
        session.execute(text(statement))
        session.commit()

    sql("SET maintenance_work_mem = '256MB'")
    constraints = session.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = CAST(:table AS regclass) AND contype IN ('f', 'u')"
        ),
        {"table": table},
    ).all()
    for name, _ in constraints:
        sql(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    indexes = session.execute(
        text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :table "
            "AND indexdef NOT LIKE 'CREATE UNIQUE%'"
        ),
        {"table": table},
    ).all()
    for index, _ in indexes:
        sql(f"DROP INDEX {index}")
    run()
    for _, definition in indexes:
        sql(definition)
    for name, definition in constraints:
        sql(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")


def fill(session) -> None:
    """1,000 nodes (900 heard from within the minute), ``ENTRIES`` ledger entries over them
    (a tenth held, nine in ten of those decided, a fifth of those refused as invalid), refusals,
    ``JOBS`` finished jobs with a step each (a hundred verifying), twelve settled months."""
    from sqlalchemy import text

    def sql(statement: str, **params) -> None:
        session.execute(text(statement), params)
        session.commit()

    _timed(
        "1,000 nodes",
        lambda: (
            sql("INSERT INTO participants (email, created_at) VALUES ('bench@metrics.local', now())"),
            sql(
                """
                INSERT INTO nodes (id, name, participant_id, secret_generation, created_at, approved_at,
                    last_seen_at, queues, validated_streak, validated_results, invalid_results)
                SELECT md5('node' || g), 'bench-node-' || g, (SELECT id FROM participants LIMIT 1), 1,
                    now() - interval '400 days', now() - interval '400 days',
                    now() - CASE WHEN g % 10 = 0 THEN interval '2 days' ELSE interval '30 seconds' END,
                    CASE WHEN g % 3 = 0 THEN '["llm"]' ELSE '["ocr"]' END::json, 0, 0, 0
                FROM generate_series(1, :nodes) AS g
                """,
                nodes=NODES,
            ),
        ),
    )

    sql("CREATE TEMP TABLE bench_nodes AS SELECT row_number() OVER (ORDER BY id) - 1 AS i, id FROM nodes")
    sql("CREATE INDEX ON bench_nodes (i)")

    def entries() -> None:
        # The tallies' triggers fire as they would for the ledger's own inserts.
        for start in range(0, ENTRIES, CHUNK):
            sql(
                """
                INSERT INTO ledger_entries (task_id, attempt, node_id, node, capability, task_name, outcome,
                    wall_ms, cpu_ms, unit, units, received_at, claimed_ms, observed_ms, cap_ms, granted_ms,
                    grant_basis, held, rate_eur_per_hour, period)
                SELECT 'bench-' || lpad(g::text, 12, '0'), 0, n.id, 'bench@host',
                    CASE WHEN g % 3 = 0 THEN 'llm' ELSE 'ocr' END, 'bench',
                    CASE WHEN g % 50 = 0 THEN 'failed' WHEN g % 101 = 0 THEN 'retried' ELSE 'succeeded' END,
                    1000 + g % 5000, 900, 'page', 1,
                    TIMESTAMPTZ '2025-01-01' + (g % 365) * interval '1 day', 1000 + g % 5000, 9000, 12000,
                    1000 + g % 5000, 'claimed', g % 10 = 7, 0.60,
                    to_char(TIMESTAMPTZ '2025-01-01' + (g % 365) * interval '1 day', 'YYYY-MM')
                FROM generate_series(:first, :last) AS g
                JOIN bench_nodes n ON n.i = g % :nodes
                """,
                first=start + 1,
                last=min(start + CHUNK, ENTRIES),
                nodes=NODES,
            )
            _log(f"    {min(start + CHUNK, ENTRIES):,} entries")

    _timed(f"{ENTRIES:,} ledger entries", lambda: bulk(session, "ledger_entries", entries))
    _timed(
        "decisions on held grants",
        lambda: sql(
            """
            INSERT INTO grant_decisions (entry_id, node_id, decision, reason, decided_at, period)
            SELECT id, node_id, CASE WHEN id % 5 = 0 THEN 'refused' ELSE 'released' END,
                CASE WHEN id % 5 = 0 THEN 'invalid_result' ELSE 'validated' END, received_at, period
            FROM ledger_entries WHERE held AND id % 10 <> 0
            """
        ),
    )
    _timed(
        f"{REJECTIONS:,} refused records",
        lambda: sql(
            """
            INSERT INTO ledger_rejections (received_at, kind, reason, detail)
            SELECT now(), 'completed',
                (ARRAY['bad_signature', 'replay', 'unknown_node', 'malformed'])[1 + g % 4], ''
            FROM generate_series(1, :count) AS g
            """,
            count=REJECTIONS,
        ),
    )

    def jobs() -> None:
        bulk(
            session,
            "jobs",
            lambda: sql(
                """
            INSERT INTO jobs (id, kind, state, owner, params, created_at, finished_at)
            SELECT 'job-' || lpad(g::text, 12, '0'),
                (ARRAY['ocr', 'summarise', 'translate', 'pipeline'])[1 + g % 4],
                CASE WHEN g % 20 = 0 THEN 'failed' ELSE 'succeeded' END, 'bench@metrics.local', '{}',
                TIMESTAMPTZ '2025-01-01' + g * interval '1 second',
                TIMESTAMPTZ '2025-01-01' + g * interval '1 second' + (g % 600) * interval '1 second'
            FROM generate_series(1, :count) AS g
            """,
                count=JOBS,
            ),
        )
        bulk(
            session,
            "job_steps",
            lambda: sql(
                """
            INSERT INTO job_steps (job_id, position, name, task_name, queue, task_id, state, attempts)
            SELECT 'job-' || lpad(g::text, 12, '0'), 0, 'ocr', 'grid.ocr.extract', 'ocr',
                'step-' || lpad(g::text, 12, '0'),
                CASE WHEN g % 10000 = 0 THEN 'verifying' ELSE 'succeeded' END, 1
            FROM generate_series(1, :count) AS g
            """,
                count=JOBS,
            ),
        )

    _timed(f"{JOBS:,} finished jobs and their steps", jobs)

    def rewards() -> None:
        sql(
            """
            INSERT INTO ledger_periods (period, starts_at, ends_at, closed_at, total_exact_eur, total_eur,
                entries)
            SELECT to_char(m, 'YYYY-MM'), m, m + interval '1 month', m + interval '1 month 1 day', 0, 0, 0
            FROM generate_series(TIMESTAMPTZ '2025-01-01',
                TIMESTAMPTZ '2025-01-01' + (:periods - 1) * interval '1 month', interval '1 month') AS m
            """,
            periods=PERIODS,
        )
        sql(
            """
            INSERT INTO rewards (period, node_id, period_start, period_end, exact_eur, amount_eur, paid_at)
            SELECT p.period, n.id, p.starts_at, p.ends_at, 12.345, 12.35,
                CASE WHEN p.period < '2025-12' THEN p.ends_at + interval '5 days' END
            FROM ledger_periods p CROSS JOIN nodes n
            """
        )

    _timed("a year of rewards", rewards)
    _timed("ANALYZE", lambda: sql("ANALYZE"))


def naive_ledger_figures(session) -> None:
    """Executions by capability and outcome and counted grants, summed from the entries."""
    from sqlalchemy import func, select

    from app.ledger import settlement
    from app.models import LedgerEntry

    session.execute(
        select(LedgerEntry.capability, LedgerEntry.outcome, func.count()).group_by(
            LedgerEntry.capability, LedgerEntry.outcome
        )
    ).all()
    session.execute(
        select(LedgerEntry.capability, func.sum(LedgerEntry.granted_ms))
        .where(settlement.counted())
        .group_by(LedgerEntry.capability)
    ).all()
    session.rollback()


#: Batches of a thousand entries, as the ledger worker enters them, with the tallies' trigger
#: on and off in turn (what keeping the tallies costs the ledger).
TRIGGER_BATCHES = 20
BATCH_ENTRIES = 1_000


def trigger_overhead(session) -> tuple[float, float]:
    """Median seconds to insert a batch of ``BATCH_ENTRIES`` entries in one statement, with the
    tallies' trigger on and off; the batches are rolled back (the tallies stay true)."""
    from sqlalchemy import text

    insert = text(
        """
        INSERT INTO ledger_entries (task_id, attempt, node_id, node, capability, task_name, outcome,
            wall_ms, cpu_ms, unit, units, received_at, claimed_ms, cap_ms, granted_ms, grant_basis, period)
        SELECT 'batch-' || lpad(g::text, 12, '0'), 0, n.id, 'bench@host', 'ocr', 'bench', 'succeeded',
            1000, 900, 'page', 1, now(), 1000, 12000, 1000, 'claimed', to_char(now(), 'YYYY-MM')
        FROM generate_series(:first, :first + :size - 1) AS g
        JOIN (SELECT row_number() OVER (ORDER BY id) - 1 AS i, id FROM nodes) AS n ON n.i = g % 1000
        """
    )
    timings: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(2 * TRIGGER_BATCHES):
        enabled = round_ % 2 == 0
        if not enabled:
            session.execute(text("ALTER TABLE ledger_entries DISABLE TRIGGER ledger_entries_tally"))
        began = time.perf_counter()
        session.execute(insert, {"first": round_ * BATCH_ENTRIES, "size": BATCH_ENTRIES})
        timings[enabled].append(time.perf_counter() - began)
        session.rollback()  # the rows, and the trigger's state, as they were
    return statistics.median(timings[True]), statistics.median(timings[False])


def scrape_seconds(http, count: int = SCRAPES) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        response = http.get("/metrics")
        times.append(time.perf_counter() - began)
        assert response.status_code == 200
    return times


def profile(flask_app) -> None:
    """Seconds each figure takes (BENCH_METRICS_PROFILE=1)."""
    from app import broker_acl, figures
    from app.extensions import db

    with flask_app.app_context():
        for name in (
            "nodes_by_state",
            "nodes_online_by_capability",
            "heartbeat_ages",
            "tasks_completed",
            "compute_hours_by_capability",
            "validation",
            "refusals_by_reason",
            "rewards_distributed",
            "rewards_by_period",
            "job_latency",
        ):
            _timed(name, lambda f=getattr(figures, name): f(db.session))
        broker = broker_acl.client()
        _timed("queue_depths", lambda: figures.queue_depths(broker))
        _timed("ledger_backlog", lambda: figures.ledger_backlog(broker))
        db.session.remove()


def measure() -> dict[str, float]:
    from sqlalchemy import func, select, text

    from app import create_app, figures
    from app.extensions import db
    from app.models import LedgerEntry, LedgerTally

    flask_app = create_app({"METRICS_CACHE_SECONDS": 0})
    with flask_app.app_context():
        fill(db.session)
        tally_rows = db.session.scalar(select(func.count(LedgerTally.id)))
        _timed("compacting the tallies", lambda: (figures.compact_tallies(db.session), db.session.commit()))
        # The fill finished a million jobs before any compaction, leaving a million-row tally
        # table; the ledger worker folds them every watch round (30 s) and autovacuum follows
        # (the tallies' thresholds: migration d3f9a1c7e5b2), so they stay small. Rewritten here
        # to that size, or every read would scan the fill's empty pages.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            _timed(
                "rewriting them",
                lambda: connection.execute(
                    text("VACUUM (FULL, ANALYZE) ledger_tallies, rejection_tallies, job_latency_tallies")
                ),
            )
        assert db.session.scalar(select(func.count(LedgerEntry.id))) == ENTRIES
        completed = figures.tasks_completed(db.session)
        assert sum(sum(outcomes.values()) for outcomes in completed.values()) == ENTRIES
        db.session.remove()

    if os.environ.get("BENCH_METRICS_PROFILE"):
        profile(flask_app)
    uncached = flask_app.test_client()
    scrape_seconds(uncached, 2)  # connections and first queries
    cold = scrape_seconds(uncached)
    body = uncached.get("/metrics").get_data(as_text=True)
    with flask_app.app_context():
        naive = []
        for _ in range(3):
            began = time.perf_counter()
            naive_ledger_figures(db.session)
            naive.append(time.perf_counter() - began)
        with_tallies, without = trigger_overhead(db.session)
        db.session.remove()
    cached = scrape_seconds(create_app({"METRICS_CACHE_SECONDS": 60}).test_client())
    return {
        "batch_with_tallies": with_tallies,
        "batch_without": without,
        "tally_rows_before_compaction": tally_rows,
        "scrape_p50": statistics.median(cold),
        "scrape_max": max(cold),
        "cached_p50": statistics.median(cached),
        "naive_p50": statistics.median(naive),
        "exposition_bytes": len(body),
    }


def main() -> int:
    from app.servers import PostgresServer, RedisServer

    workdir = Path(tempfile.mkdtemp(prefix="grid-bench-metrics-"))
    os.chmod(workdir, 0o755)
    try:
        _log("starting throwaway Redis and PostgreSQL…")
        with RedisServer() as redis_server, PostgresServer() as postgres:
            os.environ.update(
                {
                    "GRID_BROKER_URL": redis_server.url,
                    "GRID_DATABASE_URL": postgres.create_database("grid_bench_metrics"),
                    "GRID_DATA_DIR": str(workdir / "var"),
                    "GRID_SECRET_KEY": "bench-coordinator-key",
                }
            )
            from tests.grid import manage

            upgrade = manage("db", "upgrade")
            assert upgrade.returncode == 0, upgrade.stderr
            _log(f"filling PostgreSQL: {NODES:,} nodes, {ENTRIES:,} ledger entries…")
            found = measure()
        print(
            f"/metrics at {NODES:,} nodes and {ENTRIES:,} ledger entries "
            f"({found['exposition_bytes']:,} bytes; {found['tally_rows_before_compaction']} tally rows "
            "before compaction)\n"
            f"  scrape, figures computed:      p50 {found['scrape_p50'] * 1000:7.1f} ms   "
            f"max {found['scrape_max'] * 1000:7.1f} ms\n"
            f"  scrape, from the cache:        p50 {found['cached_p50'] * 1000:7.1f} ms\n"
            f"  ledger figures from entries:   p50 {found['naive_p50'] * 1000:7.1f} ms   "
            f"(ratio to a computed scrape: {found['naive_p50'] / found['scrape_p50']:.0f}×)\n"
            f"  a ledger batch of {BATCH_ENTRIES:,} entries: p50 {found['batch_with_tallies'] * 1000:.1f} ms "
            f"with the tallies' trigger, {found['batch_without'] * 1000:.1f} ms without "
            f"(ratio {found['batch_with_tallies'] / found['batch_without']:.2f})"
        )
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
