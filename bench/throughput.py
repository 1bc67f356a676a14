"""Goal part ``throughput`` (issue 14, "Throughput"): no-op grid jobs per second, submitted over
HTTP, executed by a volunteer, entered and granted by the ledger and seen ``succeeded`` by their
client, at least half the no-op tasks per second of bare Celery with the Redis result backend,
same machine, same worker processes.

- The grid: a grid of its own (a Redis database no other part uses), ``GRID_NOOP_JOBS`` on, the
  API under gunicorn with the production unit's workers and threads
  (``deploy/systemd/koprogo-grid-api.service``), its rate limits on but raised for this run's one
  token, the ledger worker, one volunteer serving ``llm`` with concurrency 2. ``CLIENTS`` client
  threads each submit single jobs (``POST /api/v1/jobs/noop``, one at a time, the single-job
  path); the run ends when ``GET /api/v1/jobs?kind=noop&state=succeeded`` counts them all. A noop
  job is a step ``grid.llm.noop``: the node fetches its input (the coordinator's sight of the
  start), meters it, sends its signed completion; the ledger enters and grants it and the job
  succeeds. Every job is then checked to have one succeeded ledger entry.
- The baseline: ``bench.bare:results_app`` (no-op task, Redis result backend), one prefork worker
  of concurrency 2, a producer sending by name; done when every result key says SUCCESS.
  Measured before and after the grid (their mean is the baseline: the machine is shared).

Printed beside the ratio: both rates, the submissions' latency, and the CPU milliseconds per job
of the API, the ledger worker and the volunteer (where the grid's time goes). ``--quick``: a
third of the jobs and tasks.

A second line: the same jobs on a grid of their own, submitted in batches of ``BATCH``
(``POST /api/v1/jobs/batch``: one request, one transaction and one producer for them all) by
the same client threads, against the same baseline, with the API's CPU per job beside the
single-job path's.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import redis

from bench.goals import Goal
from bench.latency import production_gunicorn
from tests.grid import CELERY, Client, Grid, GridProcess

GRID_JOBS = 600
BARE_TASKS = 2000
QUICK_DIVISOR = 3
CLIENTS = 4
#: Worker processes on both sides: one prefork worker of this concurrency.
CONCURRENCY = 2
#: A Redis database no other part uses.
REDIS_DB = 4
TARGET = 0.5
WARM_UP = 20
#: Jobs per request of the batch line (POST /api/v1/jobs/batch).
BATCH = 50
POLL_SECONDS = 0.05
#: Raised limits for this run's one token and address (the defaults would refuse at once).
LIMITS = {
    f"GRID_API_{name}_LIMIT": "1000000 per minute"
    for name in ("SUBMIT", "READ", "ADDRESS", "AUTH_FAILURE", "WORK")
}


class ThroughputError(RuntimeError):
    """A job or task failed, or was not entered as it should be: nothing to compare."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants (gunicorn's worker, Celery's pool)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
        stack += [int(child) for child in children]
    return total


# --- bare Celery -------------------------------------------------------------------------------


def _await_results(store: redis.Redis, ids: list[str], timeout: float) -> None:
    from bench import bare

    deadline = time.monotonic() + timeout
    left = ids
    while left:
        values = []
        for start in range(0, len(left), 1000):
            values += store.mget([bare.RESULT_KEY.format(task) for task in left[start : start + 1000]])
        waiting = []
        for task, value in zip(left, values, strict=True):
            if value is None:
                waiting.append(task)
            elif json.loads(value)["status"] != "SUCCESS":
                raise ThroughputError(f"bare task {task}: {value[:200]!r}")
        left = waiting
        if left:
            if time.monotonic() > deadline:
                raise ThroughputError(f"{len(left)} bare tasks had no result after {timeout:.0f} s")
            time.sleep(POLL_SECONDS)


def bare_rate(log_dir: Path, tasks: int, run: int) -> float:
    """No-op tasks per second of bare Celery with the Redis result backend, from the first send
    to the last result seen."""
    from celery import Celery

    from bench import bare

    url = os.environ[bare.BROKER_ENV]
    worker = GridProcess(
        f"bare-results-{run}",
        [
            CELERY,
            "-A",
            "bench.bare:results_app",
            "worker",
            "-Q",
            bare.RESULTS_QUEUE,
            "-c",
            str(CONCURRENCY),
            "-n",
            f"bare-results-{run}@%h",
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
        ],
        dict(os.environ),
        log_dir,
    ).start()
    producer = Celery("bench.bare.producer", broker=url, set_as_current=False)  # no backend
    store = redis.Redis.from_url(url)
    try:
        worker.wait_ready(" ready.")

        def send(count: int) -> list[str]:
            return [
                producer.send_task(bare.RESULTS_TASK_NAME, queue=bare.RESULTS_QUEUE).id for _ in range(count)
            ]

        _await_results(store, send(WARM_UP), 60)
        started = time.perf_counter()
        _await_results(store, send(tasks), 600)
        return tasks / (time.perf_counter() - started)
    finally:
        worker.stop()
        store.close()
        producer.close()


# --- the grid ----------------------------------------------------------------------------------


def _token(owner: str) -> str:
    from app import create_app
    from app.auth import create_token
    from app.extensions import db

    flask_app = create_app({"TESTING_NO_METRICS": True})
    with flask_app.app_context():
        _, token = create_token("bench-throughput", owner, ["jobs:read", "jobs:write"])
        db.session.commit()
    return token


def _entered(ids: list[str]) -> tuple[int, int]:
    """(succeeded entries, granted ms) the ledger holds for these jobs."""
    from sqlalchemy import func, select

    from app import create_app
    from app.extensions import db
    from app.models import LedgerEntry

    with create_app({"TESTING_NO_METRICS": True}).app_context():
        count, granted = db.session.execute(
            select(func.count(), func.coalesce(func.sum(LedgerEntry.granted_ms), 0)).where(
                LedgerEntry.job_id.in_(ids), LedgerEntry.outcome == "succeeded"
            )
        ).one()
    return int(count), int(granted)


class _Submitters:
    """``CLIENTS`` threads, each submitting single noop jobs one after the other, or batches of
    ``batch`` of them (``POST /api/v1/jobs/batch``) when ``batch`` is above 1."""

    def __init__(self, url: str, token: str, jobs: int, batch: int = 1) -> None:
        self.url, self.token, self.jobs, self.batch = url, token, jobs, batch
        self.ids: list[str] = []
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def _submit(self, count: int) -> None:
        client = Client(self.url, self.token)
        while count > 0:
            size = min(count, self.batch)
            count -= size
            began = time.perf_counter()
            if self.batch > 1:
                response = client.post("/api/v1/jobs/batch", json=[{"kind": "noop"}] * size)
            else:
                response = client.post("/api/v1/jobs/noop", json={})
            elapsed = time.perf_counter() - began
            with self.lock:
                if response.status_code != 202:
                    self.errors.append(f"{response.status_code} {response.text[:200]}")
                    return
                body = response.json()
                self.ids += [job["id"] for job in body["items"]] if self.batch > 1 else [body["id"]]
                self.latencies.append(elapsed)

    def start(self) -> list[threading.Thread]:
        shares = [self.jobs // CLIENTS + (index < self.jobs % CLIENTS) for index in range(CLIENTS)]
        threads = [threading.Thread(target=self._submit, args=(share,), daemon=True) for share in shares]
        for thread in threads:
            thread.start()
        return threads


def _count(client: Client, state: str) -> int:
    response = client.get("/api/v1/jobs", params={"kind": "noop", "state": state, "per_page": 1})
    if response.status_code != 200:
        raise ThroughputError(f"listing jobs: {response.status_code} {response.text[:200]}")
    return int(response.json()["total"])


def _await_jobs(client: Client, total: int, timeout: float, since: float) -> None:
    """Until the API counts ``total`` noop jobs succeeded. Each poll is a request the API serves
    beside the jobs: polled every 2 % of the time elapsed since ``since`` (50 ms to 0.5 s), the
    end is seen within 2 % and the polls cost the API a few requests a second."""
    deadline = time.monotonic() + timeout
    polls = 0
    while _count(client, "succeeded") < total:
        polls += 1
        if polls % 20 == 0 and _count(client, "failed"):
            raise ThroughputError(f"{_count(client, 'failed')} noop job(s) failed")
        if time.monotonic() > deadline:
            raise ThroughputError(f"the noop jobs had not all succeeded after {timeout:.0f} s")
        time.sleep(min(0.5, max(POLL_SECONDS, 0.02 * (time.perf_counter() - since))))


def grid_rate(log_dir: Path, jobs: int, batch: int = 1) -> tuple[float, dict]:
    """Noop jobs per second from the first POST to the client seeing the last one succeeded,
    and what to print beside it; submitted in batches of ``batch`` when above 1 (latencies are
    then the batches')."""
    env = dict(os.environ)
    env["GRID_BROKER_URL"] = env["GRID_BROKER_URL"].rsplit("/", 1)[0] + f"/{REDIS_DB}"
    env.update({"GRID_NOOP_JOBS": "true", **LIMITS})
    workers, threads = production_gunicorn()
    grid = Grid(env, log_dir)
    try:
        ledger = grid.ledger_worker()
        volunteer = grid.worker("throughput-llm", "llm", concurrency=CONCURRENCY)
        url = grid.api(workers=workers, threads=threads)
        api = next(process for process in grid.processes if process.name == "api")
        token = _token(f"throughput-{uuid.uuid4().hex[:8]}@bench.local")
        watcher = Client(url, token)
        warm = _Submitters(url, token, WARM_UP)
        for thread in warm.start():
            thread.join()
        if warm.errors:
            raise ThroughputError(f"a warm-up submission was refused: {warm.errors[0]}")
        _await_jobs(watcher, WARM_UP, 120, time.perf_counter())
        processes = {"api": api, "ledger": ledger, "volunteer": volunteer}
        cpu_before = {name: _cpu_seconds(process.proc.pid) for name, process in processes.items()}
        submitters = _Submitters(url, token, jobs, batch)
        started = time.perf_counter()
        for thread in submitters.start():
            thread.join()
        posted = time.perf_counter() - started
        if submitters.errors:
            raise ThroughputError(f"a submission was refused: {submitters.errors[0]}")
        _await_jobs(watcher, WARM_UP + jobs, 600, started)
        elapsed = time.perf_counter() - started
        cpu = {
            name: 1000 * (_cpu_seconds(process.proc.pid) - cpu_before[name]) / jobs
            for name, process in processes.items()
        }
        entries, granted_ms = _entered(submitters.ids)
        if entries != jobs:
            raise ThroughputError(f"{entries} succeeded ledger entries for {jobs} succeeded noop jobs")
        latencies = sorted(submitters.latencies)
        return jobs / elapsed, {
            "posted": posted,
            "p50": 1000 * statistics.median(latencies),
            "p90": 1000 * latencies[int(0.9 * (len(latencies) - 1))],
            "cpu": cpu,
            "granted_ms": granted_ms,
            "gunicorn": f"gunicorn --workers {workers} --threads {threads}",
        }
    except Exception:
        _log(grid.logs())
        raise
    finally:
        grid.stop()


def run(workdir: Path, quick: bool) -> list[Goal]:
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    jobs = GRID_JOBS // QUICK_DIVISOR if quick else GRID_JOBS
    tasks = BARE_TASKS // QUICK_DIVISOR if quick else BARE_TASKS
    load = os.getloadavg()[0]
    _log(f"throughput: bare Celery ({tasks} no-op tasks, Redis result backend), {jobs} noop jobs, bare again")
    before = bare_rate(log_dir, tasks, 1)
    _log(f"  bare: {before:.0f} tasks/s")
    grid, seen = grid_rate(log_dir, jobs)
    _log(f"  grid: {grid:.1f} jobs/s (POSTs took {seen['posted']:.2f} s)")
    batched, seen_batched = grid_rate(log_dir, jobs, BATCH)
    _log(f"  grid, batches of {BATCH}: {batched:.1f} jobs/s (POSTs took {seen_batched['posted']:.2f} s)")
    after = bare_rate(log_dir, tasks, 2)
    _log(f"  bare: {after:.0f} tasks/s")
    baseline = (before + after) / 2
    cpu = ", ".join(f"{name} {ms:.1f}" for name, ms in seen["cpu"].items())
    cpu_batched = ", ".join(f"{name} {ms:.1f}" for name, ms in seen_batched["cpu"].items())
    return [
        Goal.ratio(
            "Throughput: no-op grid jobs/s over bare Celery no-op tasks/s (Redis result backend), "
            "single-job submissions",
            grid,
            baseline,
            TARGET,
            f"{grid:.3g} jobs/s ({jobs} jobs from {CLIENTS} client threads, {seen['gunicorn']}, "
            f"one volunteer -c {CONCURRENCY}) vs {baseline:.3g} tasks/s ({tasks} tasks, {before:.3g} before "
            f"and {after:.3g} after, one worker -c {CONCURRENCY}); submission p50 {seen['p50']:.1f} ms, "
            f"p90 {seen['p90']:.1f} ms; CPU ms per job: {cpu}; {jobs} entries granted "
            f"{seen['granted_ms'] / 1000:.2f} s in all; load average {load:.2f} at the part's start",
        ),
        Goal.ratio(
            f"Throughput: the same, submitted in batches of {BATCH} (POST /api/v1/jobs/batch)",
            batched,
            baseline,
            TARGET,
            f"{batched:.3g} jobs/s ({jobs} jobs from {CLIENTS} client threads); batch p50 "
            f"{seen_batched['p50']:.1f} ms; CPU ms per job: {cpu_batched} (single jobs: API "
            f"{seen['cpu']['api']:.1f})",
        ),
    ]
