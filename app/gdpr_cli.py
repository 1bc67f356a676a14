"""``manage.py gdpr``: a person's data erased or exported on request (app.gdpr)."""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from app import gdpr
from app.nodes import check_email

gdpr_group = AppGroup("gdpr", help="Data protection: erase or export a person's data.")


def _email(value: str) -> str:
    try:
        return check_email(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@gdpr_group.command("erase")
@click.option("--owner", required=True, help="The person's email (a submitter, a participant, or both).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def gdpr_erase(owner: str, yes: bool) -> None:
    """Erase OWNER's content and personal data now (running jobs are cancelled first); the
    ledger's accounting lines stay (docs/decisions/0016)."""
    owner = _email(owner)
    if not yes:
        click.confirm(
            f"Erase every job's content, the tokens, invitations and personal data of {owner}? "
            "This cannot be undone",
            abort=True,
        )
    done = gdpr.erase_owner(owner)
    if done is None:
        raise click.ClickException(f"the grid holds nothing about {owner}")
    click.echo(
        f"erased: {done['jobs_erased']} jobs' content ({done['jobs_cancelled']} cancelled first), "
        f"{done['tokens_revoked']} tokens revoked, {done['invitations_deleted']} invitations deleted, "
        f"{len(done['nodes'])} nodes pseudonymised; now known as {done['owner']}"
    )


@gdpr_group.command("export")
@click.option("--owner", required=True, help="The person's email.")
def gdpr_export(owner: str) -> None:
    """Everything the grid holds about OWNER, as JSON on stdout."""
    owner = _email(owner)
    found = gdpr.export_owner(owner)
    if found is None:
        raise click.ClickException(f"the grid holds nothing about {owner}")
    click.echo(json.dumps(found, indent=2, ensure_ascii=False, default=str))
