"""Members' and operators' sign-in: invitations, passwords, sessions' ids. No request here: the
web pages (app.web) and the command line (app.participants_cli) call these.

Passwords are hashed with Werkzeug's scrypt (``werkzeug.security``, installed with Flask, kept
by the Pallets): memory-hard, salted, its cost kept in each hash so it can be raised later, and
checked in constant time. argon2-cffi would add a compiled dependency for no gain at a handful
of sign-ins a day.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from app.auth import hash_token
from app.extensions import db
from app.models import Invitation, Participant, utcnow
from app.nodes import participant as participant_for

PASSWORD_METHOD = "scrypt"
#: Checked when the email is unknown, so that an unknown address takes as long as a wrong password.
_UNKNOWN = generate_password_hash(secrets.token_urlsafe(16), method=PASSWORD_METHOD)

# Why a password is refused (the templates word each one).
PASSWORD_TOO_SHORT = "password_too_short"
PASSWORD_TOO_LONG = "password_too_long"
PASSWORDS_DIFFER = "passwords_differ"


def invite(email: str, operator: bool = False) -> tuple[Invitation, str]:
    """A one-time invitation for ``email`` (the participant is created if new; made an operator
    with ``operator``), added to the session, not committed; and its token, shown once."""
    member = participant_for(email)
    if operator:
        member.operator = True
    token = secrets.token_urlsafe(32)
    row = Invitation(
        participant=member,
        token_hash=hash_token(token),
        expires_at=utcnow() + timedelta(days=int(current_app.config["INVITE_DAYS"])),
    )
    db.session.add(row)
    return row, token


def open_invitation(token: str, lock: bool = False) -> Invitation | None:
    """The unused, unexpired invitation of ``token``, or None (``lock``: its row is locked until
    the transaction ends, so that it is used once)."""
    query = select(Invitation).where(Invitation.token_hash == hash_token(token))
    row = db.session.scalar(query.with_for_update() if lock else query)
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        return None
    return row


def password_problem(password: str, confirmation: str) -> str | None:
    """Why ``password`` cannot be set, or None."""
    if len(password) < int(current_app.config["PASSWORD_MIN_LENGTH"]):
        return PASSWORD_TOO_SHORT
    if len(password) > int(current_app.config["PASSWORD_MAX_LENGTH"]):
        return PASSWORD_TOO_LONG
    if password != confirmation:
        return PASSWORDS_DIFFER
    return None


def accept(invitation: Invitation, password: str) -> Participant:
    """Use the invitation: its participant's password is set (a checked one: password_problem);
    their earlier sessions end. Not committed."""
    member = set_password(invitation.participant, password)
    invitation.used_at = utcnow()
    return member


def set_password(member: Participant, password: str) -> Participant:
    """The participant's new password (a checked one); their earlier sessions end. Not committed."""
    member.password_hash = generate_password_hash(password, method=PASSWORD_METHOD)
    member.session_generation = (member.session_generation or 1) + 1
    return member


def authenticate(email: str, password: str) -> Participant | None:
    """The participant with this email and password, or None, whichever part was wrong."""
    if len(password) > int(current_app.config["PASSWORD_MAX_LENGTH"]):
        return None
    member = db.session.scalar(select(Participant).where(Participant.email == email.strip().lower()))
    stored = member.password_hash if member is not None and member.password_hash else None
    if not check_password_hash(stored or _UNKNOWN, password) or stored is None:
        return None
    return member


def end_sessions(member: Participant) -> None:
    """Every session the participant signed in before ends (not committed)."""
    member.session_generation += 1


def load(session_id: str) -> Participant | None:
    """The participant a session's id names, if that session has not ended (Flask-Login)."""
    number, _, generation = session_id.partition(":")
    if not number.isdigit() or not generation.isdigit():
        return None
    member = db.session.get(Participant, int(number))
    if member is None or member.password_hash is None or member.session_generation != int(generation):
        return None
    return member
