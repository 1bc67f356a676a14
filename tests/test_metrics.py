"""The API's /metrics on a real grid (gunicorn API, ledger worker, volunteer workers, Redis,
PostgreSQL): what it shows is what the registry, the broker and the ledger hold.

The database is the session's, shared with other tests: figures are compared as differences
between two scrapes taken around what a test does. The broker is a Redis database of the
test's own, so its queues hold only this test's messages.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from tests.grid import Client, enrolment, wait_for

DB = 12
STATES = ("online", "offline", "paused", "pending", "revoked")
#: The ledger's own test: a broker database where no ledger worker ran before.
LEDGER_DB = 13
TEXT = "The general assembly approved the accounts and elected two new members of the board. " * 4

Scrape = dict[tuple[str, frozenset], float]


def scrape(api: str) -> Scrape:
    response = requests.get(f"{api}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def scrape_until(api: str, predicate, what: str, timeout: float = 30) -> Scrape:
    def attempt() -> Scrape | None:
        samples = scrape(api)
        return samples if predicate(samples) else None

    return wait_for(attempt, timeout, what, interval=0.5)


def value(samples: Scrape, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def ledger_llm(flask_app) -> tuple[int, int]:
    """Succeeded llm executions and the llm grants that count, summed from the ledger's entries."""
    from app.extensions import db
    from app.ledger import settlement
    from app.models import LedgerEntry

    llm = LedgerEntry.capability == "llm"
    with flask_app.app_context():
        executions = db.session.scalar(
            select(func.count(LedgerEntry.id)).where(llm, LedgerEntry.outcome == "succeeded")
        )
        granted = db.session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.granted_ms), 0)).where(llm, settlement.counted())
        )
        db.session.rollback()
        return int(executions), int(granted)


def granted_ms(flask_app, job_ids: list[str]) -> int:
    from app.extensions import db
    from app.models import LedgerEntry

    with flask_app.app_context():
        return int(
            db.session.scalar(
                select(func.coalesce(func.sum(LedgerEntry.granted_ms), 0)).where(
                    LedgerEntry.job_id.in_(job_ids)
                )
            )
        )


@pytest.mark.slow
@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_metrics_count_nodes_jobs_queued_tasks_and_hours_as_the_ledger_does(
    fresh_grid, make_token, flask_app
):
    grid = fresh_grid
    grid.env["GRID_METRICS_CACHE_SECONDS"] = "0"  # each scrape computes (the cache has its own test)
    grid.ledger_worker()
    api = grid.api()
    client = Client(api, make_token("metrics@koprogo.test"))
    enrolment("metrics-llm")
    before = scrape(api)
    assert value(before, "koprogo_grid_figures_up", source="database") == 1
    assert value(before, "koprogo_grid_figures_up", source="broker") == 1
    assert ("koprogo_grid_node_heartbeat_age_seconds", frozenset({("node", "metrics-llm")})) not in before

    worker = grid.worker("metrics-llm", "llm")

    def registered() -> Scrape | None:
        now = scrape(api)
        return (
            now
            if ("koprogo_grid_node_heartbeat_age_seconds", frozenset({("node", "metrics-llm")})) in now
            else None
        )

    online = wait_for(registered, 60, "the new node to register")
    assert value(online, "koprogo_grid_nodes_online", capability="llm") >= 1
    assert 0 <= value(online, "koprogo_grid_node_heartbeat_age_seconds", node="metrics-llm") < 60
    # Nodes by state: as the registry lists them to an operator. Other tests' nodes may cross
    # the offline threshold meanwhile: both are read again until they are read at one moment.
    operator = Client(api, make_token("metrics-operator@koprogo.test", ("admin",)))

    def counted_as_listed() -> Scrape | None:
        samples = scrape(api)
        nodes = operator.get("/api/v1/nodes", params={"per_page": 1000}).json()["items"]  # every node
        listed = Counter(node["state"] for node in nodes)
        exposed = {state: value(samples, "koprogo_mcp_nodes_total", state=state) for state in STATES}
        mine = next(node["state"] for node in nodes if node["name"] == "metrics-llm")
        return samples if mine == "online" and exposed == {s: listed[s] for s in STATES} else None

    wait_for(counted_as_listed, 30, "/metrics to count nodes by state as the registry lists them")

    jobs = [client.submit_text("summarise", text=TEXT, language="en", max_words=20)["id"] for _ in range(3)]
    for job in jobs:
        assert client.wait(job)["state"] == "succeeded"

    # Executions and compute hours are the ledger's, read here the slow way (from its entries,
    # as settlement counts them), at one moment: other tests' volunteers may still be entering.
    def as_the_ledger_says() -> Scrape | None:
        samples = scrape(api)
        executions, granted = ledger_llm(flask_app)
        hours = Decimal(str(value(samples, "koprogo_mcp_compute_hours", capability="llm")))
        same = (
            value(samples, "koprogo_mcp_tasks_completed", capability="llm", outcome="succeeded") == executions
        )
        return samples if same and abs(hours - Decimal(granted) / 3_600_000) <= Decimal("0.000001") else None

    after = wait_for(
        as_the_ledger_says, 30, "/metrics to show the ledger's executions and hours", interval=0.5
    )
    completed = value(after, "koprogo_mcp_tasks_completed", capability="llm", outcome="succeeded") - value(
        before, "koprogo_mcp_tasks_completed", capability="llm", outcome="succeeded"
    )
    assert completed >= 3
    assert granted_ms(flask_app, jobs) > 0
    # Each finished job is in the latency histogram, under its kind and final state.
    count = "koprogo_grid_job_latency_seconds_count"
    assert (
        value(after, count, kind="summarise", state="succeeded")
        - value(before, count, kind="summarise", state="succeeded")
        >= 3
    )
    inf_bucket = value(
        after, "koprogo_grid_job_latency_seconds_bucket", kind="summarise", state="succeeded", le="+Inf"
    )
    assert inf_bucket == value(after, count, kind="summarise", state="succeeded")

    # With the volunteer stopped, jobs wait in its queue, and the queue's depth says so.
    worker.stop()
    waiting = [
        client.submit_text("summarise", text=TEXT, language="en", max_words=20)["id"] for _ in range(4)
    ]
    queued = scrape(api)
    assert value(queued, "koprogo_mcp_tasks_queued", queue="llm") == 4
    assert value(queued, "koprogo_mcp_tasks_queued", queue="ocr") == 0
    assert len(waiting) == 4


@pytest.mark.slow
@pytest.mark.parametrize("fresh_grid", [LEDGER_DB], indirect=True)
def test_a_stopped_ledger_shows_as_lag_and_refusals_are_counted_by_reason(fresh_grid, flask_app):
    from app import broker_acl

    grid = fresh_grid
    grid.env["GRID_METRICS_CACHE_SECONDS"] = "0"
    api = grid.api()
    broker = broker_acl.client(grid.env["GRID_BROKER_URL"])
    broker.flushdb()  # this test's own database: no ledger worker alive, nothing queued
    before = scrape(api)
    assert value(before, "koprogo_grid_ledger_workers") == 0
    assert value(before, "koprogo_grid_ledger_lag_seconds") == 0

    # No ledger worker runs: a message waits at the head of the ledger's queue, and its wait grows.
    broker.lpush("ledger", b"not a record at all")
    first = scrape(api)
    time.sleep(2.5)
    later = scrape(api)
    assert value(later, "koprogo_mcp_tasks_queued", queue="ledger") == 1
    assert (
        value(later, "koprogo_grid_ledger_lag_seconds") >= value(first, "koprogo_grid_ledger_lag_seconds") + 2
    )

    grid.ledger_worker()
    entered = scrape_until(
        api,
        lambda s: value(s, "koprogo_mcp_tasks_queued", queue="ledger") == 0,
        "the ledger to take the message",
    )
    assert value(entered, "koprogo_grid_ledger_lag_seconds") == 0
    assert value(entered, "koprogo_grid_ledger_workers") == 1
    refused = "koprogo_grid_records_refused_total"
    assert value(entered, refused, reason="malformed") == value(before, refused, reason="malformed") + 1


def test_figures_are_computed_once_per_cache_period_in_a_process():
    """Within ``METRICS_CACHE_SECONDS`` a scrape is answered from the process's cache."""
    from app import create_app

    cached = create_app({"METRICS_CACHE_SECONDS": 60}).test_client()
    first = scrape_client(cached)
    enrolment("metrics-cache-node")  # a new node, never seen: offline
    assert scrape_client(cached) == first
    fresh = scrape_client(create_app({"METRICS_CACHE_SECONDS": 0}).test_client())
    offline = ("koprogo_mcp_nodes_total", frozenset({("state", "offline")}))
    assert fresh[offline] == first[offline] + 1


def scrape_client(http) -> Scrape:
    response = http.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
        if not sample.name.startswith(
            ("process_", "python_", "koprogo_grid_http", "koprogo_grid_figures_seconds")
        )
    }


def test_several_gunicorn_workers_answer_the_same_request_counts_and_figures(workdir, tmp_path):
    """With ``PROMETHEUS_MULTIPROC_DIR`` the request metrics are summed over gunicorn's workers,
    and the grid's figures, read from the servers, are the same whichever worker answers."""
    import os

    from tests.grid import VENV_BIN, GridProcess, free_port

    folder = tmp_path / "prometheus-multiproc"
    folder.mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "GRID_METRICS_CACHE_SECONDS": "0"}
    argv = [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "3", "app:create_app()"]
    process = GridProcess("api-three-workers", argv, env, tmp_path).start()
    try:

        def healthy() -> bool:
            if not process.alive():
                raise AssertionError(f"gunicorn exited:\n{process.output()[-3000:]}")
            try:
                return requests.get(f"{api}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_for(healthy, 60, "gunicorn with three workers")
        time.sleep(1)  # every worker booted
        before = scrape(api)
        for _ in range(30):
            assert requests.get(f"{api}/healthz", timeout=5).ok
        requests_total = "koprogo_grid_http_request_duration_seconds_count"
        healthz = {"method": "GET", "status": "200", "endpoint": "health.healthz"}
        scrapes = [scrape(api) for _ in range(6)]
        for samples in scrapes:
            assert value(samples, requests_total, **healthz) - value(before, requests_total, **healthz) == 30
        nodes = {
            (name, labels): v for name, labels in before if name == "koprogo_mcp_nodes_total" for v in [0]
        }
        for samples in scrapes:
            assert {key: samples[key] for key in nodes} == {key: before[key] for key in nodes}
    finally:
        process.stop()


def test_with_the_broker_away_a_scrape_answers_the_database_s_figures_and_says_so(tmp_path):
    import os

    from tests.grid import VENV_BIN, GridProcess, free_port

    port = free_port()
    api = f"http://127.0.0.1:{port}"
    # Nothing listens on this port: every broker figure fails at once (connection refused).
    env = {
        **os.environ,
        "GRID_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "GRID_METRICS_CACHE_SECONDS": "0",
    }
    argv = [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1", "app:create_app()"]
    process = GridProcess("api-without-broker", argv, env, tmp_path).start()
    try:

        def healthy() -> bool:
            if not process.alive():
                raise AssertionError(f"gunicorn exited:\n{process.output()[-3000:]}")
            try:
                return requests.get(f"{api}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        wait_for(healthy, 60, "the API")
        samples = scrape(api)
        assert value(samples, "koprogo_grid_figures_up", source="broker") == 0
        assert value(samples, "koprogo_grid_figures_up", source="database") == 1
        assert not any(name == "koprogo_mcp_tasks_queued" for name, _ in samples)
        states = {dict(labels)["state"] for name, labels in samples if name == "koprogo_mcp_nodes_total"}
        assert states == {"online", "offline", "paused", "pending", "revoked"}
    finally:
        process.stop()


def test_with_a_metrics_token_set_only_its_bearer_is_answered():
    from app import create_app

    http = create_app({"METRICS_TOKEN": "metrics-token-for-tests"}).test_client()
    missing = http.get("/metrics")
    assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "auth_required"
    wrong = http.get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "invalid_token"
    right = http.get("/metrics", headers={"Authorization": "Bearer metrics-token-for-tests"})
    assert right.status_code == 200 and "koprogo_mcp_nodes_total" in right.get_data(as_text=True)
