"""Jobs: validate a submission, record it, dispatch its steps to the capability queues,
cancel it, and describe it. Used by the API and by ``manage.py submit``.

A job's input (the document, the text) stays with the coordinator: a task message carries only
its parameters, and the node that starts an attempt fetches its input by reference
(``app.api.work``, docs/decisions/0009). A pipeline's steps go to different queues, so to
different machines, one after the other: the coordinator sends each step once the ledger has
entered the one before, whose result is then the next step's input. Every step's task id is
chosen here, before dispatch, so the ledger can tell a dispatched execution from one nobody
asked for. Every state a job or a step takes is set by ``app.lifecycle``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import func, select

import celeryconfig as cc
from app import carbon, footprints, lifecycle, progress, webhooks
from app.errors import (
    ApiError,
    BatchRefused,
    Conflict,
    InvalidParameter,
    Unavailable,
    bad_input_status,
    broker_away,
)
from app.extensions import db
from app.ledger import settlement
from app.models import (
    ApiToken,
    ExecutionSighting,
    Job,
    JobInput,
    JobState,
    JobStep,
    LedgerEntry,
    StepState,
    new_id,
    utcnow,
)
from workers.protocol import chat as chat_checks
from workers.protocol import documents, errors, texts
from workers.protocol.errors import BadInput

log = logging.getLogger(__name__)

KINDS = ("ocr", "summarise", "translate", "pipeline", "invoice", "chat", "embeddings", "noop")
DOCUMENT_KINDS = ("ocr", "pipeline", "invoice")

#: Step name → (task name, queue).
STEPS = {
    "ocr": (cc.TASK_OCR, cc.OCR_QUEUE),
    "summarise": (cc.TASK_SUMMARISE, cc.LLM_QUEUE),
    "translate": (cc.TASK_TRANSLATE, cc.LLM_QUEUE),
    "fields": (cc.TASK_INVOICE_FIELDS, cc.LLM_QUEUE),
    "chat": (cc.TASK_CHAT, cc.LLM_QUEUE),
    "embeddings": (cc.TASK_EMBEDDINGS, cc.LLM_QUEUE),
    "noop": (cc.TASK_NOOP, cc.LLM_QUEUE),
}
#: Kinds of the OpenAI-compatible API (app.api.openai_compat): their input is JSON, their one
#: step's result is not re-run on another node (docs/decisions/0018).
OPENAI_KINDS = ("chat", "embeddings")
#: What a ``noop`` job's node fetches: a few bytes, so that the job takes the whole path of one.
NOOP_INPUT = b"noop"


@dataclass
class Document:
    data: bytes
    filename: str | None


def _text_language(params: dict[str, Any], key: str, default: str | None) -> str | None:
    value = params.get(key, default)
    return default if value in (None, "") else texts.check_language(value, key)


def _inspect(document: Document | None) -> documents.DocumentInfo:
    if document is None:
        raise BadInput("Attach the document as the multipart field 'file'.", code=errors.EMPTY_DOCUMENT)
    documents.check_size(len(document.data))  # before anything is written to disk
    kind = documents.sniff(document.data[:16])
    with tempfile.TemporaryDirectory(prefix="grid-upload-") as folder:
        path = os.path.join(folder, f"upload.{kind}")
        with open(path, "wb") as handle:
            handle.write(document.data)
        return documents.inspect(path)


def offered_kinds(config: Any) -> tuple[str, ...]:
    """The kinds this grid takes (``noop`` only where GRID_NOOP_JOBS is on): what its refusals
    and its OpenAPI document list."""
    return KINDS if config["NOOP_JOBS"] else tuple(kind for kind in KINDS if kind != "noop")


def plan(kind: str, params: dict[str, Any], document: Document | None) -> tuple[dict, list[str], JobInput]:
    """Check a submission; returns the job's normalised parameters, its steps and its input.

    Raises ``BadInput`` with a stable code for anything that can be known now.
    """
    if kind not in KINDS:
        raise BadInput(
            f"Unknown job kind {kind!r}: choose from {', '.join(offered_kinds(current_app.config))}.",
            code=errors.INVALID_PARAMETER,
        )
    if kind == "noop":
        # Only where the operator turned it on (a benchmark's grid): elsewhere a no-op would have
        # nodes granted compute time for nothing.
        if not current_app.config["NOOP_JOBS"]:
            raise BadInput("Job kind 'noop' is not offered on this grid.", code=errors.INVALID_PARAMETER)
        return {}, ["noop"], JobInput(kind="text", data=NOOP_INPUT)
    steps: list[str] = []
    clean: dict[str, Any] = {}
    job_input = None
    if kind in DOCUMENT_KINDS:
        clean["languages"] = documents.parse_languages(params.get("languages"))
        # Read every page with Tesseract, even one whose own text layer is usable.
        clean["force_ocr"] = documents.parse_flag(params.get("force_ocr"), "force_ocr")
        # `best`: small print enlarged too, for more time than raw Tesseract's 1.2×.
        clean["ocr_quality"] = documents.parse_quality(params.get("ocr_quality"))
        info = _inspect(document)
        job_input = JobInput(kind="document", data=document.data)
        steps.append("ocr")
        clean["pages"] = info.page_count
        clean["document_type"] = info.kind
    if kind == "invoice":
        clean["invoice_fields"] = True
        # A model reads the fields the rules miss (an `llm` node; kept only if printed in the text).
        clean["llm_fields"] = documents.parse_flag(params.get("llm_fields"), "llm_fields")
        if clean["llm_fields"]:
            steps.append("fields")
    elif documents.parse_flag(params.get("llm_fields"), "llm_fields"):
        raise BadInput("llm_fields applies to invoice jobs only.", code=errors.INVALID_PARAMETER)
    elif kind == "pipeline":
        # The pipeline can read the document's invoice or receipt fields too.
        clean["invoice_fields"] = documents.parse_flag(params.get("invoice_fields"), "invoice_fields")
    if kind == "chat":
        messages = chat_checks.check_messages(params.get("messages"))
        clean["max_tokens"] = chat_checks.check_max_tokens(params.get("max_tokens"))
        clean["temperature"] = chat_checks.check_temperature(params.get("temperature"))
        clean["stop"] = chat_checks.check_stop(params.get("stop"))
        clean["model"] = params["model"][:128] if isinstance(params.get("model"), str) else None
        job_input = JobInput(kind="chat", data=json.dumps(messages, ensure_ascii=False).encode("utf-8"))
        steps.append("chat")
    if kind == "embeddings":
        inputs = chat_checks.check_embedding_inputs(params.get("input"))
        clean["inputs"] = len(inputs)
        clean["model"] = params["model"][:128] if isinstance(params.get("model"), str) else None
        job_input = JobInput(kind="embeddings", data=json.dumps(inputs, ensure_ascii=False).encode("utf-8"))
        steps.append("embeddings")
    if kind in ("summarise", "translate"):
        job_input = JobInput(kind="text", data=texts.check_text(params.get("text")).encode("utf-8"))
    if kind in ("summarise", "pipeline"):
        clean["language"] = _text_language(params, "language", "fr")
        clean["max_words"] = texts.check_max_words(params.get("max_words", cc.SUMMARY_DEFAULT_WORDS))
        steps.append("summarise")
    if kind == "translate":
        clean["target"] = _text_language(params, "target", None)
        if clean["target"] is None:
            raise BadInput(
                "Say which language to translate into: target = fr, en or nl.", code=errors.UNKNOWN_LANGUAGE
            )
        steps.append("translate")
    if kind == "pipeline":
        clean["translate_to"] = _text_language(params, "translate_to", None)
        if clean["translate_to"]:
            steps.append("translate")
    return clean, steps, job_input


def step_kwargs(job: Job, step: JobStep) -> dict[str, Any]:
    """Options a step's task takes by name, only when set (a worker of an earlier version,
    which does not know them, then still runs every other step)."""
    kwargs: dict[str, Any] = {}
    if step.name == "ocr" and job.params.get("force_ocr"):
        kwargs["force_ocr"] = True
    if step.name == "ocr" and job.params.get("ocr_quality", "standard") != "standard":
        kwargs["quality"] = job.params["ocr_quality"]
    return kwargs


def step_args(job: Job, step: JobStep) -> tuple:
    """The task arguments of a step: its parameters, never its input (fetched by reference)."""
    params = job.params
    if step.name == "ocr":
        return (params["languages"],)
    if step.name == "summarise":
        return (params["language"], params["max_words"])
    if step.name in ("fields", "embeddings", "noop"):
        return ()
    if step.name == "chat":
        return (params["max_tokens"], params["temperature"], params["stop"])
    return (params.get("target") or params["translate_to"],)


def invoice_fields(step: JobStep) -> dict[str, Any] | None:
    """An invoice's or a receipt's fields, read by rules (``app.invoices.fields``) from the
    text of a succeeded OCR step whose job asks for them: computed by the coordinator from the
    text the grid accepted, never taken from a node, and when the result is read rather than in
    the ledger's transaction (a long document takes seconds)."""
    if step.name != "ocr" or not step.job.params.get("invoice_fields") or not isinstance(step.result, dict):
        return None
    text = step.result.get("text")
    if not isinstance(text, str):
        return None
    from app.invoices import fields

    return fields.extract(text.split(documents.PAGE_BREAK))


def input_of(step: JobStep) -> tuple[str, bytes] | None:
    """(kind, bytes) a step works on: the job's document or text for the first step, the
    entered result of the step before for the others; None if there is none."""
    job = step.job
    if step.position == 0:
        stored = db.session.get(JobInput, job.id)
        return (stored.kind, stored.data) if stored is not None else None
    before = next(s for s in job.steps if s.position == step.position - 1)
    text = (before.result or {}).get(texts.RESULT_TEXT[before.name])
    return "text", (text if isinstance(text, str) else "").encode("utf-8")


def _display_name(filename: str | None) -> str | None:
    """The uploaded file's name as we show it: control characters dropped, since a name is
    the client's to choose and PostgreSQL refuses a NUL byte in text."""
    name = "".join(char for char in filename or "" if char.isprintable())
    return name[:255] or None


def prepare(
    kind: str, params: dict[str, Any], document: Document | None, owner: str, token: ApiToken | None = None
) -> tuple[Job, JobInput]:
    """Check a submission and build its rows (the job, its steps, its input), not yet in the
    session. Raises ``BadInput`` or ``CallbackRefused`` with a stable code for anything that can
    be known now. ``params["callback_url"]``: where its events are POSTed, signed with the
    token's webhook secret (app.webhooks): a job submitted without a token takes none."""
    callback_url = params.get("callback_url")
    if callback_url in (None, ""):
        callback_url = None
    elif token is None:
        raise webhooks.CallbackRefused("callback_url refused: only a job submitted with a token has one.")
    else:
        webhooks.check_url(callback_url)
    clean, steps, job_input = plan(kind, params, document)
    job = Job(
        id=new_id(),  # chosen here: the input row names it, and nothing is read back
        kind=kind,
        owner=owner,
        token_id=token.id if token else None,
        params=clean,
        callback_url=callback_url,
    )
    if document is not None:
        job.input_name = _display_name(document.filename)
        job.input_type = documents.MEDIA_TYPES.get(clean.get("document_type", ""), None)
        job.input_bytes = len(document.data)
        job.input_pages = clean.get("pages")
    for position, name in enumerate(steps):
        task_name, queue = STEPS[name]
        job.steps.append(JobStep(position=position, name=name, task_name=task_name, queue=queue))
    job_input.job_id = job.id
    return job, job_input


def submit(
    kind: str,
    params: dict[str, Any],
    document: Document | None,
    owner: str,
    token: ApiToken | None = None,
    *,
    keep_rows: bool = False,
) -> Job:
    """Validate, record and dispatch a job; returns it queued (or failed if the broker is down).
    ``keep_rows``: the caller describes the job at once from what was written (the API's answer,
    ``describe(new=True)``) and reads nothing else in this session: the commit does not expire
    the rows, so they are not read back. A caller that then waits for the job (the /v1 routes)
    must leave it False: it reads the job afresh after a rollback, which expires nothing when no
    transaction is open. See ``prepare`` for ``params["callback_url"]``."""
    job, job_input = prepare(kind, params, document, owner, token)
    _record([(job, job_input)], keep_rows=keep_rows)
    unsent = _send_first_steps([job])
    if unsent:
        raise Unavailable("The job could not be queued: the broker is unreachable; try again later.")
    return job


#: Kinds a batch may hold: those whose input is JSON (a document is uploaded with its own request).
BATCH_KINDS = tuple(kind for kind in KINDS if kind not in DOCUMENT_KINDS)


@dataclass
class Refusal:
    """Why one item of a batch was refused: its place in the batch, the code and status the
    single submission would have been answered with, and the message."""

    index: int
    code: str
    message: str
    status: int

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "message": self.message, "status": self.status}


def _refusal(index: int, exc: BadInput | ApiError) -> Refusal:
    if isinstance(exc, ApiError):
        return Refusal(index, exc.code, exc.message, exc.status)
    return Refusal(index, exc.code, exc.message, bad_input_status(exc))


def prepare_batch(items: Sequence[Any], owner: str, token: ApiToken | None) -> list[tuple[Job, JobInput]]:
    """Check every item of a batch (each a JSON object: ``kind`` and the fields the single
    submission of that kind takes, checked by ``prepare`` as one is) and build their rows.
    Raises ``BatchRefused`` listing every refused item if any is: then nothing is built."""
    prepared, refusals = [], []
    for index, item in enumerate(items):
        kind = item.get("kind") if isinstance(item, dict) else None
        if not isinstance(item, dict):
            refusals.append(Refusal(index, errors.INVALID_PARAMETER, "Each job must be a JSON object.", 422))
        elif not isinstance(kind, str) or len(kind) > 32:
            offered = [name for name in BATCH_KINDS if name in offered_kinds(current_app.config)]
            message = f"Each job names its kind: kind = one of {', '.join(offered)}."
            refusals.append(Refusal(index, errors.INVALID_PARAMETER, message, 422))
        elif kind in DOCUMENT_KINDS:
            message = f"A {kind} job carries a document: submit it alone to POST /api/v1/jobs/{kind}."
            refusals.append(Refusal(index, errors.INVALID_PARAMETER, message, 422))
        else:
            fields = {name: value for name, value in item.items() if name != "kind"}
            try:
                prepared.append(prepare(kind, fields, None, owner, token))
            except (BadInput, ApiError) as exc:
                refusals.append(_refusal(index, exc))
    if refusals:
        raise BatchRefused(
            f"{len(refusals)} of the {len(items)} jobs of the batch were refused; none was recorded.",
            items=[refusal.as_dict() for refusal in refusals],
        )
    return prepared


def submit_batch(items: Sequence[Any], owner: str, token: ApiToken | None = None) -> list[Job]:
    """Check every item (``prepare_batch``: all or nothing), record the jobs and their first
    steps' dispatch in one transaction, then send them, in order. The rows are kept unexpired
    (``submit(keep_rows=True)``): the caller describes them from memory. If the broker is away,
    the jobs not sent are recorded failed (``broker_unavailable``, as ``submit`` does) and
    ``Unavailable`` lists them; those sent before stay queued."""
    prepared = prepare_batch(items, owner, token)
    _record(prepared, keep_rows=True)
    jobs = [job for job, _ in prepared]
    unsent = _send_first_steps(jobs)
    if unsent:
        raise Unavailable(
            f"{len(unsent)} of the {len(jobs)} jobs could not be queued: the broker is unreachable; they "
            "are recorded failed (the others are queued): send those again later.",
            items=[{"index": index, "id": job_id, "code": Unavailable.code} for index, job_id in unsent],
        )
    return jobs


def _record(prepared: Sequence[tuple[Job, JobInput]], *, keep_rows: bool) -> None:
    """Record jobs, their inputs and their first steps marked dispatched, in one transaction
    (the ORM inserts each table's rows in one statement): sent once it is committed, since the
    node that takes a task must find the job and its input. A send that fails is undone by
    ``_send_first_steps``; one lost after the commit is the watchdog's (app.watchdog)."""
    now = utcnow()
    for job, job_input in prepared:
        db.session.add(job)
        db.session.add(job_input)
        lifecycle.step_dispatched(job.steps[0], now)
    if keep_rows:
        _commit_keeping_rows()
    else:
        db.session.commit()


def _send_first_steps(jobs: Sequence[Job]) -> list[tuple[int, str]]:
    """Send each job's first step, in order, through one producer. When the broker is away the
    sending stops: the job whose send failed and those after it are recorded failed
    (``broker_unavailable``; their steps were never sent) in one commit. Returns their (index,
    id), empty when every job was sent."""
    celery = current_app.extensions["celery"]
    sent = 0
    try:
        with celery.producer_or_acquire() as producer:
            for job in jobs:
                send_step(job.steps[0], producer=producer)
                sent += 1
    except Exception as exc:
        if not broker_away(exc):
            raise
        unsent = list(enumerate(jobs))[sent:]
        log.error("broker unavailable, %d job(s) not dispatched (%s…): %s", len(unsent), jobs[sent].id, exc)
        ids = [(index, job.id) for index, job in unsent]
        for _, job in unsent:
            job.steps[0].dispatched_at = None  # it was never sent
            lifecycle.fail_job(
                job, "broker_unavailable", "The job could not be queued: the broker is unreachable."
            )
        db.session.commit()
        return ids
    return []


def _commit_keeping_rows() -> None:
    """Commit without expiring the session's rows: the job, its steps and input hold exactly
    what was just written, and describing or dispatching them must not read them back (two
    queries per submission). Whoever needs the rows as others moved them on reads them afresh
    (a rollback or a new request expires them)."""
    session = db.session()
    session.expire_on_commit = False
    try:
        session.commit()
    finally:
        session.expire_on_commit = True


def send_step(step: JobStep, attempt: int = 0, producer: Any = None) -> None:
    """Send one step to its capability queue, by task name, with its parameters only;
    ``attempt`` when the coordinator sends it again (app.watchdog); ``producer``: one kombu
    producer for several sends (a batch), else one is taken from the pool for this send."""
    current_app.extensions["celery"].send_task(
        step.task_name,
        args=step_args(step.job, step),
        kwargs=step_kwargs(step.job, step),
        task_id=step.task_id,
        retries=attempt,
        # The queue itself, not its name: the ledger worker, which sends pipelines on, declares
        # only its own queue.
        queue=_QUEUES[step.queue],
        routing_key=step.queue,
        # A replica checks a result its job waits for: taken before new work (app.validation).
        priority=cc.REPLICA_PRIORITY if step.is_replica else cc.TASK_PRIORITY,
        producer=producer,
    )


_QUEUES = {queue.name: queue for queue in cc.task_queues}


def cancel(job: Job) -> Job:
    """Cancel a queued or running job: its tasks are revoked, a running one terminated."""
    db.session.refresh(job, with_for_update=True)  # the ledger may be moving it on right now
    if job.state in JobState.FINAL:
        raise Conflict(f"The job is already {job.state}.", code="job_finished")
    pending = lifecycle.cancel_job(job)
    db.session.commit()
    if pending:
        celery = current_app.extensions["celery"]
        try:
            celery.control.revoke([s.task_id for s in pending], terminate=True, signal="SIGTERM")
        except BrokerError as exc:  # the job stays cancelled; its records will be ignored
            log.warning("could not broadcast the revocation of job %s: %s", job.id, exc)
    return job


def visible(job_id: str, viewer: str, everyone: bool = False, options: Sequence[Any] = ()) -> Job | None:
    """The job ``job_id`` if ``viewer`` may see it (its owner; anyone's job when ``everyone``:
    an admin token, an operator), else None, whether it does not exist or is another's. Ids are
    UUIDs: anything else names no job, without reaching the database (which refuses a NUL byte).
    ``options``: loader options (what is read with the job in the same query)."""
    from app.api.params import uuid_id

    stored_id = uuid_id(job_id)
    job = db.session.get(Job, stored_id, options=options) if stored_id else None
    if job is None or (job.owner != viewer and not everyone):
        return None
    return job


def listing(
    owner: str | None, state: str | None, kind: str | None, page: int, per_page: int
) -> tuple[list[Job], int]:
    """A page of jobs, newest first: ``owner``'s (everyone's if None), of ``state`` and ``kind``
    when given; and how many match. An unknown state or kind is ``InvalidParameter``."""
    query = select(Job)
    if owner is not None:
        query = query.where(Job.owner == owner)
    if state:
        if state not in JobState.ALL:
            raise InvalidParameter(f"Unknown state {state!r}: one of {', '.join(JobState.ALL)}.")
        query = query.where(Job.state == state)
    if kind:
        if kind not in KINDS:
            raise InvalidParameter(f"Unknown kind {kind!r}: one of {', '.join(KINDS)}.")
        query = query.where(Job.kind == kind)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    rows = db.session.scalars(
        query.order_by(Job.created_at.desc(), Job.id).offset((page - 1) * per_page).limit(per_page)
    ).all()
    return list(rows), total


def fail_stalled(now: datetime | None = None) -> list[str]:
    """Fail the queued or running jobs whose current step has shown no sign of life for
    ``STALLED_AFTER_SECONDS``: no verified result can arrive any more (a node that vanished
    with its task, results refused, a message lost). Returns their ids; the caller commits."""
    now = now or utcnow()
    horizon = now - timedelta(seconds=cc.STALLED_AFTER_SECONDS)
    candidates = db.session.scalars(
        select(Job)
        .where(Job.state.in_((JobState.QUEUED, JobState.RUNNING)), Job.created_at < horizon)
        .order_by(Job.id)
        .with_for_update()
    ).all()
    failed = []
    for job in candidates:
        current = next((s for s in job.steps if s.state not in StepState.FINAL), None)
        rows = (current, *current.replicas) if current else ()
        task_ids = [row.task_id for row in rows]
        latest = db.session.scalar(
            select(func.max(ExecutionSighting.first_seen_at)).where(ExecutionSighting.task_id.in_(task_ids))
        )
        entered = db.session.scalar(
            select(func.max(LedgerEntry.received_at)).where(LedgerEntry.task_id.in_(task_ids))
        )
        moments = [job.created_at, latest, entered]
        moments += [m for row in rows for m in (row.dispatched_at, row.started_at)]
        last = max(_aware(m) for m in moments if m is not None)
        if last < horizon:
            lifecycle.fail_job(
                job,
                "stalled",
                f"No verified result arrived for {cc.STALLED_AFTER_SECONDS // 60} minutes: the node "
                "that had the work is gone or its results were refused.",
            )
            failed.append(job.id)
    return failed


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _progress(step: JobStep) -> dict[str, Any] | None:
    if step.state not in (StepState.QUEUED, StepState.RUNNING, StepState.RETRYING):
        return None
    return progress.of(step)


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def _iso(moment) -> str | None:
    return moment.isoformat() if moment else None


def _verification(step: JobStep) -> dict[str, Any] | None:
    """How the step's result is being, or was, checked by other nodes (None: it was not)."""
    if step.verdict is None and not step.replicas:
        return None
    check = step.check or {}
    return {
        "state": "awaiting_replica" if step.state == StepState.VERIFYING else "decided",
        "reason": check.get("reason"),
        "replicas": [
            {
                "state": replica.state,
                "node": replica.node,
                "verdict": replica.verdict,
                "progress": _progress(replica),
            }
            for replica in step.replicas
        ],
        "results": check.get("results", []),
        "distances": check.get("distances", []),
    }


def describe_step(step: JobStep, *, new: bool = False) -> dict[str, Any]:
    """A step as the API shows it; ``new``: recorded by this very request (see ``describe``)."""
    result = step.result or {}
    units = {}
    if step.state == StepState.VERIFYING:
        result = {}  # not the member's until it is validated
    if step.name == "ocr" and "pages" in result:
        units = {"pages_done": result["pages"], "pages_total": result["pages"]}
    elif "tokens" in result:
        units = {"tokens": result["tokens"]}
    return {
        "name": step.name,
        "queue": step.queue,
        "state": step.state,
        "node": step.node,
        "attempts": step.attempts,
        "progress": None if new else _progress(step) or units or None,
        "wall_seconds": _seconds(step.wall_ms),
        "cpu_seconds": _seconds(step.cpu_ms),
        "dispatched_at": _iso(step.dispatched_at),
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
        "error": {"code": step.error_code, "message": step.error_message} if step.error_code else None,
        "verification": None if new else _verification(step),
    }


def _answer_fields(answer: object) -> dict | None:
    """A ``fields`` step's answer (canonical JSON) as a dict, or None."""
    if not isinstance(answer, str):
        return None
    try:
        parsed = json.loads(answer)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def result_of(job: Job) -> dict[str, Any] | None:
    """The job's outputs: OCR text, invoice fields, summary, translation, with their token counts;
    None once its content was erased (app.gdpr)."""
    if job.content_erased_at is not None:
        return None
    out: dict[str, Any] = {}
    model_fields = None
    for step in job.steps:
        if step.state != StepState.SUCCEEDED or not step.result:
            continue
        if step.name == "ocr":
            out["text"] = step.result.get("text")
            out["pages"] = step.result.get("pages")
            out["page_readings"] = step.result.get("page_readings")
            found = invoice_fields(step)
            if found is not None:
                out["fields"] = found
        elif step.name == "summarise":
            out["summary"] = step.result.get("summary")
            out["summary_language"] = step.result.get("language")
            out["summary_tokens"] = step.result.get("tokens")
        elif step.name == "translate":
            out["translation"] = step.result.get("translation")
            out["translation_language"] = step.result.get("language")
            out["translation_tokens"] = step.result.get("tokens")
        elif step.name == "chat":
            out["text"] = step.result.get("text")
            out["finish_reason"] = step.result.get("finish_reason")
            out["chat_tokens"] = step.result.get("tokens")
        elif step.name == "embeddings":
            out["embeddings"] = step.result.get("vectors")
            out["embedding_tokens"] = step.result.get("tokens")
        elif step.name == "noop":
            out["noop_bytes"] = step.result.get("bytes")
        elif step.name == "fields":
            # the answer, the text replicas were compared by, not a `fields` beside it
            model_fields = _answer_fields(step.result.get("answer"))
            out["fields_tokens"] = step.result.get("tokens")
    if model_fields and "fields" in out and isinstance(out.get("text"), str):
        from app.invoices import fields

        out["fields"] = fields.fill(out["fields"], model_fields, out["text"].split(documents.PAGE_BREAK))
    return out or None


def describe(job: Job, *, full: bool = True, with_result: bool = True, new: bool = False) -> dict[str, Any]:
    """The job as the API shows it; ``full``: with its steps, result, cost and CO₂;
    ``with_result`` False: without the result (its texts, and the invoice fields computed
    from them), as the job's events show it; ``new``: the job as this very request recorded it
    (the answer to its submission), described from memory: no step has progress, a replica,
    a result or a ledger entry yet, so none is looked for (three queries and a Redis read)."""
    body: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "owner": job.owner,
        "params": job.params,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
    }
    if job.input_type:
        body["input"] = {
            "filename": job.input_name,
            "type": job.input_type,
            "bytes": job.input_bytes,
            "pages": job.input_pages,
        }
    if job.content_erased_at is not None:  # by retention or on request (app.gdpr)
        body["content_erased"] = True
    if job.callback_url:
        body["callback_url"] = job.callback_url
    if full:
        body["steps"] = [describe_step(step, new=new) for step in job.steps]
        if with_result:
            body["result"] = result_of(job)
        # Its entries read once for both (none yet for a job just recorded).
        entries = [] if new else settlement.job_entries(job.id)
        body["cost"] = settlement.job_cost(job, entries=[entry for entry in entries if entry.counts])
        body["co2_grams"] = carbon.shown(footprints.of_entries(entries).grams)
    return body
