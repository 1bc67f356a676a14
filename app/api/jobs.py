"""/api/v1/jobs: submit, follow, list and cancel jobs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request, stream_with_context, url_for
from sqlalchemy import func, select

from app import job_events, jobs
from app.api import params
from app.auth import current_token, require
from app.errors import InvalidParameter, NotFound
from app.extensions import db
from app.models import Job, JobState

bp = Blueprint("jobs", __name__, url_prefix="/jobs")


def _params() -> dict[str, Any]:
    return params.fields()


def _document() -> jobs.Document | None:
    upload = request.files.get("file")
    if upload is None:
        return None
    return jobs.Document(data=upload.read(), filename=upload.filename)


def _owned(job_id: str) -> Job:
    # Ids are UUIDs: anything else cannot name a job (nor reach the database, which refuses a
    # NUL byte in a query).
    stored_id = params.uuid_id(job_id)
    job = db.session.get(Job, stored_id) if stored_id else None
    token = current_token()
    if job is None or (job.owner != token.owner and "admin" not in token.scope_set):
        raise NotFound(f"No job {job_id:.64} among yours.")
    return job


@bp.post("/<kind>")
@require("jobs:write")
def submit(kind: str):
    """Submit a job of kind ocr, summarise, translate or pipeline: 202 and its address."""
    token = current_token()
    job = jobs.submit(kind, _params(), _document(), owner=token.owner, token=token)
    location = url_for("api.jobs.show", job_id=job.id)
    return jobs.describe(job), 202, {"Location": location}


@bp.get("/<job_id>")
@require("jobs:read")
def show(job_id: str):
    return jobs.describe(_owned(job_id))


@bp.get("/<job_id>/events")
@require("jobs:read")
def events(job_id: str):
    """The job's progress as Server-Sent Events, until it ends or EVENTS_MAX_SECONDS pass."""
    job_id = _owned(job_id).id
    body = job_events.stream(job_id, request.headers.get("Last-Event-ID"), job_events.Pacing.from_config())
    return Response(
        # The request's context is kept for the stream's life: the database session lives in it.
        stream_with_context(body),
        mimetype="text/event-stream",
        # X-Accel-Buffering: nginx passes each event on at once instead of buffering the answer.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@bp.get("")
@require("jobs:read")
def index():
    """Your jobs, newest first: ?state=&kind=&page=&per_page=."""
    token = current_token()
    query = select(Job)
    filters = {}
    if "admin" not in token.scope_set or request.args.get("mine"):
        query = query.where(Job.owner == token.owner)
    elif owner := params.query_text("owner"):
        query = query.where(Job.owner == owner)
        filters["owner"] = owner
    state, kind = params.query_text("state"), params.query_text("kind")
    if state:
        if state not in JobState.ALL:
            raise InvalidParameter(f"Unknown state {state!r}: one of {', '.join(JobState.ALL)}.")
        query = query.where(Job.state == state)
        filters["state"] = state
    if kind:
        if kind not in jobs.KINDS:
            raise InvalidParameter(f"Unknown kind {kind!r}: one of {', '.join(jobs.KINDS)}.")
        query = query.where(Job.kind == kind)
        filters["kind"] = kind
    if request.args.get("mine"):
        filters["mine"] = "1"
    page = params.query_int("page", 1, 1, 1_000_000)
    per_page = params.query_int("per_page", 20, 1, current_app.config["JOBS_PER_PAGE_MAX"])
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(
        query.order_by(Job.created_at.desc(), Job.id).offset((page - 1) * per_page).limit(per_page)
    ).all()
    more = page * per_page < total
    return {
        "items": [jobs.describe(job, full=False) for job in rows],
        "page": page,
        "per_page": per_page,
        "total": total,
        # Built from the parameters understood only: a query key is no argument of url_for's.
        "next": url_for("api.jobs.index", **filters, page=page + 1, per_page=per_page) if more else None,
    }


@bp.post("/<job_id>/cancel")
@require("jobs:write")
def cancel(job_id: str):
    return jobs.describe(jobs.cancel(_owned(job_id)))
