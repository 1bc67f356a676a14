"""Database tables of the coordinator: API tokens, jobs and their steps, the ledger.

Durations are stored as integer milliseconds: exact on PostgreSQL and SQLite alike, and summed
into Decimal hours only when money is computed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.extensions import db

# BIGINT primary keys autoincrement on PostgreSQL; SQLite only autoincrements INTEGER.
BigId = BigInteger().with_variant(Integer(), "sqlite")


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

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


class Job(db.Model):
    __tablename__ = "jobs"

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

    steps: Mapped[list[JobStep]] = relationship(
        back_populates="job", order_by="JobStep.position", cascade="all, delete-orphan"
    )


class JobStep(db.Model):
    __tablename__ = "job_steps"

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

    job: Mapped[Job] = relationship(back_populates="steps")


class LedgerEntry(db.Model):
    """One execution of a volunteer task, as claimed by its node and as granted by us.

    Append-only. ``(task_id, attempt)`` is unique: a redelivered message that runs and
    completes again is the same execution and is not entered twice.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (UniqueConstraint("task_id", "attempt", name="uq_ledger_entries_execution"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(36))
    attempt: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    step_id: Mapped[int | None] = mapped_column(ForeignKey("job_steps.id"))
    node: Mapped[str] = mapped_column(String(200), index=True)
    capability: Mapped[str] = mapped_column(String(16))
    task_name: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # succeeded | failed | retried | lost
    error_code: Mapped[str | None] = mapped_column(String(64))
    # The node's claim.
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    wall_ms: Mapped[int] = mapped_column(BigInteger)
    cpu_ms: Mapped[int] = mapped_column(BigInteger)
    unit: Mapped[str] = mapped_column(String(16))  # page | token
    units: Mapped[int] = mapped_column(Integer)
    # Our decision.
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    claimed_ms: Mapped[int] = mapped_column(BigInteger)
    granted_ms: Mapped[int] = mapped_column(BigInteger)
    grant_basis: Mapped[str] = mapped_column(String(32))
    #: Signature of the record by the node's secret (verified from the ledger issue on).
    signature: Mapped[str | None] = mapped_column(String(128))
