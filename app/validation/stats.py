"""What checking results costs and finds, for operators (``GET /api/v1/ledger/validation``,
``manage.py ledger validation``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select

from app.extensions import db
from app.ledger import rules, settlement
from app.models import GrantDecision, JobStep, LedgerEntry, Node, StepState


def _hours(ms: int) -> str:
    return str(rules.hours(int(ms or 0)).quantize(rules.CENT / 10_000))


def summary() -> dict[str, Any]:
    """Results checked and how they came out, and the compute the checks took beside the
    compute they checked (both as granted: replicas are paid only when they agree)."""
    is_replica = JobStep.replica_of_id.is_not(None)
    compute = db.session.execute(
        select(
            func.coalesce(func.sum(case((is_replica, 0), else_=LedgerEntry.granted_ms)), 0),
            func.coalesce(func.sum(case((is_replica, LedgerEntry.granted_ms), else_=0)), 0),
        )
        .join(JobStep, JobStep.id == LedgerEntry.step_id)
        .where(settlement.counted(), LedgerEntry.node_id.is_not(None))
    ).one()
    useful_ms, checking_ms = (int(value) for value in compute)
    steps = dict(
        db.session.execute(
            select(JobStep.verdict, func.count())
            .where(JobStep.replica_of_id.is_(None), JobStep.verdict.is_not(None))
            .group_by(JobStep.verdict)
        ).all()
    )
    verifying = db.session.scalar(select(func.count()).where(JobStep.state == StepState.VERIFYING))
    replicas = db.session.scalar(select(func.count()).where(JobStep.replica_of_id.is_not(None)))
    checked = db.session.scalar(select(func.count(func.distinct(JobStep.replica_of_id))))
    decisions = dict(
        db.session.execute(select(GrantDecision.reason, func.count()).group_by(GrantDecision.reason)).all()
    )
    held = db.session.scalar(
        select(func.count())
        .select_from(LedgerEntry)
        .where(
            LedgerEntry.held.is_(True),
            ~select(GrantDecision.id).where(GrantDecision.entry_id == LedgerEntry.id).exists(),
        )
    )
    suspected = db.session.scalars(
        select(Node.name).where(Node.paused_by == "suspicion").order_by(Node.name)
    ).all()
    return {
        "results_checked": checked or 0,
        "awaiting_replica": verifying or 0,
        "replicas_run": replicas or 0,
        "original_results": {"valid": steps.get("valid", 0), "invalid": steps.get("invalid", 0)},
        "grants": {
            "held": held or 0,
            "released": decisions.get("validated", 0),
            "refused_invalid_result": decisions.get("invalid_result", 0),
            "refused_no_agreement": decisions.get("no_agreement", 0),
        },
        "compute_hours": {"useful": _hours(useful_ms), "checking": _hours(checking_ms)},
        "checking_overhead": round(checking_ms / useful_ms, 4) if useful_ms else None,
        "paused_on_suspicion": list(suspected),
    }
