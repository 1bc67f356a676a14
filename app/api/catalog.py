"""/api/v1/models: the models the grid can serve now, from what its nodes registered."""

from __future__ import annotations

from flask import Blueprint, current_app

from app import catalog
from app.auth import require

bp = Blueprint("catalog", __name__)


@bp.get("/models")
@require(None)
def index():
    """Every model an enrolled node registered, with how many online nodes serve it."""
    return {
        "models": catalog.models(),
        "edge_max_bytes": int(current_app.config["EDGE_MODEL_MAX_BYTES"]),
    }
