"""/api/v1/nodes: the registry — capabilities, state, uptime, compute hours; pause, resume,
revoke. Operators see every node, participants their own."""

from __future__ import annotations

from flask import Blueprint, current_app, url_for
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app import nodes, registry
from app.api import params
from app.auth import current_token, require
from app.errors import Conflict, InvalidParameter, NotFound, Unavailable, broker_away
from app.extensions import db
from app.models import Node, Participant

bp = Blueprint("nodes", __name__, url_prefix="/nodes")


def _is_admin() -> bool:
    return "admin" in current_token().scope_set


def _who() -> str:
    return registry.OPERATOR if _is_admin() else registry.OWNER


def _visible(node_id: str) -> Node:
    stored_id = params.uuid_id(node_id)  # ids are UUIDs: anything else names no node
    node = db.session.get(Node, stored_id) if stored_id else None
    if node is None or (not _is_admin() and node.participant.email != current_token().owner.lower()):
        raise NotFound(f"No node {node_id:.64} among yours.")
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
    body = params.fields()
    token = current_token()
    owner = body.get("owner") if _is_admin() and body.get("owner") else token.owner
    name = body.get("name") or ""
    if not isinstance(name, str) or not isinstance(owner, str):
        raise InvalidParameter("A node's name and its owner are text.")
    try:  # before any lookup: the database refuses some of what a client may send
        nodes.check_name(name)
        nodes.check_email(owner)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None
    if db.session.scalar(select(Node.id).where(Node.name == name)) is not None:
        raise Conflict(f"A node named {name!r} exists already.", code="node_exists")
    if not _is_admin():
        limit = current_app.config["NODES_PER_PARTICIPANT"]
        member = nodes.participant(owner)
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
        db.session.commit()
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None
    except IntegrityError:  # another enrolment took the name between our look and our insert
        db.session.rollback()
        raise Conflict(f"A node named {name!r} exists already.", code="node_exists") from None
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


def _tell_worker(node: Node, done: str) -> None:
    """Once the change is committed, tell the node's worker. The change stands whatever the
    broker says: while it is away the answer is 503 ``broker_unavailable`` (asking again is
    harmless: pausing or resuming twice changes nothing), and a worker that registers again is
    told anyway (``app.registry``)."""
    try:
        registry.tell_worker(node)
    except Exception as exc:
        if not broker_away(exc):
            raise
        raise Unavailable(
            f"Node {node.name} is {done}, but its worker could not be told: the broker is unreachable. "
            "Ask again shortly."
        ) from None


def _active(node_id: str) -> Node:
    node = _visible(node_id)
    if node.revoked_at is not None:
        raise Conflict("The node is revoked.", code="node_revoked")
    return node


@bp.post("/<node_id>/approve")
@require("admin")
def approve(node_id: str):
    """An operator approves a pending node: it gets its broker user; its records are entered."""
    node = _visible(node_id)
    nodes.approve_by_operator(node)
    return registry.describe(node)


@bp.post("/<node_id>/pause")
@require("nodes:write")
def pause(node_id: str):
    """Drain the node: it finishes its current work and takes no more until resumed."""
    node = _active(node_id)
    registry.pause(node, _who())
    db.session.commit()
    _tell_worker(node, "paused")
    return registry.describe(node)


@bp.post("/<node_id>/resume")
@require("nodes:write")
def resume(node_id: str):
    node = _active(node_id)
    registry.resume(node, _who())
    db.session.commit()
    _tell_worker(node, "resumed")
    return registry.describe(node)


@bp.post("/<node_id>/revoke")
@require("nodes:write")
def revoke(node_id: str):
    """Revoke the node for good: everything it sends from now on is refused."""
    node = _visible(node_id)
    nodes.revoke_for_good(node, _who())  # its broker user deleted (else 503, nothing saved)
    return registry.describe(node)
