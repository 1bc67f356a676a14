"""Goal part ``history`` (issue 14, "Large history"): the API's reads and the settlement on a
ledger of ten million entries and 100,000 jobs (``python -m bench history``; ``--quick``: a
million entries and 10,000 jobs, said so in the table).

The data is bench/stats.py's filler (``bench.stats.fill``: 1,000 nodes, the entries spread over
the year up to now with their jobs and steps, a tenth of them held and most of those decided),
in a PostgreSQL database of this part's own on the bench's server (the other parts' figures do
not see it), with the tallies' triggers on as in production. Its nodes are then given to 500
members (two each) and its jobs to 100 members.

Each read is timed over Flask's test client (the whole request: token, limits, view, JSON;
no HTTP socket, no gunicorn), ``SAMPLES`` calls after one to warm up, and its p99 compared with
the goal (≤ 100 ms): a member's and an admin's job listing (first page, and a page filtered by
state and kind), a member's statement of the last ended month, and ``GET /api/v1/stats`` over a
day, a week and a month. Then every ended period is settled (``settlement.settle_due``), timed.
"""

from __future__ import annotations

import gc
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.goals import Goal

ENTRIES, JOBS = 10_000_000, 100_000
QUICK_ENTRIES, QUICK_JOBS = 1_000_000, 10_000
#: Members owning the nodes (two each) and members owning the jobs.
NODE_OWNERS, JOB_OWNERS = 500, 100
SAMPLES = 30
LATENCY_MS = 100.0
SETTLE_SECONDS = 15.0
DATABASE = "grid_bench_history"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _database() -> str:
    """A database of this part's own on the bench's PostgreSQL server, migrated; its URL."""
    _drop_database(create=True)
    own_url = make_url(os.environ["GRID_DATABASE_URL"]).set(database=DATABASE)
    own = own_url.render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "manage.py", "db", "upgrade"],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "GRID_DATABASE_URL": own},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrating {DATABASE} failed:\n{done.stderr[-2000:]}")
    return own


def _drop_database(create: bool = False) -> None:
    """Drop this part's database (and create it afresh when ``create``)."""
    import psycopg2

    url = make_url(os.environ["GRID_DATABASE_URL"])
    admin = psycopg2.connect(
        dbname="postgres", user=url.username, password=url.password, host=url.host, port=url.port
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        if create:
            cursor.execute(f"CREATE DATABASE {DATABASE}")
    admin.close()


def _members(flask_app) -> tuple[dict[str, str], int]:
    """Nodes given to ``NODE_OWNERS`` members, jobs to ``JOB_OWNERS``; tokens for member 0 and
    an admin; member 0's participant id."""
    from app.auth import create_token
    from app.extensions import db

    with flask_app.app_context():
        db.session.execute(
            text(
                "INSERT INTO participants (email, created_at) "
                "SELECT 'member-' || i || '@bench.local', now() FROM generate_series(0, :n - 1) AS i"
            ),
            {"n": NODE_OWNERS},
        )
        db.session.execute(
            text(
                """
                UPDATE nodes SET participant_id = p.id
                FROM participants AS p
                WHERE p.email = 'member-' || (split_part(nodes.name, '-', 2)::int % :n) || '@bench.local'
                """
            ),
            {"n": NODE_OWNERS},
        )
        db.session.execute(
            text("UPDATE jobs SET owner = 'member-' || (abs(hashtext(id)) % :n) || '@bench.local'"),
            {"n": JOB_OWNERS},
        )
        tokens = {
            "member": create_token("bench", "member-0@bench.local", ["jobs:read"])[1],
            "admin": create_token("bench", "admin@bench.local", ["jobs:read", "admin"])[1],
        }
        member = db.session.scalar(text("SELECT id FROM participants WHERE email = 'member-0@bench.local'"))
        db.session.commit()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE jobs, nodes, participants"))
    return tokens, int(member)


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def _timed_reads(http, token: str, path: str, samples: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    first = http.get(path, headers=headers)
    if first.status_code != 200:
        raise RuntimeError(f"GET {path}: {first.status_code} {first.get_data(as_text=True)[:300]}")
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        response = http.get(path, headers=headers)
        times.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    return times


def _last_ended_month(now: datetime) -> str:
    first = now.astimezone(UTC).replace(day=1)
    return f"{(first - timedelta(days=1)):%Y-%m}"


def run(workdir: Path, quick: bool) -> list[Goal]:
    from app import create_app
    from app.extensions import db
    from app.ledger import settlement
    from bench import stats as stats_bench

    entries, jobs = (QUICK_ENTRIES, QUICK_JOBS) if quick else (ENTRIES, JOBS)
    samples = 20 if quick else SAMPLES
    size = f"{entries:,} entries, {jobs:,} jobs{' (quick run)' if quick else ''}"
    url = _database()
    try:
        flask_app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": url,
                "TESTING_NO_METRICS": True,
                # The limits stay on (their Redis round trips are part of a read); not their counts.
                "API_READ_LIMIT": "1000000 per minute",
                "API_ADDRESS_LIMIT": "1000000 per minute",
            }
        )
        _log(f"  filling {DATABASE}: {size}…")
        began = time.monotonic()
        stats_bench.fill(flask_app, entries=entries, jobs=jobs, held=True)
        tokens, member = _members(flask_app)
        filled = time.monotonic() - began
        _log(f"  filled in {filled:.0f} s")

        # The filler's own objects stay in this process: moved out of the collector's sight, so
        # that a full collection of them (~100 ms, at any allocation) is not timed as a request's.
        gc.collect()
        gc.freeze()
        http = flask_app.test_client()
        month = _last_ended_month(datetime.now(UTC))
        reads = {
            "jobs, a member's first page": ("member", "/api/v1/jobs"),
            "jobs, a member's filtered page": ("member", "/api/v1/jobs?state=failed&kind=ocr"),
            "jobs, an admin's first page": ("admin", "/api/v1/jobs"),
            "jobs, an admin's filtered page": ("admin", "/api/v1/jobs?state=failed&kind=summarise&page=3"),
            "statement": ("member", f"/api/v1/participants/{member}/statement?period={month}"),
            "stats day": ("admin", "/api/v1/stats?period=day"),
            "stats week": ("admin", "/api/v1/stats?period=week"),
            "stats month": ("admin", "/api/v1/stats?period=month"),
        }
        timings: dict[str, list[float]] = {}
        for name, (who, path) in reads.items():
            timings[name] = _timed_reads(http, tokens[who], path, samples)
            _log(
                f"  {name:<32} p50 {statistics.median(timings[name]):7.1f} ms  "
                f"p99 {p99(timings[name]):7.1f} ms  (GET {path})"
            )
        with flask_app.app_context():
            statement_lines = len(
                http.get(
                    reads["statement"][1], headers={"Authorization": f"Bearer {tokens['member']}"}
                ).get_json()["entries"]
            )
            began = time.perf_counter()
            settled = settlement.settle_due()
            db.session.commit()
            settle_seconds = time.perf_counter() - began
            settled_entries = db.session.scalar(text("SELECT coalesce(sum(entries), 0) FROM ledger_periods"))
            db.session.remove()
        _log(f"  settled {len(settled)} periods, {settled_entries:,} entries, in {settle_seconds:.1f} s")
    finally:
        gc.unfreeze()  # what the part leaves is collected as usual again
        from app.extensions import db as _db

        try:
            with flask_app.app_context():
                _db.engine.dispose()
        except Exception:  # noqa: BLE001  the app may not have been made
            pass
        _drop_database()

    how = f"Flask test client, {samples} calls after one warm-up; {size}"
    jobs_names = [name for name in timings if name.startswith("jobs")]
    worst = max(jobs_names, key=lambda name: p99(timings[name]))
    goals = [
        Goal.at_most(
            "Large history: jobs listing p99 (worst of a member's and an admin's, first and filtered page)",
            p99(timings[worst]),
            LATENCY_MS,
            "ms",
            f"worst: {worst}; "
            + ", ".join(f"{name.removeprefix('jobs, ')} {p99(timings[name]):.1f}" for name in jobs_names)
            + f" ms; {how}",
        ),
        Goal.at_most(
            "Large history: a member's statement p99",
            p99(timings["statement"]),
            LATENCY_MS,
            "ms",
            f"{month}, two nodes, {statement_lines:,} lines; {how}",
        ),
    ]
    for period in ("day", "week", "month"):
        goals.append(
            Goal.at_most(
                f"Large history: GET /api/v1/stats?period={period} p99 (admin: with the euros)",
                p99(timings[f"stats {period}"]),
                LATENCY_MS,
                "ms",
                how,
            )
        )
    goals.append(
        Goal.at_most(
            "Large history: settlement of the ended periods",
            settle_seconds,
            SETTLE_SECONDS,
            "s",
            f"{len(settled)} periods, {settled_entries:,} entries settled (settlement.settle_due); {size}; "
            f"filled in {filled:.0f} s",
        )
    )
    return goals
