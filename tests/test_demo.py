"""The embedded default as a new user runs it: ``manage.py demo`` with nothing configured.

The demo starts a private Redis and a private PostgreSQL under its data folder, then the API,
a volunteer, the ledger worker and Flower. These tests run it for real, each on a data folder of
this module's, with the suite's own servers out of its environment.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest
import requests

import celeryconfig
from tests.documents import ENGLISH_LINES, FRENCH_LINES, text_image
from tests.grid import ROOT, wait_for

#: What the suite sets that the embedded default decides for itself.
_SUITE_ONLY = (
    "GRID_BROKER_URL",
    "GRID_DATABASE_URL",
    "GRID_SECRET_KEY",
    "GRID_NODE_RATE_LIMIT",
    "GRID_VALIDATION",  # the demo checks results as a real grid does, on two members' nodes
)
_READY = re.compile(r"API\s+(http://127\.0\.0\.1:\d+)\s+\(token for this demo: (kgg_\S+)\)")


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid → (parent pid, state, command name) of every process on the machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry.name)] = (int(fields[1]), fields[0], stat[stat.index("(") + 1 : stat.rindex(")")])
    return found


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid``: its children, theirs, and so on."""
    table = _processes()
    below, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (parent, state, _) in table.items() if parent in frontier and state != "Z"}
        below |= frontier
    return below


def lasting(pid: int) -> set[int]:
    """The processes below ``pid`` that live as long as the demo: all but PostgreSQL's
    backends, which come and go with the API's and the ledger's connections."""
    table = _processes()
    return {p for p in descendants(pid) if table.get(table.get(p, (0,))[0], (0, "", ""))[2] != "postgres"}


def alive(pids: set[int]) -> set[int]:
    table = _processes()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


class Demo:
    """``python manage.py demo`` in its own process, output in a file."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}-demo-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if k not in _SUITE_ONLY}
        env.update(GRID_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "manage.py", "demo", "--serve"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.api: str | None = None
        self.token: str | None = None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, timeout: float = 180) -> Demo:
        def serving() -> bool:
            assert self.proc.poll() is None, f"the demo exited ({self.proc.returncode}):\n{self.output()}"
            return "The grid keeps running" in self.output()

        wait_for(serving, timeout, "the demo to serve", interval=0.2)
        self.api, self.token = _READY.search(self.output()).groups()
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def database(self):
        """A connection to the demo's private PostgreSQL, over its socket."""
        socket_dir = celeryconfig.unix_socket_path(self.data_dir / "postgres", ".s.PGSQL.5432").parent
        return psycopg2.connect(host=str(socket_dir), port=5432, user="grid", dbname="grid")


@pytest.fixture(scope="module")
def demo_dir(workdir: Path) -> Path:
    # Under the suite's folder, which PostgreSQL's own user can reach when the suite runs as root.
    path = workdir / "demo"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def demo(demo_dir: Path) -> Iterator[Demo]:
    running = Demo(demo_dir)
    try:
        yield running.wait_serving()
    finally:
        running.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_stops_the_demo_and_every_process_it_started(workdir, signum):
    data_dir = workdir / f"demo-{signum.name.lower()}"
    running = Demo(data_dir).wait_serving()
    below = descendants(running.proc.pid)
    # API (with its gunicorn worker), volunteer and ledger worker (with their pool), Flower,
    # Redis, PostgreSQL (with its own background processes).
    assert len(below) >= 10, below

    running.proc.send_signal(signum)

    assert running.proc.wait(60) == 0, running.output()
    assert "stopping" in running.output()
    wait_for(lambda: not alive(below), 10, f"the demo's processes to exit after {signum.name}")
    assert not (data_dir / "redis" / "redis.sock").exists()  # Redis shut down, not killed


def test_children_of_a_killed_demo_stop_by_themselves(workdir):
    running = Demo(workdir / "demo-sigkill").wait_serving()
    below = descendants(running.proc.pid)
    assert below

    running.proc.kill()
    running.proc.wait(10)

    wait_for(lambda: not alive(below), 60, "the orphaned demo processes to exit")


def test_a_second_demo_on_the_same_folder_is_refused_and_leaves_the_first_alone(demo):
    second = subprocess.run(
        [sys.executable, "manage.py", "demo", "--once"],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k not in _SUITE_ONLY},
            "GRID_DATA_DIR": str(demo.data_dir),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert second.returncode != 0
    assert f"another demo (pid {demo.proc.pid}) is running" in second.stdout + second.stderr
    assert requests.get(f"{demo.api}/healthz", timeout=10).ok


def test_the_demo_prints_a_sign_in_that_opens_the_pages_over_plain_http(demo):
    found = re.search(r"Pages   (http://\S+)/   \(sign in: (\S+) / (\S+)\)", demo.output())
    assert found, demo.output()
    base, email, password = found.groups()
    browser = requests.Session()
    form = browser.get(f"{base}/sign-in", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    done = browser.post(
        f"{base}/sign-in", data={"csrf_token": token, "email": email, "password": password}, timeout=30
    )
    # Signed in: the session cookie came back over http, and the pages open.
    assert done.status_code == 200 and "/sign-in" not in done.url, (done.status_code, done.url)
    assert email in done.text
    assert browser.get(f"{base}/account/tokens", timeout=30, allow_redirects=False).status_code == 200


def test_soak_300_mixed_jobs_on_the_embedded_default(demo):
    """300 jobs, OCR of small images and summaries, as fast as four clients can submit them."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {demo.token}"
    images = [text_image(lines[:3], dpi=150) for lines in (FRENCH_LINES, ENGLISH_LINES)]
    processes = lasting(demo.proc.pid)

    def submit(n: int) -> str:
        if n % 2:
            response = session.post(
                f"{demo.api}/api/v1/jobs/ocr",
                files={"file": (f"receipt-{n}.png", images[n % 4 // 2], "image/png")},
                data={"languages": "fra+eng"},
                timeout=60,
            )
        else:
            lines = FRENCH_LINES if n % 4 else ENGLISH_LINES
            text = " ".join(lines[n % 5 :] + lines[: n % 5])
            response = session.post(
                f"{demo.api}/api/v1/jobs/summarise",
                json={"text": text, "language": "fr" if n % 4 else "en", "max_words": 20},
                timeout=60,
            )
        assert response.status_code == 202, response.text
        return response.json()["id"]

    began = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(submit, range(300)))
    submitted = time.monotonic() - began

    def finished() -> dict | None:
        counts = {}
        for state in ("queued", "running", "succeeded", "failed", "cancelled"):
            page = session.get(f"{demo.api}/api/v1/jobs", params={"state": state, "per_page": 1}, timeout=30)
            counts[state] = page.json()["total"]
        return counts if counts["queued"] + counts["running"] == 0 else None

    counts = wait_for(finished, 600, "the 300 jobs to finish", interval=1)
    elapsed = time.monotonic() - began
    print(
        f"soak: 300 jobs submitted in {submitted:.1f} s, done in {elapsed:.1f} s: {300 / elapsed:.1f} jobs/s"
    )

    assert counts["succeeded"] >= 300 and counts["failed"] == 0, counts
    assert demo.proc.poll() is None
    assert not processes - descendants(demo.proc.pid)  # no worker, pool process or server restarted
    with demo.database() as conn, conn.cursor() as cur:
        # One entry per execution: each job's step, and the replicas that re-ran some of them
        # on the other member's node (every result of a new node, then spot checks).
        cur.execute(
            "SELECT count(*) FILTER (WHERE s.replica_of_id IS NULL), count(*), count(DISTINCT e.task_id)"
            " FROM ledger_entries e JOIN job_steps s ON s.id = e.step_id WHERE e.job_id = ANY(%s)",
            (ids,),
        )
        originals, entries, tasks = cur.fetchone()
        cur.execute("SELECT count(*) FROM ledger_rejections")
        (rejected,) = cur.fetchone()
        cur.execute("SELECT count(*) FROM grant_decisions WHERE decision <> 'released'")
        (refused,) = cur.fetchone()
    assert originals == 300 and entries == tasks >= 300 + 5  # the demo's new nodes: results re-run
    assert rejected == 0 and refused == 0
