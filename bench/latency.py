"""Goal part ``latency`` (issue 14, "API latency"): submission p99 ≤ 20 ms and job status p99
≤ 10 ms at 200 requests/s, measured with a real HTTP load generator against the API as
production runs it.

- The API: gunicorn with the workers and threads of the production unit
  (``deploy/systemd/koprogo-grid-api.service``, read from its ``ExecStart``), on a grid of its own
  (a Redis database of its own, so that the jobs it queues reach no volunteer of another part),
  with the API's rate limits on (each request still checks them in Redis) but raised, through
  their settings, for this run's clients (``GRID_API_*_LIMIT``): at 200 requests/s one token
  would be over the default 60 submissions a minute at once.
- The load: ``wrk`` (Debian's package), whose connections each wait ``delay()`` after every
  answer: ``CONNECTIONS`` connections each sending one request every ``CONNECTIONS / RATE``
  seconds make ``RATE`` requests/s (slightly fewer: a request's own latency adds to the wait;
  the rate reached is printed). wrk measures each request from its send to its answer; every
  answer that is not 202 (submissions) or 200 (status) is counted and fails the goal.
- Submissions: ``POST /api/v1/jobs/summarise`` of a short text with a bearer token (the job is
  recorded, its input kept, its step sent to the broker). Status: ``GET /api/v1/jobs/<id>`` over
  the jobs the submission run made, in turn.

wrk runs on the same 2 cores as the API, PostgreSQL and Redis: its own CPU time is printed.
``--quick``: 15 s per route instead of 60.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import requests

from bench.goals import Goal
from tests.grid import ROOT, Grid

RATE = 200
SECONDS = 60
QUICK_SECONDS = 15
CONNECTIONS = 20
#: A Redis database no other part uses: the jobs queued here reach no volunteer.
REDIS_DB = 2
SUBMIT_P99_MS = 20.0
STATUS_P99_MS = 10.0
UNIT = ROOT / "deploy" / "systemd" / "koprogo-grid-api.service"
BODY = {
    "text": "Facture n° 2025-0142 : entretien de l'ascenseur, 350 EUR.",
    "language": "fr",
    "max_words": 10,
}

#: Each connection waits ``pace`` ms after each answer; ``done`` prints wrk's own figures as JSON.
_LUA = """
local pace = {pace}
local paths = {{}}
local index = 0
{paths}
wrk.method = "{method}"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
function delay() return pace end
function request()
  if #paths == 0 then return wrk.format(nil, "{path}") end
  index = index % #paths + 1
  return wrk.format(nil, paths[index])
end
function done(summary, latency, requests)
  io.write(string.format(
    'WRK {{"requests": %d, "duration_us": %d, "errors": %d, "timeouts": %d, "p50_us": %d, ' ..
    '"p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status,
    summary.errors.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def _log(message: str) -> None:
    print(f"  latency: {message}", file=sys.stderr, flush=True)


def production_gunicorn() -> tuple[int, int]:
    """(workers, threads) of the production unit's gunicorn command line."""
    command = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    argv = shlex.split(command.partition("=")[2])
    return int(argv[argv.index("--workers") + 1]), int(argv[argv.index("--threads") + 1])


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / ticks


def _tree(pid: int) -> list[int]:
    """``pid`` and its children (gunicorn's master and its workers)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def wrk_run(
    workdir: Path,
    url: str,
    token: str,
    *,
    method: str,
    path: str,
    seconds: float,
    rate: float = RATE,
    connections: int = CONNECTIONS,
    paths: list[str] | None = None,
    body: dict | None = None,
) -> dict:
    """wrk at about ``rate`` requests/s; its figures, with its own CPU seconds and the rate."""
    pace_ms = max(0, round(1000 * connections / rate) - 2)  # the answer's own ~2 ms come on top
    script = workdir / f"wrk-{method.lower()}.lua"
    script.write_text(
        _LUA.format(
            pace=pace_ms,
            paths="\n".join(f'paths[{i + 1}] = "{p}"' for i, p in enumerate(paths or [])),
            method=method,
            token=token,
            body="nil" if body is None else json.dumps(json.dumps(body)),
            path=path,
        )
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds:.0f}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = re.search(r"^WRK (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    figures = json.loads(found.group(1))
    figures["wrk_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    figures["rate"] = figures["requests"] / (figures["duration_us"] / 1e6)
    figures["non_2xx"] = figures["errors"]
    return figures


def _describe(what: str, figures: dict, api_cpu: float) -> str:
    seconds = figures["duration_us"] / 1e6
    return (
        f"{figures['requests']} {what} in {seconds:.0f} s ({figures['rate']:.0f}/s), p50 "
        f"{figures['p50_us'] / 1000:.1f} ms, p90 {figures['p90_us'] / 1000:.1f} ms, max "
        f"{figures['max_us'] / 1000:.0f} ms, {figures['errors']} errors or non-2xx answers; CPU: API "
        f"{100 * api_cpu / seconds:.0f} % of a core ({1000 * api_cpu / max(1, figures['requests']):.1f} ms "
        f"a request), wrk {100 * figures['wrk_cpu_s'] / seconds:.0f} %"
    )


def _token(owner: str) -> str:
    from app import create_app
    from app.auth import create_token
    from app.extensions import db

    flask_app = create_app({"TESTING_NO_METRICS": True})
    with flask_app.app_context():
        token = create_token("bench latency", owner, ["jobs:read", "jobs:write"])[1]
        db.session.commit()
    return token


def _job_ids(owner: str, limit: int) -> list[str]:
    from sqlalchemy import select

    from app import create_app
    from app.extensions import db
    from app.models import Job

    flask_app = create_app({"TESTING_NO_METRICS": True})
    with flask_app.app_context():
        return list(
            db.session.scalars(select(Job.id).where(Job.owner == owner).order_by(Job.created_at).limit(limit))
        )


def retire(broker_url: str) -> None:
    """End the jobs left queued (``bench.goals.end_leftover_jobs``) and empty this part's Redis
    database: no other part's ledger worker may take them for lost and send them to its
    volunteers (the watchdog re-sends a dispatched step whose message is in no queue of its broker)."""
    import redis

    from bench.goals import end_leftover_jobs

    end_leftover_jobs()
    with redis.Redis.from_url(broker_url) as broker:
        broker.flushdb()


def run(workdir: Path, quick: bool) -> list[Goal]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (make system-test installs it: apt-get install wrk)")
    seconds = QUICK_SECONDS if quick else SECONDS
    workers, threads = production_gunicorn()
    env = dict(os.environ)
    env["GRID_BROKER_URL"] = env["GRID_BROKER_URL"].rsplit("/", 1)[0] + f"/{REDIS_DB}"
    # The limits stay on (each request checks them in Redis), raised for this run's one client.
    for name in ("SUBMIT", "READ", "ADDRESS"):
        env[f"GRID_API_{name}_LIMIT"] = "1000000 per minute"
    (workdir / "logs").mkdir(exist_ok=True)
    grid = Grid(env, workdir / "logs")
    owner = "latency@bench.local"
    try:
        url = grid.api(workers=workers, threads=threads)
        token = _token(owner)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        for _ in range(20):  # the processes' connections and caches warm
            answer = session.post(f"{url}/api/v1/jobs/summarise", json=BODY, timeout=10)
            assert answer.status_code == 202, answer.text
            session.get(f"{url}/api/v1/jobs/{answer.json()['id']}", timeout=10)
        api_pids = [pid for process in grid.processes for pid in _tree(process.proc.pid)]
        _log(
            f"gunicorn --workers {workers} --threads {threads}; {seconds} s a route at {RATE}/s, "
            f"wrk -c {CONNECTIONS}"
        )

        cpu = _cpu_seconds(api_pids)
        submit = wrk_run(
            workdir,
            url,
            token,
            method="POST",
            path="/api/v1/jobs/summarise",
            seconds=seconds,
            body=BODY,
        )
        submit_cpu = _cpu_seconds(api_pids) - cpu
        _log("submissions: " + _describe("submissions", submit, submit_cpu))

        ids = _job_ids(owner, 5_000)
        cpu = _cpu_seconds(api_pids)
        status = wrk_run(
            workdir,
            url,
            token,
            method="GET",
            path="/api/v1/jobs",
            seconds=seconds,
            paths=[f"/api/v1/jobs/{job_id}" for job_id in ids],
        )
        status_cpu = _cpu_seconds(api_pids) - cpu
        _log(f"status over {len(ids)} jobs: " + _describe("reads", status, status_cpu))
    finally:
        grid.stop()
        retire(env["GRID_BROKER_URL"])
    load = (
        f"gunicorn --workers {workers} --threads {threads} (the production unit's), wrk -t 1 -c {CONNECTIONS}"
    )
    goals = []
    for name, figures, cpu_used, target in (
        ("API submission p99 at 200 requests/s", submit, submit_cpu, SUBMIT_P99_MS),
        ("API job status p99 at 200 requests/s", status, status_cpu, STATUS_P99_MS),
    ):
        p99 = figures["p99_us"] / 1000
        if figures["errors"] or figures["timeouts"]:
            p99 = max(p99, float("inf"))  # an unexpected answer is a miss, whatever the time
        goals.append(
            Goal.at_most(
                name,
                p99,
                target,
                "ms",
                f"{_describe('requests', figures, cpu_used)}; {load}",
            )
        )
    return goals
