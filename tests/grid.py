"""Real grid processes for the tests: API server, ledger worker, volunteer workers, Flower.

Each runs as its own OS process, as in production, against the throwaway Redis and PostgreSQL
the session started (see conftest.py). Logs go to files that a failing test prints.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from app.servers import parent_death_preexec

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CELERY = str(VENV_BIN / "celery")


_flask_app = None

#: What preflight checks a worker has (it signs nothing with these): an enrolment, a coordinator.
UNUSED_ENROLMENT = {
    "GRID_NODE_ID": "00000000-0000-0000-0000-000000000000",
    "GRID_NODE_SECRET": "unused",
    "GRID_COORDINATOR_URL": "http://127.0.0.1:9",
}


def enrolment(name: str, owner: str = "volunteer@koprogo.test") -> dict[str, str]:
    """The node id and secret a volunteer worker named ``name`` runs with (enrolled if new)."""
    global _flask_app
    from sqlalchemy import select

    from app import create_app, nodes
    from app.extensions import db
    from app.models import Node

    _flask_app = _flask_app or create_app()
    with _flask_app.app_context():
        node = db.session.scalar(select(Node).where(Node.name == name)) or nodes.create(name, owner)
        db.session.commit()
        return {"GRID_NODE_ID": node.id, "GRID_NODE_SECRET": nodes.node_secret(node)}


def manage(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python manage.py ARGS`` as an operator runs it, in this session's environment."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class GridProcess:
    """One child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> GridProcess:
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A test session killed outright leaves no grid process behind (as its servers).
            preexec_fn=parent_death_preexec(signal.SIGTERM),  # noqa: PLW1509  (prctl only)
        )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, marker: str, timeout: float = 60) -> GridProcess:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.output()[-3000:]}")
            return marker in self.output()

        wait_for(ready, timeout, f"{self.name} to be ready")
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a Celery worker and its pool children)."""
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None:
            return
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        else:
            try:  # the group may hold orphaned pool children
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


class Grid:
    """Starts and stops grid processes sharing one environment (broker, database, limits)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[GridProcess] = []
        # Chosen now: workers fetch their tasks' inputs there, whichever starts first.
        self.api_url = f"http://127.0.0.1:{free_port()}"
        self.env = {**env, "GRID_COORDINATOR_URL": self.api_url}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> GridProcess:
        process = GridProcess(name, argv, {**self.env, **(env or {})}, self.log_dir).start()
        self.processes.append(process)
        return process

    def worker(
        self,
        name: str,
        queues: str,
        *,
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        wait: bool = True,
        owner: str = "volunteer@koprogo.test",
        app: str = "workers",
    ) -> GridProcess:
        """A volunteer worker process, as a member would run it, enrolled as node ``name`` of
        ``owner`` (``app``: another Celery app module, such as a tampered worker's)."""
        env = {**enrolment(name, owner), **(env or {})}
        process = self._spawn(
            name,
            [
                CELERY,
                "-A",
                app,
                "worker",
                "-Q",
                queues,
                "-n",
                f"{name}@%h",
                "-c",
                str(concurrency),
                "--loglevel=INFO",
                "--without-mingle",
                "--without-gossip",
            ],
            env,
        )
        return process.wait_ready(" ready.") if wait else process

    def ledger_worker(
        self,
        name: str = "ledger",
        env: dict[str, str] | None = None,
        wait: bool = True,
        loglevel: str = "INFO",
    ) -> GridProcess:
        """A ledger worker named ``name`` (several may share the ledger queue, each its own name)."""
        process = self._spawn(
            name,
            [
                CELERY,
                "-A",
                "app.ledger_worker",
                "worker",
                "-n",
                f"{name}@%h",
                "-c",
                "1",
                f"--loglevel={loglevel}",
                "--without-mingle",
                "--without-gossip",
            ],
            env,
        )
        return process.wait_ready(" ready.") if wait else process

    def api(
        self,
        *,
        processes: int = 1,
        workers: int = 1,
        threads: int = 4,
        access_log: bool = False,
        env: dict[str, str] | None = None,
    ) -> str:
        """The API under gunicorn at ``api_url``; ``processes`` > 1: as many gunicorn masters
        (independent coordinators' APIs) on that one address, sharing it with ``--reuse-port``
        (the kernel spreads connections among them), each with ``workers`` and ``threads``."""
        port = int(self.api_url.rsplit(":", 1)[1])
        argv = [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}"]
        argv += ["--workers", str(workers), "--threads", str(threads)]
        if processes > 1:
            argv.append("--reuse-port")
        if access_log:
            argv += ["--access-logfile", "-"]
        started = [
            self._spawn("api" if processes == 1 else f"api-{index}", [*argv, "app:create_app()"], env)
            for index in range(1, processes + 1)
        ]

        def healthy() -> bool:
            for process in started:
                if not process.alive():
                    raise AssertionError(f"API exited:\n{process.output()[-3000:]}")
            # Each master listens before its worker has loaded the app: a connection it is
            # handed meanwhile waits in its backlog, and is answered.
            if not all("Booting worker" in process.output() for process in started):
                return False
            try:
                return requests.get(f"{self.api_url}/healthz", timeout=1).ok
            except requests.RequestException:  # not listening yet, or still booting
                return False

        wait_for(healthy, 60, "the API server")
        return self.api_url

    def flower(self, port: int) -> GridProcess:
        return self._spawn(
            "flower",
            [CELERY, "-A", "app.flower", "flower", f"--port={port}", "--address=127.0.0.1"],
            {"FLOWER_UNAUTHENTICATED_API": "1"},
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.output()[-4000:]}" for p in self.processes)


class Client:
    """The API as a submitter sees it: bearer token, JSON answers."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base_url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.base_url + path, timeout=30, **kwargs)

    def submit_document(self, kind: str, data: bytes, filename: str = "document.pdf", **fields: Any) -> dict:
        """Submit a document. The suite's generated PDFs (tests/documents.py) stand in for scans,
        though they carry a text layer: unless a test says otherwise (``force_ocr="false"``),
        their pages are read by Tesseract, as a scan's would be."""
        fields.setdefault("force_ocr", "true")
        response = self.post(f"/api/v1/jobs/{kind}", files={"file": (filename, data)}, data=fields)
        assert response.status_code == 202, response.text
        return response.json()

    def submit_text(self, kind: str, **fields: Any) -> dict:
        response = self.post(f"/api/v1/jobs/{kind}", json=fields)
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job_id: str) -> dict:
        response = self.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_pages(self, job_id: str, pages: int, timeout: float = 60) -> dict:
        """Wait until the job's OCR step has read ``pages`` pages (it is mid-way)."""

        def read() -> dict | None:
            job = self.job(job_id)
            progress = job["steps"][0]["progress"] or {}
            return job if progress.get("pages_done", 0) >= pages else None

        return wait_for(read, timeout, f"job {job_id} to have read {pages} pages")

    def wait(
        self,
        job_id: str,
        timeout: float = 120,
        states: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
    ) -> dict:
        def done() -> dict | None:
            job = self.job(job_id)
            return job if job["state"] in states else None

        return wait_for(done, timeout, f"job {job_id} to reach {'/'.join(states)}", interval=0.2)
