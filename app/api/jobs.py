"""/api/v1/jobs: submit, follow, list and cancel jobs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request, url_for
from sqlalchemy.orm import joinedload

from app import job_events, jobs, webhooks
from app.api import params
from app.auth import current_token, require
from app.errors import ContentErased, InvalidParameter, NotFound, TooManyJobs
from app.models import Job, JobStep

bp = Blueprint("jobs", __name__, url_prefix="/jobs")


def _params() -> dict[str, Any]:
    return params.fields()


def _document() -> jobs.Document | None:
    upload = request.files.get("file")
    if upload is None:
        return None
    return jobs.Document(data=upload.read(), filename=upload.filename)


#: What a job's answer reads besides the job: its steps and their replicas, in the job's query.
_WITH_STEPS = (joinedload(Job.steps).joinedload(JobStep.replicas),)


def _owned(job_id: str, options: tuple = ()) -> Job:
    token = current_token()
    job = jobs.visible(job_id, token.owner, everyone="admin" in token.scope_set, options=options)
    if job is None:
        raise NotFound(f"No job {job_id:.64} among yours.")
    return job


@bp.post("/<kind>")
@require("jobs:write")
def submit(kind: str):
    """Submit a job of kind ocr, summarise, translate or pipeline: 202 and its address."""
    token = current_token()
    job = jobs.submit(kind, _params(), _document(), owner=token.owner, token=token, keep_rows=True)
    location = url_for("api.jobs.show", job_id=job.id)
    return jobs.describe(job, new=True), 202, {"Location": location}


@bp.post("/batch")
@require("jobs:write")
def batch():
    """Submit up to JOBS_BATCH_MAX jobs in one request: a JSON list, each item ``kind`` and the
    fields its single submission takes, checked as one is. All are recorded, in one transaction,
    or none (422 ``invalid_batch`` lists every refused item); 202 with the jobs as listed, in order."""
    items = params.json_array(current_app.config["JOBS_BATCH_MAX_BYTES"])
    most = current_app.config["JOBS_BATCH_MAX"]
    if not items:
        raise InvalidParameter(f"The batch holds no job: send a list of 1 to {most} jobs.")
    if len(items) > most:
        raise TooManyJobs(f"The batch holds {len(items)} jobs, more than {most}: send them in several.")
    token = current_token()
    created = jobs.submit_batch(items, owner=token.owner, token=token)
    return {"items": [jobs.describe(job, full=False) for job in created]}, 202


@bp.get("/<job_id>")
@require("jobs:read")
def show(job_id: str):
    job = _owned(job_id, _WITH_STEPS)
    body = jobs.describe(job)
    if job.callback_url:
        body["webhook_deliveries"] = webhooks.deliveries(job)  # the last attempts, newest first
    return body


@bp.get("/<job_id>/result")
@require("jobs:read")
def result(job_id: str):
    """The job's result alone; 410 ``content_erased`` once its content was erased (app.gdpr)."""
    job = _owned(job_id)
    if job.content_erased_at is not None:
        raise ContentErased(
            f"The content of job {job.id} was erased on {job.content_erased_at:%Y-%m-%d}: its result "
            "is gone for good (its metadata and cost stay at GET /api/v1/jobs/<id>)."
        )
    return {"id": job.id, "state": job.state, "result": jobs.result_of(job)}


@bp.get("/<job_id>/events")
@require("jobs:read")
def events(job_id: str):
    """The job's progress as Server-Sent Events, until it ends or EVENTS_MAX_SECONDS pass."""
    job = _owned(job_id)
    return job_events.response(job.id, request.headers.get("Last-Event-ID"), current_token().owner)


@bp.get("")
@require("jobs:read")
def index():
    """Your jobs, newest first: ?state=&kind=&page=&per_page=."""
    token = current_token()
    owner = token.owner
    filters = {}
    if "admin" in token.scope_set and not request.args.get("mine"):
        owner = params.query_text("owner")
        if owner:
            filters["owner"] = owner
    state, kind = params.query_text("state"), params.query_text("kind")
    page = params.query_int("page", 1, 1, 1_000_000)
    per_page = params.query_int("per_page", 20, 1, current_app.config["JOBS_PER_PAGE_MAX"])
    rows, total = jobs.listing(owner, state, kind, page, per_page)
    filters.update({name: value for name, value in (("state", state), ("kind", kind)) if value})
    if request.args.get("mine"):
        filters["mine"] = "1"
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
