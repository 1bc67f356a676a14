"""/api/v1/nodes: the registry — capabilities, state, uptime, compute hours; pause, resume,
revoke. Operators see every node, participants their own."""

from __future__ import annotations

from flask import Blueprint
from sqlalchemy import select

from app import nodes, registry
from app.auth import current_token, require
from app.errors import Conflict, NotFound
from app.extensions import db
from app.models import Node, Participant

bp = Blueprint("nodes", __name__, url_prefix="/nodes")


def _is_admin() -> bool:
    return "admin" in current_token().scope_set


def _visible(node_id: str) -> Node:
    node = db.session.get(Node, node_id) if len(node_id) <= 36 else None
    if node is None or (not _is_admin() and node.participant.email != current_token().owner.lower()):
        raise NotFound(f"No node {node_id} among yours.")
    return node


@bp.get("")
@require("jobs:read")
def index():
    query = select(Node).order_by(Node.name)
    if not _is_admin():
        query = query.join(Participant).where(Participant.email == current_token().owner.lower())
    return {"items": [registry.describe(node) for node in db.session.scalars(query)]}


@bp.get("/<node_id>")
@require("jobs:read")
def show(node_id: str):
    return registry.describe(_visible(node_id))


def _active(node_id: str) -> Node:
    node = _visible(node_id)
    if node.revoked_at is not None:
        raise Conflict("The node is revoked.", code="node_revoked")
    return node


@bp.post("/<node_id>/pause")
@require("jobs:write")
def pause(node_id: str):
    """Drain the node: it finishes its current work and takes no more until resumed."""
    node = _active(node_id)
    registry.pause(node)
    db.session.commit()
    return registry.describe(node)


@bp.post("/<node_id>/resume")
@require("jobs:write")
def resume(node_id: str):
    node = _active(node_id)
    registry.resume(node)
    db.session.commit()
    return registry.describe(node)


@bp.post("/<node_id>/revoke")
@require("jobs:write")
def revoke(node_id: str):
    """Revoke the node for good: everything it sends from now on is refused."""
    node = _active(node_id)
    registry.pause(node)
    nodes.revoke(node)
    db.session.commit()
    return registry.describe(node)
