"""What a batch of records needs from the database, read up front.

The ledger enters records in batches (``app.ledger.batch``): the steps, entries, sightings and
nodes a batch concerns are read in a few queries, with the locks that keep it from racing a
cancel or a settlement, and kept up to date as the batch adds sightings and entries. Every
module that enters a kind of record (``app.ledger.executions``, ``app.registry``) reads what it
needs from here, and adds to ``after_commit`` what must wait for the batch's commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from app import nodes
from app.extensions import db
from app.ledger import periods, rules, settlement
from app.ledger.values import as_uuid, aware
from app.models import ExecutionSighting, Job, JobInput, JobStep, LedgerEntry, Node, Rate


@dataclass
class Context:
    """What a batch of records needs from the database, read in a few queries per batch and
    kept up to date as the batch adds sightings and entries."""

    costs: rules.ReferenceCosts = field(default_factory=rules.ReferenceCosts)
    rates: list[rules.Rate] = field(default_factory=list)
    closed: set[str] = field(default_factory=set)
    secrets: dict[str, str | None] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    #: The batch's nodes, locked (``lock_nodes``).
    nodes: dict[str, Node] = field(default_factory=dict)
    steps: dict[str, JobStep | None] = field(default_factory=dict)
    entries: dict[tuple[str, int], LedgerEntry] = field(default_factory=dict)
    granted: set[str] = field(default_factory=set)
    sightings: dict[tuple[str, int], dict[str, datetime]] = field(default_factory=dict)
    #: Heartbeat slots written in this batch, per node.
    heartbeats: dict[str, set[int]] = field(default_factory=dict)
    #: What to do once the batch is committed (broker commands to nodes).
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    #: Bytes of the kept inputs of the batch's jobs (``input_bytes``).
    input_sizes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, records: Iterable[Any] = (), entries: bool = True) -> Context:
        """Read at the start of the transaction that enters records, after taking the lock a
        settlement waits on: a period closed meanwhile is seen closed here. ``entries=False``:
        a batch of nodes' notices only (app.registry), which enters no ledger entry, needs
        neither that lock nor the rates and periods."""
        ctx = cls()
        if entries:
            settlement.lock_ledger_for_entries()
            ctx.rates = [
                rules.Rate(r.capability, r.eur_per_hour, aware(r.effective_from))
                for r in db.session.scalars(select(Rate))
            ]
            ctx.closed = periods.closed()
        records = [r for r in records if isinstance(r, dict)]
        ctx.prefetch(
            {str(r.get("task_id", "")) for r in records}, {str(r.get("node_id") or "") for r in records}
        )
        ctx.lock_nodes()
        return ctx

    def lock_nodes(self) -> None:
        """Lock the batch's nodes, in id order, after its jobs (as every batch does): a node's
        execution slots (``Node.busy_until``) and trust are read and written by one batch at a
        time. The nodes whose results a replica in the batch checks are among them: its verdict
        moves their trust too (app.validation.checks)."""
        ids = set(self.names)
        for step in self.steps.values():
            if step is not None and step.replica_of_id is not None:
                original = step.replica_of
                ids |= {row.node_id for row in (original, *original.replicas) if row.node_id}
        if ids:
            query = select(Node).where(Node.id.in_(list(ids))).order_by(Node.id).with_for_update()
            for node in db.session.scalars(query.execution_options(populate_existing=True)):
                self.nodes[node.id] = node

    def prefetch(self, task_ids: set[str], node_ids: set[str]) -> None:
        """Load the steps, entries, sightings and nodes these records concern, in one query each."""
        task_ids = {t for t in task_ids if as_uuid(t) and t not in self.steps}
        node_ids = {n for n in node_ids if as_uuid(n) and n not in self.secrets}
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
        # The steps with their jobs joined (one query), then their jobs' steps (one more).
        for step in db.session.scalars(query.options(joinedload(JobStep.job).selectinload(Job.steps))):
            self.steps[step.task_id] = step
        for entry in db.session.scalars(select(LedgerEntry).where(LedgerEntry.task_id.in_(task_ids))):
            self.remember(entry)
        for sighting in db.session.scalars(
            select(ExecutionSighting).where(ExecutionSighting.task_id.in_(task_ids))
        ):
            self.sightings.setdefault((sighting.task_id, sighting.attempt), {})[sighting.node_id] = aware(
                sighting.first_seen_at
            )

    def step(self, task_id: str) -> JobStep | None:
        if as_uuid(task_id) is None:
            return None
        if task_id not in self.steps:
            self.prefetch({task_id}, set())
        return self.steps.get(task_id)

    def secret_of(self, node_id: str) -> str | None:
        """The node's secret, or None if it is unknown or revoked."""
        if as_uuid(node_id) is None:
            return None
        if node_id not in self.secrets:
            self.prefetch(set(), {node_id})
        return self.secrets.get(node_id)

    def input_bytes(self, job_id: str) -> int:
        """Bytes of a job's kept input (0 once it is let go): the sizes of every job of the batch
        read in one query the first time one is asked for, never the bytes themselves (one
        query and a text's transfer per LLM completion before)."""
        if job_id not in self.input_sizes:
            job_ids = {step.job_id for step in self.steps.values() if step is not None} | {job_id}
            job_ids -= set(self.input_sizes)
            sizes = db.session.execute(
                select(JobInput.job_id, func.octet_length(JobInput.data)).where(JobInput.job_id.in_(job_ids))
            )
            self.input_sizes.update(dict.fromkeys(job_ids, 0))
            self.input_sizes.update({found: int(size or 0) for found, size in sizes})
        return self.input_sizes[job_id]

    def remember(self, entry: LedgerEntry) -> None:
        if entry.attempt >= 0:  # reversals sit outside the executions' (task, attempt) space
            self.entries[(entry.task_id, entry.attempt)] = entry
        # A task is paid once: its first grant, or its first success (granted or not: a second
        # success of another attempt is no new work).
        if entry.reverses_id is None and (entry.granted_ms > 0 or entry.outcome == "succeeded"):
            self.granted.add(entry.task_id)


def node_secret_if_active(node: Node | None) -> str | None:
    """The secret of an approved, unrevoked node; None for any other."""
    if node is None or node.revoked_at is not None or node.approved_at is None:
        return None
    return nodes.node_secret(node)
