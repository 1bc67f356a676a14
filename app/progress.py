"""Progress of running tasks as their nodes report it (``workers.progress``): checked against
what the coordinator knows, bounded, and kept in keys of its own for the API to show.

Nodes have no access to these keys (``app.broker_acl``): a node reports over HTTP, signed,
and only for an attempt the coordinator saw it start; pages are bounded by the pages the
coordinator counted. Progress is shown, never paid: the ledger grants from completions only.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import redis
from sqlalchemy import select

import celeryconfig
from app import broker_acl, nodes
from app.extensions import db
from app.ledger.context import Context
from app.ledger.verification import Refused, verify_node
from app.models import ExecutionSighting, JobStep, StepState
from workers import protocol

log = logging.getLogger(__name__)

KEY_PREFIX = "grid:progress:"
#: What a report may say, in the order the API shows it.
FIELDS = ("pages_done", "pages_total", "pieces_done", "pieces_total", "tokens")


#: Seconds a progress read or write waits for Redis: progress is best effort, and a broker away
#: must not slow the job's page down.
REDIS_TIMEOUT_SECONDS = 1


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return broker_acl.quick_client(REDIS_TIMEOUT_SECONDS)


def held_attempt(record: Any, parsed: Any, name: str | None = None) -> JobStep:
    """The step of the attempt a node reports on (progress, streamed text), or ``Refused``: the
    record signed by a known node, whose worker it is, for a task the coordinator dispatched (a
    ``name`` step when given), an attempt that node was seen starting, not ended yet."""
    ctx = Context()  # the node only: no lock is taken for a report
    node_id = verify_node(record, ctx)
    if not nodes.is_own_worker(ctx.names[node_id], parsed.node):
        raise Refused("wrong_worker_name", f"node {ctx.names[node_id]}'s worker is not {parsed.node!r}")
    step = db.session.scalar(select(JobStep).where(JobStep.task_id == parsed.task_id))
    if step is None:
        raise Refused("never_dispatched", f"the coordinator never dispatched task {parsed.task_id}")
    if name is not None and step.name != name:
        raise Refused("wrong_task", f"task {step.task_id} is a {step.name}, not a {name}")
    seen = db.session.scalar(
        select(ExecutionSighting.id).where(
            ExecutionSighting.task_id == parsed.task_id,
            ExecutionSighting.attempt == parsed.attempt,
            ExecutionSighting.node_id == node_id,
        )
    )
    if seen is None:
        raise Refused("not_started", f"node {node_id} was not seen starting attempt {parsed.attempt}")
    if step.state in StepState.FINAL:
        raise Refused("step_finished", f"task {step.task_id} is {step.state}")
    return step


def report(record: Any) -> None:
    """Keep a node's progress report, or raise ``Refused`` (not stored: progress is no claim
    to pay, and storing each refusal would let anyone fill the table)."""
    try:
        parsed = protocol.parse("progress", record)
    except protocol.Invalid as invalid:
        raise Refused(invalid.reason, invalid.detail) from None
    step = held_attempt(record, parsed)
    values = bounded(parsed.model_dump(include=set(FIELDS), exclude_none=True), step.job.input_pages)
    try:
        _redis().set(
            f"{KEY_PREFIX}{step.task_id}",
            json.dumps({**values, "attempt": parsed.attempt}),
            ex=celeryconfig.task_time_limit + celeryconfig.VISIBILITY_TIMEOUT,
        )
    except redis.RedisError as exc:  # shown later, or not at all: never an error for the node
        log.warning("progress of task %s not kept: %s", step.task_id, exc)


def bounded(values: dict[str, int], input_pages: int | None) -> dict[str, int]:
    """Reported counts within what the coordinator knows: pages within the pages it counted,
    what is done within its total."""
    values = dict(values)
    if input_pages is not None and "pages_total" in values:
        values["pages_total"] = min(values["pages_total"], input_pages)
    for unit in ("pages", "pieces"):
        done, total = f"{unit}_done", f"{unit}_total"
        if done in values and total in values:
            values[done] = min(values[done], values[total])
    return values


def of(step: JobStep) -> dict[str, int] | None:
    """The last progress reported for a running step, if any."""
    try:
        raw = _redis().get(f"{KEY_PREFIX}{step.task_id}")
    except redis.RedisError as exc:
        log.debug("no progress for %s: %s", step.task_id, exc)
        return None
    if raw is None:
        return None
    stored = json.loads(raw)
    return {key: stored[key] for key in FIELDS if key in stored} or None
