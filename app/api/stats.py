"""/api/v1/stats: what the grid did in a span of time; the euros for operators only."""

from __future__ import annotations

from flask import Blueprint, current_app, request

from app import stats
from app.auth import current_token, require
from app.errors import InvalidPeriod

bp = Blueprint("stats", __name__)


@bp.get("/stats")
@require(None)
def show():
    """?period=day|week|month (default day) or ?from=&to= (ISO 8601): any token; ``money``
    for admin tokens only."""
    args = request.args
    try:
        span = stats.window(
            args.get("period"),
            args.get("from"),
            args.get("to"),
            int(current_app.config["STATS_MAX_DAYS"]),
        )
    except stats.BadPeriod as exc:
        raise InvalidPeriod(str(exc)) from None
    return stats.summary(span, money="admin" in current_token().scope_set)
