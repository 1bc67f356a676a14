"""API tokens: random, shown once, stored as SHA-256, carrying scopes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any

from flask import current_app, g, request
from sqlalchemy import func, or_, select

from app.errors import TOO_MANY_TOKENS, ApiError, AuthRequired, InsufficientScope, InvalidToken, TokenExpired
from app.extensions import db
from app.models import ApiToken, utcnow

#: ``nodes:write``: enrol, pause, resume and revoke one's own nodes (not given with jobs:write:
#: a token that submits jobs cannot add machines to the grid).
SCOPES = ("jobs:read", "jobs:write", "nodes:write", "admin")
TOKEN_PREFIX = "kgg_"
USE_RESOLUTION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def aware(moment: datetime | None) -> datetime | None:
    """A stored time with its zone (UTC when the database gave none)."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def expired(row: ApiToken, now: datetime | None = None) -> bool:
    return row.expires_at is not None and aware(row.expires_at) <= (now or utcnow())


def state(row: ApiToken, now: datetime | None = None) -> str:
    """``revoked``, ``expired`` or ``active``."""
    if row.revoked_at is not None:
        return "revoked"
    return "expired" if expired(row, now) else "active"


def bearer() -> str | None:
    """The token the request's ``Authorization: Bearer`` header carries, if it carries one."""
    kind, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if kind.lower() == "bearer" and token else None


def token_row(token: str) -> ApiToken | None:
    """The row of ``token`` (unknown: None), looked up once per request: the rate limits ask
    before the route does (app.api.limits)."""
    found = g.setdefault("api_token_rows", {})
    if token not in found:
        found[token] = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    return found[token]


def create_token(
    name: str, owner: str, scopes: list[str], expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new token row (added to the session, not committed) and the token, shown once; it
    stops working at ``expires_at`` if given."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(
            f"unknown scope(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SCOPES)}"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        owner=owner,
        token_hash=hash_token(token),
        prefix=token[:10],
        scopes=" ".join(sorted(set(scopes))),
        expires_at=expires_at,
    )
    db.session.add(row)
    return row, token


def make_room_for_token(owner: str) -> None:
    """Raises 409 ``too_many_tokens`` when ``owner`` holds GRID_TOKENS_PER_OWNER live tokens
    already (each token has limits of its own: minting more would multiply them). Takes a lock
    per owner until the transaction ends, so two creations at once cannot both pass the count."""
    db.session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"api-tokens:{owner}"))))
    now = utcnow()
    live = db.session.scalar(
        select(func.count())
        .select_from(ApiToken)
        .where(
            ApiToken.owner == owner,
            ApiToken.revoked_at.is_(None),
            or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
        )
    )
    most = int(current_app.config["TOKENS_PER_OWNER"])
    if live >= most:
        raise ApiError(
            f"You hold {live} live tokens, the most allowed ({most}): revoke one first.",
            code=TOO_MANY_TOKENS,
            status=409,
        )


def revoke(row: ApiToken) -> None:
    """The token stops working (not committed); revoking it again keeps its first date."""
    row.revoked_at = row.revoked_at or utcnow()


def current_token() -> ApiToken:
    return g.api_token


def require(scope: str | None) -> Callable:
    """Route decorator: a valid bearer token with ``scope`` (``admin`` has every scope); with
    ``scope`` None, any valid token."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not request.headers.get("Authorization", ""):
                raise AuthRequired("Send your API token: Authorization: Bearer <token>.")
            token = bearer()
            if token is None:
                raise InvalidToken("Use the form Authorization: Bearer <token>.")
            row = token_row(token)
            if row is None or row.revoked_at is not None:
                raise InvalidToken("This API token is unknown or revoked.")
            now = utcnow()
            if expired(row, now):
                raise TokenExpired(f"This API token expired at {aware(row.expires_at).isoformat()}.")
            if scope is not None and scope not in row.scope_set and "admin" not in row.scope_set:
                raise InsufficientScope(f"This token lacks the {scope!r} scope.")
            last = aware(row.last_used_at)
            if last is None or now - last > USE_RESOLUTION:
                row.last_used_at = now  # at most one write a minute per token
            g.api_token = row
            return view(*args, **kwargs)

        return wrapper

    return decorate
