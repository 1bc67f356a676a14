"""Apply what volunteers report to the database: verified, bounded, once.

Everything a node sends is a claim. A record is entered only if it is signed by an enrolled,
unrevoked node's secret, concerns a task the coordinator dispatched, for a job not cancelled,
by the node the coordinator saw start it, and is not a replay or a second completion of the
same execution. Anything else is stored in ``ledger_rejections`` with the reason. A granted
time is min(claimed, observed by the coordinator, units × reference × slack).

Called by the ``ledger`` queue's tasks inside an application context; the caller commits.
Records may arrive out of order and more than once: every change is idempotent and never moves
a step or a job back from a final state.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import selectinload

import celeryconfig
from app import nodes
from app.extensions import db
from app.ledger import periods, rules
from app.models import (
    ExecutionSighting,
    Job,
    JobState,
    JobStep,
    LedgerEntry,
    LedgerRejection,
    Node,
    Rate,
    StepState,
    utcnow,
)
from workers import protocol
from workers.protocol import signing

log = logging.getLogger(__name__)


class Refused(Exception):
    """A record the ledger will not enter; ``reason`` is stored with it."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Context:
    """What a batch of records needs from the database, read in a few queries per batch and
    kept up to date as the batch adds sightings and entries."""

    costs: rules.ReferenceCosts = field(default_factory=rules.ReferenceCosts)
    rates: list[rules.Rate] = field(default_factory=list)
    closed: set[str] = field(default_factory=set)
    secrets: dict[str, str | None] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    steps: dict[str, JobStep | None] = field(default_factory=dict)
    entries: dict[tuple[str, int], LedgerEntry] = field(default_factory=dict)
    granted: set[str] = field(default_factory=set)
    sightings: dict[tuple[str, int], dict[str, datetime]] = field(default_factory=dict)
    #: Heartbeat slots written in this batch, per node.
    heartbeats: dict[str, set[int]] = field(default_factory=dict)
    #: What to do once the batch is committed (broker commands to nodes).
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def load(cls, records: Iterable[Any] = ()) -> Context:
        """Read at the start of the transaction that enters records, after taking the lock a
        settlement waits on: a period closed meanwhile is seen closed here."""
        from app.ledger.settlement import lock_ledger_for_entries

        lock_ledger_for_entries()
        rates = [
            rules.Rate(r.capability, r.eur_per_hour, _aware(r.effective_from))
            for r in db.session.scalars(select(Rate))
        ]
        ctx = cls(rates=rates, closed=periods.closed())
        records = [r for r in records if isinstance(r, dict)]
        ctx.prefetch(
            {str(r.get("task_id", "")) for r in records}, {str(r.get("node_id") or "") for r in records}
        )
        return ctx

    def prefetch(self, task_ids: set[str], node_ids: set[str]) -> None:
        """Load the steps, entries, sightings and nodes these records concern, in one query each."""
        task_ids = {t for t in task_ids if _uuid(t) and t not in self.steps}
        node_ids = {n for n in node_ids if _uuid(n) and n not in self.secrets}
        if node_ids:
            found = {node.id: node for node in db.session.scalars(select(Node).where(Node.id.in_(node_ids)))}
            for node_id in node_ids:
                self.secrets[node_id] = node_secret_if_active(found.get(node_id))
                if node_id in found:
                    self.names[node_id] = found[node_id].name
        if not task_ids:
            return
        for task_id in task_ids:
            self.steps[task_id] = None
        # Lock the jobs first, in id order, as cancelling does: a cancel and a batch never
        # overwrite each other's changes, and never deadlock.
        job_ids = select(JobStep.job_id).where(JobStep.task_id.in_(task_ids))
        db.session.execute(select(Job.id).where(Job.id.in_(job_ids)).order_by(Job.id).with_for_update())
        query = select(JobStep).where(JobStep.task_id.in_(task_ids))
        for step in db.session.scalars(query.options(selectinload(JobStep.job).selectinload(Job.steps))):
            self.steps[step.task_id] = step
        for entry in db.session.scalars(select(LedgerEntry).where(LedgerEntry.task_id.in_(task_ids))):
            self.remember(entry)
        for sighting in db.session.scalars(
            select(ExecutionSighting).where(ExecutionSighting.task_id.in_(task_ids))
        ):
            self.sightings.setdefault((sighting.task_id, sighting.attempt), {})[sighting.node_id] = _aware(
                sighting.first_seen_at
            )

    def step(self, task_id: str) -> JobStep | None:
        if _uuid(task_id) is None:
            return None
        if task_id not in self.steps:
            self.prefetch({task_id}, set())
        return self.steps.get(task_id)

    def secret_of(self, node_id: str) -> str | None:
        """The node's secret, or None if it is unknown or revoked."""
        if _uuid(node_id) is None:
            return None
        if node_id not in self.secrets:
            self.prefetch(set(), {node_id})
        return self.secrets.get(node_id)

    def remember(self, entry: LedgerEntry) -> None:
        if entry.attempt >= 0:  # reversals sit outside the executions' (task, attempt) space
            self.entries[(entry.task_id, entry.attempt)] = entry
        if entry.granted_ms > 0 and entry.reverses_id is None:
            self.granted.add(entry.task_id)


def node_secret_if_active(node: Node | None) -> str | None:
    """The secret of an approved, unrevoked node; None for any other."""
    if node is None or node.revoked_at is not None or node.approved_at is None:
        return None
    return nodes.node_secret(node)


def _uuid(value: Any) -> str | None:
    """The value if it is a UUID as the coordinator writes them (task and node ids), else None."""
    if not isinstance(value, str) or len(value) != 36:
        return None
    try:
        return value if str(uuid.UUID(value)) == value else None
    except ValueError:
        return None


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(value: Any) -> datetime | None:
    try:
        return _aware(datetime.fromisoformat(str(value)))
    except (TypeError, ValueError):
        return None


def _ms(seconds: Any) -> int:
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return 0
    return max(0, round(value * 1000)) if value == value and value != float("inf") else 0


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def _text(value: Any, limit: int) -> str | None:
    """A value as text a database accepts (PostgreSQL refuses NUL characters)."""
    text = str(value).replace("\x00", "\\0")[:limit]
    return text or None


def as_evidence(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its payload, as JSON any database stores (no NaN, no NUL, not deep)."""
    evidence = {k: v for k, v in record.items() if k != "result"}
    if protocol.depth(evidence) > protocol.MAX_DEPTH:
        return {"too_deep": True, "fields": [_text(key, 100) for key in list(evidence)[:50]]}
    try:
        encoded = json.dumps(evidence, allow_nan=False, default=str)
    except (TypeError, ValueError):
        return {"raw": _text(repr(evidence), 4000)}
    if "\\u0000" in encoded or len(encoded) > 20_000:
        return {"raw": _text(repr(evidence), 4000)}
    return json.loads(encoded)


def reject(kind: str, record: Any, refused: Refused) -> LedgerRejection:
    """Store a refused record with its reason."""
    if not isinstance(record, dict):
        record = {
            "raw": _text(repr(record) if protocol.depth(record) <= protocol.MAX_DEPTH else "(too deep)", 2000)
        }

    def field(name: str, limit: int) -> str | None:  # what a node wrote there, if it is a scalar
        value = record.get(name, "")
        return _text(value if isinstance(value, str | int | float) else type(value).__name__, limit)

    row = LedgerRejection(
        kind=_text(kind, 16),
        reason=refused.reason,
        detail=_text(refused.detail, 2000),
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


def _verify(record: Any, ctx: Context) -> tuple[str, JobStep, int]:
    """Signature, node and dispatch checks shared by start and completion records."""
    node_id = verify_node(record, ctx)
    if not nodes.is_own_worker(ctx.names[node_id], record["node"]):
        raise Refused("wrong_worker_name", f"node {ctx.names[node_id]}'s worker is not {record['node']!r}")
    step = ctx.step(str(record.get("task_id", "")))
    if step is None:
        raise Refused("never_dispatched", f"the coordinator never dispatched task {record.get('task_id')!r}")
    if record.get("task_name") not in (None, step.task_name):
        raise Refused("wrong_task", f"task {step.task_id} is a {step.task_name}")
    attempt = _int(record.get("attempt"), -1)
    if not 0 <= attempt <= celeryconfig.MAX_RETRIES:
        raise Refused(
            "bad_attempt", f"attempt {record.get('attempt')!r} is not 0 to {celeryconfig.MAX_RETRIES}"
        )
    return node_id, step, attempt


def apply(messages: Sequence[tuple[str, Any]]) -> None:
    """Apply ``(kind, record)`` messages in order in one transaction, and commit.

    A conflict with a concurrent ledger worker (it entered one of these executions first) is
    resolved by applying the messages again, one per transaction: each then sees the other
    worker's row and refuses the duplicate.
    """
    try:
        ctx = _apply(messages)
        db.session.commit()
        for action in ctx.after_commit:
            try:
                action()
            except Exception:  # noqa: BLE001  a broker command is best effort; the state is saved
                log.exception("a command to a node failed after the ledger batch")
    except IntegrityError:
        db.session.rollback()
        if len(messages) > 1:
            for message in messages:
                apply([message])
            return
        _apply(messages)  # once more, now seeing the row that won
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise


def apply_safely(messages: Sequence[tuple[str, Any]]) -> None:
    """``apply``, but a record that makes it fail for another reason than the database being
    away (a bug meeting an unforeseen record) is stored as refused, so one bad record cannot
    stop the ledger; the rest of its batch is entered one by one."""
    try:
        apply(messages)
        return
    except Exception as exc:  # noqa: BLE001
        if database_away(exc):
            raise  # the caller keeps the batch and retries
        log.exception("a ledger batch failed; entering its records one by one")
    for kind, record in messages:
        try:
            apply([(kind, record)])
        except Exception as exc:  # noqa: BLE001  kept as evidence, with the reason
            if database_away(exc):
                raise
            db.session.rollback()
            try:
                reject(kind, record, Refused("internal_error", f"{type(exc).__name__}: {exc}"))
                db.session.commit()
            except Exception as failed:  # noqa: BLE001  the last resort must not stop the ledger
                if database_away(failed):
                    raise
                db.session.rollback()
                log.critical("a ledger record could be neither entered nor refused: %r", record)


def database_away(exc: BaseException) -> bool:
    """True for the faults that come from the database being unreachable, not from a record."""
    return isinstance(exc, OperationalError | InterfaceError) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def _apply(messages: Sequence[tuple[str, Any]]) -> Context:
    from app import registry  # the registry builds on this module's checks

    checked = [(kind, _checked(kind, record)) for kind, record in messages]
    ctx = Context.load(record for _, record in checked if not isinstance(record, Refused))
    with db.session.no_autoflush:  # everything is read up front; write once, at the end
        for (kind, record), (_, verdict) in zip(messages, checked, strict=True):
            if isinstance(verdict, Refused):
                evidence = {"raw": record.evidence} if isinstance(record, protocol.Invalid) else record
                reject(kind, evidence, verdict)
            elif kind == "started":  # a start is the input fetch (app.api.work), never a message
                reject(kind, record, Refused("wrong_channel", "an execution starts by fetching its input"))
            elif kind == "completed":
                on_completed(record, ctx)
            else:
                registry.apply(kind, record, ctx)
    return ctx


def _checked(kind: str, record: Any) -> Any:
    """The record if it fits its schema (``workers.protocol``), else why it is refused."""
    if isinstance(record, protocol.Invalid):  # not even a message (app.ledger.intake)
        return Refused(record.reason, record.detail)
    try:
        protocol.parse(kind, record)
    except protocol.Invalid as invalid:
        return Refused(invalid.reason, invalid.detail)
    return record


#: Refusals of a start that are not kept as evidence: nobody signed the record (anyone may knock
#: at the input endpoint, and storing each knock would let them fill the table), or the start
#: is only early (the worker asks again).
_UNSTORED = frozenset(
    {
        "malformed",
        "too_deep",
        "unsupported_version",
        "missing_signature",
        "unknown_node",
        "bad_signature",
        "previous_attempt_pending",
    }
)


def on_started(record: Any, ctx: Context | None = None) -> tuple[JobStep | None, Refused | None]:
    """A node begins an execution (it asks for its input, app.api.work): the coordinator's own
    sight of the start. Returns the step, or why it is refused (stored if signed); the caller
    commits. The signature is checked before any lock is taken."""
    now = utcnow()
    try:
        protocol.parse("started", record)
        verify_node(record, Context())  # no lock yet: an unsigned knock costs a lookup, no more
        ctx = ctx or Context.load([record])
        node_id, step, attempt = _verify(record, ctx)
        sent = _when(record["started_at"])
        if abs((now - sent).total_seconds()) > celeryconfig.CLOCK_SKEW_SECONDS:
            raise Refused("stale", f"a start dated {record['started_at']}: check the node's clock")
        if step.state in StepState.FINAL or step.job.state in JobState.FINAL:
            raise Refused("step_finished", f"task {step.task_id} is {step.state}, its job {step.job.state}")
        _check_start(step, node_id, attempt, ctx, now)
    except protocol.Invalid as invalid:
        refused = Refused(invalid.reason, invalid.detail)
    except Refused as caught:
        refused = caught
    else:
        refused = None
    if refused is not None:
        if refused.reason not in _UNSTORED:
            reject("started", record, refused)
        return None, refused
    seen = ctx.sightings.setdefault((step.task_id, attempt), {})
    if node_id not in seen:
        seen[node_id] = now
        db.session.add(
            ExecutionSighting(
                task_id=step.task_id,
                attempt=attempt,
                node_id=node_id,
                worker=str(record.get("node", ""))[:200],
                first_seen_at=now,
            )
        )
    step.state = StepState.RUNNING
    step.node = str(record.get("node", ""))[:200]
    step.attempts = max(step.attempts, attempt + 1)
    step.started_at = step.started_at or now
    job = step.job
    if job.state == JobState.QUEUED:
        job.state = JobState.RUNNING
        job.started_at = now
    return step, None


def _check_start(step: JobStep, node_id: str, attempt: int, ctx: Context, now: datetime) -> None:
    """Who may start an execution: the attempt must follow an ended one, and a node may take
    over an attempt another node started only once the broker could have handed it on (the
    visibility timeout), as it does when a machine dies."""
    if attempt > 0:
        previous = ctx.entries.get((step.task_id, attempt - 1))
        if previous is None:  # its retry record may simply not be entered yet: ask again later
            raise Refused(
                "previous_attempt_pending", f"attempt {attempt - 1} of task {step.task_id} is not entered yet"
            )
        if previous.outcome not in ("retried", "lost"):
            raise Refused(
                "bad_attempt", f"attempt {attempt - 1} of task {step.task_id} has not ended for a retry"
            )
    seen = ctx.sightings.get((step.task_id, attempt), {})
    if seen and node_id not in seen:
        first = min(seen.values())
        if (now - first).total_seconds() < celeryconfig.VISIBILITY_TIMEOUT:
            raise Refused(
                "cross_node", f"attempt {attempt} of task {step.task_id} is running on another node"
            )


def on_completed(record: Any, ctx: Context | None = None) -> LedgerEntry | None:
    """An execution ended: enter it once, verified and bounded, then move its step and job on."""
    ctx = ctx or Context.load()
    try:
        entry = _enter(record, ctx)
    except Refused as refused:
        reject("completed", record, refused)
        return None
    _advance(ctx.step(entry.task_id), entry, record, ctx)
    return entry


def _enter(record: Any, ctx: Context) -> LedgerEntry:
    node_id, step, attempt = _verify(record, ctx)
    job = step.job
    if job.state == JobState.CANCELLED:
        raise Refused("job_cancelled", f"job {job.id} was cancelled")
    existing = ctx.entries.get((step.task_id, attempt))
    if existing is not None:
        if existing.signature == record.get("signature"):
            raise Refused("replay", f"entry {existing.id} already holds this very record")
        raise Refused(
            "duplicate_execution", f"entry {existing.id} already holds attempt {attempt} of this task"
        )
    seen = ctx.sightings.get((step.task_id, attempt), {})
    if node_id not in seen:  # only a node seen starting an execution may end it
        reason = "cross_node" if seen else "not_started"
        raise Refused(
            reason, f"node {node_id} was not seen starting attempt {attempt} of task {step.task_id}"
        )

    received = utcnow()
    outcome = str(record.get("outcome", "failed"))
    if outcome not in ("succeeded", "failed", "retried", "lost"):
        raise Refused("malformed", f"unknown outcome {outcome!r}")
    capability = step.queue
    claimed_units = rules.units_of(
        capability, record.get("units") if isinstance(record.get("units"), dict) else {}
    )
    units = claimed_units
    if capability == "ocr" and job.input_pages is not None:
        units = min(claimed_units, job.input_pages)  # we know how many pages we sent
    elif capability == "llm":  # and how much text
        from app.jobs import input_of

        sent = input_of(step)
        units = min(claimed_units, rules.llm_units_bound(len(sent[1]) if sent else 0))
    result = record.get("result") if isinstance(record.get("result"), dict) else {}
    # The model size picks the LLM reference cost; a node's claim counts only up to the
    # largest model the cooperative runs.
    engine = result.get("engine") if isinstance(result.get("engine"), dict) else {}
    model_bytes = min(_int(engine.get("model_bytes")), current_app.config["LLM_MODEL_MAX_BYTES"])
    # From the input fetch (the start, as the coordinator itself saw it) to the completion.
    observed_ms = (
        max(0, round((received - seen[node_id]).total_seconds() * 1000)) + rules.OBSERVATION_ALLOWANCE_MS
    )
    claimed_ms = _ms(record.get("wall_seconds"))
    # No execution outlives the hard time limit: its process is killed there.
    cap = min(rules.cap_ms(capability, units, ctx.costs, model_bytes), celeryconfig.task_time_limit * 1000)
    error = record.get("error") if isinstance(record.get("error"), dict) else {}
    error_code = str(error.get("code"))[:64] if error.get("code") else None
    planned = (
        rules.cap_ms(capability, job.input_pages, ctx.costs)
        if capability == "ocr" and job.input_pages
        else None
    )
    if step.task_id in ctx.granted:
        decision = rules.Grant(0, "already_granted")  # a task is paid once, however it ended
    elif step.state in StepState.FINAL and outcome != "succeeded":
        decision = rules.Grant(0, "step_finished")
    elif job.state == JobState.FAILED:  # failed, or stalled, before this execution ended
        decision = rules.Grant(0, "job_failed")
    else:
        decision = rules.grant(
            outcome,
            claimed_ms,
            observed_ms,
            cap,
            error_code=error_code,
            time_limit_ms=celeryconfig.task_soft_time_limit * 1000,
            planned_cap_ms=planned,
        )
    try:
        rate: Decimal | None = rules.rate_at(ctx.rates, capability, received)
    except LookupError:
        rate = None
    entry = LedgerEntry(
        task_id=step.task_id,
        attempt=attempt,
        job_id=step.job_id,
        step_id=step.id,
        node_id=node_id,
        node=str(record.get("node", ""))[:200],
        capability=capability,
        task_name=step.task_name,
        outcome=outcome,
        error_code=error_code,
        started_at=_when(record.get("started_at")),
        finished_at=_when(record.get("finished_at")),
        wall_ms=claimed_ms,
        cpu_ms=_ms(record.get("cpu_seconds")),
        unit=rules.UNIT_OF_CAPABILITY.get(capability, "unit"),
        units=units,
        received_at=received,
        claimed_ms=claimed_ms,
        observed_ms=observed_ms,
        cap_ms=cap,
        granted_ms=decision.granted_ms,
        grant_basis=decision.basis,
        rate_eur_per_hour=rate,
        period=periods.open_period_for(received, ctx.closed),
        signature=str(record["signature"])[:128],
    )
    db.session.add(entry)  # a concurrent worker's row makes the commit fail: see apply()
    ctx.remember(entry)
    return entry


def _advance(step: JobStep, entry: LedgerEntry, record: dict[str, Any], ctx: Context) -> None:
    """Move the step and its job on after an entered execution."""
    job: Job = step.job
    if job.state in JobState.FINAL or step.state in StepState.FINAL:
        return  # a late duplicate of a finished step
    error = record.get("error") if isinstance(record.get("error"), dict) else {}
    step.node = entry.node
    step.attempts = max(step.attempts, entry.attempt + 1)
    if entry.outcome == "succeeded":
        step.state = StepState.SUCCEEDED
        step.result = record.get("result")
        step.error_code = step.error_message = None
        step.finished_at = entry.received_at
        step.wall_ms, step.cpu_ms = entry.wall_ms, entry.cpu_ms
        following = [s for s in job.steps if s.position == step.position + 1]
        if following and following[0].dispatched_at is None:
            # The next step works on this entered result: sent once the batch is committed.
            from app.jobs import send_step

            following[0].dispatched_at = entry.received_at
            ctx.after_commit.append(lambda nxt=following[0]: send_step(nxt))
        if all(s.state == StepState.SUCCEEDED for s in job.steps):
            job.state = JobState.SUCCEEDED
            job.finished_at = step.finished_at
        elif job.state == JobState.QUEUED:
            job.state = JobState.RUNNING
    elif record.get("final"):
        step.state = StepState.FAILED
        step.error_code = str(error.get("code") or "internal_error")[:64]
        step.error_message = _text(error.get("message") or "", 4000) or ""
        step.finished_at = entry.received_at
        step.wall_ms, step.cpu_ms = entry.wall_ms, entry.cpu_ms
        fail_job(job, step.error_code, f"{step.name}: {step.error_message}")
    else:  # retried or lost: it will run again
        step.state = StepState.RETRYING
        step.error_code = str(error.get("code") or "")[:64] or None
        step.error_message = _text(error.get("message") or "", 4000)


def fail_job(job: Job, code: str, message: str) -> None:
    job.state = JobState.FAILED
    job.error_code = code
    job.error_message = message
    job.finished_at = utcnow()
    for other in job.steps:
        if other.state not in StepState.FINAL:
            other.state = StepState.SKIPPED
