"""The API's ``/metrics``: the grid's figures for Prometheus, beside the HTTP request metrics.

The grid's figures (``app.figures``) are read from PostgreSQL and Redis when Prometheus scrapes,
by a collector, and kept ``METRICS_CACHE_SECONDS`` in the process: every gunicorn worker of every
coordinator answers the same values, whichever one a scrape reaches (docs/decisions/0012). The
seed's metrics keep their names exactly (``koprogo_mcp_*``); the others are ``koprogo_grid_*``.

The HTTP request metrics (prometheus-flask-exporter) are counted in the process that served the
request: with several gunicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder
each start and they are summed over the workers (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Flask, request
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_flask_exporter import PrometheusMetrics

from app import broker_acl, figures
from app.errors import AuthRequired, InvalidToken
from app.extensions import db

log = logging.getLogger(__name__)

#: Seconds a scrape waits for the broker before the broker's figures are left out.
BROKER_TIMEOUT_SECONDS = 2
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _database_families(session: Any) -> list[Metric]:
    nodes = GaugeMetricFamily("koprogo_mcp_nodes_total", "Nodes by state (the registry's).", labels=["state"])
    for state, count in figures.nodes_by_state(session).items():
        nodes.add_metric([state], count)
    online = GaugeMetricFamily(
        "koprogo_grid_nodes_online", "Online nodes serving each capability.", labels=["capability"]
    )
    for capability, count in figures.nodes_online_by_capability(session).items():
        online.add_metric([capability], count)
    ages = GaugeMetricFamily(
        "koprogo_grid_node_heartbeat_age_seconds",
        "Seconds since each approved, unpaused node was last heard from (coordinator's clock).",
        labels=["node"],
    )
    for name, age in figures.heartbeat_ages(session).items():
        ages.add_metric([name], round(age, 3))
    completed = GaugeMetricFamily(
        "koprogo_mcp_tasks_completed",
        "Executions the ledger entered, by capability and outcome (never decreases).",
        labels=["capability", "outcome"],
    )
    for capability, outcomes in figures.tasks_completed(session).items():
        for outcome, count in outcomes.items():
            completed.add_metric([capability, outcome], count)
    hours = GaugeMetricFamily(
        "koprogo_mcp_compute_hours",
        "Granted compute hours that count (held grants once released; reversals deducted).",
        labels=["capability"],
    )
    for capability, value in figures.compute_hours_by_capability(session).items():
        hours.add_metric([capability], float(value))
    distributed = GaugeMetricFamily(
        "koprogo_mcp_rewards_distributed", "Euros of settled rewards, and of those paid.", labels=["state"]
    )
    for state, euros in figures.rewards_distributed(session).items():
        distributed.add_metric([state], float(euros))
    by_period = GaugeMetricFamily(
        "koprogo_grid_rewards_period_euros",
        "Euros of rewards per settled period (the last twelve).",
        labels=["period", "state"],
    )
    for period, amounts in figures.rewards_by_period(session).items():
        for state, euros in amounts.items():
            by_period.add_metric([period, state], float(euros))
    refused = CounterMetricFamily(
        "koprogo_grid_records_refused", "Records the ledger refused, by reason.", labels=["reason"]
    )
    for reason, count in figures.refusals_by_reason(session).items():
        refused.add_metric([reason], count)
    checking = figures.validation(session)
    awaiting = GaugeMetricFamily(
        "koprogo_grid_results_awaiting_validation", "Steps whose result waits for its replicas."
    )
    awaiting.add_metric([], checking["awaiting_validation"])
    held = GaugeMetricFamily("koprogo_grid_grants_held", "Grants held until their result is validated.")
    held.add_metric([], checking["grants_held"])
    invalid = CounterMetricFamily(
        "koprogo_grid_results_invalid", "Results found invalid by comparison (their grants refused)."
    )
    invalid.add_metric([], checking["invalid_results"])
    latency = HistogramMetricFamily(
        "koprogo_grid_job_latency_seconds",
        "Seconds from submission to end of finished jobs, by kind and final state.",
        labels=["kind", "state"],
    )
    for (kind, state), histogram in sorted(figures.job_latency(session).items()):
        latency.add_metric(
            [kind, state],
            [(_bound(le), count) for le, count in histogram["buckets"].items()],
            sum_value=histogram["sum"],
        )
    return [
        nodes,
        online,
        ages,
        completed,
        hours,
        distributed,
        by_period,
        refused,
        awaiting,
        held,
        invalid,
        latency,
    ]


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(float(le))


def _broker_families() -> list[Metric]:
    broker = broker_acl.client(
        socket_connect_timeout=BROKER_TIMEOUT_SECONDS, socket_timeout=BROKER_TIMEOUT_SECONDS
    )
    try:
        depths = figures.queue_depths(broker)
        backlog = figures.ledger_backlog(broker)
    finally:
        broker.close()
    queued = GaugeMetricFamily(
        "koprogo_mcp_tasks_queued",
        "Messages waiting in each queue (priority lists included).",
        labels=["queue"],
    )
    for queue, depth in depths.items():
        queued.add_metric([queue], depth)
    lag = GaugeMetricFamily(
        "koprogo_grid_ledger_lag_seconds",
        "How long the oldest record not yet entered has waited at the head of the ledger's queue.",
    )
    lag.add_metric([], round(backlog["lag_seconds"], 3))
    in_flight = GaugeMetricFamily(
        "koprogo_grid_ledger_in_flight", "Records in ledger batches not yet committed."
    )
    in_flight.add_metric([], backlog["in_flight"])
    workers = GaugeMetricFamily("koprogo_grid_ledger_workers", "Ledger workers alive.")
    workers.add_metric([], backlog["workers"])
    return [queued, lag, in_flight, workers]


class GridCollector(Collector):
    """The grid's figures, computed at most once per ``ttl`` seconds in this process. A source
    that cannot be read (the database or the broker away) is left out and said so by
    ``koprogo_grid_figures_up{source}``, the rest is still answered."""

    def __init__(self, app: Flask, ttl: float) -> None:
        self.app = app
        self.ttl = ttl
        self._lock = threading.Lock()
        self._computed_at = -float("inf")
        self._families: list[Metric] = []

    def describe(self) -> list[Metric]:
        return []  # registering must not query anything

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._computed_at >= self.ttl:
                self._families = self._compute()
                self._computed_at = time.monotonic()
            families = self._families
        yield from families

    def _compute(self) -> list[Metric]:
        began = time.perf_counter()
        families: list[Metric] = []
        up = GaugeMetricFamily(
            "koprogo_grid_figures_up",
            "Whether the grid's figures could be read from a source.",
            labels=["source"],
        )
        with self.app.app_context():
            try:
                families += _database_families(db.session)
                up.add_metric(["database"], 1)
            except Exception:  # noqa: BLE001  a scrape answers what it can
                log.exception("metrics: the database's figures could not be read")
                up.add_metric(["database"], 0)
            finally:
                db.session.rollback()
                db.session.remove()
            try:
                families += _broker_families()
                up.add_metric(["broker"], 1)
            except Exception:  # noqa: BLE001
                log.exception("metrics: the broker's figures could not be read")
                up.add_metric(["broker"], 0)
        took = GaugeMetricFamily(
            "koprogo_grid_figures_seconds", "Seconds the last computation of the grid's figures took."
        )
        took.add_metric([], round(time.perf_counter() - began, 6))
        return [*families, up, took]


def init_app(app: Flask) -> None:
    """Count the API's requests and serve ``/metrics`` with the grid's figures."""
    multiprocess_dir = os.environ.get(MULTIPROCESS_ENV)
    registry = CollectorRegistry(auto_describe=True)
    if not multiprocess_dir:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    exporter = PrometheusMetrics(
        app, path=None, registry=registry, group_by="endpoint", defaults_prefix="koprogo_grid"
    )
    grid = GridCollector(app, float(app.config["METRICS_CACHE_SECONDS"]))
    registry.register(grid)

    @app.get("/metrics")
    @exporter.do_not_track()
    def metrics() -> tuple[bytes, int, dict[str, str]]:
        _check_token(app.config.get("METRICS_TOKEN"))
        served = registry
        if multiprocess_dir:  # the request metrics of every worker, from their files
            served = CollectorRegistry()
            multiprocess.MultiProcessCollector(served)
            served.register(grid)
        encode, content_type = choose_encoder(request.headers.get("Accept"))
        return encode(served), 200, {"Content-Type": content_type}


def _check_token(expected: str | None) -> None:
    """``GRID_METRICS_TOKEN``, when set, as a bearer token (compared in constant time)."""
    if not expected:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise AuthRequired("/metrics needs the metrics token: Authorization: Bearer <GRID_METRICS_TOKEN>.")
    if not hmac.compare_digest(given.strip().encode(), str(expected).encode()):
        raise InvalidToken("That is not the metrics token.")
