"""The operators' overview (``GET /operators``): the grid's nodes, queues, jobs, compute hours,
euros and refused records, and the nodes awaiting approval, approved or revoked from the page.

Every figure is one grouped query (``app.figures``), or one pipeline to the broker: the page
still shows the others, and says so, when the broker is away. Approving and revoking do exactly
what the API's ``POST /api/v1/nodes/<id>/approve|revoke`` do (``app.nodes``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import wraps
from typing import Any

import redis
from babel.dates import format_skeleton
from flask import flash, redirect, render_template, request, url_for
from flask_babel import format_currency, format_decimal, get_locale, gettext
from flask_login import current_user, login_required
from markupsafe import Markup
from sqlalchemy import select

from app import broker_acl, figures, nodes, registry
from app.api.params import uuid_id
from app.errors import Conflict
from app.extensions import db
from app.models import JobState, Node, Participant, utcnow
from app.web.account import bp
from app.web.charts import Point, bar_chart
from app.web.dashboard import NODE_STATES  # (label, class) of each registry state
from app.web.jobs import STATE_LABELS as JOB_STATES

#: Seconds the page waits for the broker before saying its figures are unavailable.
BROKER_TIMEOUT_SECONDS = 1.0
HOURS_SHOWN = 24
DAYS_SHOWN = 30
MONTHS_SHOWN = 12


def operator_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """Signed in (else to the sign-in page) and an operator (else 403)."""

    @login_required
    @wraps(view)
    def guarded(*args: Any, **kwargs: Any):
        if not current_user.operator:
            return render_template("refused.html", reason="forbidden"), 403
        return view(*args, **kwargs)

    return guarded


def _locale() -> str:
    return str(get_locale() or "fr")


def _number(value: float | Decimal | int) -> str:
    return format_decimal(value)


def _hours(value: float | Decimal | int) -> str:
    return format_decimal(Decimal(value).quantize(Decimal("0.01")), format="#,##0.00")


def _euros(value: float | Decimal | int) -> str:
    return format_currency(Decimal(value), "EUR")


def _queue_depths() -> dict[str, int] | None:
    """Messages waiting in each queue, or None while the broker cannot be read."""
    broker = broker_acl.quick_client(BROKER_TIMEOUT_SECONDS)
    try:
        return figures.queue_depths(broker)
    except redis.RedisError:
        return None
    finally:
        broker.close()


def _jobs_chart(now: datetime) -> tuple[Markup, dict[str, int]]:
    """Jobs submitted in each of the last 24 hours (UTC), and their states now in all."""
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS_SHOWN - 1)
    per_hour = figures.jobs_per_hour(db.session, first)
    hours = [first + timedelta(hours=n) for n in range(HOURS_SHOWN)]
    points = [Point(hour.strftime("%H:00"), sum(per_hour.get(hour, {}).values())) for hour in hours]
    by_state = {state: sum(counts[state] for counts in per_hour.values()) for state in JobState.ALL}
    total = sum(by_state.values())
    busiest = max(points, key=lambda point: point.value)
    chart = bar_chart(
        "jobs-per-hour",
        gettext("Jobs submitted per hour, last 24 hours (UTC)"),
        points,
        label_heading=gettext("Hour (UTC)"),
        value_heading=gettext("Jobs"),
        describe=gettext(
            "%(total)s jobs submitted in the last 24 hours; the busiest hour, %(hour)s UTC, had %(most)s.",
            total=_number(total),
            hour=busiest.label,
            most=_number(busiest.value),
        ),
        show=_number,
        every=3,
        folded=gettext("Jobs hour by hour, as a table"),
    )
    return chart, by_state


def _hours_chart(now: datetime) -> tuple[Markup, Decimal]:
    """Compute hours granted that count, for each of the last 30 days (UTC)."""
    first = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS_SHOWN - 1)
    per_day = figures.compute_hours_per_day(db.session, first)
    days = [first + timedelta(days=n) for n in range(DAYS_SHOWN)]
    points = [
        Point(format_skeleton("MMMd", day, locale=_locale()), per_day.get(day, Decimal(0))) for day in days
    ]
    total = sum(per_day.values(), Decimal(0))
    chart = bar_chart(
        "hours-per-day",
        gettext("Compute hours granted per day, last 30 days (UTC)"),
        points,
        label_heading=gettext("Day"),
        value_heading=gettext("Compute hours"),
        describe=gettext(
            "%(total)s compute hours granted in the last 30 days; %(today)s today.",
            total=_hours(total),
            today=_hours(points[-1].value),
        ),
        show=_hours,
        every=5,
        folded=gettext("Compute hours day by day, as a table"),
    )
    return chart, total


def _months(now: datetime) -> list[str]:
    """The last 12 months (``YYYY-MM``, as reward periods are named), oldest first."""
    year, month = now.year, now.month
    months = []
    for _ in range(MONTHS_SHOWN):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months[::-1]


def _euros_chart(now: datetime) -> Markup:
    """Euros of the rewards settled for each of the last 12 months."""
    periods = figures.rewards_by_period(db.session, last=MONTHS_SHOWN)
    months = _months(now)
    points = [
        Point(
            format_skeleton("yMMM", datetime(int(m[:4]), int(m[5:]), 1, tzinfo=UTC), locale=_locale()),
            periods.get(m, {}).get("settled", Decimal(0)),
        )
        for m in months
    ]
    total = sum((point.value for point in points), Decimal(0))
    return bar_chart(
        "euros-per-month",
        gettext("Euros of rewards settled per month, last 12 months"),
        points,
        label_heading=gettext("Month"),
        value_heading=gettext("Euros"),
        describe=gettext("%(total)s of rewards settled in the last 12 months.", total=_euros(total)),
        show=_euros,
        every=2,
        folded=gettext("Euros month by month, as a table"),
    )


def _pending_nodes() -> list[Any]:
    """Nodes enrolled by members and not yet approved (nor revoked), oldest first."""
    return db.session.execute(
        select(Node.id, Node.name, Node.created_at, Participant.email)
        .join(Participant, Node.participant_id == Participant.id)
        .where(Node.approved_at.is_(None), Node.revoked_at.is_(None))
        .order_by(Node.created_at, Node.name)
    ).all()


def _page(status: int = 200, **context: Any):
    now = utcnow()
    jobs_chart, jobs_by_state = _jobs_chart(now)
    hours_chart, hours_total = _hours_chart(now)
    rewards = figures.rewards_distributed(db.session)
    return render_template(
        "operators.html",
        nodes_by_state=figures.nodes_by_state(db.session, now),
        nodes_online=figures.nodes_online_by_capability(db.session, now),
        queue_depths=_queue_depths(),
        jobs_chart=jobs_chart,
        jobs_by_state=jobs_by_state,
        hours_chart=hours_chart,
        hours_total=hours_total,
        euros_chart=_euros_chart(now),
        rewards=rewards,
        refusals=figures.refusals_by_reason(db.session),
        pending=_pending_nodes(),
        node_states=NODE_STATES,
        job_states=JOB_STATES,
        number=_number,
        hours=_hours,
        euros=_euros,
        **context,
    ), status


@bp.get("/operators")
@operator_only
def operators():
    return _page()


def _node(node_id: str) -> Node | None:
    stored_id = uuid_id(node_id)
    return db.session.get(Node, stored_id) if stored_id else None


def _act(node: Node | None, action: str):
    """Approve or revoke ``node`` as the API does, then back to the page with what was done."""
    if node is None:
        return _page(404, error="node_unknown")
    try:
        if action == "approve":
            nodes.approve_by_operator(node)
            done = "approved"
        else:
            told = registry.revoke_for_good(node, registry.OPERATOR)
            done = "revoked" if told else "revoked_untold"
    except Conflict:
        db.session.rollback()
        return _page(409, error="node_revoked")
    except broker_acl.BrokerAclError:
        db.session.rollback()
        return _page(503, error="broker_unavailable")
    # Said on the page it leads to, in the language it is shown in (operators.html).
    flash({"done": done, "name": node.name})
    return redirect(url_for("web.operators"), 303)


@bp.post("/operators/nodes/<node_id>/approve")
@operator_only
def approve_node(node_id: str):
    return _act(_node(node_id), "approve")


@bp.post("/operators/nodes/<node_id>/revoke")
@operator_only
def revoke_node(node_id: str):
    return _act(_node(node_id), "revoke")


@bp.post("/operators/nodes/revoke")
@operator_only
def revoke_node_by_name():
    """Revoke a node named in the page's form (approved nodes are not listed: there may be many)."""
    try:  # a name that cannot be enrolled names no node
        name = nodes.check_name(request.form.get("name", "").strip().lower())
    except ValueError:
        return _page(404, error="node_unknown")
    node = db.session.scalar(select(Node).where(Node.name == name))
    return _act(node, "revoke")
