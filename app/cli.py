"""Operator commands (``python manage.py …``): tokens, submit, ledger, demo.

``python manage.py db upgrade`` (Flask-Migrate) is registered by the app factory.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from app import jobs
from app.auth import SCOPES, create_token
from app.extensions import db
from app.models import ApiToken, Job, JobState, LedgerEntry, utcnow

tokens = AppGroup("tokens", help="Create, list and revoke API tokens.")
ledger = AppGroup("ledger", help="Look at the compute-hours ledger.")


@tokens.command("create")
@click.option("--owner", required=True, help="Who the token belongs to (an email).")
@click.option("--name", default="api", show_default=True, help="What the token is for.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPES),
    default=("jobs:read", "jobs:write"),
    show_default=True,
)
def tokens_create(owner: str, name: str, scopes: tuple[str, ...]) -> None:
    """Create a token; it is shown once, only its hash is kept."""
    row, token = create_token(name, owner, list(scopes))
    db.session.commit()
    click.echo(f"token {row.id} for {owner} ({row.scopes}); shown once, keep it:")
    click.echo(token)


@tokens.command("list")
def tokens_list() -> None:
    for row in db.session.scalars(select(ApiToken).order_by(ApiToken.id)):
        state = "revoked" if row.revoked_at else "active"
        click.echo(f"{row.id:>4}  {row.prefix}…  {row.owner:<30} {row.name:<16} {row.scopes:<30} {state}")


@tokens.command("revoke")
@click.argument("token_id", type=int)
def tokens_revoke(token_id: int) -> None:
    row = db.session.get(ApiToken, token_id)
    if row is None:
        raise click.ClickException(f"no token {token_id}")
    row.revoked_at = row.revoked_at or utcnow()
    db.session.commit()
    click.echo(f"token {token_id} revoked")


def _wait(job: Job, out) -> Job:
    """Follow a job until it ends, with a progress bar over its steps and pages."""
    total = max(1, len(job.steps))
    with click.progressbar(length=total * 100, label=f"job {job.id[:8]}", file=out, show_eta=False) as bar:
        shown = 0
        while True:
            db.session.expire_all()
            job = db.session.get(Job, job.id)
            done = 0.0
            for step in job.steps:
                progress = jobs.describe_step(step)["progress"] or {}
                if step.state in ("succeeded", "failed", "skipped", "cancelled"):
                    done += 1
                elif progress.get("pages_total"):
                    done += progress["pages_done"] / progress["pages_total"]
                elif progress.get("pieces_total"):
                    done += progress["pieces_done"] / progress["pieces_total"]
            label = f"job {job.id[:8]} {job.state:<9} " + " ".join(f"{s.name}:{s.state}" for s in job.steps)
            if label != bar.label and not bar.hidden:
                bar.label = label
            elif label != bar.label:  # no terminal (a log, a pipe): one line per change instead
                bar.label = label
                click.echo(label, file=out)
            step_to = int(done * 100)
            bar.update(step_to - shown)
            shown = step_to
            if job.state in JobState.FINAL:
                return job
            time.sleep(0.3)


@click.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option("--kind", type=click.Choice(jobs.KINDS), default="pipeline", show_default=True)
@click.option("--text", help="Text for summarise and translate jobs (instead of FILE).")
@click.option("--languages", default=None, help="OCR languages, e.g. fra+eng (default).")
@click.option("--language", default="fr", show_default=True, help="Summary language: fr, en, nl.")
@click.option("--max-words", default=150, show_default=True)
@click.option("--target", default=None, help="Translation target for translate jobs.")
@click.option("--translate-to", default=None, help="Pipeline: also translate the summary (fr, en, nl).")
@click.option("--owner", default="operator", show_default=True)
@click.option(
    "--wait/--no-wait", default=False, help="Follow the job with a progress bar and print its result."
)
def submit_command(
    file, kind, text, languages, language, max_words, target, translate_to, owner, wait
) -> None:
    """Submit a document or a text as a job, as the API would."""
    from workers.errors import GridError

    params = {
        "text": text,
        "languages": languages,
        "language": language,
        "max_words": max_words,
        "target": target,
        "translate_to": translate_to,
    }
    document = jobs.Document(file.read_bytes(), file.name) if file else None
    try:
        job = jobs.submit(kind, params, document, owner=owner)
    except GridError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None
    click.echo(f"job {job.id} {job.state}")
    if not wait:
        return
    job = _wait(job, sys.stderr)
    body = jobs.describe(job)
    if job.state != JobState.SUCCEEDED:
        error = body["error"] or {}
        raise click.ClickException(f"job {job.state}: {error.get('code')}: {error.get('message')}")
    for key, value in (body["result"] or {}).items():
        click.echo(f"--- {key}\n{value}")


@ledger.command("show")
@click.option("--limit", default=20, show_default=True)
def ledger_show(limit: int) -> None:
    """The latest ledger entries."""
    rows = db.session.scalars(select(LedgerEntry).order_by(LedgerEntry.id.desc()).limit(limit)).all()
    for entry in reversed(rows):
        click.echo(format_entry(entry))


def format_entry(entry: LedgerEntry) -> str:
    return (
        f"{entry.received_at:%Y-%m-%d %H:%M:%S}  {entry.node:<28} {entry.capability:<4} "
        f"{entry.task_name:<20} attempt {entry.attempt}  {entry.outcome:<9} "
        f"wall {entry.wall_ms / 1000:7.3f}s cpu {entry.cpu_ms / 1000:7.3f}s "
        f"{entry.units:>6} {entry.unit}s  granted {entry.granted_ms / 1000:.3f}s ({entry.grant_basis})"
    )


@click.command("demo")
@click.option("--once/--serve", default=None, help="Exit after the sample job (also DEMO_ONCE=1).")
def demo_command(once: bool | None) -> None:
    """Run the whole grid on this machine and put a sample document through the pipeline."""
    from app.demo import run

    sys.exit(run(once=once))


def register(app: Flask) -> None:
    app.cli.add_command(tokens)
    app.cli.add_command(ledger)
    app.cli.add_command(submit_command)
    app.cli.add_command(demo_command)
