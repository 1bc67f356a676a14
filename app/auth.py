"""API tokens: random, shown once, stored as SHA-256, carrying scopes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import UTC, timedelta
from functools import wraps
from typing import Any

from flask import g, request
from sqlalchemy import select

from app.errors import AuthRequired, InsufficientScope, InvalidToken
from app.extensions import db
from app.models import ApiToken, utcnow

#: ``nodes:write``: enrol, pause, resume and revoke one's own nodes (not given with jobs:write:
#: a token that submits jobs cannot add machines to the grid).
SCOPES = ("jobs:read", "jobs:write", "nodes:write", "admin")
TOKEN_PREFIX = "kgg_"
USE_RESOLUTION = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(name: str, owner: str, scopes: list[str]) -> tuple[ApiToken, str]:
    """A new token row (added to the session, not committed) and the token, shown once."""
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
    )
    db.session.add(row)
    return row, token


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
            header = request.headers.get("Authorization", "")
            if not header:
                raise AuthRequired("Send your API token: Authorization: Bearer <token>.")
            kind, _, token = header.partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                raise InvalidToken("Use the form Authorization: Bearer <token>.")
            row = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token.strip())))
            if row is None or row.revoked_at is not None:
                raise InvalidToken("This API token is unknown or revoked.")
            if scope is not None and scope not in row.scope_set and "admin" not in row.scope_set:
                raise InsufficientScope(f"This token lacks the {scope!r} scope.")
            now = utcnow()
            last = row.last_used_at
            if last is None or (now - (last if last.tzinfo else last.replace(tzinfo=UTC))) > USE_RESOLUTION:
                row.last_used_at = now  # at most one write a minute per token
            g.api_token = row
            return view(*args, **kwargs)

        return wrapper

    return decorate
