"""``manage.py demo``: the whole grid on one machine, nothing to configure.

The embedded default: a private Redis and a private PostgreSQL of the demo's own, their data
and Unix sockets under ``var/`` (no TCP port), started and stopped by the demo
(docs/decisions/0008). On them it starts the API, two volunteer workers on ``llm,ocr`` of two
members (each an enrolled node with its own broker user: new nodes' results are each checked by
the other, docs/decisions/0011), the ledger worker and Flower as child processes, puts the
bundled sample document through the pipeline (OCR → summary → translation), prints what came
out, how it was checked and the ledger, then serves until it is stopped (or exits with
DEMO_ONCE=1).

Stopped by SIGINT (Ctrl-C), SIGTERM or SIGHUP, it stops every child and its servers before it
exits; killed outright, its children are told by the kernel (a parent-death signal) and stop
too. A configured ``GRID_BROKER_URL`` or ``GRID_DATABASE_URL`` is used instead of the private
server.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import requests
from flask import current_app
from flask_migrate import upgrade
from sqlalchemy import select

import celeryconfig
from app import accounts, broker_acl, config, nodes
from app.auth import create_token
from app.extensions import db
from app.models import Node
from app.servers import PostgresServer, RedisServer, ServerStartError, parent_death_preexec

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "proces-verbal-ag.pdf"
#: The demo's volunteer nodes and their owners: two members, so each node's results can be
#: checked on a machine that is not its owner's (app.validation).
#: The demo's member: owns the first volunteer, submits the sample and, as an operator, sees the
#: operators' overview; signs in to the pages with a password made for each run.
MEMBER = "demo@koprogo.local"
VOLUNTEERS = (("demo-volunteer", MEMBER), ("demo-neighbour", "neighbour@koprogo.local"))
BIN = Path(sys.executable).parent


def _port(preferred: int) -> int:
    """The preferred port if it is free, else any free one."""
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port")


def _model(env: dict[str, str]) -> bool:
    """Configure a model; returns True when it is the random-weight test model."""
    if env.get("GRID_LLM_MODEL"):
        return False
    path = celeryconfig.DATA_DIR / "models" / "tiny-random.gguf"
    if not path.exists():
        # Built by the volunteer's side (gguf, numpy), which the coordinator never imports.
        subprocess.run(
            [sys.executable, "-m", "workers.tinymodel", str(path)],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    env["GRID_LLM_MODEL"] = str(path)
    env["GRID_LLM_CONTEXT"] = "512"
    return True


class Stopped(Exception):
    """The demo was asked to stop by a signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _on_stop_signal(signum: int, _frame) -> None:
    # Once: a second Ctrl-C (or a SIGTERM after it) must not interrupt the clean-up itself.
    for other in _STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


def _lock(data_dir: Path):
    """Hold ``var/demo.lock`` while the demo runs: two demos on one folder would share servers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / "demo.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "?"
        handle.close()
        raise click.ClickException(
            f"another demo (pid {holder}) is running on {data_dir}: stop it first, or give this one "
            "a folder of its own with GRID_DATA_DIR"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Children:
    """The demo's processes, each in its own process group, logs under var/logs.

    Each is asked by the kernel to stop (SIGTERM) should the demo die without stopping it.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.logs = celeryconfig.DATA_DIR / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env or self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches the demo, which stops them in order
            preexec_fn=parent_death_preexec(signal.SIGTERM),  # noqa: PLW1509  (prctl only)
        )
        log.close()

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise click.ClickException(f"{name} exited ({proc.returncode}):\n" + "\n".join(tail))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # what is left of its group: a stuck process, an orphaned pool child
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _wait_for(children: Children, what: str, ready, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        children.check()
        if time.monotonic() > deadline:
            raise click.ClickException(f"{what} did not start within {timeout:.0f} s (logs in var/logs)")
        time.sleep(0.2)


def _log_has(children: Children, name: str, marker: str):
    return lambda: marker in (children.logs / f"{name}.log").read_text(errors="replace")


def _api_up(url: str):
    def ready() -> bool:
        try:
            return requests.get(f"{url}/healthz", timeout=1).ok
        except requests.RequestException:  # not listening yet, or still booting
            return False

    return ready


def _follow(api: str, headers: dict[str, str], job_id: str) -> dict:
    shown = ""
    while True:
        job = requests.get(f"{api}/api/v1/jobs/{job_id}", headers=headers, timeout=30).json()
        parts = []
        for step in job["steps"]:
            progress = step["progress"] or {}
            detail = ""
            if "pages_total" in progress:
                detail = f" {progress['pages_done']}/{progress['pages_total']} pages"
            elif "tokens" in progress:
                detail = f" {progress['tokens']} tokens"
            parts.append(f"{step['name']}: {step['state']}{detail}")
        line = " | ".join(parts)
        if line != shown:
            click.echo(f"  {line}")
            shown = line
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.25)


def _section(title: str, body: str) -> None:
    click.echo(click.style(f"\n=== {title} ===", bold=True))
    click.echo(body.strip() or "(empty)")


def _private_servers(servers: list) -> dict[str, str]:
    """Start the private Redis and PostgreSQL the configuration points at (the embedded
    default's); returns the URLs the children are to use."""
    urls = {
        "GRID_BROKER_URL": celeryconfig.broker_url,
        "GRID_DATABASE_URL": current_app.config["SQLALCHEMY_DATABASE_URI"],
    }
    if celeryconfig.broker_url == celeryconfig.EMBEDDED_BROKER_URL:
        servers.append(RedisServer(directory=celeryconfig.EMBEDDED_REDIS_DIR).start())
    else:
        click.echo(f"  note: using the configured broker {celeryconfig.broker_url}")
    if urls["GRID_DATABASE_URL"] == config.EMBEDDED_DATABASE_URL:
        postgres = PostgresServer(directory=config.EMBEDDED_POSTGRES_DIR).start()
        servers.append(postgres)
        if postgres.create_database(config.EMBEDDED_DATABASE, exist_ok=True) != config.EMBEDDED_DATABASE_URL:
            raise click.ClickException("the private PostgreSQL is not where the configuration looks for it")
    else:
        click.echo("  note: using the configured database (GRID_DATABASE_URL)")
    return urls


def run(once: bool | None = None) -> int:
    """Run the demo; returns the exit status."""
    once = once if once is not None else os.environ.get("DEMO_ONCE", "") not in ("", "0")
    started = time.monotonic()
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _on_stop_signal)
    lock = _lock(celeryconfig.DATA_DIR)
    servers: list[RedisServer | PostgresServer] = []
    children: Children | None = None
    try:
        click.echo(click.style("KoproGo Grid demo", bold=True) + f" — data in {celeryconfig.DATA_DIR}")
        try:
            urls = _private_servers(servers)
        except (ServerStartError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from None
        # One machine plays every node here: a node rate limit would only slow the show.
        env = dict(os.environ, OMP_THREAD_LIMIT="1", PYTHONUNBUFFERED="1", **urls)
        env.setdefault("GRID_NODE_RATE_LIMIT", "0")
        children = Children(env)
        return _serve(once, started, env, children)
    except (Stopped, KeyboardInterrupt) as stop:
        click.echo(f"\nstopping ({stop if isinstance(stop, Stopped) else 'SIGINT'})…")
        return 0
    finally:
        for signum in _STOP_SIGNALS:  # nothing interrupts the clean-up
            signal.signal(signum, signal.SIG_IGN)
        if children is not None:
            children.stop()
        db.session.remove()  # the demo's own connections go before the server does
        db.engine.dispose()
        for server in reversed(servers):
            server.stop()
        lock.close()


def _serve(once: bool, started: float, env: dict[str, str], children: Children) -> int:
    random_model = _model(env)
    if random_model:
        click.echo(
            "  No model configured, so the LLM steps use a tiny model with RANDOM weights built by\n"
            "  workers/tinymodel.py: its summaries and translations are noise, not language.\n"
            "  For real ones, point the grid at a GGUF model (e.g. a 4-bit Mistral-7B-Instruct):\n"
            "      GRID_LLM_MODEL=/path/to/model.gguf make demo"
        )
    else:
        click.echo(f"  model: {env['GRID_LLM_MODEL']}")

    upgrade(directory=str(ROOT / "migrations"))
    _, token = create_token("demo", MEMBER, ["admin"])
    member = nodes.participant(MEMBER)
    member.operator = True
    password = secrets.token_urlsafe(12)
    accounts.set_password(member, password)
    volunteers = []
    for name, owner in VOLUNTEERS:
        volunteer = db.session.scalar(select(Node).where(Node.name == name)) or nodes.create(name, owner)
        broker_acl.ensure_user(volunteer)  # each runs as its own broker user, as in production
        volunteers.append(volunteer)
    db.session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    api_port, flower_port = _port(5000), _port(5555)
    api = f"http://127.0.0.1:{api_port}"

    celery = str(BIN / "celery")
    children.start(
        "ledger",
        [
            celery,
            "-A",
            "app.ledger_worker",
            "worker",
            "-c",
            "1",
            "-n",
            "ledger@%h",
            "--loglevel=INFO",
        ],
    )
    for volunteer in volunteers:
        children.start(
            volunteer.name,
            [
                celery,
                "-A",
                "workers",
                "worker",
                "-Q",
                "llm,ocr",
                "-c",
                "1",
                "-n",
                f"{volunteer.name}@%h",  # a node's worker is named after it
                "--loglevel=INFO",
            ],
            {**env, **nodes.worker_environment(volunteer, celeryconfig.broker_url, api)},
        )
    children.start(
        "api",
        [
            str(BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{api_port}",
            "--workers",
            "1",
            "--threads",
            "4",
            "app:create_app()",
        ],
        # The pages' session cookie over plain http on this machine (never in production).
        {**env, "GRID_COOKIE_SECURE": "false"},
    )
    children.start(
        "flower", [celery, "-A", "app.flower", "flower", f"--port={flower_port}", "--address=127.0.0.1"]
    )
    _wait_for(children, "the API", _api_up(api))
    _wait_for(children, "the ledger worker", _log_has(children, "ledger", " ready."))
    for volunteer in volunteers:
        _wait_for(children, f"the volunteer {volunteer.name}", _log_has(children, volunteer.name, " ready."))
    click.echo(f"  ready in {time.monotonic() - started:.1f} s")
    click.echo(f"  Pages   {api}/   (sign in: {MEMBER} / {password})")
    click.echo(f"  API     {api}   (token for this demo: {token})")
    click.echo(f"  Flower  http://127.0.0.1:{flower_port}")

    click.echo(f"\nSubmitting {SAMPLE.relative_to(ROOT)}: OCR (fra+eng) → summary (fr) → translation (en)")
    with SAMPLE.open("rb") as handle:
        response = requests.post(
            f"{api}/api/v1/jobs/pipeline",
            headers=headers,
            files={"file": (SAMPLE.name, handle, "application/pdf")},
            data={"languages": "fra+eng", "language": "fr", "translate_to": "en", "max_words": "80"},
            timeout=60,
        )
    if response.status_code != 202:
        raise click.ClickException(f"submission refused: {response.status_code} {response.text}")
    job = _follow(api, headers, response.json()["id"])
    if job["state"] != "succeeded":
        raise click.ClickException(f"the job {job['state']}: {job['error']}")
    result = job["result"]
    read = ", ".join(sorted({r["method"].replace("_", " ") for r in result.get("page_readings") or []}))
    _section(
        f"Text ({result['pages']} pages, read by {read or 'ocr'})",
        result["text"].replace("\f", "\n--- page break ---\n"),
    )
    _section(f"Summary ({result['summary_language']}, {result['summary_tokens']} tokens)", result["summary"])
    _section(
        f"Translation ({result['translation_language']}, {result['translation_tokens']} tokens)",
        result["translation"],
    )
    _section("Checked by another node", _check_lines(job))
    _section("Ledger: one entry per execution", _ledger_lines(job["id"]))
    cost = job["cost"]
    split = ", ".join(f"{name.replace('_', ' ')} {amount} €" for name, amount in cost["split"].items())
    _section("This job's cost", f"{cost['exact_eur']} € of granted compute → {cost['eur']} € ({split})")
    by_node = requests.get(f"{api}/api/v1/ledger/nodes", headers=headers, timeout=30).json()["nodes"]
    _section("Compute hours and rewards per node (unsettled)", _reward_lines(by_node))
    click.echo(f"\nEnd to end: {time.monotonic() - started:.1f} s (job: {_job_seconds(job):.1f} s)")
    if once:
        return 0
    click.echo(
        f"\nThe grid keeps running. Try:\n"
        f"  curl -H 'Authorization: Bearer {token}' {api}/api/v1/jobs\n"
        f"  curl -H 'Authorization: Bearer {token}' -F file=@{SAMPLE.relative_to(ROOT)} "
        f"{api}/api/v1/jobs/ocr\n"
        f"  python manage.py nodes list        (the same data folder: {celeryconfig.DATA_DIR})\n"
        "Ctrl-C (or SIGTERM, SIGHUP) stops everything, the private servers included."
    )
    while True:
        children.check()
        time.sleep(1)


def _check_lines(job: dict) -> str:
    lines = []
    for step in job["steps"]:
        check = step.get("verification")
        if not check:
            lines.append(f"{step['name']:<10} not re-run (a trusted node's result, or checking is off)")
            continue
        replicas = ", ".join(f"{r['node']} ({r['verdict']})" for r in check["replicas"])
        gaps = ", ".join(f"{d['distance']:.4f}" for d in check["distances"])
        lines.append(
            f"{step['name']:<10} {check['reason']}: re-run on {replicas}; distance {gaps}; "
            f"the result from {step['node']} was given"
        )
    return "\n".join(lines)


def _ledger_lines(job_id: str) -> str:
    from sqlalchemy import select

    from app.cli import format_entry
    from app.models import GrantDecision, LedgerEntry

    db.session.expire_all()
    rows = db.session.scalars(
        select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.id)
    ).all()
    decided = dict(
        db.session.execute(
            select(GrantDecision.entry_id, GrantDecision.decision).where(
                GrantDecision.entry_id.in_([row.id for row in rows])
            )
        ).all()
    )
    return "\n".join(
        format_entry(row) + (f" → {decided.get(row.id, 'still held')}" if row.held else "") for row in rows
    )


def _reward_lines(nodes: list[dict]) -> str:
    lines = []
    for node in nodes:
        for line in node["capabilities"]:
            rates = " / ".join(line["rates_eur_per_hour"])
            name = node["node"] or node["node_id"]
            lines.append(
                f"{name:<20} {line['capability']:<4} {line['executions']:>3} executions "
                f"{line['units']:>7} {line['unit']}s  {line['granted_hours']} h × {rates} €/h"
                f" = {line['reward_eur']} €"
            )
    return "\n".join(lines)


def _job_seconds(job: dict) -> float:
    from datetime import datetime

    return (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])
    ).total_seconds()
