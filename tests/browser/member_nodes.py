"""The browser tests' member's nodes, for the dashboard's pages: approved nodes of the member the
site signed in (``Site.emails["member"]``), enrolled in the session's database as an operator
enrols them (app.nodes.create), with 30 days of heartbeats and ledger entries in this month and
the last, so that the uptime charts, the earnings and the statements have something to show."""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import cache

from tests.browser.site import Site

PREFIX = "browser-node"
#: Nodes enrolled on the dashboard by the pages' checks: revoked before each, to leave room.
ENROLLED_PREFIX = "browser-new"


@cache
def _app():
    # The session's database (tests/conftest.py sets its URL in the environment before any test).
    from app import create_app

    return create_app()


def member(site: Site) -> str:
    """The email of the site's member (signed in first if need be)."""
    site.browser("member")
    return site.emails["member"]


def new_node(email: str, prefix: str = PREFIX, days: int = 30) -> str:
    """A new approved node of ``email``'s, seen in most heartbeat intervals of the last ``days``
    days and just now (online); returns its name."""
    from sqlalchemy import text

    import celeryconfig
    from app import nodes, registry
    from app.extensions import db
    from app.models import utcnow

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    every = celeryconfig.HEARTBEAT_SECONDS
    with _app().app_context():
        node = nodes.create(name, email)
        now = utcnow()
        node.created_at = now - timedelta(days=days)
        node.last_seen_at = now
        node.queues = ["ocr"]
        last = registry.slot_of(now)
        per_day = 86_400 // every
        # Seen all along, but for half a day once a week (one statement).
        db.session.execute(
            text(
                "INSERT INTO node_heartbeats (node_id, slot) SELECT :node, s FROM generate_series(:a, :b) s "
                "WHERE (s / :per_day) % 7 <> 3 OR s % :per_day < :per_day / 2"
            ),
            {"node": node.id, "a": last - days * per_day, "b": last, "per_day": per_day},
        )
        db.session.commit()
    return name


def _previous(period: str) -> str:
    year, month = map(int, period.split("-"))
    return f"{year - 1}-12" if month == 1 else f"{year}-{month - 1:02d}"


@cache
def _earning_nodes(email: str) -> tuple[str, ...]:
    """Two nodes of ``email``'s that earned this month and the last (once a session)."""
    from sqlalchemy import select

    from app.extensions import db
    from app.ledger import periods
    from app.models import Node, utcnow
    from tests.test_settlement import _entry

    names = (new_node(email), new_node(email))
    with _app().app_context():
        closed = periods.closed()  # a settled month takes no more entries (the ledger refuses them)
        current = periods.open_period_for(utcnow(), closed)
        for index, name in enumerate(names):
            node = db.session.scalar(select(Node).where(Node.name == name))
            _entry(node, current, "ocr", 5_400_000, "0.60")
            _entry(node, current, "llm", 1_800_000, "1.20", held=index == 1)  # awaits validation
            if _previous(current) not in closed:
                _entry(node, _previous(current), "ocr", 7_200_000, "0.60")
        db.session.commit()
    return names


def dashboard(site: Site) -> str:
    """The member's dashboard, with two nodes that earned something."""
    _earning_nodes(member(site))
    return "/dashboard"


def statement(site: Site) -> str:
    """This month's statement of the member's nodes."""
    from app.ledger import periods
    from app.models import utcnow

    _earning_nodes(member(site))
    return f"/dashboard/statements/{periods.of(utcnow())}"


def room_to_enrol(site: Site) -> str:
    """The dashboard, the nodes its checks enrolled before revoked (a member enrols at most
    NODES_PER_PARTICIPANT nodes)."""
    from sqlalchemy import select

    from app.extensions import db
    from app.models import Node, Participant, utcnow

    path = dashboard(site)
    with _app().app_context():
        enrolled = db.session.scalars(
            select(Node)
            .join(Participant)
            .where(
                Participant.email == member(site),
                Node.name.startswith(ENROLLED_PREFIX),
                Node.revoked_at.is_(None),
            )
        )
        for node in enrolled:
            node.revoked_at = utcnow()  # pending: no broker user to delete
        db.session.commit()
    return path


def node_state(name: str) -> tuple[str, str | None]:
    """The registry's state of the node named ``name``, and who paused it."""
    from sqlalchemy import select

    from app import registry
    from app.extensions import db
    from app.models import Node

    with _app().app_context():
        node = db.session.scalar(select(Node).where(Node.name == name))
        return registry.state(node), node.paused_by
