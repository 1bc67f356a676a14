"""Operator commands (``python manage.py …``): tokens, submit, ledger, demo.

``python manage.py db upgrade`` (Flask-Migrate) is registered by the app factory.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import func, select

from app import jobs
from app.auth import SCOPES, aware, create_token, revoke, state
from app.extensions import db
from app.models import ApiToken, Job, JobState, LedgerEntry, utcnow

tokens = AppGroup("tokens", help="Create, list and revoke API tokens.")
ledger = AppGroup("ledger", help="The compute-hours ledger: entries, settlement, payouts, corrections.")
nodes_group = AppGroup("nodes", help="Enrol, list and revoke volunteer nodes.")
rates_group = AppGroup("rates", help="€ per compute hour per capability, with effective dates.")


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
@click.option(
    "--expires-in-days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="The token stops working after this many days (default: never; revoke it instead).",
)
def tokens_create(owner: str, name: str, scopes: tuple[str, ...], expires_in_days: float | None) -> None:
    """Create a token; it is shown once, only its hash is kept."""
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    row, token = create_token(name, owner, list(scopes), expires_at=expires_at)
    db.session.commit()
    until = f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
    click.echo(f"token {row.id} for {owner} ({row.scopes}{until}); shown once, keep it:")
    click.echo(token)


def _when(moment) -> str:
    return f"{aware(moment):%Y-%m-%d %H:%M}" if moment is not None else "-"


@tokens.command("list")
@click.option("--owner", default=None, help="Only this owner's tokens (an email).")
def tokens_list(owner: str | None) -> None:
    """Tokens, oldest first: id, prefix, owner, name, scopes, state, last used, expiry (UTC)."""
    query = select(ApiToken).order_by(ApiToken.id)
    if owner:
        query = query.where(func.lower(ApiToken.owner) == owner.strip().lower())
    click.echo(
        f"{'id':>4}  {'prefix':<11}  {'owner':<30} {'name':<16} {'scopes':<30} {'state':<8} "
        f"{'last used':<16}  expires"
    )
    for row in db.session.scalars(query):
        click.echo(
            f"{row.id:>4}  {row.prefix}…  {row.owner:<30} {row.name:<16} {row.scopes:<30} {state(row):<8} "
            f"{_when(row.last_used_at):<16}  {_when(row.expires_at)}"
        )


@tokens.command("revoke")
@click.argument("token_id", type=int)
def tokens_revoke(token_id: int) -> None:
    row = db.session.get(ApiToken, token_id)
    if row is None:
        raise click.ClickException(f"no token {token_id}")
    revoke(row)
    db.session.commit()
    click.echo(f"token {token_id} revoked")


@tokens.command("webhook-secret")
@click.argument("token_id", type=int)
def tokens_webhook_secret(token_id: int) -> None:
    """Rotate a live token's webhook signing secret and show the new one (docs/api.md, "Webhooks"):
    the one before stops signing at once."""
    from app import webhooks

    row = db.session.get(ApiToken, token_id)
    if row is None or state(row) != "active":
        raise click.ClickException(f"no live token {token_id}")
    secret = webhooks.rotate(row)
    db.session.commit()
    click.echo(f"webhook signing secret of token {token_id} ({row.owner}); shown once, keep it:")
    click.echo(secret)


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
                    done += min(1.0, progress.get("pages_done", 0) / progress["pages_total"])
                elif progress.get("pieces_total"):
                    done += min(1.0, progress.get("pieces_done", 0) / progress["pieces_total"])
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
@click.option(
    "--force-ocr",
    is_flag=True,
    help="Read every page with Tesseract, even a PDF page with a usable text layer.",
)
@click.option(
    "--ocr-quality",
    type=click.Choice(["standard", "best"]),
    default=None,
    help="best: small print enlarged too, for more time (default standard).",
)
@click.option(
    "--llm-fields",
    is_flag=True,
    help="Invoice jobs: a model reads the fields the rules miss (kept only if printed in the text).",
)
@click.option("--language", default="fr", show_default=True, help="Summary language: fr, en, nl.")
@click.option("--max-words", default=150, show_default=True)
@click.option("--target", default=None, help="Translation target for translate jobs.")
@click.option("--translate-to", default=None, help="Pipeline: also translate the summary (fr, en, nl).")
@click.option("--owner", default="operator", show_default=True)
@click.option(
    "--wait/--no-wait", default=False, help="Follow the job with a progress bar and print its result."
)
def submit_command(
    file,
    kind,
    text,
    languages,
    force_ocr,
    ocr_quality,
    llm_fields,
    language,
    max_words,
    target,
    translate_to,
    owner,
    wait,
) -> None:
    """Submit a document or a text as a job, as the API would."""
    from workers.protocol.errors import GridError

    params = {
        "text": text,
        "languages": languages,
        "force_ocr": force_ocr,
        "ocr_quality": ocr_quality,
        "llm_fields": llm_fields or None,
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
        if key == "page_readings" and value:
            value = ", ".join(f"page {r['page']}: {r['method']}" for r in value)
        click.echo(f"--- {key}\n{value}")


@ledger.command("validation")
def ledger_validation() -> None:
    """Results checked by replicas: what they found and what they cost beside useful compute."""
    import json

    from app.validation import stats

    click.echo(json.dumps(stats.summary(), indent=2))


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
        f"{entry.units:>6} {entry.unit}s  claimed {entry.claimed_ms / 1000:.3f}s observed "
        f"{'-' if entry.observed_ms is None else f'{entry.observed_ms / 1000:.3f}s'} cap "
        f"{entry.cap_ms / 1000:.1f}s → granted "
        f"{entry.granted_ms / 1000:.3f}s ({entry.grant_basis}{', held' if entry.held else ''}) "
        f"at {entry.rate_eur_per_hour} €/h"
    )


@click.command("demo")
@click.option("--once/--serve", default=None, help="Exit after the sample job (also DEMO_ONCE=1).")
def demo_command(once: bool | None) -> None:
    """Run the whole grid on this machine and put a sample document through the pipeline."""
    from app.demo import run

    sys.exit(run(once=once))


@nodes_group.command("create")
@click.argument("name")
@click.option("--owner", required=True, help="The participant's email (created if new).")
@click.option("--broker-url", default=None, help="Broker URL to put in the worker's configuration.")
@click.option(
    "--coordinator-url",
    default=None,
    help="The API's address as the node reaches it (default: GRID_PUBLIC_URL).",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the worker's configuration to this file (mode 600) instead of printing it.",
)
def nodes_create(
    name: str, owner: str, broker_url: str | None, coordinator_url: str | None, env_file: Path | None
) -> None:
    """Enrol a node; prints its id, its secret and the worker's configuration, once."""
    import os

    from app import broker_acl, nodes

    try:
        node = nodes.create(name, owner, broker_url)  # on Redis, with its own broker user
    except (ValueError, broker_acl.BrokerAclError) as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    configuration = nodes.worker_configuration(node, broker_url, coordinator_url)
    click.echo(f"node {node.name} ({node.id}) enrolled for {node.participant.email}")
    if env_file is not None:
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(configuration)
        click.echo(f"worker configuration written to {env_file} (keep it private)")
        return
    click.echo("Worker configuration (shown once; keep it private):\n")
    click.echo(configuration, nl=False)


@nodes_group.command("approve")
@click.argument("name")
def nodes_approve(name: str) -> None:
    """Approve a node a participant enrolled: it gets its broker user and the ledger enters what
    it sends."""
    from app import broker_acl, nodes

    node = _active_node(name)
    if node.approved_at is not None:
        click.echo(f"node {name} was approved on {node.approved_at:%Y-%m-%d %H:%M} UTC")
        return
    try:
        nodes.approve(node)
    except broker_acl.BrokerAclError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"node {name} approved: its worker can now connect")


@nodes_group.command("list")
def nodes_list() -> None:
    from app import registry
    from app.models import Node
    from app.validation import settings

    for node in db.session.scalars(select(Node).order_by(Node.created_at)):
        uptime = registry.uptime(node, registry.WINDOWS["24h"])
        trust = settings.trust_of(node)
        click.echo(
            f"{node.id}  {node.name:<24} {node.participant.email:<30} {registry.state(node):<8} "
            f"{uptime:6.2f} % up (24 h)  {','.join(node.queues or []) or '-':<8} "
            f"{trust['level']} ({trust['validated_in_a_row']} valid in a row, {trust['invalid']} invalid)"
        )
        if node.pause_reason:
            click.echo(f"    paused by {node.paused_by}: {node.pause_reason}")


@nodes_group.command("revoke")
@click.argument("name")
def nodes_revoke(name: str) -> None:
    """Revoke a node: the ledger refuses everything it sends from now on, the broker its user."""
    from app import broker_acl, nodes
    from app.models import Node

    node = db.session.scalar(select(Node).where(Node.name == name))
    if node is None:
        raise click.ClickException(f"no node named {name!r}")
    try:
        nodes.revoke(node)
    except broker_acl.BrokerAclError as exc:
        raise click.ClickException(f"node {name} not revoked: {exc}; run this command again") from None
    db.session.commit()
    click.echo(f"node {name} revoked")


@nodes_group.command("rotate")
@click.argument("name")
def nodes_rotate(name: str) -> None:
    """Give a node a new secret (the old one stops verifying at once); prints its configuration."""
    from app import broker_acl, nodes

    node = _active_node(name)
    try:
        nodes.rotate_secret(node)  # on Redis, a new broker password too
    except broker_acl.BrokerAclError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"node {name} has a new secret; its worker needs this configuration (shown once):\n")
    click.echo(nodes.worker_configuration(node), nl=False)


def _active_node(name: str):
    from app.models import Node

    node = db.session.scalar(select(Node).where(Node.name == name))
    if node is None or node.revoked_at is not None:
        raise click.ClickException(f"no active node named {name!r}")
    return node


@nodes_group.command("pause")
@click.argument("name")
def nodes_pause(name: str) -> None:
    """Drain a node: it finishes its current task and takes no more until resumed."""
    from app import registry

    node = _active_node(name)
    registry.pause(node, registry.OPERATOR)
    db.session.commit()
    registry.tell_worker(node)
    click.echo(f"node {name} paused")


@nodes_group.command("resume")
@click.argument("name")
def nodes_resume(name: str) -> None:
    from app import registry

    node = _active_node(name)
    registry.resume(node, registry.OPERATOR)
    db.session.commit()
    registry.tell_worker(node)
    click.echo(f"node {name} resumed")


@nodes_group.command("sync-broker")
def nodes_sync_broker() -> None:
    """Re-create every active node's broker user (after a Redis restart without an aclfile)."""
    from app import broker_acl
    from app.models import Node

    active = db.session.scalars(
        select(Node).where(Node.revoked_at.is_(None), Node.approved_at.is_not(None)).order_by(Node.name)
    ).all()
    try:
        for node in active:
            broker_acl.ensure_user(node)
    except broker_acl.BrokerAclError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(active)} broker users in place")


@rates_group.command("list")
def rates_list() -> None:
    from app.models import Rate

    for rate in db.session.scalars(select(Rate).order_by(Rate.capability, Rate.effective_from)):
        click.echo(
            f"{rate.capability:<4} {rate.eur_per_hour:>10} €/h from {rate.effective_from:%Y-%m-%d %H:%M} UTC"
        )


@rates_group.command("set")
@click.argument("capability", type=click.Choice(["ocr", "llm"]))
@click.argument("eur_per_hour")
@click.option("--from", "effective", default=None, help="When it takes effect (ISO date, UTC); default now.")
@click.option("--by", required=True, help="Who decides the change (recorded).")
def rates_set(capability: str, eur_per_hour: str, effective: str | None, by: str) -> None:
    """A new rate from a date on; earlier entries keep the rate they were entered at."""
    from datetime import UTC, datetime
    from decimal import Decimal, InvalidOperation

    from app.models import Rate

    try:
        amount = Decimal(eur_per_hour)
    except InvalidOperation:
        raise click.ClickException(f"{eur_per_hour!r} is not a decimal amount") from None
    # NUMERIC(12, 6); NaN and Infinity are not amounts (NaN < 0 raises, Infinity has no exponent)
    if not amount.is_finite() or amount < 0 or amount >= 10**6 or amount.as_tuple().exponent < -6:
        raise click.ClickException("a rate is ≥ 0 and below 1,000,000 with at most 6 decimal places")
    now = utcnow()
    try:
        when = datetime.fromisoformat(effective) if effective else now
    except ValueError:
        raise click.ClickException(f"--from {effective!r} is not an ISO date, e.g. 2027-01-01") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when < now.replace(microsecond=0):
        raise click.ClickException("a rate cannot take effect in the past: history keeps its rates")
    db.session.add(Rate(capability=capability, eur_per_hour=amount, effective_from=when, created_by=by))
    db.session.commit()
    click.echo(f"{capability}: {amount} €/h from {when:%Y-%m-%d %H:%M} UTC")


@ledger.command("settle")
@click.option("--period", required=True, help="The month to close, YYYY-MM.")
def ledger_settle(period: str) -> None:
    """Close a period into one reward per node (settling again changes nothing)."""
    from app.ledger import settlement

    try:
        row = settlement.settle(period)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(
        f"{period} closed at {row.closed_at:%Y-%m-%d %H:%M} UTC: {row.entries} entries, "
        f"{len(row.rewards)} rewards, {row.total_eur} € in all"
    )


@ledger.command("pay")
@click.option("--period", required=True)
@click.option("--reference", required=True, help="The payout's reference (bank batch, receipt).")
def ledger_pay(period: str, reference: str) -> None:
    """Mark a settled period's unpaid rewards paid."""
    from app.ledger import settlement

    try:
        paid = settlement.pay(period, reference)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"{len(paid)} rewards of {period} marked paid ({reference})")


@ledger.command("export")
@click.option("--period", required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
def ledger_export(period: str, fmt: str) -> None:
    """A settled period's rewards for the treasurer."""
    from app.ledger import settlement

    try:
        click.echo(settlement.export(period, fmt), nl=False)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@ledger.command("reverse")
@click.argument("entry_id", type=int)
@click.option("--reason", required=True)
@click.option("--by", required=True, help="Who makes the correction.")
def ledger_reverse(entry_id: int, reason: str, by: str) -> None:
    """Correct an entry with a reversing entry (entries are never changed)."""
    from app.ledger import settlement

    try:
        reversal = settlement.reverse(entry_id, reason, by)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"entry {reversal.id} reverses entry {entry_id} in {reversal.period}")


@ledger.command("rejections")
@click.option("--limit", default=20, show_default=True)
def ledger_rejections(limit: int) -> None:
    """The latest records the ledger refused, with the reason."""
    from app.models import LedgerRejection

    rows = db.session.scalars(select(LedgerRejection).order_by(LedgerRejection.id.desc()).limit(limit)).all()
    for row in reversed(rows):
        click.echo(
            f"{row.received_at:%Y-%m-%d %H:%M:%S}  {row.kind:<9} {row.reason:<20} node {row.node_id}  "
            f"task {row.task_id}  {row.detail}"
        )


def register(app: Flask) -> None:
    from app.gdpr_cli import gdpr_group
    from app.mcp_cli import mcp_command
    from app.participants_cli import participants
    from app.stats_cli import models_command, stats_command

    app.cli.add_command(tokens)
    app.cli.add_command(participants)
    app.cli.add_command(ledger)
    app.cli.add_command(nodes_group)
    app.cli.add_command(rates_group)
    app.cli.add_command(submit_command)
    app.cli.add_command(demo_command)
    app.cli.add_command(stats_command)
    app.cli.add_command(models_command)
    app.cli.add_command(mcp_command)
    app.cli.add_command(gdpr_group)
