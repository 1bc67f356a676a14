"""The member's dashboard (/dashboard): their own nodes with the registry's state and uptime,
pausing and resuming them as the API does, enrolling a node (its configuration shown once),
compute hours, earnings per month and each month's statement as a page and as CSV, all agreeing
with the ledger's statements. The real app on the session's PostgreSQL and Redis, through
Flask's test client (HTML forms, no browser)."""

from __future__ import annotations

import csv
import io
import re
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import unquote

import pytest
from sqlalchemy import select, text

from tests.test_settlement import LLM, OCR, _entry
from tests.web import client as _client
from tests.web import csrf as _csrf
from tests.web import signed_up as _signed_up


@pytest.fixture(scope="module")
def web_app():
    from app import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def browser(web_app):
    return _client(web_app)


def _name(prefix: str = "dash") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _nodes(web_app, email: str, count: int, approved: bool = True) -> list[str]:
    """``count`` new nodes of the participant ``email``, committed; their names."""
    from app import nodes
    from app.extensions import db

    names = [_name() for _ in range(count)]
    with web_app.app_context():
        for name in names:
            nodes.create(name, email, approved=approved)
        db.session.commit()
    return names


def _node(name: str):
    from app.extensions import db
    from app.models import Node

    return db.session.scalar(select(Node).where(Node.name == name))


def _beats(node_id: str, first_slot: int, last_slot: int) -> None:
    """A heartbeat in every interval from ``first_slot`` to ``last_slot`` (one statement)."""
    from app.extensions import db

    db.session.execute(
        text(
            "INSERT INTO node_heartbeats (node_id, slot) SELECT :node, s FROM generate_series(:a, :b) s "
            "ON CONFLICT DO NOTHING"
        ),
        {"node": node_id, "a": first_slot, "b": last_slot},
    )


def _section(page: str, name: str) -> str:
    found = re.search(rf'<section class="card node" id="node-{name}".*?</section>', page, re.S)
    assert found, f"no section for {name}"
    return found.group(0)


def _data(html: str, css_class: str) -> str:
    found = re.search(rf'<data class="{css_class}" value="([^"]+)"', html)
    assert found, css_class
    return found.group(1)


def _post(browser, path: str, **form):
    page = browser.get("/dashboard")
    return browser.post(path, data={"csrf_token": _csrf(page), **form})


# --- nodes and uptime -------------------------------------------------------------------------


def test_a_member_sees_only_their_own_nodes_with_the_registry_s_state_and_uptime(web_app, browser):
    import celeryconfig
    from app import registry
    from app.extensions import db
    from app.models import utcnow

    email = _signed_up(browser)
    mine = _nodes(web_app, email, 2)
    theirs = _nodes(web_app, f"other-{uuid.uuid4().hex[:8]}@koprogo.test", 1)
    with web_app.app_context():
        node = _node(mine[0])
        node.created_at = utcnow() - timedelta(days=40)
        node.last_seen_at = utcnow()
        now_slot = registry.slot_of(utcnow())
        per_hour = 3600 // celeryconfig.HEARTBEAT_SECONDS
        _beats(node.id, now_slot - 30 * per_hour, now_slot - 26 * per_hour)  # 4 hours, a day ago
        _beats(node.id, now_slot - 3 * per_hour, now_slot)  # the last 3 hours
        registry.pause(_node(mine[1]), registry.OWNER)
        db.session.commit()

        def expected() -> dict[str, tuple[float, float]]:
            return {
                name: tuple(registry.uptime(_node(name), registry.WINDOWS[w]) for w in ("24h", "30d"))
                for name in mine
            }

        before = expected()
        page = browser.get("/dashboard?lang=en")
        after = expected()

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert all(f'id="node-{name}"' in html for name in mine)
    assert not any(name in html for name in theirs)
    for name in mine:
        shown = _section(html, name)
        figures = (float(_data(shown, "uptime-24h")), float(_data(shown, "uptime-30d")))
        assert figures in (before[name], after[name]), (name, figures, before[name])
    up = _section(html, mine[0])
    assert 'data-state="online"' in up and "online" in up and f'id="pause-{mine[0]}"' in up
    # The last 3 hours of 24 (the 4 hours a day ago fall out of the window), and 7 hours of 30 days.
    assert 12 < before[mine[0]][0] < 13.5 and 0.9 < before[mine[0]][1] < 1.1
    assert f'id="uptime-{_node_id(web_app, mine[0])}"' in up  # its chart of uptime per day, with its table
    paused = _section(html, mine[1])
    assert 'data-state="paused"' in paused and "Paused by you" in paused
    assert f'id="resume-{mine[1]}"' in paused and f'id="pause-{mine[1]}"' not in paused
    assert browser.get("/dashboard").status_code == 200  # in French too
    assert _client(web_app).get("/dashboard").status_code == 302  # signed out: to the sign-in page


def _node_id(web_app, name: str) -> str:
    with web_app.app_context():
        return _node(name).id


def test_uptime_per_day_counts_each_day_s_intervals_from_enrolment_in_one_query(web_app):
    import celeryconfig
    from app import registry
    from app.extensions import db

    every = celeryconfig.HEARTBEAT_SECONDS
    per_hour = 3600 // every
    now = datetime(2025, 6, 15, 12, 0, 30, tzinfo=UTC)
    enrolled = datetime(2025, 6, 13, 6, 0, tzinfo=UTC)
    with web_app.app_context():
        node, other = (_node(name) for name in _nodes(web_app, "uptime-days@koprogo.test", 2))
        node.created_at = other.created_at = enrolled
        day13, day14, day15 = (registry.slot_of(datetime(2025, 6, d, tzinfo=UTC)) for d in (13, 14, 15))
        _beats(node.id, day13 - 5, day13 + 6 * per_hour - 1)  # before its enrolment: not counted
        _beats(node.id, day13 + 6 * per_hour, day13 + 15 * per_hour - 1)  # 9 of its 18 hours
        _beats(node.id, day14, day15 - 1)  # the whole day
        _beats(node.id, registry.slot_of(now) + 1, registry.slot_of(now) + 10)  # after now
        _beats(other.id, day15, registry.slot_of(now))  # another node's
        db.session.commit()
        db.session.refresh(node), db.session.refresh(other)  # loaded before the count

        queries = []
        from sqlalchemy import event

        def count(*_):
            queries.append(1)

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            days = registry.uptime_by_day([node, other], days=5, now=now)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)

    assert len(queries) == 1
    assert [d.isoformat() for d, _ in days[node.id]] == ["2025-06-13", "2025-06-14", "2025-06-15"]
    assert [value for _, value in days[node.id]] == [50.0, 100.0, 0.0]
    # Today so far: the intervals from midnight to now's, all seen.
    assert days[other.id][-1][1] == 100.0 and [v for _, v in days[other.id][:2]] == [0.0, 0.0]


def test_the_dashboard_answers_fast_with_three_nodes_and_thirty_days_of_heartbeats(web_app, browser):
    import celeryconfig
    from app import registry
    from app.extensions import db
    from app.models import utcnow

    email = _signed_up(browser)
    names = _nodes(web_app, email, 3)
    with web_app.app_context():
        last = registry.slot_of(utcnow())
        for name in names:
            node = _node(name)
            node.created_at = utcnow() - timedelta(days=31)
            _beats(node.id, last - 30 * 86400 // celeryconfig.HEARTBEAT_SECONDS, last)
        db.session.commit()
    assert browser.get("/dashboard").status_code == 200  # warm
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        assert browser.get("/dashboard").status_code == 200
        seconds.append(time.perf_counter() - started)
    print(
        f"GET /dashboard, 3 nodes, 30 days of heartbeats: median {statistics.median(seconds) * 1000:.0f} ms, "
        f"max {max(seconds) * 1000:.0f} ms"
    )
    assert statistics.median(seconds) < 1.0, seconds


# --- pause and resume -------------------------------------------------------------------------


def test_pause_then_resume_through_the_page_reaches_the_registry_only_for_the_owner(web_app, browser):
    from app import registry

    email = _signed_up(browser)
    name = _nodes(web_app, email, 1)[0]
    stranger = _nodes(web_app, f"stranger-{uuid.uuid4().hex[:8]}@koprogo.test", 1)[0]
    node_id, stranger_id = _node_id(web_app, name), _node_id(web_app, stranger)

    paused = _post(browser, f"/dashboard/nodes/{node_id}/pause")
    assert paused.status_code == 303 and paused.headers["Location"].endswith(f"/dashboard#node-{name}")
    with web_app.app_context():
        node = _node(name)
        assert registry.state(node) == registry.PAUSED and node.paused_by == registry.OWNER
    shown = _section(browser.get("/dashboard?lang=en").get_data(as_text=True), name)
    assert 'data-state="paused"' in shown and f'id="resume-{name}"' in shown

    resumed = _post(browser, f"/dashboard/nodes/{node_id}/resume")
    assert resumed.status_code == 303
    with web_app.app_context():
        node = _node(name)
        assert node.paused_at is None and registry.state(node) == registry.OFFLINE  # no worker yet

    for action in ("pause", "resume"):
        assert _post(browser, f"/dashboard/nodes/{stranger_id}/{action}").status_code == 404
        assert _post(browser, f"/dashboard/nodes/not-a-node/{action}").status_code == 404
    with web_app.app_context():
        assert _node(stranger).paused_at is None
    refused = browser.post(f"/dashboard/nodes/{node_id}/pause")  # no CSRF token
    assert refused.status_code == 400
    with web_app.app_context():
        assert _node(name).paused_at is None


def test_a_node_an_operator_or_the_grid_paused_is_not_resumed_by_its_member(web_app, browser):
    from app import registry
    from app.extensions import db

    email = _signed_up(browser)
    by_operator, by_grid = _nodes(web_app, email, 2)
    with web_app.app_context():
        registry.pause(_node(by_operator), registry.OPERATOR)
        registry.pause(_node(by_grid), registry.SUSPICION)
        _node(by_grid).pause_reason = "4 invalid results in 24 hours"
        db.session.commit()
    html = browser.get("/dashboard?lang=en").get_data(as_text=True)
    for name in (by_operator, by_grid):
        shown = _section(html, name)
        assert 'data-state="paused"' in shown and f'id="resume-{name}"' not in shown
        assert "nly an operator can resume it" in shown
    assert "4 invalid results in 24 hours" in _section(html, by_grid)

    refused = _post(browser, f"/dashboard/nodes/{_node_id(web_app, by_operator)}/resume?lang=en")
    assert refused.status_code == 403
    assert f"Node {by_operator} was paused by an operator" in refused.get_data(as_text=True)
    by_grid_refused = _post(browser, f"/dashboard/nodes/{_node_id(web_app, by_grid)}/resume?lang=en")
    assert by_grid_refused.status_code == 403 and "paused by the grid" in by_grid_refused.get_data(
        as_text=True
    )
    with web_app.app_context():
        assert _node(by_operator).paused_by == registry.OPERATOR
        assert _node(by_grid).paused_by == registry.SUSPICION


# --- enrolment --------------------------------------------------------------------------------


def test_enrolling_through_the_page_shows_the_configuration_once_and_the_node_is_pending(web_app, browser):
    from app import nodes, registry

    email = _signed_up(browser)
    name = _name("enrolled")
    answer = _post(browser, "/dashboard/nodes?lang=en", name=name)
    assert answer.status_code == 201
    assert answer.headers["Cache-Control"] == "no-store"
    html = answer.get_data(as_text=True)
    with web_app.app_context():
        node = _node(name)
        assert node.participant.email == email and registry.state(node) == registry.PENDING
        secret = nodes.node_secret(node)
        configuration = nodes.worker_configuration(node)
    shown = re.search(r'<textarea id="configuration" readonly[^>]*>(.*?)</textarea>', html, re.S)
    assert shown and f"GRID_NODE_SECRET={secret}" in shown.group(1)
    link = re.search(r'<a class="button" id="download-configuration" download="([^"]+)" href="([^"]+)"', html)
    assert link and link.group(1) == f"koprogo-worker-{name}.env"
    assert link.group(2).startswith("data:text/plain;charset=utf-8,")
    assert unquote(link.group(2).split(",", 1)[1]) == configuration
    assert "celery -A workers worker -Q llm,ocr" in html and "awaits an operator" in html

    later = browser.get("/dashboard?lang=en").get_data(as_text=True)
    assert secret not in later and 'data-state="pending"' in _section(later, name)


def test_enrolling_refuses_a_taken_name_a_bad_name_and_the_node_limit_with_the_api_s_messages(
    web_app, browser
):
    from app import nodes

    email = _signed_up(browser)
    taken = _nodes(web_app, "someone-else@koprogo.test", 1)[0]
    duplicate = _post(browser, "/dashboard/nodes?lang=en", name=taken)
    assert duplicate.status_code == 409
    assert f"A node named {taken} exists already" in duplicate.get_data(as_text=True)

    for bad, message in (("Not A Name!", "lower-case letters"), ("ledger", "coordinator's own workers")):
        refused = _post(browser, "/dashboard/nodes?lang=en", name=bad)
        assert refused.status_code == 400 and message in refused.get_data(as_text=True)

    limit = web_app.config["NODES_PER_PARTICIPANT"]
    answers = [_post(browser, "/dashboard/nodes", name=_name("many")).status_code for _ in range(limit)]
    assert answers == [201] * limit
    sixth = _post(browser, "/dashboard/nodes?lang=en", name=_name("many"))
    assert sixth.status_code == 409
    with web_app.app_context():
        api_message = nodes.NodeLimit(limit, limit).message
    assert api_message in sixth.get_data(as_text=True).replace("&#39;", "'")
    with web_app.app_context():
        mine = nodes.participant(email).nodes
        assert len(mine) == limit


# --- earnings and statements ------------------------------------------------------------------


def test_earnings_and_statements_agree_with_the_ledger_s_statements(web_app, browser):
    from app import nodes
    from app.extensions import db
    from app.ledger import periods, settlement
    from app.models import utcnow
    from app.web import dashboard

    email = _signed_up(browser)
    current = periods.of(utcnow())
    with web_app.app_context():  # a past month of the last 12 not settled yet (this test settles it)
        closed = periods.closed()
    previous = next(p for p in reversed(dashboard.recent_periods(12)[:-1]) if p not in closed)
    a, b = _nodes(web_app, email, 2)
    with web_app.app_context():
        node_a, node_b = _node(a), _node(b)
        stranger = _node(_nodes(web_app, "rich-stranger@koprogo.test", 1)[0])
        _entry(node_a, current, OCR, 5_400_000, "0.60")  # 1.5 h: 0.90 €
        _entry(node_b, current, LLM, 1_800_000, "1.20")  # 0.5 h: 0.60 €
        _entry(node_b, current, OCR, 3_600_000, "0.60", held=True)  # awaits validation: nothing yet
        _entry(node_a, previous, OCR, 7_200_000, "0.60")  # 2 h: 1.20 €
        _entry(node_b, previous, OCR, 1_800_000, "0.60")  # 0.5 h: 0.30 €, not paid yet
        _entry(stranger, current, LLM, 36_000_000, "1.20")  # someone else's 12 €
        db.session.commit()
        settlement.settle(previous)
        settlement.pay(previous, "transfer 42", [node_a.id])
        db.session.commit()
        member = nodes.participant(email)
        statements = {p: settlement.statement(member, p) for p in (current, previous)}

    html = browser.get("/dashboard?lang=en").get_data(as_text=True)
    for period, payment in ((current, "open"), (previous, "partly_paid")):
        row = re.search(rf'<tr data-period="{period}">.*?</tr>', html, re.S).group(0)
        stated = statements[period]
        counted_ms = sum(
            round(line["granted_seconds"] * 1000)
            for line in stated["entries"]
            if line["grant_status"] in ("counted", "released")
        )
        values = re.findall(r'<data value="([^"]+)"', row)
        assert int(values[0]) == counted_ms
        owed = (
            sum(Decimal(r["amount_eur"]) for r in stated["rewards"])
            if stated["settled"]
            else Decimal(stated["total_eur"])
        )
        assert Decimal(values[1]) == owed
        assert f'data-payment="{payment}"' in row
    this_month = re.search(rf'<tr data-period="{current}">.*?</tr>', html, re.S).group(0)
    assert re.findall(r'<data value="([^"]+)"', this_month) == ["7200000", "1.50"]
    assert html.count("<tr data-period=") == 12 and 'id="earnings"' in html  # and its chart
    hours = re.search(r'<tr data-capability="ocr">.*?</tr>', html, re.S).group(0)
    assert re.findall(r'<data value="(\d+)"', hours) == ["5400000", str(5_400_000 + 7_200_000 + 1_800_000)]

    page = browser.get(f"/dashboard/statements/{current}?lang=en")
    assert page.status_code == 200
    shown = page.get_data(as_text=True)
    assert (
        re.search(r'<data id="total-eur" value="([^"]+)"', shown).group(1) == statements[current]["total_eur"]
    )
    assert 'data-status="held"' in shown and "rich-stranger" not in shown
    settled = browser.get(f"/dashboard/statements/{previous}?lang=en").get_data(as_text=True)
    assert "transfer 42" in settled and re.search(r'<data id="rewards-eur" value="([^"]+)"', settled)

    exported = browser.get(f"/dashboard/statements/{previous}.csv")
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    assert (
        exported.headers["Content-Disposition"] == f'attachment; filename="koprogo-statement-{previous}.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert [int(r["entry_id"]) for r in rows] == [
        line["entry_id"] for line in statements[previous]["entries"]
    ]
    assert [r["amount_eur"] for r in rows] == [line["amount_eur"] for line in statements[previous]["entries"]]
    assert {r["period"] for r in rows} == {previous}

    for bad in ("2026-13", "November", "0000-01", "2026-1", "9999-12"):
        for suffix in ("", ".csv"):
            answer = browser.get(f"/dashboard/statements/{bad}{suffix}")
            assert answer.status_code == 404, (bad, suffix)


def test_pausing_on_the_page_tells_the_node_s_running_worker(web_app, browser, grid):
    """A real worker of the member's node: paused on the page, it stops consuming its queue;
    resumed, it consumes it again (its own log says so)."""
    from tests.grid import wait_for

    email = _signed_up(browser)
    name = _name("told")
    worker = grid.worker(name, "ocr", owner=email)
    try:
        with web_app.app_context():

            def registered():
                from app.extensions import db

                db.session.expire_all()
                node = _node(name)
                return node.id if node is not None and node.worker and node.queues == ["ocr"] else None

            node_id = wait_for(registered, 30, "the worker to register", interval=0.3)

        def logged(line: str, count: int = 1):
            return worker.log_path.read_text(errors="replace").count(line) >= count or None

        assert _post(browser, f"/dashboard/nodes/{node_id}/pause").status_code == 303
        wait_for(lambda: logged("Canceling queue ocr"), 20, "the worker to stop consuming", 0.2)
        assert _post(browser, f"/dashboard/nodes/{node_id}/resume").status_code == 303
        wait_for(lambda: logged("Started consuming from ocr"), 20, "the worker to consume again", 0.2)
    finally:
        worker.stop()
