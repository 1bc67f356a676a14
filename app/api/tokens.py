"""/api/v1/tokens: one's API tokens — list, create (shown once), revoke. An operator's (``admin``)
token sees and revokes everyone's; anyone else's token is "not found" to a member.

A token never gives more than it has: the one it creates has only scopes it holds (``admin``
only from an admin token) and expires no later than it does. The secret is in the answer that
creates it, once; neither it nor its hash is ever listed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, current_app, url_for
from sqlalchemy import func, select

from app import webhooks
from app.api import params
from app.auth import SCOPES, aware, create_token, current_token, make_room_for_token, require, revoke, state
from app.errors import InsufficientScope, InvalidParameter, NotFound
from app.extensions import db
from app.models import ApiToken, utcnow

bp = Blueprint("tokens", __name__, url_prefix="/tokens")

NAME_MAX_CHARS = 120


def _iso(moment: datetime | None) -> str | None:
    return aware(moment).isoformat() if moment is not None else None


def describe(row: ApiToken) -> dict[str, Any]:
    """A token as listed: never its secret nor its hash."""
    return {
        "id": row.id,
        "name": row.name,
        "owner": row.owner,
        "prefix": row.prefix,
        "scopes": sorted(row.scope_set),
        "state": state(row),
        "created_at": _iso(row.created_at),
        "last_used_at": _iso(row.last_used_at),
        "expires_at": _iso(row.expires_at),
        "revoked_at": _iso(row.revoked_at),
    }


def _is_admin() -> bool:
    return "admin" in current_token().scope_set


@bp.get("")
@require(None)
def index():
    """The caller's tokens, newest first; an admin token's caller sees everyone's (``?owner=``
    for one owner's)."""
    query = select(ApiToken).order_by(ApiToken.id.desc())
    if not _is_admin():
        query = query.where(ApiToken.owner == current_token().owner)
    elif owner := params.query_text("owner"):
        query = query.where(func.lower(ApiToken.owner) == owner.lower())
    return {"items": [describe(row) for row in db.session.scalars(query)]}


def _expiry(body: dict[str, Any], creator: ApiToken) -> datetime | None:
    """When the new token expires: ``expires_in_days`` or ``expires_at`` (not both), never after
    the creating token does (its own expiry when none is asked for)."""
    now = utcnow()
    longest = int(current_app.config["TOKEN_MAX_DAYS"])
    days, at = body.get("expires_in_days"), body.get("expires_at")
    if days is not None and at is not None:
        raise InvalidParameter("Give expires_in_days or expires_at, not both.")
    expires_at = None
    if days is not None:
        if isinstance(days, bool) or not isinstance(days, int | float) or not 0 < days <= longest:
            raise InvalidParameter(f"expires_in_days must be a number of days above 0, at most {longest}.")
        expires_at = now + timedelta(days=days)
    elif at is not None:
        try:
            expires_at = datetime.fromisoformat(at) if isinstance(at, str) and len(at) <= 64 else None
        except ValueError:
            expires_at = None
        if expires_at is None or expires_at.tzinfo is None:
            raise InvalidParameter(
                "expires_at must be an ISO 8601 time with its zone (2027-01-31T00:00:00Z)."
            )
        if not now < expires_at <= now + timedelta(days=longest):
            raise InvalidParameter(f"expires_at must be in the future, at most {longest} days away.")
    limit = aware(creator.expires_at)
    if limit is not None and (expires_at is None or expires_at > limit):
        if expires_at is not None:
            raise InvalidParameter(
                f"A token cannot outlive the one that makes it (it expires at {_iso(limit)})."
            )
        expires_at = limit
    return expires_at


@bp.post("")
@require(None)
def create():
    """A new token for the caller: 201 with it (``token``, shown this once) and its listing.
    Body: ``name``, ``scopes`` (default: the caller's token's), ``expires_in_days`` or
    ``expires_at`` (optional)."""
    creator = current_token()
    body = params.json_object()
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX_CHARS:
        raise InvalidParameter(
            f"name is required: what the token is for, at most {NAME_MAX_CHARS} characters."
        )
    scopes = body.get("scopes", sorted(creator.scope_set))
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise InvalidParameter(f"scopes must be a non-empty list of: {', '.join(SCOPES)}.")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidParameter(
            f"Unknown scope(s) {', '.join(unknown)[:200]}: choose from {', '.join(SCOPES)}."
        )
    if not _is_admin():
        lacking = sorted(set(scopes) - creator.scope_set)
        if lacking:
            raise InsufficientScope(f"This token cannot give scopes it lacks: {', '.join(lacking)}.")
    expires_at = _expiry(body, creator)
    owner = creator.owner
    make_room_for_token(owner)
    row, token = create_token(name.strip(), owner, scopes, expires_at=expires_at)
    db.session.commit()
    return (
        # The webhook signing secret too, shown here and by the rotation route only (app.webhooks).
        {"token": token, "webhook_secret": webhooks.secret(row), **describe(row)},
        201,
        {"Location": url_for("api.tokens.index"), "Cache-Control": "no-store"},
    )


@bp.post("/<int:token_id>/revoke")
@require(None)
def revoke_token(token_id: int):
    """Revoke a token of the caller's (an admin token: anyone's); any other is 404."""
    stored_id = params.integer_id(token_id)
    row = db.session.get(ApiToken, stored_id) if stored_id else None
    if row is None or (not _is_admin() and row.owner != current_token().owner):
        raise NotFound(f"No token {token_id} among yours.")
    revoke(row)
    db.session.commit()
    return describe(row)


@bp.post("/<int:token_id>/webhook-secret")
@require(None)
def rotate_webhook_secret(token_id: int):
    """A new webhook signing secret for a live token of the caller's (never anyone else's, an
    admin's call included: the secret is its owner's), shown this once; the one before stops
    signing at once (app.webhooks)."""
    stored_id = params.integer_id(token_id)
    row = db.session.get(ApiToken, stored_id) if stored_id else None
    if row is None or row.owner != current_token().owner or state(row) != "active":
        raise NotFound(f"No live token {token_id} among yours.")
    secret = webhooks.rotate(row)
    db.session.commit()
    return {"id": row.id, "webhook_secret": secret}, 200, {"Cache-Control": "no-store"}
