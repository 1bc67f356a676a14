"""Results checked before they reach the member or are paid: replicas, verdicts, held grants,
node trust and suspicion (docs/decisions/0011).

When the ledger enters a step's result (``app.ledger.executions``), this module decides, by the
node's trust (``app.validation.policy``), whether another node re-runs the step first. If so:

- the step waits in ``verifying`` with its result held back from the member, the execution's
  grant is entered *held* (``LedgerEntry.held``), and a replica of the step (a ``JobStep`` row
  with a task id of its own, ``replica_of`` the step) is sent to the step's queue ahead of new
  work (``celeryconfig.REPLICA_PRIORITY``);
- only a node other than the ones that produced the step's results may start the replica, and
  one of another participant whenever one is online to take it, running the same model file
  for an LLM step (``check_start``);
- the replica's result is compared with the step's: agreeing, both are valid, their grants are
  released (``GrantDecision``) and the member gets the result; disagreeing, a third result
  decides, and a result that loses is ``invalid``, its grant refused (``invalid_result``);
- every verdict moves its node's trust: a valid result adds to its streak, an invalid one resets
  it, and a node with too many invalid results in a window is paused (``paused_by``
  ``suspicion``) until an operator resumes it.

A trusted node's result not drawn for a check is accepted as it is and paid at once. The caller
(the ledger's batch) holds the locks on the step's job and on the nodes concerned
(``app.ledger.context``) and commits.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

import celeryconfig
from app import jobs, lifecycle, registry
from app.extensions import db
from app.ledger import periods, settlement
from app.ledger.context import Context
from app.ledger.verification import Refused
from app.models import GrantDecision, Job, JobState, LedgerEntry, Node, StepState, utcnow
from app.models import JobStep as Step
from app.validation import policy, settings

#: Verdicts a result can be given (``JobStep.verdict``).
PENDING, VALID, INVALID = "pending", "valid", "invalid"
#: Why a held grant was refused.
INVALID_RESULT = "invalid_result"
NO_AGREEMENT = "no_agreement"

_draw = secrets.SystemRandom()
#: Steps whose results are not re-run: a chat answer is sampled (at a temperature above 0 two
#: honest nodes disagree) and waited for by a client on the line; embeddings are one read of
#: the same kind. Their tokens are still bounded by the input and metered (docs/decisions/0018).
#: A no-op (GRID_NOOP_JOBS, benchmarks only) has no result to compare.
UNCHECKED_STEPS = ("chat", "embeddings", "noop")


# --- a result comes in -----------------------------------------------------------------------


def hold(step: Step, node: Node | None) -> bool:
    """Whether a succeeded execution of ``step`` by ``node``, about to be entered, is checked:
    its grant is then entered held (entries are written once). A replica's always is; a step's
    is while its node is on probation, and at random once it is trusted."""
    if step.is_replica:
        return True
    if not settings.enabled() or node is None or step.name in UNCHECKED_STEPS:
        return False
    return policy.needs_check(node.validated_streak or 0, settings.current(), _draw.random())


def on_result(step: Step, entry: LedgerEntry, result: Any, ctx: Context) -> None:
    """A succeeded execution of ``step`` (or of a replica) was entered as ``entry``, held if
    ``hold`` said it is checked."""
    if step.is_replica:
        _on_replica(step, entry, result, ctx)
        return
    if not entry.held:
        _accept(step, result, entry.received_at, ctx, wall_ms=entry.wall_ms, cpu_ms=entry.cpu_ms)
        return
    node = _node(entry.node_id, ctx)
    streak = (node.validated_streak or 0) if node is not None else 0
    rules = settings.current()
    lifecycle.step_verifying(step, result, wall_ms=entry.wall_ms, cpu_ms=entry.cpu_ms)
    step.verdict = PENDING
    step.check = {
        "reason": "probation" if not policy.trusted(streak, rules) else "spot_check",
        "probability": round(policy.check_probability(streak, rules), 4),
        "results": [],
    }
    _ask_replica(step, ctx, entry.received_at)


def on_replica_failed(replica: Step, code: str, message: str, at: datetime, ctx: Context) -> None:
    """A replica failed for good (the input did not suit its node, its engine failed): it gives
    no result, and the step's results are weighed again without it."""
    lifecycle.replica_failed(replica, code, message, at=at)
    original = replica.replica_of
    if original.state == StepState.VERIFYING:
        _decide(original, ctx, at)


def _accept(step: Step, result: Any, at: datetime, ctx: Context, **measured: int | None) -> None:
    following = lifecycle.step_succeeded(step, result, at=at, **measured)
    if following is not None:  # it works on this result: sent once the batch is committed
        ctx.after_commit.append(lambda: jobs.send_step(following))


def _on_replica(replica: Step, entry: LedgerEntry, result: Any, ctx: Context) -> None:
    lifecycle.replica_succeeded(
        replica, result, at=entry.received_at, wall_ms=entry.wall_ms, cpu_ms=entry.cpu_ms
    )
    replica.verdict = PENDING
    original = replica.replica_of
    if original.state == StepState.VERIFYING:
        _decide(original, ctx, entry.received_at)
        return
    # The step was decided without it, or its job ended meanwhile (failed, stalled): judged
    # against what the member got, or not judged at all.
    if original.state == StepState.SUCCEEDED:
        rules = settings.current()
        valid = policy.result_distance(original.name, original.result, result) <= rules.noise_distance(
            original.name
        )
        _judge(replica, valid, entry.received_at, ctx, reason=None if valid else INVALID_RESULT)
    else:
        replica.verdict = None
        _refuse_grant(replica, "step_ended", entry.received_at, ctx)


def _ask_replica(original: Step, ctx: Context, at: datetime) -> None:
    replica = Step(
        job_id=original.job_id,
        position=original.position,
        name=original.name,
        task_name=original.task_name,
        queue=original.queue,
        state=StepState.QUEUED,
    )
    replica.replica_of = original
    db.session.add(replica)
    lifecycle.step_dispatched(replica, at)
    ctx.after_commit.append(lambda: jobs.send_step(replica))


# --- results compared ------------------------------------------------------------------------


def _results(original: Step) -> list[Step]:
    """The step's rows that hold a result still to be judged: the step's own, then its
    succeeded replicas' in the order they were asked for."""
    return [original] + [
        r for r in original.replicas if r.state == StepState.SUCCEEDED and r.verdict == PENDING
    ]


def _decide(original: Step, ctx: Context, at: datetime) -> None:
    rules = settings.current()
    rows = _results(original)
    asked = len(original.replicas)
    running = any(r.state not in StepState.FINAL for r in original.replicas)
    producers = _producers(original)
    # Another replica can be asked for while the budget allows and a node that produced none of
    # the results is online to run it; otherwise the results in hand decide now.
    more_possible = running or (
        asked < rules.max_replicas and bool(_online(original.queue, at, excluding=producers))
    )
    decision = policy.decide_step(
        original.name,
        [row.result for row in rows],
        rules,
        more_possible=more_possible,
        owners=[_owner_of(row.node_id) for row in rows],
        max_chars=_max_chars(original),
    )
    check = dict(original.check or {})
    check["distances"] = [
        {"between": [rows[i].task_id, rows[j].task_id], "distance": round(gap, 6)}
        for (i, j), gap in sorted(decision.distances.items())
    ]
    original.check = check
    if decision.outcome == policy.AGREED:
        canonical = rows[decision.canonical]
        check["results"] = [
            {"task_id": row.task_id, "node": row.node, "verdict": VALID if i in decision.valid else INVALID}
            for i, row in enumerate(rows)
        ]
        check["canonical"] = canonical.task_id
        for i, row in enumerate(rows):
            valid = i in decision.valid
            _judge(row, valid, at, ctx, reason=None if valid else INVALID_RESULT)
        original.node, original.node_id = canonical.node, canonical.node_id
        _accept(original, canonical.result, at, ctx)
        return
    if decision.outcome == policy.NEED_REPLICA:
        if not running:  # else: the replica asked for is still running; wait for it
            _ask_replica(original, ctx, at)
        return
    # No two results agree, and no more replicas are asked for: nothing is given as the
    # step's result, and nothing held is paid.
    check["results"] = [{"task_id": row.task_id, "node": row.node, "verdict": None} for row in rows]
    for row in rows:
        row.verdict = None
        _refuse_grant(row, NO_AGREEMENT, at, ctx)
    lifecycle.step_failed(
        original,
        NO_AGREEMENT,
        f"No two of {len(rows)} results of this step agreed (nodes disagree); it cannot be validated.",
        at=at,
        wall_ms=original.wall_ms or 0,
        cpu_ms=original.cpu_ms or 0,
    )


def _judge(row: Step, valid: bool, at: datetime, ctx: Context, reason: str | None) -> None:
    """Give a result its verdict: its grant released or refused, its node's trust moved."""
    row.verdict = VALID if valid else INVALID
    entry = _entry_of(row, ctx)
    if entry is not None and entry.held:
        _decide_grant(
            entry, "released" if valid else "refused", "validated" if valid else reason, at, ctx.closed
        )
    node = _node(row.node_id, ctx)
    if node is None:
        return
    trust = policy.after_verdict(
        policy.Trust(node.validated_streak or 0, node.validated_results or 0, node.invalid_results or 0),
        valid,
    )
    node.validated_streak, node.validated_results, node.invalid_results = (
        trust.streak,
        trust.validated,
        trust.invalid,
    )
    if not valid:
        node.last_invalid_at = at
        _suspect(node, at, ctx)


def _refuse_grant(row: Step, reason: str, at: datetime, ctx: Context) -> None:
    entry = _entry_of(row, ctx)
    if entry is not None and entry.held:
        _decide_grant(entry, "refused", reason, at, ctx.closed)


def _decide_grant(entry: LedgerEntry, decision: str, reason: str, at: datetime, closed: set[str]) -> None:
    grant = GrantDecision(  # one per entry: the unique entry_id refuses a second
        node_id=entry.node_id,
        decision=decision,
        reason=reason,
        decided_at=at,
        period=periods.open_period_for(at, closed),
    )
    grant.entry = entry
    db.session.add(grant)


def _entry_of(row: Step, ctx: Context) -> LedgerEntry | None:
    """The entry of the execution whose result ``row`` holds (its succeeded attempt)."""
    for (task_id, _), entry in ctx.entries.items():
        if task_id == row.task_id and entry.outcome == "succeeded":
            return entry
    entry = db.session.scalar(
        select(LedgerEntry).where(
            LedgerEntry.task_id == row.task_id, LedgerEntry.outcome == "succeeded", LedgerEntry.attempt >= 0
        )
    )
    if entry is not None:
        ctx.remember(entry)
    return entry


def _node(node_id: str | None, ctx: Context) -> Node | None:
    if node_id is None:
        return None
    return ctx.nodes.get(node_id) or db.session.get(Node, node_id, with_for_update=True)


def _suspect(node: Node, at: datetime, ctx: Context) -> None:
    """Pause a node whose invalid results in the window reach the threshold."""
    rules = settings.current()
    since = at - rules.suspicion_window
    db.session.flush()  # this batch's verdicts count too (the ledger's batch does not autoflush)
    count = db.session.scalar(
        select(func.count(GrantDecision.id)).where(
            GrantDecision.node_id == node.id,
            GrantDecision.reason == INVALID_RESULT,
            GrantDecision.decided_at >= since,
        )
    )
    if not policy.suspicious(count, rules) or node.paused_by == registry.SUSPICION:
        return
    registry.pause(node, registry.SUSPICION)
    node.pause_reason = (
        f"{count} results found invalid by other nodes within {rules.suspicion_window} "
        f"(last at {at:%Y-%m-%d %H:%M} UTC): paused until an operator resumes it."
    )
    ctx.after_commit.append(lambda: registry.tell_worker(node))


def refuse_stranded(limit: int = 1000) -> int:
    """Held grants of jobs that failed or were cancelled before their results were compared:
    no check will decide them any more. They are refused (``job_ended``), so a statement shows
    them decided rather than held for ever. Returns how many; the caller commits."""
    settlement.lock_ledger_for_entries()
    stranded = db.session.scalars(
        select(LedgerEntry)
        .join(Job, Job.id == LedgerEntry.job_id)
        .where(
            LedgerEntry.held.is_(True),
            Job.state.in_((JobState.FAILED, JobState.CANCELLED)),
            ~select(GrantDecision.id).where(GrantDecision.entry_id == LedgerEntry.id).exists(),
        )
        .limit(limit)
    ).all()
    closed, now = periods.closed(), utcnow()
    for entry in stranded:
        _decide_grant(entry, "refused", "job_ended", now, closed)
    return len(stranded)


# --- who may run a replica -------------------------------------------------------------------


def _producers(original: Step, but: Step | None = None) -> set[str]:
    """The nodes that produced, or are running, the step's results (``but`` one row)."""
    return {row.node_id for row in (original, *original.replicas) if row.node_id and row is not but}


def _owner_of(node_id: str | None) -> int | None:
    node = db.session.get(Node, node_id) if node_id else None
    return node.participant_id if node is not None else None


def _max_chars(original: Step) -> int:
    """The longest text a result of this step may hold and still be compared: a page's worth
    per page for OCR; for a summary or translation, four times its input and a margin."""
    if original.name == "ocr":
        return policy.MAX_PAGE_CHARS
    sent = jobs.input_of(original)
    return 4 * len(sent[1] if sent else b"") + policy.MAX_PAGE_CHARS


def _online(queue: str, now: datetime, excluding: Iterable[str] = ()) -> list[Node]:
    """Nodes the registry sees online that registered ``queue`` (only those seen within the
    offline threshold are read)."""
    excluded = set(excluding)
    recent = now - timedelta(seconds=celeryconfig.NODE_OFFLINE_AFTER_SECONDS)
    found = db.session.scalars(select(Node).where(Node.last_seen_at >= recent))
    return [
        node
        for node in found
        if node.id not in excluded and queue in (node.queues or []) and registry.state(node, now) == "online"
    ]


def check_start(replica: Step, node_id: str, now: datetime) -> None:
    """Who may run a replica: never a node that produced one of its step's results; not a
    node of the same member as one of them while another member's node is online to take it;
    and for an LLM step, not a node registered with another model file while another member's
    node with the step's model file is online. A model file a node merely claims can so steer
    a replica among other members' nodes, never to its own member's."""
    original = replica.replica_of
    producers = _producers(original, but=replica)
    if node_id in producers:
        raise Refused("same_node", f"node {node_id} produced a result this replica checks")
    node = db.session.get(Node, node_id)
    owners = {_owner_of(producer) for producer in producers}
    others = [
        n
        for n in _online(replica.queue, now, excluding=producers | {node_id})
        if n.participant_id not in owners
    ]
    if node.participant_id in owners and others:
        raise Refused("same_owner", "a node of another member is online to check this result")
    if replica.queue == celeryconfig.LLM_QUEUE:
        model = _model_of(db.session.get(Node, original.node_id) if original.node_id else None)
        if model is not None and _model_of(node) != model and any(_model_of(n) == model for n in others):
            raise Refused("other_model", "the step's result came from another model file")


def _model_of(node: Node | None) -> str | None:
    model = (node.probe or {}).get("model") if node is not None else None
    return model.get("sha256") if isinstance(model, dict) else None
