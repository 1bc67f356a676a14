"""/api/v1/work: where a node fetches the input of the task the broker gave it, and tells how
far it has gone.

A task message carries only parameters; the document or text it works on stays here. The
node's worker asks for it with a start record signed by its own secret (``workers.protocol``,
kind ``started``): that request is the coordinator's own sight of the execution's start, and
the input is served to one node per attempt (docs/decisions/0009). No API token: the node's
signature is its credential. A refusal of a signed start is stored in the ledger's
rejections, with its reason; unsigned knocks are not (``app.ledger.executions.on_started``).
Progress reports (``app.progress``) are checked the same way and kept in the coordinator's own
keys: nodes write no progress in the broker.
"""

from __future__ import annotations

from flask import Blueprint, Response

import celeryconfig
from app import chat_stream, jobs, progress
from app.api import params
from app.errors import ApiError
from app.extensions import db
from app.ledger import executions
from app.ledger.verification import Refused
from workers.protocol import errors

bp = Blueprint("work", __name__, url_prefix="/work")

#: A start record is a few hundred bytes: a body larger than this is refused unread.
MAX_BODY_BYTES = 4096
#: HTTP status of each refusal. The node's worker lets the task go only when it is over or
#: never existed (410, 404); on anything else it hands the message back to the broker, unrun,
#: for whichever node may run it (409: another node holds this attempt; 503: ask again).
_STATUS = {
    "previous_attempt_pending": 503,
    "cross_node": 409,
    "not_started": 409,
    "bad_attempt": 409,
    # A replica checks a result: not on the node that produced it, nor (while another is online)
    # on one of the same participant, nor with another model file (app.validation.checks).
    "same_node": 409,
    "same_owner": 409,
    "other_model": 409,
    "no_input": 410,
    "step_finished": 410,
    "attempt_over": 410,
    "job_cancelled": 410,
    "never_dispatched": 404,
    "wrong_task": 404,
    "unknown_node": 403,
    "bad_signature": 403,
    "missing_signature": 403,
    "wrong_worker_name": 403,
    "stale": 403,
    "oversized": 413,
    "node_paused": 403,
    "out_of_sequence": 409,
}
#: A delta's body at most: its text, each character escaped in JSON (up to 12 bytes), and the
#: record around it.
MAX_DELTA_BODY_BYTES = 12 * celeryconfig.STREAM_MAX_DELTA_CHARS + MAX_BODY_BYTES
#: Seconds a node waits before handing back a replica it may not run: soon enough that the
#: replica is not delayed long when this node is the only one free, not so soon that it spins.
_REPLICA_RETRY_AFTER = 1


def _record(task_id: str, what: str, max_bytes: int = MAX_BODY_BYTES) -> dict:
    """The signed record in the body, naming ``task_id`` (a record for another task is kept as
    sent, with the task asked for, so the refusal shows both)."""
    body = params.body_at_most(max_bytes)
    if body is None:
        raise ApiError(f"A {what} record is under {max_bytes} bytes.", code="oversized", status=413)
    try:
        record = params.parse_json(body)
    except ValueError:
        raise ApiError(f"The body is not a JSON {what} record.", code="malformed") from None
    if not isinstance(record, dict):
        raise ApiError("The body is not a JSON object.", code="malformed")
    if record.get("task_id") != task_id:
        record = {**record, "task_id": f"{record.get('task_id')!s:.64} (asked for {task_id:.64})"}
    return record


@bp.post("/<task_id>/input")
def fetch_input(task_id: str):
    record = _record(task_id, "start")
    step, refused = executions.on_started(record)
    if refused is not None:
        db.session.commit()  # the refusal, as evidence
        raise ApiError(
            refused.detail or refused.reason,
            code=refused.reason,
            status=_STATUS.get(refused.reason, 400),
            retry_after=_REPLICA_RETRY_AFTER if refused.reason in errors.REPLICA_REFUSALS else None,
        )
    found = jobs.input_of(step)
    if found is None:  # a job queued before inputs were kept (an upgrade): it cannot run
        db.session.rollback()
        raise ApiError("This task's input is not kept by the coordinator.", code="no_input", status=410)
    kind, data = found
    db.session.commit()  # the sighting: this node holds this attempt
    return Response(data, mimetype="application/octet-stream", headers={"X-Grid-Input": kind})


@bp.post("/<task_id>/progress")
def report_progress(task_id: str):
    """How far the node that holds this attempt has gone (``app.progress``); 204 when kept."""
    record = _record(task_id, "progress")
    try:
        progress.report(record)
    except Refused as refused:
        db.session.rollback()
        raise ApiError(
            refused.detail or refused.reason, code=refused.reason, status=_STATUS.get(refused.reason, 400)
        ) from None
    db.session.rollback()  # nothing was written to the database
    return Response(status=204)


@bp.post("/<task_id>/delta")
def report_delta(task_id: str):
    """Text a streamed chat answer produced (``app.chat_stream``); 204 when kept. Only the node
    seen starting the attempt, in sequence, within the answer's bound."""
    record = _record(task_id, "delta", MAX_DELTA_BODY_BYTES)
    try:
        chat_stream.append(record)
    except Refused as refused:
        db.session.rollback()
        raise ApiError(
            refused.detail or refused.reason, code=refused.reason, status=_STATUS.get(refused.reason, 400)
        ) from None
    db.session.rollback()  # nothing was written to the database
    return Response(status=204)
