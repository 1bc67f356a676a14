"""/api/v1/ledger: compute hours and rewards per node and capability."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from flask import Blueprint, current_app
from sqlalchemy import func, select

from app.auth import require
from app.config import rates
from app.extensions import db
from app.ledger import rules
from app.models import LedgerEntry

bp = Blueprint("ledger", __name__, url_prefix="/ledger")

_SHOWN = Decimal("0.000001")


def _shown(value: Decimal) -> str:
    return str(value.quantize(_SHOWN, rounding=ROUND_HALF_EVEN))


@bp.get("/nodes")
@require("admin")
def nodes():
    """Granted compute hours and unsettled rewards per node and capability."""
    rate_of = rates(current_app.config)
    rows = db.session.execute(
        select(
            LedgerEntry.node,
            LedgerEntry.capability,
            func.count(),
            func.coalesce(func.sum(LedgerEntry.units), 0),
            func.coalesce(func.sum(LedgerEntry.claimed_ms), 0),
            func.coalesce(func.sum(LedgerEntry.granted_ms), 0),
        )
        .group_by(LedgerEntry.node, LedgerEntry.capability)
        .order_by(LedgerEntry.node, LedgerEntry.capability)
    ).all()
    out: dict[str, dict] = {}
    for node, capability, executions, units, claimed_ms, granted_ms in rows:
        rate = rate_of.get(capability, Decimal(0))
        entry = out.setdefault(node, {"node": node, "capabilities": [], "reward_eur": Decimal(0)})
        reward = rules.reward(int(granted_ms), rate)
        entry["reward_eur"] += reward
        entry["capabilities"].append(
            {
                "capability": capability,
                "executions": executions,
                "units": int(units),
                "unit": rules.UNIT_OF_CAPABILITY.get(capability, "unit"),
                "claimed_hours": _shown(rules.hours(int(claimed_ms))),
                "granted_hours": _shown(rules.hours(int(granted_ms))),
                "rate_eur_per_hour": str(rate),
                "reward_eur": _shown(reward),
            }
        )
    for entry in out.values():
        entry["reward_eur"] = _shown(entry["reward_eur"])
    return {"nodes": list(out.values()), "note": "Unsettled: amounts are rounded to the cent at settlement."}
