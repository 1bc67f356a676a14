"""Volunteer nodes for the browser tests' pages: a member's node awaiting approval, enrolled in
the session's database as ``POST /api/v1/nodes`` enrols a member's (app.nodes.create)."""

from __future__ import annotations

import uuid
from functools import cache

OWNER = "browser-volunteer@koprogo.test"


@cache
def _app():
    # The session's database (tests/conftest.py sets its URL in the environment before any test).
    from app import create_app

    return create_app()


def pending_node(prefix: str = "browser-pending") -> str:
    """A new node of a member's, awaiting approval; returns its name."""
    from app import nodes
    from app.extensions import db

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with _app().app_context():
        nodes.create(name, OWNER, approved=False)
        db.session.commit()
    return name


def node_state(name: str) -> dict[str, object]:
    """When the node named ``name`` was approved and revoked (None if not)."""
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Node

    with _app().app_context():
        node = db.session.scalar(select(Node).where(Node.name == name))
        return {"approved_at": node.approved_at, "revoked_at": node.revoked_at}
