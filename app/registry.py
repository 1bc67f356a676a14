"""The node registry: what each node's worker registered, its heartbeats, its state and uptime.

Workers register their probe when they start and send a heartbeat every
``HEARTBEAT_SECONDS``, both signed with the node's secret and carried by the ledger queue like
every other record (docs/decisions/0007). The coordinator stamps them with its own clock.
The ledger's batch (``app.ledger.batch``) hands them to ``apply`` with the batch's context;
the checks shared with every record are ``app.ledger.verification``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, case, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert

import celeryconfig
from app import nodes
from app.errors import Conflict, PausedByOperator, Unavailable, broker_away
from app.extensions import db
from app.ledger import rules, settlement
from app.ledger.context import Context
from app.ledger.values import aware
from app.ledger.verification import Refused, as_evidence, reject, verify_node
from app.models import Node, NodeHeartbeat, Participant, utcnow
from app.validation import settings

log = logging.getLogger(__name__)

KINDS = ("register", "heartbeat", "stopping")
#: A node's states (``state``), in the order operators read them.
ONLINE, OFFLINE, PAUSED, PENDING, REVOKED = "online", "offline", "paused", "pending", "revoked"
STATES = (ONLINE, OFFLINE, PAUSED, PENDING, REVOKED)
WINDOWS = {"24h": timedelta(hours=24), "30d": timedelta(days=30)}
HOURS_SHOWN = Decimal("0.000001")


def slot_of(moment: datetime) -> int:
    return int(moment.timestamp()) // celeryconfig.HEARTBEAT_SECONDS


def apply(kind: str, record: Any, ctx: Context) -> None:
    """Apply a registration, heartbeat or stop notice from a node (checked by its schema)."""
    try:
        node_id = verify_node(record, ctx)
        node = db.session.get(Node, node_id)
        now = utcnow()
        _check_notice(kind, record, node, now)
    except Refused as refused:
        reject(kind, record, refused)
        return
    node.last_notice_at, node.last_notice_nonce = record["sent_at"], record["nonce"]
    node.last_seen_at = now
    ctx.heartbeats.setdefault(node_id, set()).add(slot_of(now))  # written by enter_heartbeats
    if kind == "register":
        node.queues = sorted(set(record["queues"]))  # volunteer queues only (its schema)
        node.concurrency = record["concurrency"]  # executions beyond it are not paid
        node.worker = record["worker"]  # this node's own name (_check_notice)
        node.probe = as_evidence(record["probe"])
        node.registered_at = now
        node.stopped_at = None
        if node.paused_at is not None:
            ctx.after_commit.append(lambda n=node.worker, q=list(node.queues): stop_consuming(n, q))
    elif kind == "stopping":
        node.stopped_at = now


def enter_heartbeats(ctx: Context) -> None:
    """The heartbeat intervals the batch's notices were seen in (``ctx.heartbeats``), in one
    statement; an interval a node was already seen in is kept once."""
    rows = [{"node_id": node_id, "slot": slot} for node_id, slots in ctx.heartbeats.items() for slot in slots]
    if rows:
        db.session.execute(
            insert(NodeHeartbeat).values(rows).on_conflict_do_nothing(index_elements=["node_id", "slot"])
        )
    ctx.heartbeats.clear()


def _check_notice(kind: str, record: dict[str, Any], node: Node, now: datetime) -> None:
    """A notice names this node's own worker, is not a copy of one already entered, and, for a
    heartbeat, says something about now."""
    if not nodes.is_own_worker(node.name, record["worker"]):
        raise Refused(
            "wrong_worker_name",
            f"node {node.name}'s worker is named {node.name}@<host>, not {record['worker']!r}",
        )
    sent_at = record["sent_at"]
    if sent_at > now.timestamp() + celeryconfig.CLOCK_SKEW_SECONDS:
        raise Refused(
            "clock_skew", f"sent {sent_at - now.timestamp():.0f} s in the future: set the node's clock"
        )
    last = node.last_notice_at
    if last is not None and (sent_at, record["nonce"]) <= (last, node.last_notice_nonce or ""):
        reason = "replay" if record["nonce"] == node.last_notice_nonce else "stale"
        raise Refused(reason, f"a notice sent at {sent_at} follows one sent at {last}")
    if kind == "heartbeat" and sent_at < now.timestamp() - celeryconfig.NODE_OFFLINE_AFTER_SECONDS:
        raise Refused("stale", f"a heartbeat sent {now.timestamp() - sent_at:.0f} s ago says nothing of now")


def stop_consuming(worker: str | None, queues: list[str]) -> None:
    """Ask a node's worker to take no new work from its queues (it finishes what it holds)."""
    if not worker:
        return
    control = current_app.extensions["celery"].control
    for queue in queues:
        control.cancel_consumer(queue, destination=[worker])


def start_consuming(worker: str | None, queues: list[str]) -> None:
    if not worker:
        return
    control = current_app.extensions["celery"].control
    for queue in queues:
        control.add_consumer(queue, destination=[worker])


#: Who may pause and resume a node: its owner, an operator, or the grid itself when the node's
#: results are found invalid too often (app.validation.checks); only an operator resumes a node
#: paused by an operator or on suspicion.
OWNER, OPERATOR, SUSPICION = "owner", "operator", "suspicion"
_OPERATORS_ONLY = (OPERATOR, SUSPICION)


def pause(node: Node, by: str) -> None:
    """Drain the node (not committed; then ``tell_worker``): its worker finishes the current
    task and takes no more. An operator's or the grid's pause is kept over an owner's."""
    if node.paused_at is None or by in _OPERATORS_ONLY:
        node.paused_by = by
    node.paused_at = node.paused_at or utcnow()


def resume(node: Node, by: str) -> None:
    """Let the node work again (not committed; then ``tell_worker``)."""
    if not may_resume(node, by):
        why = "an operator" if node.paused_by == OPERATOR else "the grid (its results were found invalid)"
        raise PausedByOperator(f"Node {node.name} was paused by {why}: ask the cooperative to resume it.")
    node.paused_at = node.paused_by = node.pause_reason = None


def tell_worker(node: Node) -> None:
    """Once the change is committed: tell the node's worker to stop or start consuming."""
    if node.paused_at is not None or node.revoked_at is not None:
        stop_consuming(node.worker, node.queues or [])
    else:
        start_consuming(node.worker, node.queues or [])


def set_paused(node: Node, paused: bool, by: str) -> None:
    """Pause or resume a node as its owner or an operator asks (``by``: ``OWNER`` or
    ``OPERATOR``), through the API (``POST /api/v1/nodes/<id>/pause|resume``) or the member's
    dashboard: committed, then its worker told.

    Raises ``Conflict`` (``node_revoked``) for a revoked node and ``PausedByOperator`` when its
    owner asks to resume a node an operator or the grid paused (nothing changed); ``Unavailable``
    (``broker_unavailable``) when the worker could not be told because the broker is away: the
    change stands (asking again is harmless, and a worker that registers again is told anyway).
    """
    # Locked and read afresh: a pause by the grid or an operator landing meanwhile is seen (and
    # kept) rather than overwritten by an owner's resume decided on a stale read.
    db.session.refresh(node, with_for_update=True)
    if node.revoked_at is not None:
        raise Conflict("The node is revoked.", code="node_revoked")
    (pause if paused else resume)(node, by)
    db.session.commit()
    try:
        tell_worker(node)
    except Exception as exc:
        if not broker_away(exc):
            raise
        done = "paused" if paused else "resumed"
        raise Unavailable(
            f"Node {node.name} is {done}, but its worker could not be told: the broker is unreachable. "
            "Ask again shortly."
        ) from None


def revoke_for_good(node: Node, by: str) -> bool:
    """What revoking a node does, through the API (``POST /api/v1/nodes/<id>/revoke``) or the
    operators' page: paused by ``by`` (``OWNER`` or ``OPERATOR``), its broker user deleted (which
    ends its sessions; ``broker_acl.BrokerAclError`` and nothing saved while the broker is away),
    committed, then its worker told to stop consuming. Returns whether the worker could be told
    (the revocation stands either way). ``Conflict`` (``node_revoked``) for a node revoked
    already."""
    db.session.refresh(node, with_for_update=True)  # one revocation at a time, on a fresh read
    if node.revoked_at is not None:
        raise Conflict("The node is revoked.", code="node_revoked")
    pause(node, by)
    nodes.revoke(node)
    db.session.commit()
    try:
        tell_worker(node)
    except Exception as exc:
        if not broker_away(exc):
            raise
        log.warning("node %s revoked; its worker could not be told: %s", node.name, exc)
        return False
    return True


def may_resume(node: Node, by: str) -> bool:
    """Whether ``by`` may resume the node (``resume``'s rule): an operator's or the grid's pause
    is lifted by an operator only."""
    return node.paused_at is None or node.paused_by not in _OPERATORS_ONLY or by == OPERATOR


def gone_since(node: Node | None, moment: datetime, now: datetime | None = None) -> bool:
    """Whether the worker the node ran at ``moment`` is gone: it registered again since (it
    restarted), said it was stopping, was revoked, or has been silent (no signed heartbeat or
    record) for the offline threshold since then. Only the node's own signed notices, or their
    absence, decide: no other node can make it look gone."""
    if node is None or node.revoked_at is not None:
        return True
    now = now or utcnow()
    if any(m is not None and aware(m) > moment for m in (node.registered_at, node.stopped_at)):
        return True
    last = max(aware(node.last_seen_at) or moment, moment)
    return (now - last).total_seconds() > celeryconfig.NODE_OFFLINE_AFTER_SECONDS


def state(node: Node, now: datetime | None = None) -> str:
    """One of ``STATES``. Reads only the columns of ``STATE_COLUMNS``."""
    now = now or utcnow()
    if node.revoked_at is not None:
        return REVOKED
    if node.approved_at is None:
        return PENDING
    if node.paused_at is not None:
        return PAUSED
    last = aware(node.last_seen_at)
    if last is None or node.stopped_at is not None:
        return OFFLINE
    if (now - last).total_seconds() > celeryconfig.NODE_OFFLINE_AFTER_SECONDS:
        return OFFLINE
    return ONLINE


#: What ``state`` reads: a caller counting many nodes loads only these.
STATE_COLUMNS = (Node.revoked_at, Node.approved_at, Node.paused_at, Node.last_seen_at, Node.stopped_at)


def state_clause(now: datetime | None = None) -> ColumnElement[str]:
    """``state`` as a SQL expression over ``STATE_COLUMNS``, for counting many nodes in the
    database (``app.figures``) instead of loading each: the same tests in the same order
    (tests/test_registry_listing.py checks the two agree on every combination)."""
    now = now or utcnow()
    silent_since = now - timedelta(seconds=celeryconfig.NODE_OFFLINE_AFTER_SECONDS)
    return case(
        (Node.revoked_at.is_not(None), REVOKED),
        (Node.approved_at.is_(None), PENDING),
        (Node.paused_at.is_not(None), PAUSED),
        (
            or_(Node.last_seen_at.is_(None), Node.stopped_at.is_not(None), Node.last_seen_at < silent_since),
            OFFLINE,
        ),
        else_=ONLINE,
    )


#: Heartbeats are also counted by runs of this many consecutive slots (``node_heartbeat_counts``,
#: kept by triggers: migration c4e7a1d9b2f6, which holds the same number).
SLOTS_PER_RUN = 60

_SPANS = (
    "unnest(CAST(:i{n} AS integer[]), CAST(:node{n} AS varchar[]), CAST(:a{n} AS bigint[]), "
    "CAST(:b{n} AS bigint[])) AS span (i, node_id, a, b)"
)
# A subquery a span: an index range scan each (a join of the spans would let the planner hash
# every heartbeat of every node: a second for a page of 100 nodes with 30 days of heartbeats).
# Without JIT, in the same round trip: compiling hundreds of small index scans (PostgreSQL's
# default above a cost) took longer than running them (19 of 49 ms for a page of 100 nodes).
_SEEN = text(
    "SET LOCAL jit = off; SELECT i, sum(seen) FROM ("
    "SELECT span.i, (SELECT count(*) FROM node_heartbeats AS h WHERE h.node_id = span.node_id "
    f"AND h.slot BETWEEN span.a AND span.b) AS seen FROM {_SPANS.format(n=1)} "
    "UNION ALL SELECT span.i, (SELECT sum(c.seen) FROM node_heartbeat_counts AS c "
    "WHERE c.node_id = span.node_id "
    f"AND c.run BETWEEN span.a AND span.b) FROM {_SPANS.format(n=2)}"
    ") AS counted GROUP BY i"
)


def _columns(spans: list[tuple[int, str, int, int]], n: int) -> dict[str, list[Any]]:
    columns = list(zip(*spans, strict=True)) or [(), (), (), ()]
    return {f"{name}{n}": list(values) for name, values in zip(("i", "node", "a", "b"), columns, strict=True)}


def seen_counts(spans: Sequence[tuple[str, int, int]]) -> list[int]:
    """For each ``(node id, first slot, last slot)``, how many of those slots the node was seen
    in, in two queries whatever the number of spans: the whole runs of ``SLOTS_PER_RUN`` slots
    inside a span from ``node_heartbeat_counts``, its ragged ends from ``node_heartbeats``."""
    slots, runs = [], []
    for i, (node_id, first, last) in enumerate(spans):
        if first > last:
            continue
        run_first = -(-first // SLOTS_PER_RUN)  # the first run that starts in the span
        run_last = (last + 1) // SLOTS_PER_RUN - 1  # the last run that ends in it
        if run_first > run_last:
            slots.append((i, node_id, first, last))
            continue
        runs.append((i, node_id, run_first, run_last))
        if first < run_first * SLOTS_PER_RUN:
            slots.append((i, node_id, first, run_first * SLOTS_PER_RUN - 1))
        if (run_last + 1) * SLOTS_PER_RUN <= last:
            slots.append((i, node_id, (run_last + 1) * SLOTS_PER_RUN, last))
    seen: dict[int, int] = {}
    if slots or runs:
        params = {**_columns(slots, 1), **_columns(runs, 2)}
        seen = {int(i): int(count or 0) for i, count in db.session.execute(_SEEN, params)}
    return [seen.get(i, 0) for i in range(len(spans))]


def _percent(seen: int, possible: int) -> float:
    return round(100.0 * min(seen, possible) / possible, 2) if possible > 0 else 0.0


def uptime(node: Node, window: timedelta, now: datetime | None = None) -> float:
    """Percentage of the heartbeat intervals in the window (or since enrolment) it was seen in."""
    now = now or utcnow()
    first, last = slot_of(max(now - window, aware(node.created_at))), slot_of(now)
    return _percent(seen_counts([(node.id, first, last)])[0], last - first + 1)


SECONDS_PER_DAY = 86_400


def uptime_by_day(
    nodes_seen: Sequence[Node], days: int = 30, now: datetime | None = None
) -> dict[str, list[tuple[date, float]]]:
    """Per node, the percentage of each UTC day's heartbeat intervals it was seen in (as
    ``uptime`` counts them), for the last ``days`` days, today so far included, from the day it
    was enrolled on: one query for all the nodes (``seen_counts``), whatever the number of
    heartbeats.

    A day's intervals are those that start in it, from the one the node was enrolled in and up
    to the current one."""
    now = now or utcnow()
    every = celeryconfig.HEARTBEAT_SECONDS
    first_day = now.astimezone(UTC).date() - timedelta(days=days - 1)
    start = int(datetime.combine(first_day, time(), UTC).timestamp())
    spans, where = [], []
    for node in nodes_seen:
        enrolled = slot_of(aware(node.created_at))
        for offset in range(days):
            day_start = start + offset * SECONDS_PER_DAY
            first = max(-(-day_start // every), enrolled)  # the first interval starting in the day
            last = min((day_start + SECONDS_PER_DAY - 1) // every, slot_of(now))
            if last >= first:  # else before its enrolment
                spans.append((node.id, first, last))
                where.append((node.id, first_day + timedelta(days=offset)))
    out: dict[str, list[tuple[date, float]]] = {node.id: [] for node in nodes_seen}
    for (node_id, day), (_, first, last), seen in zip(where, spans, seen_counts(spans), strict=True):
        out[node_id].append((day, _percent(seen, last - first + 1)))
    return out


def describe(node: Node, now: datetime | None = None) -> dict[str, Any]:
    return describe_many([node], now)[0]


def describe_many(listed: Sequence[Any], now: datetime | None = None) -> list[dict[str, Any]]:
    """``describe`` of each node, in a fixed number of queries whatever their number: their
    compute hours in one grouped query, their uptime over every window in another (the registry
    lists a thousand nodes in one answer). ``listed``: ``Node`` objects, or the rows of
    ``listing`` (the columns ``describe`` reads, their participant's among them)."""
    now = now or utcnow()
    granted = settlement.granted_ms_by_node([node.id for node in listed])
    uptimes = uptimes_of(listed, now)
    rules_now = settings.current()
    return [_described(node, now, granted.get(node.id, {}), uptimes[node.id], rules_now) for node in listed]


#: What ``describe`` reads of a node and its participant: ``listing`` reads only these.
LISTED_COLUMNS = (
    *(
        getattr(Node, name)
        for name in (
            "id name worker queues probe created_at registered_at last_seen_at stopped_at paused_at "
            "paused_by pause_reason approved_at revoked_at validated_streak validated_results "
            "invalid_results last_invalid_at"
        ).split()
    ),
    Participant.id.label("participant_id"),
    Participant.email.label("participant_email"),
)


def listing(*where: Any, page: int = 1, per_page: int | None = None) -> tuple[list[Any], int]:
    """The nodes matching ``where``, by name, as rows of ``LISTED_COLUMNS`` for ``describe_many``
    (no ORM objects to build for a list of a thousand nodes): page ``page`` of ``per_page`` (all
    of them when None), and how many match."""
    query = select(*LISTED_COLUMNS).join(Participant, Participant.id == Node.participant_id).where(*where)
    if per_page is not None:
        query = query.limit(per_page).offset((page - 1) * per_page)
    rows = list(db.session.execute(query.order_by(Node.name, Node.id)))
    if per_page is None or (page == 1 and len(rows) < per_page):
        return rows, len(rows)
    count = select(func.count(Node.id)).join(Participant, Participant.id == Node.participant_id)
    return rows, db.session.scalar(count.where(*where))


def _participant(node: Any) -> dict[str, Any]:
    if isinstance(node, Node):
        return {"id": node.participant.id, "email": node.participant.email}
    return {"id": node.participant_id, "email": node.participant_email}


def _described(
    node: Any, now: datetime, granted: dict[str, int], uptime_percent: dict[str, float], rules_now: Any
) -> dict:
    probe = node.probe or {}
    return {
        "id": node.id,
        "name": node.name,
        "participant": _participant(node),
        "state": state(node, now),
        "worker": node.worker,
        "queues": node.queues or [],
        "capabilities": probe.get("queues", {}),
        "hardware": probe.get("machine"),
        "software": probe.get("software"),
        "model": probe.get("model"),
        "created_at": _iso(node.created_at),
        "registered_at": _iso(node.registered_at),
        "last_seen_at": _iso(node.last_seen_at),
        "paused_at": _iso(node.paused_at),
        "paused_by": node.paused_by,
        "pause_reason": node.pause_reason,
        "trust": settings.trust_of(node, rules_now),
        "approved_at": _iso(node.approved_at),
        "revoked_at": _iso(node.revoked_at),
        "uptime_percent": uptime_percent,
        "compute_hours": {
            cap: str(rules.hours(int(ms)).quantize(rules.CENT / 10_000)) for cap, ms in granted.items()
        },
    }


def uptimes_of(listed: Sequence[Node], now: datetime | None = None) -> dict[str, dict[str, float]]:
    """Per node, ``uptime`` over each of ``WINDOWS``, each from the later of the window's start
    and the node's enrolment: one query for all the nodes and windows (``seen_counts``)."""
    now = now or utcnow()
    last = slot_of(now)
    spans = [
        (node.id, max(slot_of(now - window), slot_of(aware(node.created_at))), last)
        for node in listed
        for window in WINDOWS.values()
    ]
    seen = iter(seen_counts(spans))
    spans_of = iter(spans)
    out = {}
    for node in listed:
        percents = {}
        for name in WINDOWS:
            _, first, _ = next(spans_of)
            percents[name] = _percent(next(seen), last - first + 1)
        out[node.id] = percents
    return out


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
