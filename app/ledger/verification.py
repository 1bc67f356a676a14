"""Whether the ledger believes a record, and what it keeps of one it refuses.

Everything a node sends is a claim. A record must first fit its schema (``workers.protocol``),
then be signed by an enrolled, approved, unrevoked node's secret; an execution's start or
completion must also name that node's own worker, a task the coordinator dispatched and an
attempt within the retries. Whatever fails is ``Refused`` with a stable reason, and ``reject``
stores it in ``ledger_rejections`` with what the node sent (its payload left out).

The checks that depend on what the ledger already holds (who started an attempt, whether it is
entered) belong to the record's kind: ``app.ledger.executions``, ``app.registry``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import celeryconfig
from app import nodes
from app.extensions import db
from app.ledger.context import Context
from app.ledger.values import as_int, as_text
from app.models import JobStep, LedgerRejection
from workers import protocol
from workers.protocol import signing

log = logging.getLogger(__name__)


class Refused(Exception):
    """A record the ledger will not enter; ``reason`` is stored with it."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def as_evidence(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its payload, as JSON any database stores (no NaN, no NUL, not deep)."""
    evidence = {k: v for k, v in record.items() if k != "result"}
    if protocol.depth(evidence) > protocol.MAX_DEPTH:
        return {"too_deep": True, "fields": [as_text(key, 100) for key in list(evidence)[:50]]}
    try:
        encoded = json.dumps(evidence, allow_nan=False, default=str)
    except (TypeError, ValueError):
        return {"raw": as_text(repr(evidence), 4000)}
    if "\\u0000" in encoded or len(encoded) > 20_000:
        return {"raw": as_text(repr(evidence), 4000)}
    return json.loads(encoded)


def reject(kind: str, record: Any, refused: Refused) -> LedgerRejection:
    """Store a refused record with its reason."""
    if not isinstance(record, dict):
        record = {
            "raw": as_text(
                repr(record) if protocol.depth(record) <= protocol.MAX_DEPTH else "(too deep)", 2000
            )
        }

    def field(name: str, limit: int) -> str | None:  # what a node wrote there, if it is a scalar
        value = record.get(name, "")
        return as_text(value if isinstance(value, str | int | float) else type(value).__name__, limit)

    row = LedgerRejection(
        kind=as_text(kind, 16),
        reason=refused.reason,
        detail=as_text(refused.detail, 2000),
        task_id=field("task_id", 64),
        attempt=attempt
        if isinstance(attempt := record.get("attempt"), int) and -1 <= attempt < 2**31
        else -1,
        node_id=field("node_id", 64),
        signature=field("signature", 128),
        record=as_evidence(record),
    )
    db.session.add(row)
    log.warning("ledger refused a %s record: %s %s", kind, refused.reason, refused.detail)
    return row


def checked(kind: str, record: Any) -> Any:
    """The record if it fits its schema (``workers.protocol``), else why it is refused."""
    if isinstance(record, protocol.Invalid):  # not even a message (app.ledger.intake)
        return Refused(record.reason, record.detail)
    try:
        protocol.parse(kind, record)
    except protocol.Invalid as invalid:
        return Refused(invalid.reason, invalid.detail)
    return record


def verify_node(record: Any, ctx: Context) -> str:
    """The id of the enrolled, unrevoked node whose secret signed this record."""
    if not isinstance(record, dict):
        raise Refused("malformed", "a record is a JSON object")
    if not record.get("signature"):
        raise Refused("missing_signature", "the record is not signed")
    node_id = str(record.get("node_id") or "")
    secret = ctx.secret_of(node_id)
    if secret is None:
        raise Refused("unknown_node", f"no enrolled, approved, unrevoked node {node_id!r}")
    if not signing.verify(record, secret):
        raise Refused("bad_signature", f"the signature does not match node {node_id}'s secret")
    return node_id


def verify_execution(record: Any, ctx: Context) -> tuple[str, JobStep, int]:
    """Signature, node and dispatch checks shared by start and completion records: the node
    that signed, the step the coordinator dispatched, and the attempt."""
    node_id = verify_node(record, ctx)
    if not nodes.is_own_worker(ctx.names[node_id], record["node"]):
        raise Refused("wrong_worker_name", f"node {ctx.names[node_id]}'s worker is not {record['node']!r}")
    step = ctx.step(str(record.get("task_id", "")))
    if step is None:
        raise Refused("never_dispatched", f"the coordinator never dispatched task {record.get('task_id')!r}")
    if record.get("task_name") not in (None, step.task_name):
        raise Refused("wrong_task", f"task {step.task_id} is a {step.task_name}")
    attempt = as_int(record.get("attempt"), -1)
    if not 0 <= attempt <= celeryconfig.MAX_RETRIES:
        raise Refused(
            "bad_attempt", f"attempt {record.get('attempt')!r} is not 0 to {celeryconfig.MAX_RETRIES}"
        )
    return node_id, step, attempt
