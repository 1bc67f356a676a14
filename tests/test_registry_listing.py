"""The registry's list (``GET /api/v1/nodes``) describes many nodes in a fixed number of queries
(``registry.describe_many``), with the same figures as each node's own reading: uptime per
window from the later of the window's start and its enrolment, compute hours that count
(held grants left out), its participant. On the session's PostgreSQL, no grid needed."""

from __future__ import annotations

import random
import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, select, text

from tests.test_settlement import LLM, OCR, _entry


@pytest.fixture
def ctx(flask_app):
    from app.extensions import db

    with flask_app.app_context():
        yield
        db.session.rollback()


def _node(created_days_ago: float, owner: str):
    from app import nodes
    from app.extensions import db
    from app.models import utcnow

    node = nodes.create(f"list-{uuid.uuid4().hex[:10]}", owner, approved=False)
    node.created_at = utcnow() - timedelta(days=created_days_ago)
    db.session.flush()
    return node


def _beats(node_id: str, first_slot: int, last_slot: int, step: int = 1) -> None:
    from app.extensions import db

    db.session.execute(
        text(
            "INSERT INTO node_heartbeats (node_id, slot) "
            "SELECT :node, s FROM generate_series(:a, :b, :step) s ON CONFLICT DO NOTHING"
        ),
        {"node": node_id, "a": first_slot, "b": last_slot, "step": step},
    )


def _statements(run) -> int:
    """How many SQL statements ``run()`` sent."""
    from app.extensions import db

    sent = []

    def count(*_args) -> None:
        sent.append(1)

    engine = db.session.get_bind()
    event.listen(engine, "before_cursor_execute", count)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(sent)


def test_many_nodes_are_described_as_each_alone_in_a_fixed_number_of_queries(ctx):
    from app import registry
    from app.extensions import db
    from app.ledger import settlement
    from app.models import Node, utcnow

    now = utcnow()
    owner = f"lister-{uuid.uuid4().hex[:6]}@koprogo.test"
    old, new, silent = _node(40, owner), _node(0.5, owner), _node(3, owner)
    last = registry.slot_of(now)
    day = 86_400 // 60
    _beats(old.id, last - 35 * day, last, step=3)  # a third of the intervals, beyond 30 days too
    _beats(new.id, last - 2 * day, last)  # before its enrolment too: not counted
    _entry(old, "2026-01", OCR, 3_600_000, "0.60")
    _entry(old, "2026-01", LLM, 1_800_000, "1.20")
    _entry(old, "2026-01", OCR, 7_200_000, "0.60", held=True)  # held: does not count
    _entry(new, "2026-01", LLM, 360_000, "1.20")
    db.session.flush()

    listed = [old, new, silent]
    described = registry.describe_many(listed, now)
    for node, info in zip(listed, described, strict=True):
        assert info["id"] == node.id and info["participant"]["email"] == owner
        assert info["uptime_percent"] == {
            name: registry.uptime(node, window, now) for name, window in registry.WINDOWS.items()
        }
        assert info["compute_hours"] == {
            capability: str(registry.rules.hours(ms).quantize(registry.rules.CENT / 10_000))
            for capability, ms in settlement.granted_ms_by_capability([node.id]).items()
        }
        assert info == registry.describe(node, now)
    assert 30 < described[0]["uptime_percent"]["30d"] < 36
    assert described[1]["uptime_percent"] == {"24h": 100.0, "30d": 100.0}
    assert described[2]["uptime_percent"] == {"24h": 0.0, "30d": 0.0}
    assert described[0]["compute_hours"] == {"ocr": "1.000000", "llm": "0.500000"}
    assert registry.describe_many([], now) == []

    # Ten times the nodes, the same number of statements (their participants loaded with them).
    more = [_node(1, owner) for _ in range(30)]
    for node in more:
        _beats(node.id, last - 10, last)
    db.session.flush()
    db.session.expire_all()

    def listing(ids: list[str]):
        def run() -> None:
            rows, total = registry.listing(Node.id.in_(ids))
            assert total == len(ids)
            assert registry.describe_many(rows, now) == registry.describe_many(
                db.session.scalars(select(Node).where(Node.id.in_(ids)).order_by(Node.name)).all(), now
            )

        return run

    few = _statements(listing([n.id for n in listed]))
    db.session.expire_all()
    many = _statements(listing([n.id for n in listed + more]))
    assert many == few <= 8, (few, many)


def test_the_node_list_pages_by_name_and_a_participant_sees_only_their_own(flask_app, make_token):
    from app import nodes
    from app.extensions import db

    owner = f"pager-{uuid.uuid4().hex[:6]}@koprogo.test"
    with flask_app.app_context():
        names = sorted(nodes.create(f"page-{uuid.uuid4().hex[:10]}", owner).name for _ in range(3))
        db.session.commit()
    web = flask_app.test_client()
    member = {"Authorization": f"Bearer {make_token(owner)}"}
    stranger = {"Authorization": f"Bearer {make_token(f'other-{uuid.uuid4().hex[:6]}@koprogo.test')}"}

    first = web.get("/api/v1/nodes?per_page=2", headers=member).get_json()
    assert [item["name"] for item in first["items"]] == names[:2]
    assert (first["page"], first["per_page"], first["total"]) == (1, 2, 3)
    second = web.get(first["next"], headers=member).get_json()
    assert [item["name"] for item in second["items"]] == names[2:] and second["next"] is None
    whole = web.get("/api/v1/nodes", headers=member).get_json()
    assert [item["name"] for item in whole["items"]] == names and whole["per_page"] == 100
    assert whole["total"] == 3 and whole["next"] is None
    assert web.get("/api/v1/nodes", headers=stranger).get_json()["items"] == []
    for bad in ("0", "1001", "-1", "x", "²"):
        answer = web.get(f"/api/v1/nodes?per_page={bad}", headers=member)
        assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "invalid_parameter"


def test_heartbeats_are_counted_by_runs_as_inserted_and_deleted_and_any_span_reads_as_the_raw_count(ctx):
    """``node_heartbeat_counts`` (kept by triggers) equals the heartbeats grouped by run after
    inserts, repeated inserts and deletes, and ``seen_counts`` of any span, ragged or whole,
    equals counting the raw heartbeats in it."""
    from app import registry
    from app.extensions import db

    versions = Path(__file__).resolve().parent.parent / "migrations" / "versions"
    migration = versions / "c4e7a1d9b2f6_heartbeat_counts.py"
    baked = re.search(r"^SLOTS_PER_RUN = (\d+)$", migration.read_text(), re.MULTILINE)
    assert baked and int(baked.group(1)) == registry.SLOTS_PER_RUN  # the triggers count by the same runs

    owner = f"runs-{uuid.uuid4().hex[:6]}@koprogo.test"
    beating = [_node(10, owner).id for _ in range(3)]
    chance = random.Random(7)
    base = registry.slot_of(registry.utcnow()) - 5_000
    for node_id in beating:
        _beats(node_id, base, base + 4_000, step=chance.choice([1, 2, 7]))
        _beats(node_id, base + 100, base + 900)  # partly seen already: those kept once
    db.session.execute(
        text("DELETE FROM node_heartbeats WHERE node_id = :node AND slot % 5 = 0 AND slot < :upto"),
        {"node": beating[0], "upto": base + 2_345},
    )

    def grouped(table_sql: str) -> dict:
        rows = db.session.execute(text(table_sql), {"nodes": beating})
        return {(node, run): seen for node, run, seen in rows if seen}

    assert grouped(
        "SELECT node_id, run, seen FROM node_heartbeat_counts WHERE node_id = ANY(:nodes)"
    ) == grouped(
        f"SELECT node_id, slot / {registry.SLOTS_PER_RUN}, count(*) FROM node_heartbeats "
        "WHERE node_id = ANY(:nodes) GROUP BY 1, 2"
    )

    spans = [(node_id, base - 50, base + 4_050) for node_id in beating]  # beyond both ends
    spans += [(beating[1], base + 60, base + 119), (beating[2], base + 61, base + 61), (beating[0], 10, 5)]
    for _ in range(60):
        first = base + chance.randrange(-100, 4_100)
        spans.append((chance.choice(beating), first, first + chance.randrange(0, 1_500)))
    raw = [
        db.session.scalar(
            text("SELECT count(*) FROM node_heartbeats WHERE node_id = :node AND slot BETWEEN :a AND :b"),
            {"node": node_id, "a": first, "b": last},
        )
        for node_id, first, last in spans
    ]
    assert registry.seen_counts(spans) == raw
    assert raw[5] == 0 and min(raw[:3]) > 0  # the empty span, and the nodes' whole beating


def test_nodes_are_counted_by_state_in_the_database_as_the_registry_reads_each_one(ctx):
    """``registry.state_clause`` (the counts of /metrics, the stats and the operators' page) gives
    every node the state ``registry.state`` gives it, on each side of the offline threshold."""
    import itertools
    from collections import Counter

    import celeryconfig
    from app import figures, registry
    from app.extensions import db
    from app.models import Node, utcnow

    now = utcnow()
    silent = timedelta(seconds=celeryconfig.NODE_OFFLINE_AFTER_SECONDS)
    last_seen = (
        None,
        now,
        now - silent + timedelta(seconds=1),
        now - silent,
        now - silent - timedelta(milliseconds=1),
        now - timedelta(days=1),
    )
    made = []
    queues = itertools.cycle([None, [], ["ocr"], ["llm", "ocr"], ["llm"]])
    for revoked, approved, paused, stopped, seen in itertools.product(
        (None, now), (None, now), (None, now), (None, now), last_seen
    ):
        node = _node(1, "states@koprogo.test")
        node.revoked_at, node.approved_at, node.paused_at, node.stopped_at = (
            revoked,
            approved,
            paused,
            stopped,
        )
        node.last_seen_at = seen
        # The online ones (approved, never paused nor stopped, seen lately) all serve a queue.
        online = (
            (revoked, paused, stopped) == (None, None, None) and approved and seen and seen > now - silent
        )
        node.queues = ["llm", "ocr"] if online else next(queues)
        made.append(node)
    db.session.flush()
    ids = [node.id for node in made]
    in_sql = dict(
        db.session.execute(select(Node.id, registry.state_clause(now)).where(Node.id.in_(ids))).all()
    )
    assert {node.id: registry.state(node, now) for node in made} == in_sql
    assert set(in_sql.values()) == set(registry.STATES)  # every state met

    everyone = db.session.scalars(select(Node)).all()
    by_state = Counter(registry.state(node, now) for node in everyone)
    assert figures.nodes_by_state(db.session, now) == {
        state: by_state.get(state, 0) for state in registry.STATES
    }
    online = Counter(
        queue
        for node in everyone
        if registry.state(node, now) == registry.ONLINE
        for queue in set(node.queues or [])
    )
    assert figures.nodes_online_by_capability(db.session, now) == {
        queue: online.get(queue, 0) for queue in celeryconfig.VOLUNTEER_QUEUES
    }
    assert sum(figures.nodes_online_by_capability(db.session, now).values()) > 0
