"""Goal part ``nodes`` (issue 14, "1,000 nodes"): a thousand nodes' heartbeats cost the
coordinator little, the registry lists them fast, and a silent node is shown offline on time.

On a grid of its own (ledger worker, API under gunicorn), ``NODES`` simulated nodes are
enrolled and approved in bulk (SQL, for setup only), each registers with a record signed with
its own secret (as a worker starting does), then sends signed heartbeats at the configured
interval, their phases spread evenly over it. Fifty of them also act as real workers: every
``TASK_EVERY`` seconds each completes a dispatched one-page OCR step (its start seen by the
coordinator, as an input fetch; its completion a signed record on the ledger queue). Every
record goes through the ledger worker's real checks (schema, signature, node, worker name,
replay, clock). ``SILENT`` more nodes register and then stay silent.

Measured, in order, with the same processes throughout:

1. idle: the ledger worker, PostgreSQL and Redis with nothing to do (the baseline);
2. executions: the 50 workers' starts (input fetches, through the API) and completions;
3. executions + heartbeats: the same, with the 1,000 nodes beating, for one whole interval;
4. heartbeats alone, as long.

The heartbeats' CPU is the larger of (3) − (2) and (4) − (1), as a share of one core: the
ledger worker's processes plus the PostgreSQL server's and Redis's (they handle every record
too). Then, the heartbeats going on, the silent nodes' state read through the API (every page
of the list) until each is shown offline: how late after its last heartbeat plus
``GRID_NODE_OFFLINE_AFTER`` it was, and whether any beating node was ever shown otherwise than
online; and ``GET /api/v1/nodes`` with an operator's token over HTTP: its default page (the
goal; it pages since this goal, 100 nodes by default) and every node with ``?per_page=1000``.

``--quick``: a 10 s interval (offline after 30 s) and shorter phases; the heartbeat rate is then
six times the default one's, said so on the line.
"""

from __future__ import annotations

import base64
import heapq
import json
import math
import os
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import requests

import celeryconfig
from bench.goals import Goal
from tests.grid import Grid, wait_for

NODES = 1_000
SILENT = 20
WORKERS = 50
#: Each of the 50 workers completes a one-page OCR task every this many seconds (a page takes
#: about a second of Tesseract on a small machine; the rest is fetching and sending).
TASK_EVERY = 2.0
OWNERS = 50
#: The idle baseline starts once the metered servers together use less than this share of a
#: core over a second, waiting at most ``QUIET_WAIT_SECONDS``.
QUIET_SHARE = 0.03
QUIET_WAIT_SECONDS = 60
#: A scanned page's input, as a node fetches it.
INPUT_BYTES = 30_000
#: About a page of text: what an OCR completion carries.
PAGE_TEXT = ("Procès-verbal de l'assemblée générale des copropriétaires, résolution adoptée. " * 20)[:1500]


_BEGAN = time.monotonic()


def _log(message: str) -> None:
    print(f"  nodes [{time.monotonic() - _BEGAN:.0f} s]: {message}", file=sys.stderr, flush=True)


# --- CPU of the coordinator's processes, from /proc --------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo += _children(current)
    return pids


def _cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of a process tree: each process's own, and its ended children's once it has
    reaped them (cutime, cstime). PostgreSQL starts and ends processes as it goes (autovacuum
    workers, backends): counted by their own time alone, one that ended between two samples took
    its seconds away (a phase once read -61 % of a core)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:  # ended between the listing and now: its parent counts it once reaped
            continue
        total += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return total / _TICKS


class Meter:
    """CPU seconds of named process groups; ``sample`` reads every group's tree afresh."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots

    def sample(self) -> dict[str, float]:
        return {name: _cpu_seconds(_tree(pid)) for name, pid in self.roots.items()}

    def wait_quiet(self, below: float = QUIET_SHARE, most: float = QUIET_WAIT_SECONDS) -> float:
        """Seconds waited (at most ``most``) until one second sees all the groups together use
        less than ``below`` of a core: what an earlier part left behind (PostgreSQL's autovacuum
        of its tables, a dropped database) is not read as idle."""
        began = time.monotonic()
        while time.monotonic() - began < most and sum(self.share(1).values()) >= below:
            pass
        return time.monotonic() - began

    def share(self, seconds: float) -> dict[str, float]:
        """Each group's share of one core over ``seconds`` of wall time from now."""
        before, began = self.sample(), time.monotonic()
        time.sleep(seconds)
        after, wall = self.sample(), time.monotonic() - began
        return {name: (after[name] - before[name]) / wall for name in self.roots}


# --- the simulated nodes ------------------------------------------------------------------------


class Fleet:
    """Signs and sends the simulated nodes' records, each with its own secret, from one thread."""

    def __init__(self, flask_app, nodes: list[dict[str, str]], interval: float, api: str) -> None:
        self.redis = redis.Redis.from_url(os.environ["GRID_BROKER_URL"])
        self.api = api
        self.http = requests.Session()
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=2 * WORKERS))
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="bench-worker")
        self.errors: list[str] = []
        #: Executions started, their pages being read: (when done, task id, node), soonest first.
        self.reading: list[tuple[float, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.nodes = nodes
        self.interval = interval
        self.beating: list[dict[str, str]] = []
        self.tasks: list[tuple[dict[str, str], str]] = []
        #: Whether the beating nodes beat, and the workers work, now (switched by the phases).
        self.beats_on = False
        self.tasks_on = False
        #: Nodes that send one last heartbeat at a moment (``time.time()``), then fall silent.
        self.last_beats: list[tuple[float, dict[str, str]]] = []
        self.stop = threading.Event()
        self.sent_beats = 0
        self.sent_tasks = 0
        self.late_ticks = 0
        self.thread = threading.Thread(target=self._run, name="bench-fleet", daemon=True)

    def record(self, sender: dict[str, str], kind: str, **fields: Any) -> dict[str, Any]:
        """A ``kind`` record signed with ``sender``'s own secret, as its worker signs it."""
        from workers import protocol
        from workers.protocol import signing

        body = {**protocol.body(kind, **fields), "node_id": sender["id"]}
        return signing.sign(body, sender["secret"])

    def notice(self, node: dict[str, str], kind: str, **fields: Any) -> dict[str, Any]:
        stamp = {"sent_at": time.time(), "nonce": os.urandom(16).hex()}
        return self.record(node, kind, worker=node["worker"], **stamp, **fields)

    def send(self, kind: str, record: dict[str, Any]) -> None:
        """Put the record on the ledger queue as a node's worker sends it: a Celery (protocol 2)
        task message in kombu's Redis format. Built here rather than by ``send_task``, which
        costs milliseconds a message: a thousand nodes' heartbeats from one process could not
        keep their pace on two busy cores."""
        from workers import protocol

        task_id = str(uuid.uuid4())
        embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
        body = base64.b64encode(json.dumps([[record], {}, embed]).encode()).decode("ascii")
        message = {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": protocol.TASK_OF_KIND[kind],
                "id": task_id,
                "root_id": task_id,
                "parent_id": None,
                "group": None,
                "retries": 0,
                "ignore_result": True,
            },
            "properties": {
                "correlation_id": task_id,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": celeryconfig.LEDGER_QUEUE},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        self.redis.lpush(celeryconfig.LEDGER_QUEUE, json.dumps(message))

    def completion(self, node: dict[str, str], task_id: str) -> dict[str, Any]:
        finished = datetime.now(UTC)
        return self.record(
            node,
            "completed",
            task_id=task_id,
            task_name=celeryconfig.TASK_OCR,
            capability="ocr",
            node=node["worker"],
            attempt=0,
            outcome="succeeded",
            final=True,
            started_at=(finished - timedelta(seconds=TASK_EVERY * 0.75)).isoformat(),
            finished_at=finished.isoformat(),
            wall_seconds=TASK_EVERY * 0.75,
            cpu_seconds=TASK_EVERY * 0.7,
            units={"pages": 1},
            result={"text": PAGE_TEXT, "pages": 1},
        )

    def _run(self) -> None:
        """Every 20 ms: the heartbeats and executions now due, the beating nodes in turn (each
        once per interval), the workers' executions at their rate."""
        beat_index = task_index = 0
        beats_due = tasks_due = 0.0
        then = time.monotonic()
        while not self.stop.wait(0.02):
            now = time.monotonic()
            elapsed, then = now - then, now
            if self.beats_on and self.beating:
                beats_due += elapsed * len(self.beating) / self.interval
                if beats_due > len(self.beating) / 10:
                    self.late_ticks += 1
                while beats_due >= 1:
                    node = self.beating[beat_index % len(self.beating)]
                    self.send("heartbeat", self.notice(node, "heartbeat"))
                    node["last_sent"] = time.time()
                    beat_index += 1
                    beats_due -= 1
                    self.sent_beats += 1
            while self.last_beats and self.last_beats[0][0] <= time.time():
                _, node = self.last_beats.pop(0)
                record = self.notice(node, "heartbeat")
                self.send("heartbeat", record)
                node["last_sent"] = record["sent_at"]
            while self.reading and self.reading[0][0] <= now:
                with self.lock:
                    _, task_id, node = heapq.heappop(self.reading)
                self.send("completed", self.completion(node, task_id))
                self.sent_tasks += 1
            if self.tasks_on:
                tasks_due += elapsed * WORKERS / TASK_EVERY
                while tasks_due >= 1 and task_index < len(self.tasks):
                    self.pool.submit(self.execute, *self.tasks[task_index])
                    task_index += 1
                    tasks_due -= 1

    def execute(self, node: dict[str, str], task_id: str) -> None:
        """One execution as a worker does it: its input fetched with a signed start (the
        coordinator's sight of the start, app.api.work); its signed completion follows once the
        page is read (sent by the fleet's thread)."""
        try:
            start = self.record(
                node,
                "started",
                task_id=task_id,
                task_name=celeryconfig.TASK_OCR,
                node=node["worker"],
                attempt=0,
                started_at=datetime.now(UTC).isoformat(),
            )
            for attempt in range(3):  # a kept-alive connection the server closed meanwhile
                try:
                    response = self.http.post(
                        f"{self.api}/api/v1/work/{task_id}/input", json=start, timeout=60
                    )
                    break
                except requests.ConnectionError:
                    if attempt == 2:
                        raise
            if response.status_code != 200:
                raise RuntimeError(f"input of {task_id}: {response.status_code} {response.text[:300]}")
            with self.lock:
                heapq.heappush(self.reading, (time.monotonic() + TASK_EVERY * 0.75, task_id, node))
        except Exception as exc:  # noqa: BLE001  counted, shown at the end
            self.errors.append(f"{type(exc).__name__}: {exc}")


def _enrol(flask_app, count: int, interval: float) -> list[dict[str, str]]:
    """``count`` approved nodes of ``OWNERS`` participants, inserted in bulk; each with its own
    secret as the coordinator derives it (app.nodes.node_secret)."""
    from sqlalchemy import insert, select

    from app import nodes
    from app.extensions import db
    from app.models import Node, Participant

    run = uuid.uuid4().hex[:6]
    with flask_app.app_context():
        db.session.execute(
            insert(Participant), [{"email": f"owner-{run}-{i}@nodes.bench"} for i in range(OWNERS)]
        )
        owners = db.session.scalars(
            select(Participant.id).where(Participant.email.like(f"owner-{run}-%"))
        ).all()
        now = datetime.now(UTC)
        rows = [
            {
                "id": str(uuid.uuid4()),
                "name": f"sim-{run}-{i:04d}",
                "participant_id": owners[i % len(owners)],
                "approved_at": now,
                "created_at": now,
            }
            for i in range(count)
        ]
        db.session.execute(insert(Node), rows)
        db.session.commit()
        found = db.session.scalars(select(Node).where(Node.name.like(f"sim-{run}-%")).order_by(Node.name))
        return [
            {"id": n.id, "name": n.name, "worker": f"{n.name}@sim-host", "secret": nodes.node_secret(n)}
            for n in found
        ]


def _dispatched_steps(flask_app, workers: list[dict[str, str]], count: int) -> list[tuple[dict, str]]:
    """``count`` dispatched one-page OCR jobs with their input kept (a small page image's worth
    of bytes), each to be run by one of ``workers`` in turn: ``(node, task id)``."""
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Job, JobInput, JobStep

    owner = f"tasks-{uuid.uuid4().hex[:6]}@nodes.bench"
    now = datetime.now(UTC)
    page = os.urandom(INPUT_BYTES)
    with flask_app.app_context():
        for _ in range(count):
            job = Job(kind="ocr", owner=owner, params={"languages": "fra"}, input_pages=1)
            job.steps.append(
                JobStep(
                    position=0, name="ocr", task_name=celeryconfig.TASK_OCR, queue="ocr", dispatched_at=now
                )
            )
            db.session.add(job)
        db.session.flush()
        job_ids = db.session.scalars(select(Job.id).where(Job.owner == owner)).all()
        db.session.add_all(JobInput(job_id=job_id, kind="document", data=page) for job_id in job_ids)
        db.session.commit()
        task_ids = db.session.scalars(
            select(JobStep.task_id).join(Job).where(Job.owner == owner).order_by(JobStep.id)
        ).all()
    return [(workers[i % len(workers)], task_id) for i, task_id in enumerate(task_ids)]


def _page(client: requests.Session, api: str, url: str = "/api/v1/nodes") -> tuple[float, dict]:
    """Seconds one ``GET`` of the node list took, and its answer."""
    began = time.perf_counter()
    response = client.get(f"{api}{url}", timeout=120)
    seconds = time.perf_counter() - began
    response.raise_for_status()
    return seconds, response.json()


def _every_node(client: requests.Session, api: str) -> tuple[float, dict[str, dict]]:
    """Every node by id, through as many pages of the largest size as it takes (one answer if
    the list does not page), and the seconds it took."""
    seconds, body = _page(client, api, "/api/v1/nodes?per_page=1000")
    nodes = {item["id"]: item for item in body["items"]}
    while body.get("next"):
        more, body = _page(client, api, body["next"])
        seconds += more
        nodes.update((item["id"], item) for item in body["items"])
    return seconds, nodes


def _seconds_before(seen: dict[str, float], last: dict[str, float], after: float) -> str:
    """How long before its threshold each silent node was last seen online, at least and most."""
    gaps = [last[node_id] + after - moment for node_id, moment in seen.items()]
    return f"{min(gaps):.1f}–{max(gaps):.1f} s" if gaps else "never"


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def run(workdir: Path, quick: bool) -> list[Goal]:
    from sqlalchemy import func, select

    from app import create_app
    from app.auth import create_token
    from app.extensions import db
    from app.models import LedgerEntry, Node

    interval = 10 if quick else celeryconfig.HEARTBEAT_SECONDS
    offline_after = 3 * interval if quick else celeryconfig.NODE_OFFLINE_AFTER_SECONDS
    idle_s, phase_s = (5, 10) if quick else (20, interval)
    list_requests = 20 if quick else 50
    env = {
        **os.environ,
        "GRID_HEARTBEAT_SECONDS": str(interval),
        "GRID_NODE_OFFLINE_AFTER": str(offline_after),
        # The simulated workers hold their tasks without a broker message: the watchdog must not
        # take those steps for lost (app.watchdog) while they wait for their turn.
        "GRID_LOST_GRACE": "3600",
    }
    flask_app = create_app({"TESTING_NO_METRICS": True})
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    _log(f"enrolling {NODES + SILENT} nodes in bulk…")
    enrolled = _enrol(flask_app, NODES + SILENT, interval)
    beating, silent = enrolled[:NODES], enrolled[NODES:]
    workers = beating[:WORKERS]
    tasks_total = int((2 * phase_s + 15) * WORKERS / TASK_EVERY)
    _log(f"{tasks_total} dispatched one-page OCR jobs for {WORKERS} workers…")
    plan = _dispatched_steps(flask_app, workers, tasks_total)
    with flask_app.app_context():
        token = create_token("bench-nodes", "operator@nodes.bench", ["admin"])[1]
        db.session.commit()

    rejections_before = _rejections_so_far(flask_app)
    grid = Grid(env, log_dir)
    fleet: Fleet | None = None
    try:
        ledger = grid.ledger_worker()
        from bench.latency import production_gunicorn

        workers_n, threads_n = production_gunicorn()  # as the production unit runs it
        api = grid.api(workers=workers_n, threads=threads_n)
        fleet = Fleet(flask_app, enrolled, interval, api)
        fleet.beating, fleet.tasks = beating, plan
        fleet.thread.start()
        from workers.probe import report

        probe = report(("ocr",))
        _log("every node registers (signed with its own secret)…")
        for node in enrolled:
            record = fleet.notice(node, "register", queues=["ocr"], concurrency=1, probe=probe)
            fleet.send("register", record)

        def registered() -> bool:
            with flask_app.app_context():
                names = [n["name"] for n in enrolled]
                return db.session.scalar(
                    select(func.count(Node.id)).where(Node.name.in_(names), Node.registered_at.is_not(None))
                ) == len(enrolled)

        wait_for(registered, 300, "every simulated node's registration entered", interval=0.5)
        time.sleep(2)  # what follows the registrations settles

        with flask_app.app_context():
            postgres_dir = db.session.scalar(select(func.current_setting("data_directory")))
        postmaster = int((Path(postgres_dir) / "postmaster.pid").read_text().split()[0])
        redis_pid = int(redis.Redis.from_url(os.environ["GRID_BROKER_URL"]).info("server")["process_id"])
        meter = Meter({"ledger worker": ledger.proc.pid, "PostgreSQL": postmaster, "Redis": redis_pid})

        quiet = meter.wait_quiet()
        _log(f"1. idle baseline, {idle_s} s (after {quiet:.0f} s waiting for the servers to be quiet)")
        idle = meter.share(idle_s)
        _log(f"2. {WORKERS} workers' executions ({WORKERS / TASK_EVERY:.0f}/s), {phase_s} s")
        fleet.tasks_on = True
        time.sleep(2)  # into its stride
        done_before = fleet.sent_tasks
        tasks_only = meter.share(phase_s)
        done_tasks = fleet.sent_tasks - done_before
        _log(f"3. + {NODES} nodes' heartbeats every {interval} s ({NODES / interval:.1f}/s), {phase_s} s")
        fleet.beats_on = True
        # The silent nodes beat once more, then never: due offline a little after the
        # measurements (the two phases left, and reading every node's CPU, take longer than
        # they say: a few seconds more under load), or at once if the threshold is longer.
        last_beat = max(time.time(), time.time() + 2 * phase_s + 16 + TASK_EVERY - offline_after)
        fleet.last_beats = [(last_beat + i * 0.05, node) for i, node in enumerate(silent)]
        time.sleep(2)
        done_before = fleet.sent_tasks
        both = meter.share(phase_s)
        done_both = fleet.sent_tasks - done_before
        _log(f"4. the heartbeats without the executions, {phase_s} s")
        fleet.tasks_on = False
        time.sleep(2 + TASK_EVERY)  # the executions under way end
        beats_only = meter.share(phase_s)

        client = requests.Session()
        client.headers["Authorization"] = f"Bearer {token}"
        silent_last = {node["id"]: node["last_sent"] for node in silent}
        _log(f"the {SILENT} silent nodes, until shown offline ({offline_after} s after their last heartbeat)")
        shown_offline: dict[str, float] = {}
        early: set[str] = set()
        seen_online: dict[str, float] = {}
        asked_offline: dict[str, float] = {}
        falsely_offline: set[str] = set()
        beating_ids = {node["id"] for node in beating}
        # Every node once (none of the beating ones may show offline), then, until each silent
        # node shows offline, only the pages of twenty that hold them (their names sort last
        # among this run's): a read takes a fraction of a second, not the whole list's second.
        _, listed = _every_node(client, api)
        falsely_offline |= {i for i in beating_ids if listed[i]["state"] != "online"}
        with flask_app.app_context():
            before = db.session.scalar(select(func.count(Node.id)).where(Node.name < silent[0]["name"]))
        pages = sorted({before // SILENT + 1, (before + SILENT - 1) // SILENT + 1})
        polls, give_up = 0, max(silent_last.values()) + offline_after + 20
        while len(shown_offline) < len(silent) and time.time() < give_up:
            asked = time.time()
            listed = {}
            for number in pages:
                page_answer = _page(client, api, f"/api/v1/nodes?per_page={SILENT}&page={number}")[1]
                listed.update((item["id"], item) for item in page_answer["items"])
            answered = time.time()
            polls += 1
            for node_id, item in listed.items():
                if node_id in silent_last and node_id not in shown_offline and item["state"] == "offline":
                    # The registry judged it between the question and the answer: late by at
                    # most the answer's time past the threshold; early if answered before it.
                    shown_offline[node_id] = answered
                    asked_offline[node_id] = asked
                    if answered < silent_last[node_id] + offline_after:
                        early.add(node_id)
                elif node_id in silent_last and node_id not in shown_offline:
                    seen_online[node_id] = asked
                elif node_id in beating_ids and item["state"] != "online":
                    falsely_offline.add(node_id)
            time.sleep(0.2)

        _log(f"GET /api/v1/nodes ×{list_requests} (operator's token), the heartbeats going on")
        page_times, every_times = [], []
        page = _page(client, api)[1]  # warm
        for _ in range(list_requests):
            page_times.append(_page(client, api)[0])
        for _ in range(3):
            seconds, listed = _every_node(client, api)
            every_times.append(seconds)
        falsely_offline |= {i for i in beating_ids if listed[i]["state"] != "online"}
        fleet.stop.set()
        fleet.thread.join(30)
        fleet.pool.shutdown(wait=True, cancel_futures=True)

        with flask_app.app_context():
            lags = [
                (seen.timestamp() - sent)
                for seen, sent in db.session.execute(
                    select(Node.last_seen_at, Node.last_notice_at).where(Node.id.in_(list(beating_ids)))
                )
            ]
            entries = db.session.scalar(
                select(func.count(LedgerEntry.id)).where(LedgerEntry.node.like("sim-%@sim-host"))
            )
        refusals = _refusals(flask_app, rejections_before)
    finally:
        if fleet is not None:
            fleet.stop.set()
            fleet.pool.shutdown(wait=False, cancel_futures=True)
        grid.stop()

    def core(share: dict[str, float]) -> float:
        return sum(share.values())

    alone = core(beats_only) - core(idle)
    beside = core(both) - core(tasks_only)
    detail = ", ".join(
        f"{name} {100 * idle[name]:.1f}/{100 * beats_only[name]:.1f}/{100 * both[name]:.1f}/"
        f"{100 * tasks_only[name]:.1f}"
        for name in idle
    )
    rate_note = (
        f"quick: every {interval} s, {celeryconfig.HEARTBEAT_SECONDS // interval}× the configured rate"
        if quick
        else f"every {interval} s as configured"
    )
    lateness = [shown_offline[i] - (silent_last[i] + offline_after) for i in shown_offline]
    asked_late = [asked_offline[i] - (silent_last[i] + offline_after) for i in asked_offline]
    missing = len(silent) - len(shown_offline)
    worst = max(lateness) if lateness and not missing and not falsely_offline and not early else math.inf
    _log(
        f"sent {fleet.sent_beats} heartbeats, {fleet.sent_tasks} completions ({entries} entered); "
        f"refused: {refusals or 'none'}; sender behind {fleet.late_ticks} times"
    )
    if refusals or fleet.errors:
        raise RuntimeError(f"the coordinator refused bench records: {refusals} {fleet.errors[:3]}")
    paged = "per_page" in page
    page_note = (
        f"the default page ({len(page['items'])} of {page['total']} nodes), median "
        f"{1000 * _median(page_times):.0f} ms; all {len(listed):,} with ?per_page=1000 (pages of at most "
        f"1,000): median {1000 * _median(every_times):.0f} ms"
        if paged
        else f"every node in one answer (no paging): median {1000 * _median(page_times):.0f} ms"
    )
    return [
        Goal.at_most(
            f"coordinator CPU for {NODES:,} nodes' heartbeats (% of one core)",
            100 * max(alone, beside),
            10,
            "%",
            f"{NODES / interval:.1f} heartbeats/s ({rate_note}), ledger worker + PostgreSQL + Redis: "
            f"{100 * alone:.1f} % over idle, {100 * beside:.1f} % beside {WORKERS} workers' executions "
            f"({done_tasks / phase_s:.0f} then {done_both / phase_s:.0f} completions/s); % of a core "
            f"idle/heartbeats/both/executions: {detail}; a heartbeat entered {_p99(lags):.2f} s after "
            f"it was sent (p99)",
        ),
        Goal.at_most(
            f"GET /api/v1/nodes with {len(listed):,} nodes, p99",
            1000 * _p99(page_times),
            100,
            "ms",
            f"operator's token, gunicorn over HTTP ({workers_n} worker, {threads_n} threads as in "
            f"production), {list_requests} requests while the heartbeats "
            f"went on: {page_note}",
        ),
        Goal.at_most(
            "offline detection: a silent node shown offline late by",
            worst,
            2,
            "s",
            f"{SILENT} nodes silent after a last heartbeat, threshold {offline_after} s "
            f"(GRID_NODE_OFFLINE_AFTER), read through the API (the pages holding them) {polls} times: "
            f"{len(shown_offline)} of {SILENT} shown offline (late by at most the end of the answer that "
            f"first showed it, at least its question: {max(asked_late, default=math.nan):+.1f} s; seen "
            f"online {_seconds_before(seen_online, silent_last, offline_after)} before the threshold), "
            f"{len(early)} early, "
            f"{len(falsely_offline)} beating nodes ever shown offline",
        ),
    ]


def _rejections_so_far(flask_app) -> int:
    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import LedgerRejection

    with flask_app.app_context():
        return db.session.scalar(select(func.coalesce(func.max(LedgerRejection.id), 0)))


def _refusals(flask_app, since: int) -> dict[str, int]:
    """What the ledger refused since rejection ``since``, by reason: it must be nothing (every
    bench record is a node's honest one)."""
    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import LedgerRejection

    with flask_app.app_context():
        return dict(
            db.session.execute(
                select(LedgerRejection.reason, func.count())
                .where(LedgerRejection.id > since)
                .group_by(LedgerRejection.reason)
            ).all()
        )
