"""A member's jobs on the web: the submission form, a job's page followed live, the list of
one's jobs, and the job's result to copy or download.

The form goes through the API's own checks and job creation (``app.jobs.submit``, owner: the
signed-in member): the same stable error codes, given on the page as messages in the member's
language, the form kept filled. A job's page works without JavaScript (the state when it was
rendered, a Refresh link); with it, the page follows the job through the same Server-Sent
Events as ``GET /api/v1/jobs/<id>/events`` (``app.job_events``), here authenticated by the
session since a browser's EventSource sends no bearer token, or by polling ``/jobs/<id>/status``
where EventSource is missing or keeps failing (app/static/job.js). Only a job's owner, or an
operator, sees it: anyone else gets a 404, on every route of the job.
"""

from __future__ import annotations

import json
from decimal import Decimal
from math import ceil
from typing import Any

from flask import Response, abort, jsonify, make_response, redirect, render_template, request, url_for
from flask_babel import lazy_gettext
from flask_login import current_user, login_required
from werkzeug.exceptions import RequestEntityTooLarge

import celeryconfig as limits
from app import job_events, jobs
from app.api import limits as api_limits
from app.api import params
from app.errors import ApiError
from app.extensions import limiter
from app.models import Job, JobState, StepState
from app.web.account import _local, bp
from workers.protocol import errors
from workers.protocol.errors import BadInput, GridError

#: The form's quick actions, in the order shown.
ACTIONS = ("ocr", "summarise", "translate", "pipeline", "invoice")
#: Jobs a page of the list shows.
PER_PAGE = 20
#: Parts of a result that can be downloaded as text.
TEXT_PARTS = ("summary", "translation", "text")

# Codes of the page's own (the API's are workers.protocol.errors' and app.errors').
CHOOSE_ACTION = "choose_action"
FILE_OR_TEXT = "file_or_text"
NEEDS_DOCUMENT = "needs_document"
TEXT_ONLY = "translation_needs_text"

STATE_LABELS = {
    JobState.QUEUED: lazy_gettext("queued"),
    JobState.RUNNING: lazy_gettext("running"),
    JobState.SUCCEEDED: lazy_gettext("succeeded"),
    JobState.FAILED: lazy_gettext("failed"),
    JobState.CANCELLED: lazy_gettext("cancelled"),
    StepState.RETRYING: lazy_gettext("retrying"),
    StepState.SKIPPED: lazy_gettext("skipped"),
    StepState.VERIFYING: lazy_gettext("being checked by another node"),
}
KIND_LABELS = {
    "ocr": lazy_gettext("Text reading (OCR)"),
    "summarise": lazy_gettext("Summary"),
    "translate": lazy_gettext("Translation"),
    "pipeline": lazy_gettext("Whole pipeline"),
    "invoice": lazy_gettext("Invoice fields"),
    # Sent through the OpenAI-compatible API (/v1), not from the form.
    "chat": lazy_gettext("Chat (programs' API)"),
    "embeddings": lazy_gettext("Embeddings (programs' API)"),
}
STEP_LABELS = {
    "ocr": lazy_gettext("Reading the text (OCR)"),
    "summarise": lazy_gettext("Summary"),
    "translate": lazy_gettext("Translation"),
    "fields": lazy_gettext("Invoice fields read by a model"),
    "chat": lazy_gettext("Chat answer"),
    "embeddings": lazy_gettext("Embeddings"),
}
PART_LABELS = {
    "summary": lazy_gettext("Summary"),
    "translation": lazy_gettext("Translation"),
    "text": lazy_gettext("Text read"),
}
COPY_LABELS = {
    "summary": lazy_gettext("Copy the summary"),
    "translation": lazy_gettext("Copy the translation"),
    "text": lazy_gettext("Copy the text read"),
}
DOWNLOAD_LABELS = {
    "summary": lazy_gettext("Download the summary (.txt)"),
    "translation": lazy_gettext("Download the translation (.txt)"),
    "text": lazy_gettext("Download the text read (.txt)"),
}
TEXT_LANGUAGE_LABELS = {
    "fr": lazy_gettext("French"),
    "en": lazy_gettext("English"),
    "nl": lazy_gettext("Dutch"),
}
OCR_LANGUAGE_LABELS = {
    "fra": lazy_gettext("French"),
    "eng": lazy_gettext("English"),
    "nld": lazy_gettext("Dutch"),
}


@bp.app_context_processor
def _grid_limits() -> dict[str, Any]:
    """The grid's limits, which the pages' messages quote (app/templates/messages.html)."""
    return {"grid_limits": limits}


def state_class(state: str) -> str:
    """The stylesheet's class of a state: its symbol (✓ ✕ …) beside the word, never colour alone."""
    if state == JobState.SUCCEEDED:
        return "state-ok"
    if state in (JobState.FAILED, JobState.CANCELLED):
        return "state-bad"
    return "state-wait"


# --- the submission form ----------------------------------------------------------------------


def _defaults() -> dict[str, Any]:
    return {
        "action": "pipeline",
        "text": "",
        "languages": limits.OCR_DEFAULT_LANGUAGES.split("+"),
        "language": "fr",
        "target": "",
        "max_words": str(limits.SUMMARY_DEFAULT_WORDS),
        "ocr_quality": limits.OCR_QUALITIES[0],
        "force_ocr": False,
        "invoice_fields": False,
        "llm_fields": False,
    }


def _posted() -> dict[str, Any]:
    form = request.form
    return {
        "action": form.get("action", ""),
        "text": form.get("text", ""),
        "languages": form.getlist("languages"),
        "language": form.get("language", ""),
        "target": form.get("target", ""),
        "max_words": form.get("max_words", ""),
        "ocr_quality": form.get("ocr_quality", ""),
        "force_ocr": bool(form.get("force_ocr")),
        "invoice_fields": bool(form.get("invoice_fields")),
        "llm_fields": bool(form.get("llm_fields")),
    }


def _uploaded() -> jobs.Document | None:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return None  # a file input left empty sends a part without a name
    return jobs.Document(data=upload.read(), filename=upload.filename)


class PageRefusal(GridError):
    """What the form asks that no job kind does (the API's kinds are chosen by their URL)."""


def job_request(values: dict[str, Any], document: jobs.Document | None) -> tuple[str, dict[str, Any]]:
    """The job kind and the API parameters the form's choices make; the parameters are then
    checked by ``app.jobs.submit`` as the API's are. A summary of a document is the pipeline
    without translation (its text read first)."""
    action, text = values["action"], values["text"]
    if action not in ACTIONS:
        raise PageRefusal("Choose what to do with the document or text.", code=CHOOSE_ACTION)
    if document is not None and text.strip():
        raise PageRefusal("Give a file or a text, not both.", code=FILE_OR_TEXT)
    kind = "pipeline" if action == "summarise" and document is not None else action
    if kind == "translate" and document is not None:
        raise PageRefusal("Translation works on a pasted text.", code=TEXT_ONLY)
    if kind in jobs.DOCUMENT_KINDS and document is None and text.strip():
        raise PageRefusal("This action reads a document: choose a file.", code=NEEDS_DOCUMENT)
    chosen: dict[str, Any] = {}
    if kind in jobs.DOCUMENT_KINDS:
        chosen["languages"] = "+".join(values["languages"])
        chosen["force_ocr"] = values["force_ocr"]
        chosen["ocr_quality"] = values["ocr_quality"]
    if kind in ("summarise", "translate"):
        chosen["text"] = text
    if kind in ("summarise", "pipeline"):
        chosen["language"] = values["language"]
        chosen["max_words"] = values["max_words"]
    if kind == "translate":
        chosen["target"] = values["target"]
    if kind == "pipeline" and action == "pipeline":
        chosen["translate_to"] = values["target"]
        chosen["invoice_fields"] = values["invoice_fields"]
    if kind == "invoice":
        chosen["llm_fields"] = values["llm_fields"]
    return kind, chosen


def _form(values: dict[str, Any], status: int = 200, **context):
    return render_template(
        "submit.html",
        values=values,
        actions=ACTIONS,
        kind_labels=KIND_LABELS,
        text_languages=TEXT_LANGUAGE_LABELS,
        ocr_languages=OCR_LANGUAGE_LABELS,
        qualities=limits.OCR_QUALITIES,
        limits=limits,
        **context,
    ), status


def _status(exc: GridError) -> int:
    """The API's status for the same refusal (app.errors): 422 a document or text it cannot
    process, 413 one too large, 503 a fault of ours; 400 for the form's own."""
    if isinstance(exc, PageRefusal):
        return 400
    if not isinstance(exc, BadInput):
        return 503
    return 413 if exc.code == errors.DOCUMENT_TOO_LARGE else 422


def _file_given() -> bool:
    upload = request.files.get("file")
    return upload is not None and bool(upload.filename)


def _member_key() -> str:
    """A member's submissions are counted as one client, whatever their address."""
    return f"member:{current_user.get_id() or api_limits.address_key()}"


@bp.route("/submit", methods=["GET", "POST"])
@limiter.limit(api_limits.submit_limit, methods=["POST"], key_func=_member_key)
@login_required
def submit():
    """The form; a valid submission becomes a job (as ``POST /api/v1/jobs/<kind>``) and the
    member is sent to its page."""
    if request.method == "GET":
        return _form(_defaults())
    values = _posted()
    try:
        document = _uploaded()
        kind, chosen = job_request(values, document)
        job = jobs.submit(kind, chosen, document, owner=current_user.email)
    except GridError as exc:  # the document and text checks, and the page's own
        return _form(values, _status(exc), error=exc.code, show_code=True, file_lost=_file_given())
    except ApiError as exc:  # the broker away (503), a value the database refused
        return _form(values, exc.status, error=exc.code, show_code=True, file_lost=_file_given())
    return redirect(url_for("web.job", job_id=job.id), 303)


@bp.errorhandler(RequestEntityTooLarge)
def upload_too_large(exc: RequestEntityTooLarge):
    """An upload over MAX_CONTENT_LENGTH, refused before the form is read (the CSRF check reads
    it first): the form again with the API's code, ``document_too_large``."""
    if request.endpoint == "web.submit":
        return _form(_defaults(), 413, error=errors.DOCUMENT_TOO_LARGE, show_code=True, file_lost=True)
    return render_template("refused.html", reason="too_large"), 413


# --- a job ------------------------------------------------------------------------------------


def _visible(job_id: str) -> Job:
    job = jobs.visible(job_id, current_user.email, everyone=bool(current_user.operator))
    if job is None:
        # Another's job is answered as one that does not exist, on every route of a job.
        abort(make_response(render_template("refused.html", reason="job"), 404))
    return job


def _pages(summary: dict[str, Any]) -> tuple[int, int] | None:
    """(pages done, pages in all) of the job's OCR step, when it has one."""
    for step in summary.get("steps", []):
        if step["name"] == "ocr":
            progress = step.get("progress") or {}
            total = progress.get("pages_total") or (summary.get("input") or {}).get("pages")
            if not total:
                return None
            done = progress.get("pages_done", 0)
            if step["state"] == StepState.SUCCEEDED:
                done = total
            return done, total
    return None


def _cost(summary: dict[str, Any]) -> dict[str, Any] | None:
    cost = summary.get("cost") or {}
    if not cost.get("granted_seconds"):
        return None  # nothing granted (yet): no cost to show
    return {"eur": Decimal(cost["eur"]), "exact_eur": cost["exact_eur"], "split": cost.get("split", {})}


def _labels() -> dict[str, Any]:
    """What the page's script writes, in the page's language."""
    return {
        "states": {state: str(label) for state, label in STATE_LABELS.items()},
        "steps": {name: str(label) for name, label in STEP_LABELS.items()},
        "pages": str(lazy_gettext("%(done)s of %(total)s pages read")),
        "step_state": str(lazy_gettext("%(step)s: %(state)s")),
        "job_state": str(lazy_gettext("The job is %(state)s.")),
        "ended": str(lazy_gettext("The job has ended: %(state)s. Its result is shown below.")),
        "tokens": str(lazy_gettext("%(tokens)s tokens")),
        "copied": str(lazy_gettext("Copied to the clipboard.")),
        "copy_failed": str(lazy_gettext("Could not copy: select the text and copy it (Ctrl+C).")),
        "polling": str(lazy_gettext("Following the job every 2 seconds.")),
    }


def _job_page(job: Job, status: int = 200, **context):
    summary = jobs.describe(job)
    return render_template(
        "job.html",
        job=summary,
        final=job.state in JobState.FINAL,
        pages=_pages(summary),
        created=job.created_at,
        finished=job.finished_at,
        latency=(job.finished_at - job.created_at).total_seconds() if job.finished_at else None,
        cost=_cost(summary),
        co2=summary.get("co2_grams") or None,
        labels=_labels(),
        state_labels=STATE_LABELS,
        kind_labels=KIND_LABELS,
        step_labels=STEP_LABELS,
        part_labels=PART_LABELS,
        copy_labels=COPY_LABELS,
        download_labels=DOWNLOAD_LABELS,
        text_parts=TEXT_PARTS,
        language_labels=TEXT_LANGUAGE_LABELS,
        state_class=state_class,
        **context,
    ), status


@bp.get("/jobs/<job_id>")
@login_required
def job(job_id: str):
    """The job's state and steps, its result, cost and CO₂; a Cancel button while it runs."""
    return _job_page(_visible(job_id))


@bp.get("/jobs/<job_id>/events")
@login_required
def job_events_stream(job_id: str):
    """The job's Server-Sent Events, as ``GET /api/v1/jobs/<id>/events`` sends them, for the
    signed-in owner (an EventSource sends the session's cookie, never a bearer token)."""
    job = _visible(job_id)
    return job_events.response(job.id, request.headers.get("Last-Event-ID"), current_user.email)


@bp.get("/jobs/<job_id>/status")
@login_required
def job_status(job_id: str):
    """The job without its result, as each event gives it: what the page polls when it cannot
    follow the events."""
    return jsonify(jobs.describe(_visible(job_id), with_result=False))


def _attachment(body: str, filename: str, mimetype: str) -> Response:
    return Response(
        body,
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


@bp.get("/jobs/<job_id>/<any(summary, translation, text):part>.txt")
@login_required
def download_text(job_id: str, part: str):
    """One text of the job's result (its summary, translation or text read) as a .txt file."""
    found = _visible(job_id)
    if found.content_erased_at is not None:
        abort(make_response(render_template("refused.html", reason="erased"), 410))
    text = (jobs.result_of(found) or {}).get(part)
    if not isinstance(text, str):
        abort(make_response(render_template("refused.html", reason="job"), 404))
    return _attachment(text, f"job-{found.id[:8]}-{part}.txt", "text/plain")


@bp.get("/jobs/<job_id>/job.json")
@login_required
def download_json(job_id: str):
    """The whole job as the API shows it (steps, result, cost, CO₂) as a .json file."""
    found = _visible(job_id)
    body = json.dumps(jobs.describe(found), ensure_ascii=False, indent=2)
    return _attachment(body, f"job-{found.id[:8]}.json", "application/json")


@bp.post("/jobs/<job_id>/cancel")
@login_required
def cancel(job_id: str):
    """Cancel a queued or running job; back to its page (or to the list it was cancelled from)."""
    found = _visible(job_id)
    try:
        jobs.cancel(found)
    except ApiError as exc:  # job_finished (409), the database away
        return _job_page(found, exc.status, error=exc.code, show_code=True)
    return redirect(_local(request.form.get("next")) or url_for("web.job", job_id=found.id), 303)


# --- one's jobs -------------------------------------------------------------------------------


@bp.get("/jobs", endpoint="jobs")
@login_required
def jobs_list():
    """One's jobs, newest first, by state and kind, PER_PAGE a page."""
    state, kind = request.args.get("state", ""), request.args.get("kind", "")
    try:
        page = params.query_int("page", 1, 1, 1_000_000)
        rows, total = jobs.listing(current_user.email, state or None, kind or None, page, PER_PAGE)
    except ApiError as exc:
        rows, total, page = [], 0, 1
        context = {"error": exc.code, "show_code": True}
        status = exc.status
    else:
        context, status = {}, 200
    filters = {name: value for name, value in (("state", state), ("kind", kind)) if value}
    pages = max(1, ceil(total / PER_PAGE))
    return render_template(
        "jobs.html",
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        filters=filters,
        previous=url_for("web.jobs", **filters, page=page - 1) if page > 1 else None,
        next=url_for("web.jobs", **filters, page=page + 1) if page < pages else None,
        states=JobState.ALL,
        kinds=[kind for kind in jobs.KINDS if kind in KIND_LABELS],
        state_labels=STATE_LABELS,
        kind_labels=KIND_LABELS,
        state_class=state_class,
        final_states=JobState.FINAL,
        **context,
    ), status
