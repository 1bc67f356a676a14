"""The operators' overview (/operators): for operators only; its figures are app.figures' and the
ledger's for what a test makes; approving and revoking a node on the page do what the API does
(its broker user made or deleted, the pause); and the page still answers with the broker away.
The real app against the session's PostgreSQL and Redis, through Flask's test client."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest
import redis
from sqlalchemy import func, select

import celeryconfig
from tests.web import client as _client
from tests.web import csrf as _csrf
from tests.web import signed_up as _signed_up


@pytest.fixture(scope="module")
def web_app():
    from app import create_app

    return create_app({"TESTING": True})


@pytest.fixture(scope="module")
def operator(web_app):
    browser = _client(web_app)
    _signed_up(browser, "--operator")
    return browser


class _Tables(HTMLParser):
    """The text of each cell of each table with an id, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and dict(attrs).get("id"):
            self._table = dict(attrs)["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _tables(page) -> dict[str, dict[str, str]]:
    """Each table with an id as {first cell: second cell} (its heading row left out)."""
    parser = _Tables()
    parser.feed(page.get_data(as_text=True))
    return {
        name: {row[0]: row[1] for row in rows[1:] if len(row) >= 2} for name, rows in parser.tables.items()
    }


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _enrol(web_app, name: str, approved: bool = False):
    """A member's node, pending unless ``approved``; returns its id."""
    from app import nodes
    from app.extensions import db

    with web_app.app_context():
        node = nodes.create(name, f"owner-{name}@koprogo.test", approved=approved)
        db.session.commit()
        return node.id


def _node(web_app, node_id: str):
    from app.extensions import db
    from app.models import Node

    with web_app.app_context():
        node = db.session.get(Node, node_id)
        db.session.expunge(node)
        return node


def _broker_url(web_app, node_id: str) -> str:
    from app import broker_acl

    with web_app.app_context():
        return broker_acl.node_url(_node(web_app, node_id))


def _post(browser, path: str):
    """A form of the page sent, the page in French (the language kept for the answer)."""
    return browser.post(path, data={"csrf_token": _csrf(browser.get("/operators?lang=fr"))})


@pytest.fixture
def closed_port():
    """A TCP port on this machine nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_member_is_refused_and_a_signed_out_visitor_is_sent_to_sign_in(web_app, operator):
    member = _client(web_app)
    _signed_up(member)
    refused = member.get("/operators")
    assert refused.status_code == 403
    assert "opérateurs de la coopérative" in refused.get_data(as_text=True)
    node_id = _enrol(web_app, _name("not-yours"))
    answer = member.post(f"/operators/nodes/{node_id}/approve", data={"csrf_token": _csrf(refused)})
    assert answer.status_code == 403 and _node(web_app, node_id).approved_at is None
    assert 'href="/operators"' not in member.get("/account/tokens").get_data(as_text=True)

    signed_out = _client(web_app).get("/operators")
    assert signed_out.status_code == 302 and "/sign-in?next=" in signed_out.headers["Location"]
    assert 'href="/operators"' in operator.get("/account/tokens").get_data(as_text=True)


def test_the_operator_sees_the_figures_of_the_grid_s_functions_for_what_is_made(web_app, operator):
    from app import broker_acl, figures, nodes
    from app.extensions import db
    from app.ledger import settlement
    from app.models import Job, LedgerEntry, LedgerPeriod, LedgerRejection, Reward, utcnow
    from tests.test_figures import _entry

    reason = f"web_{uuid.uuid4().hex[:8]}"
    now = utcnow()
    three_months_ago = (now.replace(day=1) - timedelta(days=62)).replace(day=1)
    period = three_months_ago.strftime("%Y-%m")
    with web_app.app_context():
        pending = nodes.create(_name("figures-pending"), "figures-owner@koprogo.test", approved=False)
        earner = nodes.create(_name("figures-earner"), "figures-owner@koprogo.test")
        db.session.add_all([LedgerRejection(kind="completed", reason=reason) for _ in range(2)])
        db.session.add_all(
            [
                Job(kind="translate", state=state, owner="figures@koprogo.test")
                for state in ("queued", "failed")
            ]
        )
        db.session.add_all([_entry("ocr", "succeeded", 1_800_000), _entry("llm", "succeeded", 900_000)])
        db.session.add(_entry("ocr", "succeeded", 3_600_000, held=True))  # not counted until released
        if db.session.get(LedgerPeriod, period) is None:
            db.session.add(
                LedgerPeriod(
                    period=period, starts_at=three_months_ago, ends_at=three_months_ago, closed_at=now
                )
            )
        db.session.flush()
        db.session.add(
            Reward(
                period=period,
                node_id=earner.id,
                period_start=three_months_ago,
                period_end=three_months_ago,
                exact_eur=Decimal("12.345"),
                amount_eur=Decimal("12.35"),
                paid_at=now,
            )
        )
        db.session.commit()
        pending_name = pending.name

        page = operator.get("/operators?lang=en")
        assert page.status_code == 200
        text = page.get_data(as_text=True)
        tables = _tables(page)

        # Nodes, by state and online by capability.
        states = {"online": "online", "offline": "offline", "paused": "paused", "revoked": "revoked"}
        states["pending"] = "awaiting approval"
        by_state = figures.nodes_by_state(db.session)
        assert by_state["pending"] >= 1
        assert tables["nodes-by-state"] == {states[s]: str(n) for s, n in by_state.items()}
        online = figures.nodes_online_by_capability(db.session)
        assert tables["nodes-by-capability"] == {c: str(n) for c, n in online.items()}
        # Pending nodes, with their decisions.
        assert pending_name in tables["pending-nodes"]
        assert tables["pending-nodes"][pending_name] == "figures-owner@koprogo.test"
        assert f"Approve {pending_name}" in text and f"Revoke {pending_name}" in text

        # Queues, from the broker.
        with broker_acl.client() as broker:
            depths = figures.queue_depths(broker)
        assert tables["queue-depths"] == {q: f"{n:,}" for q, n in depths.items()}
        assert set(depths) == set(celeryconfig.ALL_QUEUES)

        # Jobs this hour: the two made, and any other of the session's.
        hour = now.replace(minute=0, second=0, microsecond=0)
        per_hour = figures.jobs_per_hour(db.session, hour - timedelta(hours=23))
        assert sum(per_hour[hour].values()) >= 2
        assert tables["jobs-per-hour-table"][hour.strftime("%H:00")] == str(sum(per_hour[hour].values()))
        assert len(tables["jobs-per-hour-table"]) == 24
        made = db.session.scalar(select(func.count()).select_from(Job).where(Job.created_at >= hour))
        assert sum(int(n) for n in tables["jobs-by-state"].values()) == db.session.scalar(
            select(func.count()).select_from(Job).where(Job.created_at >= hour - timedelta(hours=23))
        )
        assert made == sum(per_hour[hour].values())
        assert tables["jobs-by-state"]["failed"] == str(sum(counts["failed"] for counts in per_hour.values()))

        # Compute hours today: the ledger's counted entries (the held one is not).
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        counted_ms = db.session.scalar(
            select(func.sum(LedgerEntry.granted_ms)).where(
                LedgerEntry.received_at >= today, settlement.counted()
            )
        )
        assert counted_ms >= 2_700_000
        hours_today = figures.compute_hours_per_day(db.session, today)[today]
        assert hours_today == (Decimal(counted_ms) / 3_600_000).quantize(Decimal("0.000001"))
        label = f"{today:%b} {today.day}"
        assert tables["hours-per-day-table"][label] == f"{hours_today:,.2f}"
        assert len(tables["hours-per-day-table"]) == 30

        # Euros: the month's settled rewards and the totals.
        month = f"{three_months_ago:%b} {three_months_ago.year}"
        settled = figures.rewards_by_period(db.session)[period]["settled"]
        assert settled >= Decimal("12.35")
        assert tables["euros-per-month-table"][month] == f"€{settled:,.2f}"
        totals = figures.rewards_distributed(db.session)
        assert f"€{totals['settled']:,.2f}" in text and f"€{totals['paid']:,.2f}" in text

        # Refused records by reason.
        assert tables["refusals"][reason] == "2" == str(figures.refusals_by_reason(db.session)[reason])

    french = operator.get("/operators?lang=fr").get_data(as_text=True)
    assert "<h1>Vue des opérateurs</h1>" in french and "en attente d’approbation" in french


def test_the_operator_approves_a_pending_node_as_the_api_does(web_app, operator):
    node_id = _enrol(web_app, _name("approve-me"))
    url = _broker_url(web_app, node_id)
    with pytest.raises(redis.exceptions.AuthenticationError):  # pending: the broker knows it not
        redis.Redis.from_url(url).ping()

    answer = _post(operator, f"/operators/nodes/{node_id}/approve")

    assert answer.status_code == 303 and answer.headers["Location"].endswith("/operators")
    node = _node(web_app, node_id)
    assert node.approved_at is not None and node.revoked_at is None
    assert redis.Redis.from_url(url).ping()  # its broker user, as the API's approval makes it
    from app import registry

    assert registry.state(node) == "offline"  # as the API answers: approved, not yet heard from
    shown = operator.get("/operators?lang=en").get_data(as_text=True)
    assert f"Node {node.name} is approved: its worker can now connect." in shown
    assert 'role="status" aria-live="polite"' in shown
    assert node.name not in _tables(operator.get("/operators")).get("pending-nodes", {})
    # Once shown, the message is gone.
    assert "is approved" not in operator.get("/operators?lang=en").get_data(as_text=True)


def test_the_operator_revokes_a_pending_node_and_an_approved_one_by_name(web_app, operator):
    from app import registry

    pending_id = _enrol(web_app, _name("refuse-me"))
    approved_id = _enrol(web_app, _name("retire-me"), approved=True)
    url = _broker_url(web_app, approved_id)
    assert redis.Redis.from_url(url).ping()

    first = _post(operator, f"/operators/nodes/{pending_id}/revoke")
    approved = _node(web_app, approved_id)
    second = operator.post(
        "/operators/nodes/revoke",
        data={"csrf_token": _csrf(operator.get("/operators")), "name": f"  {approved.name.upper()} "},
    )

    assert first.status_code == 303 and second.status_code == 303
    for node_id in (pending_id, approved_id):
        node = _node(web_app, node_id)
        assert node.revoked_at is not None and node.paused_by == registry.OPERATOR
        assert registry.state(node) == "revoked"
    with pytest.raises(redis.exceptions.AuthenticationError):  # its broker user deleted
        redis.Redis.from_url(url).ping()
    shown = operator.get("/operators?lang=en").get_data(as_text=True)
    assert f"Node {approved.name} is revoked: everything it sends is now refused." in shown


def test_a_revoked_an_unknown_node_and_a_form_without_its_token_are_refused(web_app, operator):
    node_id = _enrol(web_app, _name("twice"))
    assert _post(operator, f"/operators/nodes/{node_id}/revoke").status_code == 303

    again = _post(operator, f"/operators/nodes/{node_id}/approve")
    assert again.status_code == 409 and 'role="alert"' in again.get_data(as_text=True)
    assert "déjà révoqué" in again.get_data(as_text=True)
    assert _node(web_app, node_id).approved_at is None
    assert _post(operator, f"/operators/nodes/{node_id}/revoke").status_code == 409

    for path in (f"/operators/nodes/{uuid.uuid4()}/approve", "/operators/nodes/not-an-id/revoke"):
        unknown = _post(operator, path)
        assert unknown.status_code == 404 and "Aucun nœud" in unknown.get_data(as_text=True)
    for name in ("no-such-node-here", "Not A Name!", "x" * 300, "nul\x00"):
        form = {"csrf_token": _csrf(operator.get("/operators?lang=fr")), "name": name}
        assert operator.post("/operators/nodes/revoke", data=form).status_code == 404

    pending_id = _enrol(web_app, _name("no-token"))
    assert operator.post(f"/operators/nodes/{pending_id}/approve").status_code == 400
    assert (
        operator.post(f"/operators/nodes/{pending_id}/revoke", data={"csrf_token": "forged"}).status_code
        == 400
    )
    assert _node(web_app, pending_id).approved_at is None and _node(web_app, pending_id).revoked_at is None


def test_the_page_answers_with_the_broker_away_and_approving_waits_for_it(
    web_app, operator, monkeypatch, closed_port
):
    node_id = _enrol(web_app, _name("broker-away"))
    token = _csrf(operator.get("/operators"))
    monkeypatch.setattr(celeryconfig, "broker_url", f"redis://127.0.0.1:{closed_port}/0")

    began = time.monotonic()
    page = operator.get("/operators?lang=en")
    took = time.monotonic() - began

    assert page.status_code == 200, page.get_data(as_text=True)[:2000]
    text = page.get_data(as_text=True)
    assert 'id="queues-unavailable"' in text and "Unavailable: the broker cannot be reached" in text
    assert "queue-depths" not in _tables(page)
    assert "nodes-by-state" in _tables(page) and "jobs-per-hour-table" in _tables(page)
    assert took < 5, took
    for action in ("approve", "revoke"):
        refused = operator.post(f"/operators/nodes/{node_id}/{action}", data={"csrf_token": token})
        assert refused.status_code == 503 and "broker cannot be reached" in refused.get_data(as_text=True)
    node = _node(web_app, node_id)
    assert node.approved_at is None and node.revoked_at is None  # nothing saved

    monkeypatch.undo()
    assert _post(operator, f"/operators/nodes/{node_id}/approve").status_code == 303
    assert _node(web_app, node_id).approved_at is not None


def test_the_page_asks_one_query_per_figure(web_app, operator):
    """However many nodes, jobs and entries, the page's queries are a fixed few."""
    from sqlalchemy import event

    from app.extensions import db

    with web_app.app_context():
        engine = db.engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        assert operator.get("/operators").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # The session's member, then one query a figure: 9 in all.
    assert len(statements) <= 10, "\n\n".join(statements)

    times = []
    for _ in range(7):
        began = time.perf_counter()
        assert operator.get("/operators").status_code == 200
        times.append(time.perf_counter() - began)
    times.sort()
    median, most = times[3] * 1000, times[-1] * 1000
    print(f"GET /operators: median {median:.0f} ms, max {most:.0f} ms, {len(statements)} queries")
    assert times[3] < 2.0, times
