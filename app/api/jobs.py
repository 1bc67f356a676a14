"""/api/v1/jobs: submit, follow, list and cancel jobs."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, current_app, request, url_for
from sqlalchemy import func, select

from app import jobs
from app.auth import current_token, require
from app.errors import ApiError, NotFound
from app.extensions import db
from app.models import Job, JobState

bp = Blueprint("jobs", __name__, url_prefix="/jobs")


def _params() -> dict[str, Any]:
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError("The JSON body must be an object.", code="invalid_json")
        return body
    return request.form.to_dict()


def _document() -> jobs.Document | None:
    upload = request.files.get("file")
    if upload is None:
        return None
    return jobs.Document(data=upload.read(), filename=upload.filename)


def _job_id(value: str) -> str | None:
    """A job id in its stored form, or None: ids are UUIDs, and anything else cannot name a job
    (nor reach the database: PostgreSQL refuses a NUL byte in a query)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def _owned(job_id: str) -> Job:
    stored_id = _job_id(job_id)
    job = db.session.get(Job, stored_id) if stored_id else None
    token = current_token()
    if job is None or (job.owner != token.owner and "admin" not in token.scope_set):
        raise NotFound(f"No job {job_id} among yours.")
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


@bp.get("")
@require("jobs:read")
def index():
    """Your jobs, newest first: ?state=&kind=&page=&per_page=."""
    token = current_token()
    query = select(Job)
    if "admin" not in token.scope_set or request.args.get("mine"):
        query = query.where(Job.owner == token.owner)
    elif owner := request.args.get("owner"):
        if "\x00" in owner:  # PostgreSQL refuses it in a query, and no owner has one
            raise ApiError("owner must not contain a NUL byte.", code="invalid_parameter")
        query = query.where(Job.owner == owner)
    state, kind = request.args.get("state"), request.args.get("kind")
    if state:
        if state not in JobState.ALL:
            raise ApiError(
                f"Unknown state {state!r}: one of {', '.join(JobState.ALL)}.", code="invalid_parameter"
            )
        query = query.where(Job.state == state)
    if kind:
        if kind not in jobs.KINDS:
            raise ApiError(
                f"Unknown kind {kind!r}: one of {', '.join(jobs.KINDS)}.", code="invalid_parameter"
            )
        query = query.where(Job.kind == kind)
    page = request.args.get("page", 1, type=int)
    per_page = request.args.get("per_page", 20, type=int)
    if not 1 <= page <= 1_000_000 or not 1 <= per_page <= current_app.config["JOBS_PER_PAGE_MAX"]:
        raise ApiError(
            "page must be from 1 to 1000000 and per_page from 1 to "
            f"{current_app.config['JOBS_PER_PAGE_MAX']}.",
            code="invalid_parameter",
        )
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
        "next": url_for("api.jobs.index", **{**request.args, "page": page + 1}) if more else None,
    }


@bp.post("/<job_id>/cancel")
@require("jobs:write")
def cancel(job_id: str):
    return jobs.describe(jobs.cancel(_owned(job_id)))
