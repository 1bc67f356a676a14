"""/api/v1/work: where a node fetches the input of the task the broker gave it.

A task message carries only parameters; the document or text it works on stays here. The
node's worker asks for it with a start record signed by its own secret (``workers.protocol``,
kind ``started``): that request is the coordinator's own sight of the execution's start, and
the input is served to one node per attempt (docs/decisions/0009). No API token: the node's
signature is its credential. Every refusal is stored in the ledger's rejections, with its
reason, as a refused start.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from app import jobs
from app.extensions import db
from app.ledger import recorder

bp = Blueprint("work", __name__, url_prefix="/work")

#: HTTP status of each refusal: the node's worker tells from it whether to let the task go
#: (409, 410, 404: another node has it, it is over, it never existed) or to give up (403, 400).
_STATUS = {
    "cross_node": 409,
    "bad_attempt": 409,
    "step_finished": 410,
    "job_cancelled": 410,
    "never_dispatched": 404,
    "wrong_task": 404,
    "unknown_node": 403,
    "bad_signature": 403,
    "missing_signature": 403,
    "wrong_worker_name": 403,
    "stale": 403,
}


@bp.post("/<task_id>/input")
def fetch_input(task_id: str):
    record = request.get_json(silent=True)
    if isinstance(record, dict) and record.get("task_id") != task_id:
        record = {**record, "task_id": f"{record.get('task_id')!s:.64} (asked for {task_id:.64})"}
    step, refused = recorder.on_started(record)
    if refused is not None:
        db.session.commit()  # the refusal, as evidence
        status = _STATUS.get(refused.reason, 400)
        return jsonify(error={"code": refused.reason, "message": refused.detail}), status
    kind, data = jobs.input_of(step)
    db.session.commit()  # the sighting: this node holds this attempt
    return Response(data, mimetype="application/octet-stream", headers={"X-Grid-Input": kind})
