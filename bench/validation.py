"""What checking results costs (app.validation, docs/decisions/0011): the extra compute that
replicas take, on probation and once nodes are trusted, and the latency a check adds to a job.

One grid of real processes (API, ledger worker, two OCR volunteers of two owners, concurrency 1
each, ``GRID_VALIDATION=true``, default policy) on a Redis database of its own; one-page OCR jobs
of a generated scan (``tests.documents.text_image``). Node trust is set directly in the
database between phases (``nodes.validated_streak``), while the grid is idle:

1. all-new grid: both nodes at streak 0, ``NEW_JOBS`` jobs submitted at once;
2. steady state: both nodes at streak ``TRUSTED_STREAK`` (check probability = the floor),
   ``TRUSTED_JOBS`` jobs submitted at once;
3. latency: ``LATENCY_JOBS`` jobs one at a time with both nodes on probation (streak reset to
   0), then as many on trusted nodes, of which those not drawn for a check are kept.

Compute is the ledger's: ``overhead = extra / useful``, with useful the ``wall_ms`` of the
entries of the jobs' own steps (``JobStep.replica_of_id IS NULL``) and extra that of their
replicas' entries (joined on ``LedgerEntry.step_id``), every outcome counted; the ratio of
``granted_ms`` is printed beside it. Latency is the job's ``created_at`` → ``finished_at``.
Each phase also prints its duration beside its compute over the two nodes, and how many times
a replica was passed on by a node that may not run it (read from the volunteers' logs).

Run alone: ``python -m bench.validation`` (servers and environment from ``bench.__main__``).
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tests.documents import FRENCH_LINES, text_image
from tests.grid import Client, Grid, wait_for

if TYPE_CHECKING:
    from flask import Flask

NEW_JOBS = 20
TRUSTED_JOBS = 150
LATENCY_JOBS = 10
#: Jobs run first, at once, so both nodes have read a page before anything is measured.
WARM_UP_JOBS = 2
#: Validated results in a row given to both nodes for the steady state: 1 / streak is far
#: below the floor, so every result is checked with the floor's probability.
TRUSTED_STREAK = 1000
#: The goal for the steady state's overhead.
STEADY_GOAL = 0.10
#: A Redis database of its own (bench.inputs uses 3).
BROKER_DB = 4
OWNERS = ("alice@bench.local", "bob@bench.local")
NODES = ("validation-ocr-a", "validation-ocr-b")


class ValidationBenchError(AssertionError):
    """A job did not end as a measurement needs (failed, stuck in ``verifying``): reported as
    ``tests.grid.wait_for``'s time-outs are, which the suite prints as a failed bench."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# --- the grid ---------------------------------------------------------------------------------


def _set_streak(flask_app: Flask, streak: int) -> None:
    """Both nodes' trust, written while the grid is idle (no result is being entered)."""
    from sqlalchemy import update

    from app.extensions import db
    from app.models import Node

    with flask_app.app_context():
        db.session.execute(update(Node).where(Node.name.in_(NODES)).values(validated_streak=streak))
        db.session.commit()


def _streaks(flask_app: Flask) -> dict[str, int]:
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Node

    with flask_app.app_context():
        rows = db.session.execute(select(Node.name, Node.validated_streak).where(Node.name.in_(NODES)))
        return {name: streak for name, streak in rows}


def _wait_job(client: Client, job_id: str, timeout: float) -> dict:
    """The job once final; a job that does not succeed is reported with its JSON."""
    try:
        job = client.wait(job_id, timeout=timeout)
    except AssertionError as exc:
        job = client.job(job_id)
        raise ValidationBenchError(
            f"{exc}; the job as the API shows it:\n{json.dumps(job, indent=1)}"
        ) from exc
    if job["state"] != "succeeded":
        raise ValidationBenchError(f"job {job_id} {job['state']}:\n{json.dumps(job, indent=1)}")
    return job


def _settled(flask_app: Flask, job_ids: list[str], timeout: float = 60) -> None:
    """Wait until every step and replica of the jobs is final (a replica asked for may still
    run after its job was decided), so that every entry is in."""
    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import JobStep, StepState

    def idle() -> bool:
        with flask_app.app_context():
            return not db.session.scalar(
                select(func.count(JobStep.id)).where(
                    JobStep.job_id.in_(job_ids), JobStep.state.not_in(list(StepState.FINAL))
                )
            )

    wait_for(idle, timeout, "every replica of the jobs to end", interval=0.2)


def _submit_all(client: Client, page: bytes, count: int, timeout: float) -> list[dict]:
    """``count`` jobs posted at once (several in flight), then followed until all end."""
    with ThreadPoolExecutor(4) as pool:
        ids = list(
            pool.map(
                lambda _: client.submit_document("ocr", page, "page.png", languages="fra")["id"], range(count)
            )
        )
    deadline = time.monotonic() + timeout
    return [_wait_job(client, job_id, max(5.0, deadline - time.monotonic())) for job_id in ids]


def _one_at_a_time(client: Client, page: bytes, count: int) -> list[dict]:
    jobs = []
    for _ in range(count):
        job_id = client.submit_document("ocr", page, "page.png", languages="fra")["id"]
        jobs.append(_wait_job(client, job_id, timeout=120))
    return jobs


# --- figures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compute:
    """The ledger's entries of a set of jobs, the jobs' own steps vs their replicas."""

    steps: int
    replicas: int
    useful_wall_ms: int
    extra_wall_ms: int
    useful_granted_ms: int
    extra_granted_ms: int

    @property
    def overhead(self) -> float:
        return self.extra_wall_ms / self.useful_wall_ms if self.useful_wall_ms else float("nan")

    @property
    def granted_overhead(self) -> float:
        return self.extra_granted_ms / self.useful_granted_ms if self.useful_granted_ms else float("nan")


def _compute(flask_app: Flask, job_ids: Iterable[str]) -> Compute:
    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import JobStep, LedgerEntry

    is_replica = JobStep.replica_of_id.is_not(None)
    with flask_app.app_context():
        rows = db.session.execute(
            select(
                is_replica,
                func.count(func.distinct(JobStep.id)),
                func.coalesce(func.sum(LedgerEntry.wall_ms), 0),
                func.coalesce(func.sum(LedgerEntry.granted_ms), 0),
            )
            .join(JobStep, JobStep.id == LedgerEntry.step_id)
            .where(JobStep.job_id.in_(list(job_ids)))
            .group_by(is_replica)
        ).all()
    by = {bool(replica): (int(n), int(wall), int(granted)) for replica, n, wall, granted in rows}
    own, extra = by.get(False, (0, 0, 0)), by.get(True, (0, 0, 0))
    return Compute(own[0], extra[0], own[1], extra[1], own[2], extra[2])


def _reason(job: dict) -> str:
    check = job["steps"][0]["verification"]
    return check["reason"] if check else "not checked"


def _latency(job: dict) -> float:
    return _epoch(job["finished_at"]) - _epoch(job["created_at"])


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with 10 values, p95 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _binomial_range(n: int, p: float, mass: float = 0.95) -> tuple[int, int]:
    """The central ``mass`` of Binomial(n, p): the check counts a correct grid shows."""
    pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    tail = (1 - mass) / 2
    low = high = 0
    total = 0.0
    for k, weight in enumerate(pmf):
        total += weight
        if total <= tail:
            low = k + 1
        if total < 1 - tail:
            high = k + 1
    return low, min(high, n)


def _binomial_above(n: int, p: float, count: int) -> float:
    """P(X > count) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(count + 1, n + 1))


def _pct(value: float) -> str:
    return f"{value:.1%}"


# --- the run ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """What one phase's jobs saw beyond compute: how long they took, and their replicas'
    pass-ons. A replica offered to a node that may not run it (``same_node``, ``same_owner``,
    ``other_model``) is refused with ``Retry-After: 1``: the node puts a copy back on the queue
    and holds the original 0.5–2 s before letting it go (workers/tasks/base.py). The coordinator
    does not store these refusals (app.ledger.executions ``_UNSTORED``), so they are read from
    the volunteers' logs."""

    jobs: list[dict]
    seconds: float
    compute_ms: int
    handbacks: dict[str, int]

    def latency(self) -> str:
        values = [_latency(job) for job in self.jobs]
        return (
            f"{self.seconds:.0f} s for compute of {self.compute_ms / 1000:.1f} s on {len(NODES)} nodes; "
            f"job latency p50 {statistics.median(values):.1f} s, max {max(values):.1f} s"
        )

    def handed_back(self) -> str:
        if not self.handbacks:
            return "no replica passed on"
        return (
            f"{sum(self.handbacks.values())} replicas passed on (0.5–2 s of a node each) over "
            f"{len(self.handbacks)} replicas, up to {max(self.handbacks.values())} for one"
        )


#: A node refused a replica passes it on (workers/tasks/base.py); older workers handed it back.
_HANDBACK = re.compile(
    r"task (\S+) (?:handed back: the coordinator said 409|passed on to another node) "
    r"\((same_node|same_owner|other_model)\)"
)


def _handbacks(flask_app: Flask, logs: list[Path], job_ids: list[str]) -> dict[str, int]:
    """Hand-backs of the jobs' replicas, by replica task id, from the volunteers' logs."""
    from sqlalchemy import select

    from app.extensions import db
    from app.models import JobStep

    with flask_app.app_context():
        replicas = set(
            db.session.scalars(
                select(JobStep.task_id).where(JobStep.job_id.in_(job_ids), JobStep.replica_of_id.is_not(None))
            )
        )
    counts: dict[str, int] = {}
    for log in logs:
        for match in _HANDBACK.finditer(log.read_text(errors="replace")):
            if match.group(1) in replicas:
                counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def _phase(flask_app: Flask, logs: list[Path], jobs: list[dict], began: float) -> Phase:
    ids = [job["id"] for job in jobs]
    _settled(flask_app, ids)
    seconds = time.monotonic() - began
    compute = _compute(flask_app, ids)
    phase = Phase(
        jobs, seconds, compute.useful_wall_ms + compute.extra_wall_ms, _handbacks(flask_app, logs, ids)
    )
    _log(f"    {phase.latency()}; {phase.handed_back()}")
    return phase


def measure(flask_app: Flask, client: Client, logs: list[Path]) -> list[str]:
    from app.validation import settings

    with flask_app.app_context():
        rules = settings.current()
    floor = rules.spot_check_floor
    page = text_image(FRENCH_LINES[:4])
    # Each node loads Tesseract once before measuring, so that no phase pays a cold start.
    _submit_all(client, page, WARM_UP_JOBS, timeout=120)

    _log(f"  validation 1: all-new grid (streak 0), {NEW_JOBS} jobs at once")
    _set_streak(flask_app, 0)
    began = time.monotonic()
    new = _phase(flask_app, logs, _submit_all(client, page, NEW_JOBS, timeout=180), began)
    new_all = _compute(flask_app, [job["id"] for job in new.jobs])
    probation_ids = [job["id"] for job in new.jobs if _reason(job) == "probation"]
    new_probation = _compute(flask_app, probation_ids)
    after_new = _streaks(flask_app)

    _log(f"  validation 3a: {LATENCY_JOBS} jobs one at a time, both nodes on probation (streak reset to 0)")
    _set_streak(flask_app, 0)
    began = time.monotonic()
    slow = _phase(flask_app, logs, _one_at_a_time(client, page, LATENCY_JOBS), began)
    not_probation = [job["id"] for job in slow.jobs if _reason(job) != "probation"]
    if not_probation:
        raise ValidationBenchError(f"jobs {not_probation} were not checked for probation: not comparable")

    _log(f"  validation 2: trusted nodes (streak {TRUSTED_STREAK}), {TRUSTED_JOBS} jobs at once")
    _set_streak(flask_app, TRUSTED_STREAK)
    began = time.monotonic()
    steady_phase = _phase(flask_app, logs, _submit_all(client, page, TRUSTED_JOBS, timeout=300), began)
    steady = _compute(flask_app, [job["id"] for job in steady_phase.jobs])
    checked = [job for job in steady_phase.jobs if job["steps"][0]["verification"]]

    _log(f"  validation 3b: {LATENCY_JOBS} jobs one at a time on trusted nodes")
    fast_all = _one_at_a_time(client, page, LATENCY_JOBS)
    fast = [job for job in fast_all if not job["steps"][0]["verification"]]
    if len(fast) < 2:
        raise ValidationBenchError("fewer than 2 trusted jobs went unchecked: no latency to compare")

    slow_s = [_latency(job) for job in slow.jobs]
    fast_s = [_latency(job) for job in fast]
    p50 = (statistics.median(slow_s), statistics.median(fast_s))
    p95 = (_percentile(slow_s, 0.95), _percentile(fast_s, 0.95))
    low, high = _binomial_range(TRUSTED_JOBS, floor)
    chance_above_goal = _binomial_above(TRUSTED_JOBS, floor, math.floor(STEADY_GOAL * TRUSTED_JOBS))
    worker_s = statistics.median(job["steps"][0]["wall_seconds"] for job in fast)
    return [
        f"validation, 1. all-new grid ({NEW_JOBS} one-page OCR jobs at once, both nodes at streak 0): "
        f"extra/useful compute {new_all.extra_wall_ms / 1000:.1f}/{new_all.useful_wall_ms / 1000:.1f} s "
        f"→ overhead {_pct(new_all.overhead)} (granted {_pct(new_all.granted_overhead)}; "
        f"{new_all.replicas} replicas for {new_all.steps} steps)",
        f"    results checked for probation ({len(probation_ids)} jobs): overhead "
        f"{_pct(new_probation.overhead)}, {new_probation.replicas} replicas for {new_probation.steps} "
        f"steps (expected ≈ 100 %); the others were entered once a node had {rules.probation_results} "
        f"validated results in a row (its replicas' verdicts count too: streaks after "
        f"{'/'.join(str(v) for v in after_new.values())}), then checked at 1/streak",
        f"    {new.latency()}; {new.handed_back()}",
        f"validation, 2. steady state ({TRUSTED_JOBS} jobs at once, both nodes at streak {TRUSTED_STREAK}): "
        f"extra/useful compute {steady.extra_wall_ms / 1000:.1f}/{steady.useful_wall_ms / 1000:.1f} s → "
        f"overhead {_pct(steady.overhead)} (granted {_pct(steady.granted_overhead)}; {steady.replicas} "
        f"replicas, {len(checked)} jobs checked) (goal ≤ {STEADY_GOAL:.0%}: "
        f"{'met' if steady.overhead <= STEADY_GOAL else 'NOT met'})",
        f"    analytic: {floor:.0%} (the floor; 1/streak = {1 / TRUSTED_STREAK:.1%}); with {TRUSTED_JOBS} "
        f"jobs the checks are Binomial({TRUSTED_JOBS}, {floor:g}): 95 % of runs see {low}–{high} checks "
        f"({low / TRUSTED_JOBS:.1%}–{high / TRUSTED_JOBS:.1%}), and a correct grid exceeds the goal in "
        f"{chance_above_goal:.1%} of runs: one run's figure is noisy",
        f"    {steady_phase.latency()}; {steady_phase.handed_back()}",
        f"validation, 3. latency per job, one at a time (created_at → finished_at): on probation "
        f"p50 {p50[0]:.2f} s, p95 {p95[0]:.2f} s (n={len(slow_s)}) vs trusted, not drawn p50 {p50[1]:.2f} s, "
        f"p95 {p95[1]:.2f} s (n={len(fast_s)} of {len(fast_all)}) → added p50 {p50[0] - p50[1]:+.2f} s, "
        f"p95 {p95[0] - p95[1]:+.2f} s, ratio p50 {p50[0] / p50[1]:.2f}",
        f"    a probation job runs twice in a row (the replica is sent once the step's result is "
        f"entered); one run's worker-side wall time: {worker_s:.2f} s; on probation, {slow.handed_back()}",
    ]


def run(flask_app: Flask, log_dir: Path, token: str) -> list[str]:
    """Start the grid, measure, stop it; the lines for the table."""
    import redis

    env = dict(os.environ)
    env["GRID_BROKER_URL"] = env["GRID_BROKER_URL"].rsplit("/", 1)[0] + f"/{BROKER_DB}"
    env["GRID_VALIDATION"] = "true"
    broker = redis.Redis.from_url(env["GRID_BROKER_URL"])
    broker.flushdb()
    _log("7. validation: API, ledger worker, two OCR volunteers of two owners, GRID_VALIDATION=true")
    grid = Grid(env, log_dir)
    try:
        grid.ledger_worker()
        for name, owner in zip(NODES, OWNERS, strict=True):
            grid.worker(name, "ocr", owner=owner)
        client = Client(grid.api(), token)
        return measure(flask_app, client, [grid.log_dir / f"{name}.log" for name in NODES])
    except (ValidationBenchError, AssertionError):
        print(grid.logs(), file=sys.stderr)
        raise
    finally:
        grid.stop()
        broker.flushdb()
        broker.close()


if __name__ == "__main__":
    # Servers and environment first (bench.__main__), then the suite with this part alone.
    sys.argv[1:] = ["validation"]
    from bench.__main__ import main

    sys.exit(main())
