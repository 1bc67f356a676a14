"""Data protection: the content of ended jobs erased after ``RETENTION_DAYS``, a person's data
erased or exported on request (``manage.py gdpr``, ``/api/v1/admin/gdpr``).

A job's content is what its submitter sent and what the grid read or wrote from it: the
document or text (``JobInput``), the uploaded file's name, the texts of its steps' results
(OCR text, summary, translation, invoice fields). Erasing it keeps the job's metadata (kind,
state, sizes, pages, timings, token counts, nodes, verdicts) and its cost, and marks it
``content_erased_at``. A person's data is their email wherever it names them (jobs, tokens,
their participant row), their name, password hash and invitations, and their nodes' names and
workers' host names. The ledger's entries, append-only, stay as they are: accounting lines the
law keeps; they name nodes by id and by the worker's name they signed (docs/decisions/0016).
"""

from __future__ import annotations

import base64
import logging
import secrets
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import redis
from flask import current_app
from sqlalchemy import delete, func, or_, select, update

from app import broker_acl, jobs, nodes
from app.extensions import db
from app.models import (
    ApiToken,
    ExecutionSighting,
    Invitation,
    Job,
    JobInput,
    JobState,
    JobStep,
    LedgerEntry,
    Node,
    Participant,
    Reward,
    utcnow,
)
from app.progress import KEY_PREFIX as PROGRESS_PREFIX
from workers.protocol import content

log = logging.getLogger(__name__)

#: The domain of pseudonymous emails: reserved (RFC 6761), so it can never be anyone's address.
PSEUDONYM_DOMAIN = "invalid"
#: Celery's result backend keys (a task's state and return value), by task id.
RESULT_KEY_PREFIX = "celery-task-meta-"


def pseudonym(prefix: str = "erased") -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def _params_metadata(params: dict[str, Any] | None) -> dict[str, Any]:
    """A job's parameters without any free text (they hold none today: texts travel as the
    job's input; a longer string is dropped all the same)."""
    return {
        key: value
        for key, value in (params or {}).items()
        if value is None
        or isinstance(value, bool | int | float)
        or (isinstance(value, str) and len(value) <= 64)
    }


def _forget_in_redis(task_ids: list[str]) -> None:
    """Delete a job's keys in Redis: its steps' progress and any result backend entry. Best
    effort: both expire by themselves (progress after the time limits, results after
    ``result_expires``), and progress holds counts only."""
    if not task_ids:
        return
    keys = [f"{prefix}{task_id}" for task_id in task_ids for prefix in (PROGRESS_PREFIX, RESULT_KEY_PREFIX)]
    try:
        with broker_acl.client(current_app.extensions["celery"].conf.broker_url) as admin:
            admin.delete(*keys)
    except redis.RedisError as exc:
        log.warning("the Redis keys of %d tasks were left to expire: %s", len(task_ids), exc)


def erase_job_content(job: Job, now: datetime | None = None) -> bool:
    """Erase an ended job's content (not committed); False if it was erased already or is not
    ended (a job still running is never erased: cancel it first)."""
    if job.content_erased_at is not None or job.state not in JobState.FINAL:
        return False
    db.session.execute(delete(JobInput).where(JobInput.job_id == job.id))
    rows = db.session.scalars(select(JobStep).where(JobStep.job_id == job.id)).all()  # replicas too
    for row in rows:
        if row.result is not None:
            row.result = content.metadata(row.result)
    job.params = _params_metadata(job.params)
    job.input_name = None
    job.callback_url = None  # the member's address: no event is delivered any more
    job.content_erased_at = now or utcnow()
    _forget_in_redis([row.task_id for row in rows])
    return True


def erase_expired(
    now: datetime | None = None, days: int | None = None, limit: int | None = None
) -> list[str]:
    """Erase the content of up to ``limit`` jobs that ended more than ``days`` ago, oldest first,
    and commit; returns their ids. Idempotent; rows another transaction holds are left for the
    next run (``SKIP LOCKED``), and jobs not ended are never touched."""
    config = current_app.config
    now = now or utcnow()
    days = int(config["RETENTION_DAYS"] if days is None else days)
    limit = int(config["RETENTION_BATCH"] if limit is None else limit)
    horizon = now - timedelta(days=days)
    due = db.session.scalars(
        select(Job)
        .where(
            Job.content_erased_at.is_(None),
            Job.state.in_(JobState.FINAL),
            Job.finished_at.is_not(None),
            Job.finished_at < horizon,
        )
        .order_by(Job.finished_at, Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    erased = [job.id for job in due if erase_job_content(job, now)]
    db.session.commit()
    if erased:
        log.info("content of %d jobs ended before %s erased", len(erased), horizon.isoformat())
    return erased


def _owned_jobs(email: str) -> list[Job]:
    return list(
        db.session.scalars(
            select(Job).where(func.lower(Job.owner) == email.lower()).order_by(Job.created_at)
        ).all()
    )


def erase_owner(email: str) -> dict[str, Any] | None:
    """Erase what the grid holds about ``email`` and commit; None if it holds nothing.

    Their running jobs are cancelled, then every job's content erased and its owner replaced by
    a pseudonym; their tokens revoked and renamed; their invitations deleted; their participant
    row's email, name and password replaced (and sessions ended); their nodes revoked, their
    names and workers' host names replaced wherever the grid keeps them outside the ledger.
    The ledger's entries and rewards stay (docs/decisions/0016). Raises
    ``broker_acl.BrokerAclError`` (nothing saved) while the broker cannot revoke a node."""
    participant = db.session.scalar(select(Participant).where(Participant.email == email.lower()))
    owned = _owned_jobs(email)
    tokens = db.session.scalars(select(ApiToken).where(func.lower(ApiToken.owner) == email.lower())).all()
    if participant is None and not owned and not tokens:
        return None
    alias = f"{pseudonym()}@{PSEUDONYM_DOMAIN}"
    now = utcnow()
    cancelled = 0
    for job in owned:
        if job.state not in JobState.FINAL:
            jobs.cancel(job)  # commits; its late records are ignored (the job is final)
            cancelled += 1
    erased = 0
    for job in owned:
        erased += erase_job_content(job, now)
        job.owner = alias
    for token in tokens:
        token.revoked_at = token.revoked_at or now
        token.owner = alias
        token.name = "erased"
    summary: dict[str, Any] = {
        "owner": alias,
        "jobs": len(owned),
        "jobs_cancelled": cancelled,
        "jobs_erased": erased,
        "tokens_revoked": len(tokens),
        "participant": None,
        "nodes": [],
        "invitations_deleted": 0,
    }
    if participant is not None:
        summary["invitations_deleted"] = db.session.execute(
            delete(Invitation).where(Invitation.participant_id == participant.id)
        ).rowcount
        participant.email = alias
        participant.name = None
        participant.password_hash = None
        participant.session_generation += 1  # every session signed in ends
        summary["participant"] = participant.id
        for node in participant.nodes:
            summary["nodes"].append(node.id)
            _pseudonymise_node(node, now)
    db.session.commit()
    log.info("erased on request: %d jobs, %d nodes (now %s)", len(owned), len(summary["nodes"]), alias)
    return summary


def _pseudonymise_node(node: Node, now: datetime) -> None:
    """Revoke the node and replace its name and its worker's name (``name@host``) outside the
    ledger: steps, replicas' checks, sightings. Not committed."""
    old = node.name
    new = pseudonym("node")
    worker = f"{new}@erased"
    if node.revoked_at is None:
        node.paused_at, node.paused_by = node.paused_at or now, "operator"
        nodes.revoke(node)  # its broker user deleted: it can send nothing more
    node.name = new
    node.worker = None
    node.probe = None  # a host's description
    node.pause_reason = None
    db.session.execute(
        update(ExecutionSighting).where(ExecutionSighting.node_id == node.id).values(worker=None)
    )
    # Its steps and replicas (a replica that failed early may have a worker's name but no node id).
    ran = db.session.scalars(
        select(JobStep).where(or_(JobStep.node_id == node.id, func.split_part(JobStep.node, "@", 1) == old))
    ).all()
    for row in ran:
        row.node = worker
        checked = row.replica_of if row.is_replica else row
        results = (checked.check or {}).get("results") if checked is not None else None
        if isinstance(results, list):
            checked.check = {
                **checked.check,
                "results": [
                    {**r, "node": worker}
                    if isinstance(r, dict) and str(r.get("node", "")).partition("@")[0] == old
                    else r
                    for r in results
                ],
            }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _row(row: Any, columns: tuple[str, ...]) -> dict[str, Any]:
    return {name: _plain(getattr(row, name)) for name in columns}


_ENTRY_COLUMNS = (
    "id",
    "task_id",
    "attempt",
    "job_id",
    "node_id",
    "node",
    "capability",
    "task_name",
    "outcome",
    "error_code",
    "started_at",
    "finished_at",
    "wall_ms",
    "cpu_ms",
    "unit",
    "units",
    "received_at",
    "claimed_ms",
    "observed_ms",
    "cap_ms",
    "granted_ms",
    "grant_basis",
    "held",
    "rate_eur_per_hour",
    "period",
    "reverses_id",
    "reason",
)


def _exported_job(job: Job) -> dict[str, Any]:
    """A job as the API shows it, with what its owner sent while it is kept: the text, or the
    document in base64."""
    body = {**jobs.describe(job), "content_erased_at": _iso(job.content_erased_at), "submitted": None}
    stored = db.session.get(JobInput, job.id)
    if stored is not None and stored.kind == "text":
        body["submitted"] = {"kind": "text", "text": stored.data.decode("utf-8", "replace")}
    elif stored is not None:
        body["submitted"] = {"kind": stored.kind, "base64": base64.b64encode(stored.data).decode("ascii")}
    return body


def export_owner(email: str) -> dict[str, Any] | None:
    """Everything the grid holds about ``email``, as JSON-ready values; None if nothing."""
    participant = db.session.scalar(select(Participant).where(Participant.email == email.lower()))
    owned = _owned_jobs(email)
    tokens = db.session.scalars(
        select(ApiToken).where(func.lower(ApiToken.owner) == email.lower()).order_by(ApiToken.id)
    ).all()
    if participant is None and not owned and not tokens:
        return None
    found: dict[str, Any] = {
        "owner": email,
        "exported_at": utcnow().isoformat(),
        "participant": None,
        "invitations": [],
        "tokens": [
            _row(t, ("id", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"))
            for t in tokens
        ],
        "jobs": [_exported_job(job) for job in owned],
        "nodes": [],
        "ledger_entries": [],
        "rewards": [],
    }
    if participant is None:
        return found
    found["participant"] = {
        **_row(participant, ("id", "email", "name", "created_at", "operator")),
        "password_set": participant.password_hash is not None,
    }
    found["invitations"] = [
        _row(i, ("id", "created_at", "expires_at", "used_at"))
        for i in db.session.scalars(
            select(Invitation).where(Invitation.participant_id == participant.id).order_by(Invitation.id)
        ).all()
    ]
    node_ids = [node.id for node in participant.nodes]
    found["nodes"] = [
        _row(
            node,
            (
                "id",
                "name",
                "created_at",
                "approved_at",
                "revoked_at",
                "paused_at",
                "paused_by",
                "pause_reason",
                "worker",
                "queues",
                "probe",
                "registered_at",
                "last_seen_at",
                "stopped_at",
                "concurrency",
                "validated_results",
                "invalid_results",
            ),
        )
        for node in participant.nodes
    ]
    if node_ids:
        entries = db.session.scalars(
            select(LedgerEntry).where(LedgerEntry.node_id.in_(node_ids)).order_by(LedgerEntry.id)
        ).all()
        found["ledger_entries"] = [_row(entry, _ENTRY_COLUMNS) for entry in entries]
        rewards = db.session.scalars(
            select(Reward).where(Reward.node_id.in_(node_ids)).order_by(Reward.period, Reward.node_id)
        ).all()
        found["rewards"] = [
            {
                **_row(r, ("period", "node_id", "exact_eur", "amount_eur", "paid_at", "payout_reference")),
                "lines": [
                    _row(line, ("capability", "rate_eur_per_hour", "granted_ms", "hours", "exact_eur"))
                    for line in r.lines
                ],
            }
            for r in rewards
        ]
    return found
