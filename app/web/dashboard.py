"""The member's dashboard (``GET /dashboard``): their nodes (state, capabilities, last seen,
uptime over 24 hours and 30 days, uptime per day), pausing and resuming them, enrolling a new
one, their compute hours by capability, their earnings per month and each month's statement.

Only the signed-in participant's own nodes and ledger are shown or changed (another's node is
404). Pausing, resuming and enrolling do exactly what the API's ``POST /api/v1/nodes/<id>/pause``,
``…/resume`` and ``POST /api/v1/nodes`` do (``app.registry.set_paused``, ``app.nodes.enrol``);
the figures are the registry's and the ledger's (``app.registry``, ``app.ledger.settlement``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

from flask import Response, current_app, redirect, render_template, request, url_for
from flask_babel import format_currency, format_date, format_decimal, format_percent, gettext, lazy_gettext
from flask_login import current_user, login_required

import celeryconfig
from app import nodes, registry
from app.api.params import uuid_id
from app.errors import ApiError, Conflict, InvalidParameter
from app.extensions import db
from app.ledger import periods, rules, settlement
from app.models import Node, utcnow
from app.web.account import bp
from app.web.charts import Point, bar_chart

MONTHS_SHOWN = 12
DAYS_SHOWN = 30

#: The registry's node states as people read them, and how each is marked (text and a symbol,
#: never colour alone: grid.css).
NODE_STATES = {
    registry.ONLINE: (lazy_gettext("online"), "state-ok"),
    registry.OFFLINE: (lazy_gettext("offline"), "state-bad"),
    registry.PAUSED: (lazy_gettext("paused"), "state-wait"),
    registry.PENDING: (lazy_gettext("awaiting approval"), "state-wait"),
    registry.REVOKED: (lazy_gettext("revoked"), "state-bad"),
}
#: A month's payment (``settlement.earnings``) as people read it.
PAYMENTS = {
    settlement.OPEN: (lazy_gettext("not settled yet"), "state-wait"),
    settlement.NOTHING_DUE: (lazy_gettext("nothing to pay"), "state-ok"),
    settlement.PAID: (lazy_gettext("paid"), "state-ok"),
    settlement.PARTLY_PAID: (lazy_gettext("partly paid"), "state-wait"),
    settlement.UNPAID: (lazy_gettext("to be paid"), "state-wait"),
}


def _who() -> str:
    return registry.OPERATOR if current_user.operator else registry.OWNER


def _hours(ms: int) -> str:
    return format_decimal(rules.hours(ms), format="#,##0.00")


def _euros(amount: Decimal | float | int) -> str:
    return format_currency(Decimal(str(amount)), "EUR")


def _percent(value: float | Decimal | int) -> str:
    return format_percent(float(value) / 100, format="#,##0.##%")


def recent_periods(count: int) -> list[str]:
    """The last ``count`` settlement periods, oldest first, the current one last."""
    year, month = periods.parse(periods.of(utcnow()))
    months = []
    for _ in range(count):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months[::-1]


def _month(period: str, pattern: str = "MMMM y") -> str:
    year, month = periods.parse(period)
    return format_date(date(year, month, 1), pattern)


def _pause_note(node: Node) -> str | None:
    """Who paused the node, and whether its owner may resume it."""
    if node.paused_at is None:
        return None
    if node.paused_by == registry.OPERATOR:
        return gettext("Paused by an operator: only an operator can resume it; ask the cooperative.")
    if node.paused_by == registry.SUSPICION:
        return gettext(
            "Paused by the grid: too many of its results were found invalid. Only an operator can "
            "resume it; ask the cooperative."
        )
    return gettext("Paused by you: its worker finishes its current task and takes no more until resumed.")


def _uptime_chart(node: Node, days: list[tuple[date, float]]) -> Any:
    points = [Point(format_date(day, "d MMM"), value) for day, value in days]
    if points:
        lowest = min(points, key=lambda p: p.value)
        describe = gettext(
            "Share of each day's heartbeat intervals in which %(name)s was seen, over %(count)s days "
            "from %(first)s to %(last)s; the lowest, %(lowest)s on %(day)s; today so far, %(today)s.",
            name=node.name,
            count=len(points),
            first=points[0].label,
            last=points[-1].label,
            lowest=_percent(lowest.value),
            day=lowest.label,
            today=_percent(points[-1].value),
        )
    else:
        describe = gettext("No day to show yet.")
    return bar_chart(
        f"uptime-{node.id}",
        gettext("Uptime of %(name)s per day, last %(count)s days", name=node.name, count=DAYS_SHOWN),
        points,
        label_heading=gettext("Day"),
        value_heading=gettext("Uptime"),
        describe=describe,
        show=_percent,
        ceiling=100,
        folded=gettext("Uptime day by day, as a table"),
    )


def _earnings_chart(months: list[dict[str, Any]]) -> Any:
    # Twelve months at most: each short name is one month's.
    points = [Point(_month(m["period"], "MMM"), m["eur"]) for m in months]
    best = max(months, key=lambda m: m["eur"])
    total = sum((m["eur"] for m in months), Decimal(0))
    return bar_chart(
        "earnings",
        gettext("Earnings per month, last %(count)s months", count=len(points)),
        points,
        label_heading=gettext("Month"),
        value_heading=gettext("Euros"),
        describe=gettext(
            "What your nodes earned each month from %(first)s to %(last)s: %(total)s in all; "
            "the best month, %(best)s, %(best_eur)s. A month not settled yet is an estimate.",
            first=_month(months[0]["period"]),
            last=_month(months[-1]["period"]),
            total=_euros(total),
            best=_month(best["period"]),
            best_eur=_euros(best["eur"]),
        ),
        show=_euros,
        folded=gettext("Earnings month by month, as a table"),
    )


def _dashboard(status: int = 200, **context: Any):
    now = utcnow()
    member = current_user
    own = list(member.nodes)
    by_day = registry.uptime_by_day(own, DAYS_SHOWN, now)
    shown = []
    for node in own:
        info = registry.describe(node, now)
        label, marker = NODE_STATES[info["state"]]
        shown.append(
            {
                "node": node,
                "info": info,
                "state_label": label,
                "state_class": marker,
                "can_pause": node.revoked_at is None and node.paused_at is None,
                "can_resume": node.revoked_at is None
                and node.paused_at is not None
                and registry.may_resume(node, _who()),
                "pause_note": _pause_note(node) if node.revoked_at is None else None,
                "chart": _uptime_chart(node, by_day.get(node.id, [])),
            }
        )
    months = settlement.earnings(member, recent_periods(MONTHS_SHOWN))
    this_month = months[-1]["granted_ms"]
    all_time = settlement.granted_ms_by_capability([node.id for node in own])
    capabilities = sorted({*celeryconfig.VOLUNTEER_QUEUES, *this_month, *all_time})
    return render_template(
        "dashboard.html",
        nodes_shown=shown,
        capabilities=[
            {"name": cap, "month": this_month.get(cap, 0), "all_time": all_time.get(cap, 0)}
            for cap in capabilities
        ],
        months=months[::-1],
        earnings_chart=_earnings_chart(months),
        payments=PAYMENTS,
        hours=_hours,
        decimal_hours=lambda text: format_decimal(Decimal(text), format="#,##0.00"),
        euros=_euros,
        percent=_percent,
        month_name=_month,
        limit=None if member.operator else int(current_app.config["NODES_PER_PARTICIPANT"]),
        **context,
    ), status


@bp.get("/dashboard")
@login_required
def dashboard():
    return _dashboard()


def _own(node_id: str) -> Node | None:
    """One of the signed-in participant's nodes, or None (whoever else's it is)."""
    stored = uuid_id(node_id)
    node = db.session.get(Node, stored) if stored else None
    return node if node is not None and node.participant_id == current_user.id else None


def _refusal(exc: ApiError, node: Node) -> dict[str, Any]:
    """What the page says of an API error the registry or the enrolment raised."""
    code = exc.code
    if code == "paused_by_operator" and node.paused_by == registry.SUSPICION:
        code = "paused_by_grid"
    elif code == "broker_unavailable":  # the change stands; its worker was not told
        code = "worker_not_told"
    return {"error": code, "node_name": node.name}


def _change(node_id: str, paused: bool):
    node = _own(node_id)
    if node is None:
        return render_template("refused.html", reason="node"), 404
    try:
        registry.set_paused(node, paused, _who())
    except ApiError as exc:
        db.session.rollback()
        return _dashboard(exc.status, **_refusal(exc, node))
    return redirect(url_for("web.dashboard", _anchor=f"node-{node.name}"), 303)


@bp.post("/dashboard/nodes/<node_id>/pause")
@login_required
def pause_node(node_id: str):
    """Drain one of the member's nodes, as ``POST /api/v1/nodes/<id>/pause`` does."""
    return _change(node_id, True)


@bp.post("/dashboard/nodes/<node_id>/resume")
@login_required
def resume_node(node_id: str):
    """Let the node work again, as ``POST /api/v1/nodes/<id>/resume`` does (not a node an
    operator or the grid paused, for a member)."""
    return _change(node_id, False)


@bp.post("/dashboard/nodes")
@login_required
def enrol_node():
    """Enrol a node, as ``POST /api/v1/nodes`` does: its worker's configuration (and secret) is
    on the page that answers, once."""
    name = request.form.get("name", "").strip()
    try:
        node = nodes.enrol(name, current_user.email, by_operator=bool(current_user.operator))
    except nodes.NodeLimit as exc:
        return _dashboard(exc.status, error="node_limit", node_held=exc.held, node_limit=exc.limit, name=name)
    except Conflict as exc:
        return _dashboard(exc.status, error=exc.code, node_name=name, name=name)
    except InvalidParameter as exc:
        code = "node_name_reserved" if name in nodes.RESERVED_NAMES else "node_name"
        return _dashboard(exc.status, error=code, node_name=name, name=name)
    except ApiError as exc:  # the broker away while an operator's node gets its broker user
        db.session.rollback()
        return _dashboard(exc.status, error=exc.code, name=name)
    answer = Response(
        render_template(
            "dashboard_enrolled.html",
            node=node,
            pending=node.approved_at is None,
            configuration=nodes.worker_configuration(node),
            file_name=f"koprogo-worker-{node.name}.env",
        ),
        status=201,
    )
    answer.headers["Cache-Control"] = "no-store"  # it holds the node's secret
    return answer


def _statement_or_none(period: str) -> dict[str, Any] | None:
    try:
        periods.parse(period)
    except ValueError:
        return None
    return settlement.statement(current_user, period)


#: An entry's grant status (``settlement.statement``) as the statement page groups it.
GRANTED, HELD, REFUSED, ELSEWHERE = "granted", "held", "refused", "elsewhere"


def _status_of(grant_status: str) -> str:
    if grant_status in ("counted", "released"):
        return GRANTED
    if grant_status == "held":
        return HELD
    if grant_status.startswith("refused"):
        return REFUSED
    return ELSEWHERE  # released in another period: counted there


def statement_rows(statement: dict[str, Any]) -> list[dict[str, Any]]:
    """A statement's lines summed by node, capability, rate and grant status."""
    paid = {reward["node"]: reward["paid"] for reward in statement["rewards"]}
    rows: dict[tuple, dict[str, Any]] = {}
    for line in statement["entries"]:
        status = _status_of(line["grant_status"])
        key = (line["node"], line["capability"], line["rate_eur_per_hour"], status)
        row = rows.setdefault(
            key,
            {
                "node": line["node"],
                "capability": line["capability"],
                "rate": Decimal(line["rate_eur_per_hour"] or 0),
                "status": status,
                "paid": status == GRANTED and paid.get(line["node"], False),
                "executions": 0,
                "granted_ms": 0,
                "eur": Decimal(0),
                "detail": set(),
            },
        )
        row["executions"] += 1
        row["granted_ms"] += round(line["granted_seconds"] * 1000)
        row["eur"] += Decimal(line["amount_eur"])
        if status in (REFUSED, ELSEWHERE):
            row["detail"].add(line["grant_status"].partition(" ")[2].lstrip(": ") or line["grant_status"])
    return sorted(rows.values(), key=lambda r: (r["node"] or "", r["capability"], r["status"], r["rate"]))


@bp.get("/dashboard/statements/<period>")
@login_required
def statement(period: str):
    """A month's statement of the member's nodes: per node, capability and rate, the hours,
    euros and what became of the grants; then the totals and the rewards."""
    found = _statement_or_none(period)
    if found is None:
        return render_template("refused.html", reason="period"), 404
    rows = statement_rows(found)
    granted_ms = sum(r["granted_ms"] for r in rows if r["status"] == GRANTED)
    return render_template(
        "dashboard_statement.html",
        statement=found,
        rows=rows,
        granted_ms=granted_ms,
        total_eur=Decimal(found["total_eur"]),
        rewards_eur=sum((Decimal(r["amount_eur"]) for r in found["rewards"]), Decimal("0.00")),
        hours=_hours,
        euros=_euros,
        month_name=_month,
        status_label=_status_label,
    )


def _status_label(row: dict[str, Any]) -> tuple[str, str]:
    status: dict[str, Callable[[], tuple[str, str]]] = {
        GRANTED: lambda: (gettext("paid"), "state-ok") if row["paid"] else (gettext("granted"), "state-ok"),
        HELD: lambda: (gettext("held: its results await validation"), "state-wait"),
        REFUSED: lambda: (
            gettext("refused (%(reason)s)", reason=", ".join(sorted(row["detail"]))),
            "state-bad",
        ),
        ELSEWHERE: lambda: (
            gettext("counted in %(period)s", period=", ".join(sorted(row["detail"]))),
            "state-wait",
        ),
    }
    return status[row["status"]]()


@bp.get("/dashboard/statements/<period>.csv")
@login_required
def statement_csv(period: str):
    """The month's statement, one execution a line, as a CSV file."""
    found = _statement_or_none(period)
    if found is None:
        return render_template("refused.html", reason="period"), 404
    return Response(
        settlement.statement_csv(found),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="koprogo-statement-{period}.csv"'},
    )
