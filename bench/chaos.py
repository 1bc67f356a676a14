"""``python -m bench.chaos [--short]`` (``make chaos``): the grid under faults, with real processes.

A private Redis (append-only file on) and a private PostgreSQL that can be stopped and started
again, the API under gunicorn, the ledger worker and two volunteers on ``llm,ocr``, with short
limits (soft/hard/visibility 20/30/40 s). While OCR of three-page PDFs and summaries of long
texts run, it (a) SIGKILLs pool processes and whole workers (each worker is started again, as
systemd would), (b) restarts Redis, (c) stops PostgreSQL for a while, (d) sends malformed API
requests; then it waits for every job to end and prints a table: jobs by final state, lost,
stuck, discarded successes, double grants, refused records by reason, 5xx answers. Goals: 0
lost, 0 stuck, 0 discarded successes, 0 double grants, 0 × 5xx; the exit status says whether
they were met. ``--short`` is the test suite's version (tests/test_chaos.py), about two minutes.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

LIMITS = {
    "GRID_SOFT_TIME_LIMIT": "20",
    "GRID_HARD_TIME_LIMIT": "30",
    "GRID_VISIBILITY_TIMEOUT": "40",
    "GRID_RESTORE_INTERVAL": "2",
    "GRID_WATCHDOG_SECONDS": "2",
    "GRID_LOST_GRACE": "10",
    "GRID_HEARTBEAT_SECONDS": "5",
    "GRID_RETRY_BACKOFF": "1",
    "GRID_NODE_RATE_LIMIT": "0",
    # Results are checked as in production: the two nodes are two members', and each re-runs
    # the other's results under the same faults (docs/decisions/0011).
    "GRID_VALIDATION": "true",
}
#: The nodes and their owners.
NODES = {"chaos-a": "alice@koprogo.test", "chaos-b": "bob@koprogo.test"}


@dataclass
class Plan:
    jobs: int
    kill_seconds: float
    postgres_down_seconds: float
    fuzzed: int
    drain_seconds: float


FULL = Plan(jobs=120, kill_seconds=240, postgres_down_seconds=30, fuzzed=400, drain_seconds=600)
SHORT = Plan(jobs=16, kill_seconds=30, postgres_down_seconds=8, fuzzed=60, drain_seconds=240)


@dataclass
class Tally:
    answers: Counter = field(default_factory=Counter)
    five_xx: list[str] = field(default_factory=list)
    kills: Counter = field(default_factory=Counter)
    drained_seconds: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, what: str, status: int) -> None:
        with self.lock:
            self.answers[status] += 1
            if status >= 500 and status not in (503,):
                self.five_xx.append(f"{status} {what}")


def _log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str]) -> int:
    from app.servers import PostgresServer, RedisServer

    plan = SHORT if "--short" in argv else FULL
    workdir = Path(tempfile.mkdtemp(prefix="grid-chaos-"))
    os.chmod(workdir, 0o755)
    (workdir / "logs").mkdir()
    redis_server = RedisServer(directory=workdir / "redis")
    postgres = PostgresServer(directory=workdir / "postgres")
    try:
        redis_server.start()
        postgres.start()
        model = workdir / "tiny.gguf"
        os.environ.update(
            {
                **LIMITS,
                "GRID_BROKER_URL": redis_server.url,
                "GRID_DATABASE_URL": postgres.create_database("grid_chaos"),
                "GRID_DATA_DIR": str(workdir / "var"),
                "GRID_LLM_MODEL": str(model),
                "GRID_LLM_CONTEXT": "512",
                "GRID_LLM_THREADS": "1",
                "GRID_SECRET_KEY": "chaos-coordinator-key",
                "OMP_THREAD_LIMIT": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        # A kept server's socket path is computed by celeryconfig (app.servers imports it for
        # that): read it again now that the environment names this run's servers.
        if "celeryconfig" in sys.modules:
            importlib.reload(sys.modules["celeryconfig"])
        from workers.tinymodel import build_tiny_model

        build_tiny_model(model, context_length=512)
        return run(workdir, plan, redis_server, postgres)
    finally:
        redis_server.stop()
        postgres.stop()
        if os.environ.get("BENCH_KEEP"):
            print(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(workdir: Path, plan: Plan, redis_server, postgres) -> int:
    from tests.grid import Client, Grid, manage

    migrated = manage("db", "upgrade")
    if migrated.returncode != 0:
        raise SystemExit(f"migration failed: {migrated.stderr}")
    created = manage(
        "tokens", "create", "--owner", "chaos@koprogo.test", "--scope", "jobs:read", "--scope", "jobs:write"
    )
    token = created.stdout.strip().splitlines()[-1]
    grid = Grid(dict(os.environ), workdir / "logs")
    tally = Tally()
    try:
        grid.ledger_worker()
        api = grid.api()
        workers = {name: grid.worker(name, "llm,ocr", owner=owner) for name, owner in NODES.items()}
        client = Client(api, token)
        job_ids = _submit_all(client, plan, tally)
        _log(f"{len(job_ids)} jobs submitted; faults begin")
        stop = threading.Event()
        killer = threading.Thread(target=_kill_workers, args=(grid, workers, plan, tally, stop), daemon=True)
        killer.start()
        time.sleep(plan.kill_seconds / 3)
        _restart_redis(redis_server, tally)
        time.sleep(plan.kill_seconds / 3)
        _stop_postgres(postgres, client, job_ids, plan, tally)
        killer.join(plan.kill_seconds)
        stop.set()
        killer.join(60)
        _fuzz(api, token, plan, tally)
        began = time.monotonic()
        states = _drain(client, job_ids, plan, tally)
        tally.drained_seconds = round(time.monotonic() - began)
        outcome = _report(job_ids, states, tally)
        if outcome:
            _dump_logs(workdir / "logs", [j for j in job_ids if states.get(j) not in FINAL])
        return outcome
    finally:
        grid.stop()


FINAL = ("succeeded", "failed", "cancelled")


def _dump_logs(logs: Path, stuck: list[str], lines: int = 60) -> None:
    """When a goal is missed, what each process last wrote and where the stuck jobs stand."""
    for log in sorted(logs.glob("*")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"\n--- {log.name} (last {len(tail)} lines)", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)
    from app import create_app
    from app.extensions import db
    from app.models import Job

    with create_app().app_context():
        for job in db.session.scalars(db.select(Job).where(Job.id.in_(stuck))):
            steps = [(s.name, s.state, s.node, s.attempts, s.task_id) for s in job.steps]
            print(f"stuck {job.id} {job.kind} {job.state} {steps}", file=sys.stderr)


def _documents():
    from tests.documents import ENGLISH_LINES, FRENCH_LINES, text_pdf

    pdf = text_pdf([FRENCH_LINES, ENGLISH_LINES, FRENCH_LINES])
    long_text = "\n".join((FRENCH_LINES + ENGLISH_LINES) * 12)
    return pdf, long_text


def _submit_all(client, plan: Plan, tally: Tally) -> list[str]:
    pdf, long_text = _documents()
    job_ids = []
    for number in range(plan.jobs):
        if number % 2:
            response = client.post("/api/v1/jobs/summarise", json={"text": long_text, "language": "fr"})
        else:
            response = client.post(
                "/api/v1/jobs/ocr",
                files={"file": ("minutes.pdf", pdf)},
                data={"languages": "fra+eng", "force_ocr": "true"},
            )
        tally.answer("submit", response.status_code)
        if response.status_code == 202:
            job_ids.append(response.json()["id"])
    return job_ids


def _pool_children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def _kill_workers(grid, workers: dict, plan: Plan, tally: Tally, stop: threading.Event) -> None:
    """SIGKILL a pool process (70 %) or a whole worker (30 %, started again) every few seconds."""
    rng = random.Random(7)
    deadline = time.monotonic() + plan.kill_seconds
    while time.monotonic() < deadline and not stop.is_set():
        stop.wait(rng.uniform(3, 7))
        name = rng.choice(list(NODES))
        process = workers[name]
        children = _pool_children(process.proc.pid) if process.alive() else []
        if children and rng.random() < 0.7:
            try:
                os.kill(rng.choice(children), signal.SIGKILL)
                tally.kills["pool process"] += 1
            except ProcessLookupError:
                pass
            continue
        process.kill(signal.SIGKILL)
        tally.kills["whole worker"] += 1
        process.proc.wait(10)
        _restart(grid, workers, name)


def _restart(grid, workers: dict, name: str) -> None:
    """Start a node's worker again, as systemd would, until it comes up (its enrolment needs
    PostgreSQL, which may be away)."""
    for _ in range(30):
        try:
            workers[name] = grid.worker(name, "llm,ocr", owner=NODES[name])
            return
        except Exception as exc:  # noqa: BLE001  a server is away: try again
            _log(f"{name} not restarted ({str(exc)[:120]}); again in 3 s")
            time.sleep(3)


def _restart_redis(redis_server, tally: Tally) -> None:
    _log("Redis restarts (its append-only file kept)")
    redis_server.stop()
    time.sleep(3)
    redis_server.start()
    tally.kills["Redis restart"] += 1


def _stop_postgres(postgres, client, job_ids: list[str], plan: Plan, tally: Tally) -> None:
    _log(f"PostgreSQL stopped for {plan.postgres_down_seconds:.0f} s")
    postgres.stop()
    tally.kills["PostgreSQL outage"] += 1
    deadline = time.monotonic() + plan.postgres_down_seconds
    while time.monotonic() < deadline:  # what clients see meanwhile
        for path in (f"/api/v1/jobs/{random.choice(job_ids)}", "/api/v1/jobs", "/readyz"):
            try:
                tally.answer(f"GET {path} (database away)", client.get(path).status_code)
            except Exception as exc:  # noqa: BLE001  a closed connection is counted apart
                tally.answer(f"GET {path}: {type(exc).__name__}", 599)
        time.sleep(0.5)
    postgres.start()


QUERIES = ("", "?limit=-5", "?limit=abc", "?state=%00", "?page=999999999999999999", "?period=2026-13")


def _fuzz(api: str, token: str, plan: Plan, tally: Tally) -> None:
    """Malformed requests: odd ids, bodies, types and sizes on every route family."""
    import requests

    rng = random.Random(11)
    junk_ids = ["%00", "x" * 5000, "-1", "99999999999999999999", "../../etc/passwd", "%F0%9F%92%A9", "null"]
    deep = "[" * 60_000 + "]" * 60_000
    bodies = [b"", b"null", b"[]", b'"x"', b"{", deep.encode(), json.dumps({"owner": "a" * 300}).encode(),
              json.dumps({"name": "\x00bad"}).encode(), os.urandom(512)]  # fmt: skip
    routes = [
        ("GET", "/api/v1/jobs/{id}"), ("POST", "/api/v1/jobs/{id}/cancel"), ("GET", "/api/v1/jobs"),
        ("POST", "/api/v1/jobs/ocr"), ("POST", "/api/v1/jobs/summarise"), ("POST", "/api/v1/jobs/pipeline"),
        ("GET", "/api/v1/nodes/{id}"), ("POST", "/api/v1/nodes"), ("POST", "/api/v1/nodes/{id}/pause"),
        ("POST", "/api/v1/work/{id}/input"), ("POST", "/api/v1/work/{id}/progress"),
        ("GET", "/api/v1/participants/{id}/statement"), ("GET", "/api/v1/ledger/nodes"),
    ]  # fmt: skip
    for _ in range(plan.fuzzed):
        method, template = rng.choice(routes)
        path = template.replace("{id}", rng.choice(junk_ids))
        headers = {"Authorization": f"Bearer {rng.choice([token, 'nope', token + 'x'])}"}
        if rng.random() < 0.5:
            headers["Content-Type"] = rng.choice(["application/json", "multipart/form-data", "text/plain"])
        query = rng.choice(
            ["", "?limit=-5", "?limit=abc", "?state=%00", "?page=999999999999999999", "?period=2026-13"]
        )
        try:
            response = requests.request(
                method, f"{api}{path}{query}", data=rng.choice(bodies), headers=headers, timeout=30
            )
            tally.answer(f"{method} {path[:60]}{query}", response.status_code)
        except requests.RequestException as exc:
            tally.answer(f"{method} {path[:60]}: {type(exc).__name__}", 599)


def _drain(client, job_ids: list[str], plan: Plan, tally: Tally) -> dict[str, str]:
    _log("faults over; waiting for every job to end")
    states: dict[str, str] = {}
    deadline = time.monotonic() + plan.drain_seconds
    while time.monotonic() < deadline:
        for job_id in job_ids:
            if states.get(job_id) in ("succeeded", "failed", "cancelled"):
                continue
            try:
                response = client.get(f"/api/v1/jobs/{job_id}")
            except Exception:  # noqa: BLE001
                continue
            tally.answer("GET job (drain)", response.status_code)
            if response.status_code == 200:
                body = response.json()
                states[job_id] = body["state"]
                if body["state"] == "failed":
                    states[f"{job_id}:code"] = body["error"]["code"]
        if all(states.get(j) in ("succeeded", "failed", "cancelled") for j in job_ids):
            break
        time.sleep(2)
    return states


def _report(job_ids: list[str], states: dict[str, str], tally: Tally) -> int:
    from sqlalchemy import func, select

    from app import create_app
    from app.extensions import db
    from app.models import LedgerEntry, LedgerRejection

    by_state = Counter(
        f"failed ({states.get(f'{j}:code')})" if states.get(j) == "failed" else str(states.get(j))
        for j in job_ids
    )
    stuck = [j for j in job_ids if states.get(j) not in ("succeeded", "failed", "cancelled")]
    flask_app = create_app()
    with flask_app.app_context():
        db.engine.dispose()
        known = set(db.session.scalars(select(LedgerEntry.job_id).where(LedgerEntry.job_id.in_(job_ids))))
        double = db.session.execute(
            select(LedgerEntry.task_id)
            .where(LedgerEntry.granted_ms > 0, LedgerEntry.reverses_id.is_(None))
            .group_by(LedgerEntry.task_id)
            .having(func.count() > 1)
        ).all()
        refused = Counter(r for (r,) in db.session.execute(select(LedgerRejection.reason)))
        succeeded_tasks = set(
            db.session.scalars(select(LedgerEntry.task_id).where(LedgerEntry.outcome == "succeeded"))
        )
        discarded = 0
        for rejection in db.session.scalars(
            select(LedgerRejection).where(LedgerRejection.kind == "completed")
        ):
            record = rejection.record or {}
            if record.get("outcome") == "succeeded" and rejection.task_id not in succeeded_tasks:
                discarded += 1
        from app.models import Job

        present = set(db.session.scalars(select(Job.id).where(Job.id.in_(job_ids))))
    lost = [j for j in job_ids if j not in present]
    rows = [
        ("jobs submitted", len(job_ids)),
        *((f"  {state}", count) for state, count in sorted(by_state.items(), key=str)),
        ("lost", len(lost)),
        ("stuck (not final after the drain)", len(stuck)),
        ("seconds from the last fault until every job ended", tally.drained_seconds),
        ("discarded successes", discarded),
        ("double grants", len(double)),
        ("5xx answers (503 apart)", len(tally.five_xx)),
        ("503 answers", tally.answers[503]),
        *((f"faults: {what}", count) for what, count in sorted(tally.kills.items())),
        *((f"refused records: {reason}", count) for reason, count in sorted(refused.items())),
        ("jobs with ledger entries", len(known)),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"\n{'what':<{width}}  count")
    for label, count in rows:
        print(f"{label:<{width}}  {count}")
    for line in tally.five_xx[:20]:
        print(f"5xx: {line}")
    met = not lost and not stuck and not discarded and not double and not tally.five_xx
    goals = "0 lost, 0 stuck, 0 discarded successes, 0 double grants, 0 × 5xx"
    print(f"\ngoals {'met' if met else 'NOT met'}: {goals}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
