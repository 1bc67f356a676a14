"""Goal part ``coordinators`` (issue 14, "Past one coordinator"): two API processes behind one
address and two ledger workers sharing the ``ledger`` queue, against one of each.

The coordinator's own throughput is measured, so that volunteers are not the bottleneck:

- **API**: submissions per second (``POST /api/v1/jobs/summarise``, each job recorded, its input
  kept, its step sent to the broker; no volunteer takes them: a Redis database of this part's
  own) by ``wrk`` with ``CONNECTIONS`` connections as fast as answers come, against one API
  process (a gunicorn of one worker, the production unit's threads) and then two such gunicorn
  masters on the same address (``--reuse-port``: the kernel spreads connections between them),
  each for ``SECONDS``. The API's limits are on, raised for the bench's one client.
- **Ledger**: completions entered and granted per second from a backlog of ``EXECUTIONS``
  validly signed records of ``NODES`` nodes (each execution's start seen first, as a node's input
  fetch is), by one ledger worker and then by two (``ledger-a``, ``ledger-b``) on the same queue,
  each side its own backlog of the same size; batches of ``BATCH`` (``GRID_LEDGER_BATCH``, the
  same on both sides), so that two workers have batches to share. The rate is taken from the
  first to the last entry's ``received_at``.

Everything runs on the same 2 cores (PostgreSQL, Redis, wrk and every process measured): the
second process can only use what the first leaves. ``--quick``: shorter runs, smaller backlogs.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy import func, select

import celeryconfig
from bench import latency
from bench.goals import Goal
from tests.grid import Grid, enrolment, wait_for

CONNECTIONS = 16
#: Seconds of submissions on each side, in ROUNDS alternated runs.
SECONDS = 30
QUICK_SECONDS = 12
ROUNDS = 3
EXECUTIONS = 3000
QUICK_EXECUTIONS = 1500
NODES = 20
BATCH = 250
TARGET = 1.7
#: Redis databases no other part uses: the API's submissions, then the ledger's backlogs.
REDIS_DB = 3
LEDGER_REDIS_DB = 4


def _log(message: str) -> None:
    print(f"  coordinators: {message}", file=sys.stderr, flush=True)


def _env(redis_db: int = REDIS_DB) -> dict[str, str]:
    env = dict(os.environ)
    env["GRID_BROKER_URL"] = env["GRID_BROKER_URL"].rsplit("/", 1)[0] + f"/{redis_db}"
    for name in ("SUBMIT", "READ", "ADDRESS"):
        env[f"GRID_API_{name}_LIMIT"] = "1000000 per minute"
    env["GRID_LEDGER_BATCH"] = str(BATCH)
    # The backlog's starts are entered minutes before the ledger workers take their completions
    # (filling it takes that long on a busy machine): the watchdog must not take them for lost.
    env["GRID_LOST_GRACE"] = "3600"
    return env


def _flask_app():
    from app import create_app

    return create_app({"TESTING_NO_METRICS": True})


# --- the API ----------------------------------------------------------------------------------


def _measure(workdir: Path, grid: Grid, url: str, token: str, seconds: float) -> dict:
    """Submissions/s by wrk as fast as answers come, with the API processes' CPU in cores."""
    pids = [pid for process in grid.processes for pid in latency._tree(process.proc.pid)]
    cpu = latency._cpu_seconds(pids)
    figures = latency.wrk_run(
        workdir,
        url,
        token,
        method="POST",
        path="/api/v1/jobs/summarise",
        seconds=seconds,
        rate=float("inf"),
        connections=CONNECTIONS,
        body=latency.BODY,
    )
    if figures["errors"] or figures["timeouts"]:
        raise RuntimeError(f"{figures['errors']} submissions failed, {figures['timeouts']} timed out")
    # The API processes' CPU, as a share of one core: on a machine busy with other work, one
    # process may get less than a core, and a second then takes what the first could not.
    figures["api_cores"] = (latency._cpu_seconds(pids) - cpu) / (figures["duration_us"] / 1e6)
    return figures


def submissions(workdir: Path, rounds: int, seconds: float) -> dict[int, list[dict]]:
    """One API process and two on one address, both up at once on two addresses, measured in
    turn ``rounds`` times (so that the machine's drifting load hits both alike). A process is one
    gunicorn instance of one worker, with the production unit's threads (the unit's own
    ``--workers`` would make "one" several already)."""
    _, threads = latency.production_gunicorn()
    workers = 1
    grids = {processes: Grid(_env(), workdir / "logs" / f"api-{processes}") for processes in (1, 2)}
    found: dict[int, list[dict]] = {1: [], 2: []}
    try:
        urls = {}
        for processes, grid in grids.items():
            (workdir / "logs" / f"api-{processes}").mkdir(parents=True, exist_ok=True)
            urls[processes] = grid.api(processes=processes, workers=workers, threads=threads)
        token = latency._token("coordinators@bench.local")
        for processes, url in urls.items():
            for _ in range(processes * 10):  # each process's connections and caches warm
                answer = requests.post(
                    f"{url}/api/v1/jobs/summarise",
                    json=latency.BODY,
                    headers={"Authorization": f"Bearer {token}", "Connection": "close"},
                    timeout=10,
                )
                assert answer.status_code == 202, answer.text
        for _ in range(rounds):
            for processes in (1, 2):
                figures = _measure(workdir, grids[processes], urls[processes], token, seconds)
                found[processes].append(figures)
                _log(
                    f"API, {processes} process(es): {figures['rate']:.0f} submissions/s (p50 "
                    f"{figures['p50_us'] / 1000:.0f} ms, {figures['api_cores']:.2f} cores)"
                )
    finally:
        for grid in grids.values():
            grid.stop()
        latency.retire(_env()["GRID_BROKER_URL"])
    return found


# --- the ledger -------------------------------------------------------------------------------


def _backlog(flask_app, count: int, tag: str) -> list[str]:
    """``count`` dispatched one-page OCR steps spread over ``NODES`` nodes, each start entered
    (as its node's input fetch does), each completion signed by its node and queued on
    ``ledger``. Returns the task ids."""
    from app.extensions import db
    from app.ledger import executions
    from app.ledger.context import Context
    from bench import ledger

    nodes = [enrolment(f"coord-{tag}-{n}", owner=f"coord-{n}@bench.local") for n in range(NODES)]
    now = datetime.now(UTC)
    owner = f"coordinators-{tag}@bench.local"
    with flask_app.app_context():
        steps = ledger.dispatched_ocr_steps(owner, count, now)
        starts, completions = [], []
        for index, step in enumerate(steps):
            node = nodes[index % NODES]
            worker = f"coord-{tag}-{index % NODES}@host"
            started, completed = ledger.signed_ocr_records(step, worker, node, now)
            starts.append(started)
            completions.append(completed)
        for first in range(0, len(starts), 500):
            chunk = starts[first : first + 500]
            ctx = Context.load(chunk)
            for record in chunk:
                step, refused = executions.on_started(record, ctx)
                assert refused is None, refused
            db.session.commit()
        task_ids = [step.task_id for step in steps]
    from celery import Celery

    env = _env(LEDGER_REDIS_DB)
    volunteer = Celery("bench-volunteers", broker=env["GRID_BROKER_URL"])
    volunteer.conf.update(task_queues=celeryconfig.task_queues, task_routes=celeryconfig.task_routes)
    with volunteer.producer_or_acquire() as producer:
        for record in completions:
            volunteer.send_task(
                celeryconfig.TASK_LEDGER_RECORD,
                args=[record],
                queue=celeryconfig.LEDGER_QUEUE,
                producer=producer,
            )
    return task_ids


def entries_per_second(workdir: Path, flask_app, workers: int, count: int) -> float:
    from app.extensions import db
    from app.models import LedgerEntry

    tag = f"{workers}w{int(time.time()) % 100000}"
    task_ids = _backlog(flask_app, count, tag)
    grid = Grid(_env(LEDGER_REDIS_DB), workdir / "logs")
    try:
        started = [
            grid.ledger_worker(f"bench-ledger-{tag}-{n}", wait=False, loglevel="INFO") for n in range(workers)
        ]
        for process in started:
            process.wait_ready(" ready.", timeout=180)

        def entered() -> int:
            with flask_app.app_context():
                return db.session.scalar(select(func.count()).where(LedgerEntry.task_id.in_(task_ids)))

        wait_for(lambda: entered() >= count, 600, f"{workers} ledger worker(s) to enter {count} records", 0.5)
    finally:
        grid.stop()
    with flask_app.app_context():
        first, last, granted = db.session.execute(
            select(
                func.min(LedgerEntry.received_at),
                func.max(LedgerEntry.received_at),
                func.count().filter(LedgerEntry.granted_ms > 0),
            ).where(LedgerEntry.task_id.in_(task_ids))
        ).one()
    if granted != count:
        raise RuntimeError(f"{granted} of {count} entries granted")
    return (count - 1) / max(1e-6, (last - first).total_seconds())


def run(workdir: Path, quick: bool) -> list[Goal]:
    (workdir / "logs").mkdir(exist_ok=True)
    seconds = QUICK_SECONDS if quick else SECONDS
    count = QUICK_EXECUTIONS if quick else EXECUTIONS
    _, threads = latency.production_gunicorn()

    measured = submissions(workdir, ROUNDS, seconds / ROUNDS)
    one_api = statistics.median(f["rate"] for f in measured[1])
    two_api = statistics.median(f["rate"] for f in measured[2])
    one_cores = statistics.median(f["api_cores"] for f in measured[1])
    two_cores = statistics.median(f["api_cores"] for f in measured[2])
    wrk_cpu = sum(f["wrk_cpu_s"] for runs in measured.values() for f in runs)

    flask_app = _flask_app()
    try:
        one_ledger = entries_per_second(workdir, flask_app, 1, count)
        _log(f"ledger, 1 worker: {one_ledger:.0f} entries/s")
        two_ledger = entries_per_second(workdir, flask_app, 2, count)
        _log(f"ledger, 2 workers: {two_ledger:.0f} entries/s")
    finally:
        latency.retire(_env(LEDGER_REDIS_DB)["GRID_BROKER_URL"])

    api_context = (
        f"{two_api:.0f} vs {one_api:.0f} submissions/s, medians of {ROUNDS} alternated runs of "
        f"{seconds / ROUNDS:.0f} s; wrk -c {CONNECTIONS} as fast as answers come; gunicorn --workers 1 "
        f"--threads {threads} per process (the production unit's threads), two masters on one address with "
        f"--reuse-port; the API's CPU {two_cores:.2f} vs {one_cores:.2f} cores, wrk's {wrk_cpu:.1f} s in all"
    )
    ledger_context = (
        f"{two_ledger:.0f} vs {one_ledger:.0f} entries entered and granted/s; a backlog of {count} signed "
        f"completions of {NODES} nodes each side, batches of {BATCH}"
    )
    return [
        Goal.ratio(
            "Past one coordinator: API submissions/s, 2 processes over 1",
            two_api,
            one_api,
            TARGET,
            api_context,
        ),
        Goal.ratio(
            "Past one coordinator: ledger entries/s, 2 ledger workers over 1",
            two_ledger,
            one_ledger,
            TARGET,
            ledger_context,
        ),
    ]
