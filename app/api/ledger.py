"""/api/v1/ledger and /api/v1/participants: compute hours, rewards, statements."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from flask import Blueprint, request
from sqlalchemy import case, func, select

from app.api import params
from app.auth import current_token, require
from app.errors import InvalidParameter, NotFound
from app.extensions import db
from app.ledger import periods, rules, settlement
from app.models import LedgerEntry, Node, Participant, utcnow

bp = Blueprint("ledger", __name__)

_SHOWN = Decimal("0.000001")


def _shown(value: Decimal) -> str:
    return str(value.quantize(_SHOWN, rounding=ROUND_HALF_EVEN))


@bp.get("/ledger/nodes")
@require("admin")
def nodes():
    """Granted compute hours and unsettled rewards per node and capability, all periods."""
    rows = db.session.execute(
        select(
            LedgerEntry.node_id,
            LedgerEntry.capability,
            LedgerEntry.rate_eur_per_hour,
            func.count(),
            func.coalesce(func.sum(LedgerEntry.units), 0),
            func.coalesce(func.sum(LedgerEntry.claimed_ms), 0),
            # Grants held until their results are validated, or refused, count for nothing yet.
            func.coalesce(func.sum(case((settlement.counted(), LedgerEntry.granted_ms), else_=0)), 0),
            func.coalesce(func.sum(case((settlement.counted(), 0), else_=LedgerEntry.granted_ms)), 0),
        )
        # The coordinator's own entries (attempts it gave up as lost) belong to no node.
        .where(LedgerEntry.node_id.is_not(None))
        .group_by(LedgerEntry.node_id, LedgerEntry.capability, LedgerEntry.rate_eur_per_hour)
        .order_by(LedgerEntry.node_id, LedgerEntry.capability)
    ).all()
    names = {node.id: node for node in db.session.scalars(select(Node))}
    out: dict[str | None, dict] = {}
    for node_id, capability, rate, executions, units, claimed_ms, granted_ms, held_ms in rows:
        node = names.get(node_id)
        entry = out.setdefault(
            node_id,
            {
                "node_id": node_id,
                "node": node.name if node else None,
                "participant": node.participant.email if node else None,
                "capabilities": {},
                "reward_eur": Decimal(0),
            },
        )
        line = entry["capabilities"].setdefault(
            capability,
            {
                "capability": capability,
                "unit": rules.UNIT_OF_CAPABILITY.get(capability, "unit"),
                "executions": 0,
                "units": 0,
                "claimed_ms": 0,
                "granted_ms": 0,
                "held_ms": 0,
                "reward": Decimal(0),
                "rates_eur_per_hour": [],
            },
        )
        line["executions"] += executions
        line["units"] += int(units)
        line["claimed_ms"] += int(claimed_ms)
        line["granted_ms"] += int(granted_ms)
        line["held_ms"] += int(held_ms)
        line["reward"] += rules.reward(int(granted_ms), rate or Decimal(0))
        line["rates_eur_per_hour"].append(str(rate))
    result = []
    for entry in out.values():
        capabilities = []
        for line in entry["capabilities"].values():
            entry["reward_eur"] += line["reward"]
            capabilities.append(
                {
                    "capability": line["capability"],
                    "executions": line["executions"],
                    "units": line["units"],
                    "unit": line["unit"],
                    "claimed_hours": _shown(rules.hours(line["claimed_ms"])),
                    "granted_hours": _shown(rules.hours(line["granted_ms"])),
                    "held_or_refused_hours": _shown(rules.hours(line["held_ms"])),
                    "rates_eur_per_hour": sorted(set(line["rates_eur_per_hour"])),
                    "reward_eur": _shown(line["reward"]),
                }
            )
        entry["capabilities"] = capabilities
        entry["reward_eur"] = _shown(entry["reward_eur"])
        result.append(entry)
    return {"nodes": result, "note": "Unsettled: rewards are rounded to the cent when a period is settled."}


@bp.get("/participants/<int:participant_id>/statement")
@require("jobs:read")
def statement(participant_id: int):
    """A participant's executions in a period, line by line, to reconcile with their nodes."""
    stored_id = params.integer_id(participant_id)  # a number beyond PostgreSQL's names nobody
    participant = db.session.get(Participant, stored_id) if stored_id else None
    token = current_token()
    if participant is None or (participant.email != token.owner.lower() and "admin" not in token.scope_set):
        raise NotFound(f"No participant {participant_id} among yours.")
    period = request.args.get("period") or periods.of(utcnow())
    try:
        periods.parse(period)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None
    return settlement.statement(participant, period)


@bp.get("/ledger/validation")
@require("admin")
def validation():
    """Results checked by replicas, what they found, and their cost beside the useful compute."""
    from app.validation import stats

    return stats.summary()
