"""An execution's start and its end: who may run an attempt, what its completion is granted.

A start is the coordinator's own sight of an execution: the node's signed request for the
step's input (``app.api.work``), never a message on the ledger queue. A completion is entered
once per (task, attempt), only from the node seen starting it, for a job not cancelled, and is
granted min(claimed, observed by the coordinator, units × reference × slack, the hard time
limit) (``app.ledger.rules``); a late or second one is granted nothing, with the reason. Either
then moves the step and its job on (``app.lifecycle``).

Records may arrive out of order and more than once: every change is idempotent and never moves
a step or a job back from a final state. The caller commits (``app.ledger.batch`` for
completions, ``app.api.work`` for starts).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from flask import current_app

import celeryconfig
from app import jobs, lifecycle, registry
from app.extensions import db
from app.ledger import periods, rules
from app.ledger.context import Context
from app.ledger.values import as_int, as_ms, as_text, as_time
from app.ledger.verification import Refused, reject, verify_execution, verify_node
from app.models import ExecutionSighting, Job, JobState, JobStep, LedgerEntry, Node, StepState, utcnow
from app.validation import checks
from workers import protocol

#: Refusals of a start that are not kept as evidence: nobody signed the record (anyone may knock
#: at the input endpoint, and storing each knock would let them fill the table), the start is
#: only early (the worker asks again), or the node is not the one to run it.
_UNSTORED = frozenset(
    {
        "malformed",
        "too_deep",
        "unsupported_version",
        "missing_signature",
        "unknown_node",
        "bad_signature",
        "previous_attempt_pending",
        # A replica offered to a node that may not check it: the worker hands it back, and it
        # may be offered again a second later; nothing to keep.
        "same_node",
        "same_owner",
        "other_model",
        "node_paused",
    }
)


def on_started(record: Any, ctx: Context | None = None) -> tuple[JobStep | None, Refused | None]:
    """A node begins an execution (it asks for its input, app.api.work): the coordinator's own
    sight of the start. Returns the step, or why it is refused (stored if signed); the caller
    commits. The signature is checked before any lock is taken."""
    now = utcnow()
    try:
        protocol.parse("started", record)
        if ctx is None:
            # A start enters no ledger entry: it needs neither the lock a settlement waits on nor
            # the rates and closed periods (Context.load). The node is read once, unlocked, for
            # its signature (an unsigned knock costs that lookup, no more), then locked with
            # the job, as a batch does.
            ctx = Context()
            verify_node(record, ctx)
            ctx.prefetch({str(record.get("task_id", ""))}, set())
            ctx.lock_nodes()
        else:
            verify_node(record, Context())  # no lock yet: an unsigned knock costs a lookup, no more
        node_id, step, attempt = verify_execution(record, ctx)
        sent = as_time(record["started_at"])
        if abs((now - sent).total_seconds()) > celeryconfig.CLOCK_SKEW_SECONDS:
            raise Refused("stale", f"a start dated {record['started_at']}: check the node's clock")
        # A step whose result is being checked is over for its nodes too: no attempt of it may
        # start again (it would reopen the step under the check).
        if step.state in (*StepState.FINAL, StepState.VERIFYING) or step.job.state in JobState.FINAL:
            raise Refused("step_finished", f"task {step.task_id} is {step.state}, its job {step.job.state}")
        node = ctx.nodes.get(node_id) or db.session.get(Node, node_id)
        if node.paused_at is not None:  # its worker was told to stop taking work
            raise Refused("node_paused", f"node {node.name} is paused ({node.paused_by})")
        _check_start(step, node_id, attempt, ctx, now)
        if step.is_replica:
            checks.check_start(step, node_id, now)
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
    lifecycle.step_started(step, str(record.get("node", ""))[:200], attempt, now, node_id)
    return step, None


def _check_start(step: JobStep, node_id: str, attempt: int, ctx: Context, now: datetime) -> None:
    """Who may start an execution: the attempt must follow an ended one, and a node may take
    over an attempt another node started only once the broker could have handed it on (the
    visibility timeout), as it does when a machine dies, or once that node is gone (restarted,
    stopped or silent: ``registry.gone_since``; the coordinator then puts its message back).
    An attempt already entered (ended, or given up as lost by the coordinator: app.watchdog)
    is over: its message is let go."""
    if (step.task_id, attempt) in ctx.entries:
        raise Refused("attempt_over", f"attempt {attempt} of task {step.task_id} has ended")
    if attempt > 0:
        previous = ctx.entries.get((step.task_id, attempt - 1))
        if previous is None and ctx.sightings.get((step.task_id, attempt - 1)):
            # Started, and its retry record may simply not be entered yet: ask again later.
            # One nobody started (its process died before the fetch) has nothing to wait for.
            raise Refused(
                "previous_attempt_pending", f"attempt {attempt - 1} of task {step.task_id} is not entered yet"
            )
        if previous is not None and previous.outcome not in ("retried", "lost"):
            raise Refused(
                "bad_attempt", f"attempt {attempt - 1} of task {step.task_id} has not ended for a retry"
            )
    seen = ctx.sightings.get((step.task_id, attempt), {})
    if seen and node_id not in seen:
        first = min(seen.values())
        if (now - first).total_seconds() < celeryconfig.VISIBILITY_TIMEOUT and not all(
            registry.gone_since(db.session.get(Node, holder), at, now) for holder, at in seen.items()
        ):
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
    """The ledger entry of a completion: the grant with the bound that applied."""
    node_id, step, attempt = verify_execution(record, ctx)
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
    outcome = str(record.get("outcome", "failed"))
    if outcome not in ("succeeded", "failed", "retried", "lost"):
        raise Refused("malformed", f"unknown outcome {outcome!r}")
    seen = ctx.sightings.get((step.task_id, attempt), {})
    # Only a node seen starting an execution may end it; but an attempt nobody started (its
    # process died before it fetched the input) may be reported ended, unpaid, once the one
    # before it ended, so that the next attempt can start: nothing was run, nothing is granted.
    unstarted_may_end = attempt == 0 or (step.task_id, attempt - 1) in ctx.entries
    if node_id not in seen and (seen or outcome == "succeeded" or not unstarted_may_end):
        reason = "cross_node" if seen else "not_started"
        raise Refused(
            reason, f"node {node_id} was not seen starting attempt {attempt} of task {step.task_id}"
        )
    received = utcnow()
    capability = step.queue
    claimed_units = rules.units_of(
        capability, record.get("units") if isinstance(record.get("units"), dict) else {}
    )
    units = claimed_units
    if capability == "ocr" and job.input_pages is not None:
        units = min(claimed_units, job.input_pages)  # we know how many pages we sent
    elif capability == "llm":  # and how much text
        units = min(claimed_units, rules.llm_units_bound(_input_bytes(step, ctx)))
    result = record.get("result") if isinstance(record.get("result"), dict) else {}
    # The model size picks the LLM reference cost; a node's claim counts only up to the
    # largest model the cooperative runs.
    engine = result.get("engine") if isinstance(result.get("engine"), dict) else {}
    model_bytes = min(as_int(engine.get("model_bytes")), current_app.config["LLM_MODEL_MAX_BYTES"])
    # From the input fetch (the start, as the coordinator itself saw it) to the completion.
    started = seen.get(node_id)
    observed_ms = (
        0
        if started is None
        else max(0, round((received - started).total_seconds() * 1000)) + rules.OBSERVATION_ALLOWANCE_MS
    )
    claimed_ms = as_ms(record.get("wall_seconds"))
    # No execution outlives the hard time limit: its process is killed there.
    cap = min(rules.cap_ms(capability, units, ctx.costs, model_bytes), celeryconfig.task_time_limit * 1000)
    error = record.get("error") if isinstance(record.get("error"), dict) else {}
    error_code = str(error.get("code"))[:64] if error.get("code") else None
    planned = (
        rules.cap_ms(capability, job.input_pages, ctx.costs)
        if capability == "ocr" and job.input_pages
        else None
    )
    # A node is paid for no more executions at a time than it registered: this one gets only
    # the time after one of its slots came free (app.ledger.rules.concurrency_bound).
    node = ctx.nodes.get(node_id) or db.session.get(Node, node_id)
    concurrency = node.concurrency or 1
    busy_until = list(node.busy_until or [])
    ended_ms = _epoch_ms(received)  # the start counted back from the observation: no rounding apart
    begun_ms = ended_ms - max(0, observed_ms - rules.OBSERVATION_ALLOWANCE_MS) if started else ended_ms
    free_ms, slot_start = rules.concurrency_bound(busy_until, concurrency, begun_ms, ended_ms)
    if started is not None:
        node.busy_until = rules.occupy(busy_until, concurrency, slot_start, min(claimed_ms, free_ms))
    if started is None:
        decision = rules.Grant(0, "not_started")
    elif step.task_id in ctx.granted:
        decision = rules.Grant(0, "already_granted")  # a task is paid once, however it ended
    elif step.state in StepState.FINAL and outcome != "succeeded":
        decision = rules.Grant(0, "step_finished")
    elif step.is_replica and outcome != "succeeded":  # a check that gave no result
        decision = rules.Grant(0, "replica_not_completed")
    elif job.state == JobState.FAILED:  # failed, or stalled, before this execution ended
        decision = rules.Grant(0, "job_failed")
    else:
        decision = rules.grant(
            outcome,
            claimed_ms,
            min(observed_ms, free_ms),
            cap,
            error_code=error_code,
            time_limit_ms=celeryconfig.task_soft_time_limit * 1000,
            planned_cap_ms=planned,
        )
        if free_ms < observed_ms and decision.basis.endswith("observed") and decision.granted_ms < claimed_ms:
            decision = rules.Grant(decision.granted_ms, decision.basis.replace("observed", "concurrency"))
    try:
        rate: Decimal | None = rules.rate_at(ctx.rates, capability, received)
    except LookupError:
        rate = None
    # A result that is checked has its grant entered held, until the check decides it
    # (app.validation.checks); a late record of a finished step is not checked.
    moves_step = step.state not in StepState.FINAL and step.state != StepState.VERIFYING
    held = (
        outcome == "succeeded" and moves_step and job.state not in JobState.FINAL and checks.hold(step, node)
    )
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
        started_at=as_time(record.get("started_at")),
        finished_at=as_time(record.get("finished_at")),
        wall_ms=claimed_ms,
        cpu_ms=as_ms(record.get("cpu_seconds")),
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
        held=held,
    )
    db.session.add(entry)  # a concurrent worker's row makes the commit fail: see batch.apply()
    ctx.remember(entry)
    return entry


def _input_bytes(step: JobStep, ctx: Context) -> int:
    """Bytes of what the coordinator sent an LLM step: its job's text (its size, read with the
    batch's others in one query: ``Context.input_bytes``), or the entered result of the step
    before (``jobs.input_of``)."""
    if step.position == 0:
        return ctx.input_bytes(step.job_id)
    sent = jobs.input_of(step)
    return len(sent[1]) if sent else 0


def _epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _advance(step: JobStep, entry: LedgerEntry, record: dict[str, Any], ctx: Context) -> None:
    """Move the step and its job on after an entered execution."""
    job: Job = step.job
    if job.state in JobState.FINAL or step.state in StepState.FINAL:
        return  # a late duplicate of a finished step
    if step.state == StepState.VERIFYING:
        return  # its result is in and being checked: a late record of another attempt
    error = record.get("error") if isinstance(record.get("error"), dict) else {}
    step.node = entry.node
    step.node_id = entry.node_id
    step.attempts = max(step.attempts, entry.attempt + 1)
    if entry.outcome == "succeeded":
        # Accepted, or held until another node's result agrees (app.validation.checks).
        checks.on_result(step, entry, record.get("result"), ctx)
    elif record.get("final"):
        code = str(error.get("code") or "internal_error")[:64]
        message = as_text(error.get("message") or "", 4000) or ""
        if step.is_replica:
            checks.on_replica_failed(step, code, message, entry.received_at, ctx)
            return
        lifecycle.step_failed(
            step, code, message, at=entry.received_at, wall_ms=entry.wall_ms, cpu_ms=entry.cpu_ms
        )
    else:  # retried or lost: it will run again
        lifecycle.step_retrying(
            step, str(error.get("code") or "")[:64] or None, as_text(error.get("message") or "", 4000)
        )
