"""Database tables of the coordinator: API tokens, jobs and their steps, the ledger.

PostgreSQL only (docs/decisions/0008). Durations are stored as integer milliseconds, summed into
Decimal hours only when money is computed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    FetchedValue,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db

BigId = BigInteger()


class Money(TypeDecorator):
    """NUMERIC, bound and read as ``Decimal`` (never a float)."""

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int = 18, scale: int = 6) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)

    def process_bind_param(self, value, dialect):
        return None if value is None else Decimal(value)

    def process_result_value(self, value, dialect):
        return None if value is None else Decimal(str(value))


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class JobState:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
    ALL = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)


class StepState(JobState):
    RETRYING = "retrying"  # an attempt failed for a transient reason; it will run again
    SKIPPED = "skipped"  # an earlier step failed or the job was cancelled first
    #: Its result is in, and another node is re-running it: the user gets it once validated
    #: (app.validation).
    VERIFYING = "verifying"
    FINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, SKIPPED})


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    owner: Mapped[str] = mapped_column(String(254), index=True)
    #: SHA-256 of the token: tokens are 256-bit random, so a fast hash is enough.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: None: the token works until revoked; else it is refused (``token_expired``) from then on.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The webhook signing secret is derived from the coordinator's key, the token's id and this
    #: (app.webhooks.secret): rotating it counts one on; nothing secret is stored.
    webhook_secret_generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


class Job(db.Model):
    __tablename__ = "jobs"
    #: Ended jobs whose content is kept, by end: the retention run's batches (app.gdpr).
    __table_args__ = (
        Index(
            "ix_jobs_content_kept_finished_at",
            "finished_at",
            postgresql_where=text("content_erased_at IS NULL AND finished_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True, default=JobState.QUEUED)
    owner: Mapped[str] = mapped_column(String(254), index=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input_name: Mapped[str | None] = mapped_column(String(255))
    input_type: Mapped[str | None] = mapped_column(String(32))
    input_bytes: Mapped[int | None] = mapped_column(Integer)
    input_pages: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: When its content (input, texts of its results, the file's name) was erased, by retention
    #: or on request (app.gdpr); its metadata, timings and cost stay.
    content_erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Where the job's events are POSTed, signed (app.webhooks); checked at submission.
    callback_url: Mapped[str | None] = mapped_column(String(2000))

    #: The job's steps, in order; replicas of a step (``JobStep.replica_of_id``) are not among
    #: them but under their step's ``replicas``.
    steps: Mapped[list[JobStep]] = relationship(
        back_populates="job",
        order_by="JobStep.position",
        cascade="all, delete-orphan",
        primaryjoin="and_(Job.id == JobStep.job_id, JobStep.replica_of_id.is_(None))",
    )


class JobStep(db.Model):
    __tablename__ = "job_steps"
    #: Steps that succeeded, by when (the stats' requests; replicas are not requests).
    __table_args__ = (
        Index(
            "ix_job_steps_succeeded_at",
            "finished_at",
            postgresql_where=text("replica_of_id IS NULL AND state = 'succeeded'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(16))  # ocr | summarise | translate
    task_name: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(16))
    task_id: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    state: Mapped[str] = mapped_column(String(16), default=StepState.QUEUED)
    node: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    wall_ms: Mapped[int | None] = mapped_column(BigInteger)
    cpu_ms: Mapped[int | None] = mapped_column(BigInteger)
    #: The node whose entered result this row holds (the last one to succeed on it).
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"))
    #: Set on a replica: the step whose result it re-runs on another node (app.validation).
    #: A replica has the step's name, task, queue and input, and a task id of its own.
    replica_of_id: Mapped[int | None] = mapped_column(ForeignKey("job_steps.id"), index=True)
    #: What the comparison of results decided about the result this row holds: ``pending``
    #: (replicas running), ``valid``, ``invalid``; None when it was not checked (a trusted
    #: node's result not drawn for a spot check, or validation off).
    verdict: Mapped[str | None] = mapped_column(String(16))
    #: On a checked step: how its results compared (candidates, distances, the decision).
    check: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    job: Mapped[Job] = relationship(back_populates="steps")
    replica_of: Mapped[JobStep | None] = relationship(
        remote_side="JobStep.id", back_populates="replicas", foreign_keys=[replica_of_id]
    )
    replicas: Mapped[list[JobStep]] = relationship(
        back_populates="replica_of", order_by="JobStep.id", foreign_keys=[replica_of_id]
    )

    @property
    def is_replica(self) -> bool:
        return self.replica_of_id is not None


class JobInput(db.Model):
    """What a job's first step works on: the uploaded document or the submitted text, kept by
    the coordinator and served to the one node that starts each attempt (docs/decisions/0009).
    Later steps work on the step before's entered result."""

    __tablename__ = "job_inputs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    #: ``document`` (bytes of a PDF or image) or ``text`` (UTF-8).
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Participant(db.Model):
    """A member who lends machines and is paid for their compute hours."""

    __tablename__ = "participants"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: The password's hash (app.accounts), set from an invitation; None: cannot sign in.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    #: Operators run the whole grid from the web pages (``participants invite --operator``).
    operator: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    #: Part of every session's id (Flask-Login): bumped when the password is set or the member
    #: signs out, which ends every session signed in before.
    session_generation: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    nodes: Mapped[list[Node]] = relationship(back_populates="participant", order_by="Node.created_at")

    # What Flask-Login asks of a user (its UserMixin defines __eq__, which a mapped class should not).
    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return f"{self.id}:{self.session_generation}"


class Invitation(db.Model):
    """A one-time link an operator gives a participant to set their password (app.accounts)."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    #: SHA-256 of the link's token: 256-bit random, as API tokens (app.auth.hash_token).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    participant: Mapped[Participant] = relationship()


class Node(db.Model):
    """A volunteer machine. Its secret is derived from the coordinator's key, never stored."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id"), index=True)
    #: Bumped to issue a new secret (the old one stops verifying).
    secret_generation: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: When an operator approved it; until then (pending) it has no broker user and everything
    #: it sends is refused. Nodes enrolled by operators are approved at once.
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The ``sent_at`` and nonce of the last register, heartbeat or stop notice entered from it:
    #: an older or equal one is a replay (workers.protocol).
    last_notice_at: Mapped[float | None] = mapped_column(Float(precision=53))
    last_notice_nonce: Mapped[str | None] = mapped_column(String(32))
    #: Paused by its owner or an operator: its worker consumes nothing until resumed.
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: ``owner`` or ``operator``: a node an operator paused is resumed by an operator only.
    paused_by: Mapped[str | None] = mapped_column(String(16))
    # What its worker registered (signed) when it last started: its probe, as a claim.
    worker: Mapped[str | None] = mapped_column(String(200))
    queues: Mapped[list[str] | None] = mapped_column(JSON)
    probe: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    registered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The coordinator's clock when a signed heartbeat or record last came from it.
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Set when its worker said it was stopping; cleared when it registers again.
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: How many tasks its worker said it runs at once (registered), and when each of those
    #: execution slots is next free (epoch ms): executions beyond them are not paid
    #: (app.ledger.rules.concurrency_bound).
    concurrency: Mapped[int | None] = mapped_column(Integer)
    busy_until: Mapped[list[int] | None] = mapped_column(JSON)
    #: Why it is paused, when the grid paused it (``paused_by`` ``suspicion``: too many invalid
    #: results, app.validation); shown to its owner and to operators.
    pause_reason: Mapped[str | None] = mapped_column(Text)
    # Its trust (app.validation): results validated in a row since its last invalid one (it is
    # trusted from ``VALIDATION_PROBATION_RESULTS`` on), and its totals.
    validated_streak: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    validated_results: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    invalid_results: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_invalid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    participant: Mapped[Participant] = relationship(back_populates="nodes")


class NodeHeartbeat(db.Model):
    """One heartbeat interval in which a node was seen: uptime is the share of intervals seen."""

    __tablename__ = "node_heartbeats"
    __table_args__ = (UniqueConstraint("node_id", "slot", name="uq_node_heartbeats_slot"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    #: Seconds since the epoch // heartbeat interval.
    slot: Mapped[int] = mapped_column(BigInteger)


class NodeHeartbeatCount(db.Model):
    """How many slots of a run of ``registry.SLOTS_PER_RUN`` consecutive ones (``run`` = slot //
    SLOTS_PER_RUN) a node was seen in: kept by PostgreSQL's triggers as heartbeats are inserted or
    deleted (migration c4e7a1d9b2f6), so that uptime over 30 days reads whole runs here."""

    __tablename__ = "node_heartbeat_counts"

    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), primary_key=True)
    run: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seen: Mapped[int] = mapped_column(Integer)


class Rate(db.Model):
    """€ per granted compute hour for a capability, from a date on. Rows are never changed:
    a new rate is a new row, so history keeps the rate it was paid at."""

    __tablename__ = "rates"

    id: Mapped[int] = mapped_column(primary_key=True)
    capability: Mapped[str] = mapped_column(String(16))
    eur_per_hour: Mapped[Decimal] = mapped_column(Money(12, 6))
    effective_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(254))


class ExecutionSighting(db.Model):
    """The coordinator's own first sight of a node starting an execution."""

    __tablename__ = "execution_sightings"
    __table_args__ = (UniqueConstraint("task_id", "attempt", "node_id", name="uq_execution_sightings_start"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(36), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"))
    worker: Mapped[str | None] = mapped_column(String(200))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LedgerEntry(db.Model):
    """One execution of a volunteer task, as claimed by its node and as granted by us.

    Append-only (PostgreSQL refuses UPDATE and DELETE): a correction is another entry that
    reverses this one. ``(task_id, attempt)`` is unique for executions, so a redelivered message
    that runs and completes again is granted once.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("task_id", "attempt", name="uq_ledger_entries_execution"),
        # A span's stats read these from the index alone (app.stats, migration e8a4c2d9f613).
        Index(
            "ix_ledger_entries_received_at_stats",
            "received_at",
            postgresql_include=[
                "node_id",
                "capability",
                "outcome",
                "held",
                "rate_eur_per_hour",
                "units",
                "granted_ms",
                "claimed_ms",
                "observed_ms",
            ],
        ),
        # A member's statement and settlement: a period's entries by node, capability and rate,
        # with what settlement sums; the held entries, joined to their decisions (migration
        # b8d4f1a6c3e9).
        Index(
            "ix_ledger_entries_period_node",
            "period",
            "node_id",
            "capability",
            "rate_eur_per_hour",
            postgresql_include=["held", "granted_ms"],
        ),
        Index(
            "ix_ledger_entries_held",
            "id",
            postgresql_include=["node_id", "capability", "rate_eur_per_hour", "granted_ms"],
            postgresql_where=text("held"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(36))
    attempt: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    step_id: Mapped[int | None] = mapped_column(ForeignKey("job_steps.id"))
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"), index=True)
    #: The Celery worker name the node ran under (informational).
    node: Mapped[str] = mapped_column(String(200), index=True)
    capability: Mapped[str] = mapped_column(String(16))
    task_name: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # succeeded | failed | retried | lost | reversal
    error_code: Mapped[str | None] = mapped_column(String(64))
    # The node's claim.
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    wall_ms: Mapped[int] = mapped_column(BigInteger)
    cpu_ms: Mapped[int] = mapped_column(BigInteger)
    unit: Mapped[str] = mapped_column(String(16))  # page | token
    units: Mapped[int] = mapped_column(Integer)
    # Our decision.
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_ms: Mapped[int] = mapped_column(BigInteger)
    #: None when the start and the end reached the ledger together (nothing to observe).
    observed_ms: Mapped[int | None] = mapped_column(BigInteger)
    cap_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    granted_ms: Mapped[int] = mapped_column(BigInteger)
    grant_basis: Mapped[str] = mapped_column(String(48))
    #: The grant waits for the result to be validated (app.validation): it counts only once a
    #: ``GrantDecision`` releases it, in the period of that decision.
    held: Mapped[bool] = mapped_column(default=False, server_default="false")
    rate_eur_per_hour: Mapped[Decimal | None] = mapped_column(Money(12, 6))
    #: The settlement period (YYYY-MM) it counts in: the open one when it was received.
    period: Mapped[str | None] = mapped_column(String(7))
    signature: Mapped[str | None] = mapped_column(String(128))
    # Corrections.
    reverses_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    reason: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(254))


class GrantDecision(db.Model):
    """What became of a held grant: ``released`` (its result was validated; it counts in the
    period open when it was) or ``refused`` (``invalid_result``: its result lost the
    comparison; ``no_agreement``: no two results agreed). One per held entry; append-only, like
    the entries."""

    __tablename__ = "grant_decisions"
    __table_args__ = (
        Index(
            "ix_grant_decisions_released_stats",
            "decided_at",
            postgresql_include=["capability", "rate_eur_per_hour", "granted_ms"],
            postgresql_where=text("decision = 'released'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    #: The entry's node, copied for the suspicion count (invalid results per node in a window).
    node_id: Mapped[str | None] = mapped_column(ForeignKey("nodes.id"), index=True)
    decision: Mapped[str] = mapped_column(String(16))  # released | refused
    reason: Mapped[str] = mapped_column(String(32))  # validated | invalid_result | no_agreement | …
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    #: The settlement period the released grant counts in: the open one when it was decided.
    period: Mapped[str | None] = mapped_column(String(7), index=True)
    #: The entry's capability, rate and granted ms, copied by PostgreSQL as the decision is
    #: inserted (trigger ``grant_decisions_copy_grant``, migration d5b8e1f3a7c2): a span's
    #: releases are summed from the index below, without a probe into the ledger per decision.
    capability: Mapped[str | None] = mapped_column(String(16), server_default=FetchedValue())
    rate_eur_per_hour: Mapped[Decimal | None] = mapped_column(Money(12, 6), server_default=FetchedValue())
    granted_ms: Mapped[int | None] = mapped_column(BigInteger, server_default=FetchedValue())

    entry: Mapped[LedgerEntry] = relationship()


class LedgerRejection(db.Model):
    """A record the ledger refused, kept with the reason (and the record, as evidence)."""

    __tablename__ = "ledger_rejections"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # started | completed
    reason: Mapped[str] = mapped_column(String(32), index=True)
    detail: Mapped[str | None] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int | None] = mapped_column(Integer)
    node_id: Mapped[str | None] = mapped_column(String(64))
    signature: Mapped[str | None] = mapped_column(String(128), index=True)
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class LedgerPeriod(db.Model):
    """A settlement period. Once closed it never changes; later entries go to the next one."""

    __tablename__ = "ledger_periods"

    period: Mapped[str] = mapped_column(String(7), primary_key=True)  # YYYY-MM
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    total_exact_eur: Mapped[Decimal | None] = mapped_column(Money(30, 12))
    total_eur: Mapped[Decimal | None] = mapped_column(Money(14, 2))
    entries: Mapped[int | None] = mapped_column(Integer)

    rewards: Mapped[list[Reward]] = relationship(back_populates="ledger_period", order_by="Reward.node_id")


class Reward(db.Model):
    """What one node earned in a closed period, and whether it was paid."""

    __tablename__ = "rewards"
    __table_args__ = (UniqueConstraint("period", "node_id", name="uq_rewards_period_node"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(ForeignKey("ledger_periods.period"), index=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    exact_eur: Mapped[Decimal] = mapped_column(Money(30, 12))
    amount_eur: Mapped[Decimal] = mapped_column(Money(14, 2))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    payout_reference: Mapped[str | None] = mapped_column(String(120))

    ledger_period: Mapped[LedgerPeriod] = relationship(back_populates="rewards")
    node: Mapped[Node] = relationship()
    lines: Mapped[list[RewardLine]] = relationship(
        back_populates="reward", order_by="RewardLine.capability", cascade="all, delete-orphan"
    )


class RewardLine(db.Model):
    """A reward's compute hours in one capability at one rate."""

    __tablename__ = "reward_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.id"), index=True)
    capability: Mapped[str] = mapped_column(String(16))
    rate_eur_per_hour: Mapped[Decimal] = mapped_column(Money(12, 6))
    granted_ms: Mapped[int] = mapped_column(BigInteger)
    hours: Mapped[Decimal] = mapped_column(Money(18, 6))
    exact_eur: Mapped[Decimal] = mapped_column(Money(30, 12))

    reward: Mapped[Reward] = relationship(back_populates="lines")


# Running tallies for the operators' figures (app.figures), written by PostgreSQL triggers as
# rows are inserted (migration d3f9a1c7e5b2, docs/decisions/0012): delta rows summed when read,
# folded together by ``compact_tallies()``. Never written by the application.


class LedgerTally(db.Model):
    """Entries (``decision`` empty) and decisions on held grants, counted and summed by group."""

    __tablename__ = "ledger_tallies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    capability: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    held: Mapped[bool] = mapped_column()
    decision: Mapped[str] = mapped_column(String(16), server_default="")
    reason: Mapped[str] = mapped_column(String(32), server_default="")
    entries: Mapped[int] = mapped_column(BigInteger)
    granted_ms: Mapped[int] = mapped_column(BigInteger)


class RejectionTally(db.Model):
    """Records the ledger refused, by reason."""

    __tablename__ = "rejection_tallies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    records: Mapped[int] = mapped_column(BigInteger)


class JobLatencyTally(db.Model):
    """Finished jobs by kind, final state and latency bucket (``le``: its upper bound in
    seconds, ``job_latency_bounds()``), with their summed seconds from submission to end."""

    __tablename__ = "job_latency_tallies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    le: Mapped[float] = mapped_column(Float(precision=53))
    jobs: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Float(precision=53))


class LedgerDay(db.Model):
    """A UTC day's entries (by day received, ``decision`` empty) and decisions on held grants (by
    day decided), by capability, outcome, held and rate: the stats of a span's whole days
    (app.stats; migration f7a2c9e4b1d3). Delta rows kept by triggers, like the tallies."""

    __tablename__ = "ledger_days"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    day: Mapped[date] = mapped_column(Date, index=True)
    capability: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    held: Mapped[bool] = mapped_column()
    rate_eur_per_hour: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    decision: Mapped[str] = mapped_column(String(16), server_default="")
    entries: Mapped[int] = mapped_column(BigInteger)
    units: Mapped[int] = mapped_column(BigInteger)
    granted_ms: Mapped[int] = mapped_column(BigInteger)


class NodeDay(db.Model):
    """A UTC day's entries by node (by day received): how many, and their metered ms
    (``app.footprints.metered_ms``) for the CO₂ of a span's whole days."""

    __tablename__ = "node_days"
    __table_args__ = (Index("ix_node_days_day", "day", postgresql_include=["node_id", "metered_ms"]),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    node_id: Mapped[str | None] = mapped_column(String(36))
    entries: Mapped[int] = mapped_column(BigInteger)
    metered_ms: Mapped[int] = mapped_column(BigInteger)


class NodeGrant(db.Model):
    """A node's grants that count (``app.ledger.settlement.counted``) by capability, all time:
    entries entered unheld and held ones released (migration a9d3e6f2c814). Delta rows kept by
    triggers, like the tallies; summed when read."""

    __tablename__ = "node_grants"
    __table_args__ = (
        Index("ix_node_grants_node_id", "node_id", postgresql_include=["capability", "granted_ms"]),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    node_id: Mapped[str] = mapped_column(String(36))
    capability: Mapped[str] = mapped_column(String(16))
    granted_ms: Mapped[int] = mapped_column(BigInteger)


class WebhookDelivery(db.Model):
    """One attempt at delivering a job's event to its ``callback_url`` (app.webhooks): never the
    secret, never the body."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    delivery_id: Mapped[str] = mapped_column(String(36))
    event: Mapped[str] = mapped_column(String(32))
    sequence: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    #: ``delivered``, ``retrying``, ``failed`` (an answer retrying cannot mend), ``gave_up``
    #: (WEBHOOK_RETRY_SECONDS passed) or ``skipped`` (no callback or live token any more).
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(200))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
