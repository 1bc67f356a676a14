"""/api/v1/admin/gdpr: a person's data erased or exported on request (``admin`` tokens only;
app.gdpr, docs/decisions/0016)."""

from __future__ import annotations

from flask import Blueprint

from app import gdpr
from app.api import params
from app.auth import require
from app.errors import InvalidParameter, NotFound
from app.nodes import check_email

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _owner() -> str:
    """The body's ``owner``: an email address, else 422 ``invalid_parameter``."""
    owner = params.json_object().get("owner")
    if not isinstance(owner, str) or not owner.strip():
        raise InvalidParameter('Say whose data: {"owner": "email"}.', status=422)
    try:
        return check_email(owner.strip())
    except ValueError as exc:
        raise InvalidParameter(f"owner: {exc}", status=422) from None


@bp.post("/gdpr/erase")
@require("admin")
def erase():
    """Erase the owner's content and personal data now; what was done (no personal data)."""
    owner = _owner()
    done = gdpr.erase_owner(owner)
    if done is None:
        raise NotFound("The grid holds nothing about this owner.")
    return done


@bp.post("/gdpr/export")
@require("admin")
def export():
    """Everything the grid holds about the owner, as JSON."""
    owner = _owner()
    found = gdpr.export_owner(owner)
    if found is None:
        raise NotFound("The grid holds nothing about this owner.")
    return found
