"""/api/v1/nodes: the registry — capabilities, state, uptime, compute hours; pause, resume,
revoke. Operators see every node, participants their own."""

from __future__ import annotations

from flask import Blueprint, current_app, request, url_for
from sqlalchemy import func, select

from app import nodes, registry
from app.auth import current_token, require
from app.errors import ApiError, Conflict, NotFound
from app.extensions import db
from app.models import Node, Participant

bp = Blueprint("nodes", __name__, url_prefix="/nodes")


def _is_admin() -> bool:
    return "admin" in current_token().scope_set


def _who() -> str:
    return registry.OPERATOR if _is_admin() else registry.OWNER


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


@bp.post("")
@require("nodes:write")
def enrol():
    """Enrol a node for yourself (an operator may name another owner): 201 with its id, its
    secret and the worker's configuration, shown this once. A participant's node is pending
    until an operator approves it; an operator's is approved at once."""
    body = request.get_json(silent=True)
    body = body if isinstance(body, dict) else request.form.to_dict()
    token = current_token()
    owner = str(body.get("owner") if _is_admin() and body.get("owner") else token.owner)
    name = str(body.get("name") or "")
    if db.session.scalar(select(Node.id).where(Node.name == name)) is not None:
        raise Conflict(f"A node named {name!r} exists already.", code="node_exists")
    if not _is_admin():
        limit = current_app.config["NODES_PER_PARTICIPANT"]
        try:
            member = nodes.participant(owner)
        except ValueError as exc:
            raise ApiError(str(exc), code="invalid_parameter") from None
        # Locked while counting: two enrolments at once cannot both take the last place.
        db.session.execute(select(Participant.id).where(Participant.id == member.id).with_for_update())
        held = db.session.scalar(
            select(func.count(Node.id)).where(Node.participant_id == member.id, Node.revoked_at.is_(None))
        )
        if held >= limit:
            raise Conflict(
                f"You have {held} nodes, the most a participant may enrol ({limit}): revoke one first.",
                code="node_limit",
            )
    try:
        node = nodes.create(name, owner, approved=_is_admin())
    except ValueError as exc:
        raise ApiError(str(exc), code="invalid_parameter") from None
    db.session.commit()
    environment = nodes.worker_environment(node)
    return (
        {
            "node": registry.describe(node),
            "secret": environment["GRID_NODE_SECRET"],
            "configuration": nodes.worker_configuration(node),
        },
        201,
        {"Location": url_for("api.nodes.show", node_id=node.id)},
    )


@bp.get("/<node_id>")
@require("jobs:read")
def show(node_id: str):
    return registry.describe(_visible(node_id))


def _active(node_id: str) -> Node:
    node = _visible(node_id)
    if node.revoked_at is not None:
        raise Conflict("The node is revoked.", code="node_revoked")
    return node


@bp.post("/<node_id>/approve")
@require("admin")
def approve(node_id: str):
    """An operator approves a pending node: it gets its broker user; its records are entered."""
    node = _active(node_id)
    nodes.approve(node)
    db.session.commit()
    return registry.describe(node)


@bp.post("/<node_id>/pause")
@require("nodes:write")
def pause(node_id: str):
    """Drain the node: it finishes its current work and takes no more until resumed."""
    node = _active(node_id)
    registry.pause(node, _who())
    db.session.commit()
    registry.tell_worker(node)
    return registry.describe(node)


@bp.post("/<node_id>/resume")
@require("nodes:write")
def resume(node_id: str):
    node = _active(node_id)
    registry.resume(node, _who())
    db.session.commit()
    registry.tell_worker(node)
    return registry.describe(node)


@bp.post("/<node_id>/revoke")
@require("nodes:write")
def revoke(node_id: str):
    """Revoke the node for good: everything it sends from now on is refused."""
    node = _active(node_id)
    registry.pause(node, _who())
    nodes.revoke(node)
    db.session.commit()
    registry.tell_worker(node)
    return registry.describe(node)
