"""``manage.py participants``: invite members and operators to sign in to the web pages."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from app import accounts
from app.extensions import db

participants = AppGroup("participants", help="Members and operators of the web pages: invitations.")


@participants.command("invite")
@click.argument("email")
@click.option("--operator", is_flag=True, help="The participant runs the whole grid (an operator).")
def participants_invite(email: str, operator: bool) -> None:
    """Print a one-time link with which EMAIL sets a password and signs in."""
    try:
        invitation, token = accounts.invite(email, operator=operator)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    role = "operator" if invitation.participant.operator else "member"
    base = current_app.config["PUBLIC_URL"].rstrip("/")
    click.echo(
        f"invitation for {invitation.participant.email} ({role}), valid once until "
        f"{invitation.expires_at:%Y-%m-%d %H:%M} UTC; give them this link:"
    )
    click.echo(f"{base}/invite/{token}")
