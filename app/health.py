"""Liveness and readiness, for a load balancer or an orchestrator.

``/healthz`` says the process answers: it touches neither PostgreSQL nor Redis, so a server
being away does not get a healthy API restarted. ``/readyz`` says whether the API can serve:
it asks PostgreSQL (``SELECT 1``) and Redis (``PING``), each within
``READINESS_TIMEOUT_SECONDS``, and answers 503 with ``Retry-After`` and which is away.
Neither needs a token.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app
from sqlalchemy import text

from app import broker_acl
from app.errors import BROKER_UNAVAILABLE, DATABASE_UNAVAILABLE, broker_away, database_away
from app.extensions import db

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

READINESS_TIMEOUT_SECONDS = 2


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _database() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001  any failure means not ready; classified for the log
        db.session.rollback()
        if not database_away(exc):
            log.exception("readiness: the database check failed")
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def _broker() -> str | None:
    """None if Redis answers PING, else why not."""
    client = broker_acl.quick_client(READINESS_TIMEOUT_SECONDS)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        if not broker_away(exc):
            log.exception("readiness: the broker check failed")
        return str(exc) or type(exc).__name__
    finally:
        client.close()
    return None


@bp.get("/readyz")
def readyz():
    away = {DATABASE_UNAVAILABLE: _database(), BROKER_UNAVAILABLE: _broker()}
    checks = {
        "database": "ok" if away[DATABASE_UNAVAILABLE] is None else "unavailable",
        "broker": "ok" if away[BROKER_UNAVAILABLE] is None else "unavailable",
    }
    failing = [code for code, why in away.items() if why is not None]
    if not failing:
        return {"status": "ready", "checks": checks}
    names = {DATABASE_UNAVAILABLE: "the database (PostgreSQL)", BROKER_UNAVAILABLE: "the broker (Redis)"}
    body = {
        "status": "unavailable",
        "checks": checks,
        "error": {
            "code": failing[0],
            "message": f"{' and '.join(names[code] for code in failing)} cannot be reached.",
        },
    }
    return body, 503, {"Retry-After": str(current_app.config["RETRY_AFTER_SECONDS"])}
