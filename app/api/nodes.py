"""/api/v1/nodes: the registry — capabilities, state, uptime, compute hours; pause, resume,
revoke. Operators see every node, participants their own."""

from __future__ import annotations

from flask import Blueprint, current_app, url_for

from app import nodes, registry
from app.api import params
from app.auth import current_token, require
from app.errors import NotFound
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
    """Your nodes (an admin token: every node), by name: ?page=&per_page=."""
    mine = () if _is_admin() else (Participant.email == current_token().owner.lower(),)
    page = params.query_int("page", 1, 1, 1_000_000)
    per_page = params.query_int(
        "per_page", current_app.config["NODES_PER_PAGE"], 1, current_app.config["NODES_PER_PAGE_MAX"]
    )
    rows, total = registry.listing(*mine, page=page, per_page=per_page)
    more = page * per_page < total
    return {
        "items": registry.describe_many(rows),
        "page": page,
        "per_page": per_page,
        "total": total,
        "next": url_for("api.nodes.index", page=page + 1, per_page=per_page) if more else None,
    }


@bp.post("")
@require("nodes:write")
def enrol():
    """Enrol a node for yourself (an operator may name another owner): 201 with its id, its
    secret and the worker's configuration, shown this once. A participant's node is pending
    until an operator approves it; an operator's is approved at once."""
    body = params.fields()
    owner = body.get("owner") if _is_admin() and body.get("owner") else current_token().owner
    node = nodes.enrol(body.get("name") or "", owner, by_operator=_is_admin())
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
    node = _visible(node_id)
    registry.set_paused(node, True, _who())  # Conflict if revoked; the worker told (else 503)
    return registry.describe(node)


@bp.post("/<node_id>/resume")
@require("nodes:write")
def resume(node_id: str):
    node = _visible(node_id)
    registry.set_paused(node, False, _who())  # 403 paused_by_operator for an owner, if so
    return registry.describe(node)


@bp.post("/<node_id>/revoke")
@require("nodes:write")
def revoke(node_id: str):
    """Revoke the node for good: everything it sends from now on is refused."""
    node = _visible(node_id)
    registry.revoke_for_good(node, _who())  # its broker user deleted (else 503, nothing saved)
    return registry.describe(node)
