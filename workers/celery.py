"""The volunteers' Celery app, which ``celery -A workers worker -Q llm,ocr`` finds here."""

from __future__ import annotations

import sys

from celery import Celery, signals

import celeryconfig
from workers import broker

broker.install()  # kombu's Redis transport, without reading others' messages in flight

app = Celery("workers", include=["workers.tasks.ocr", "workers.tasks.llm"])
app.config_from_object(celeryconfig)
# Without -Q a volunteer serves the capability queues only (and is checked for each). It
# declares none: their routing is the coordinator's (app.broker_upkeep), and its user may not
# change it.
app.conf.task_queues = tuple(
    celeryconfig.queue(name, declare=False) for name in celeryconfig.VOLUNTEER_QUEUES
)
# A queue named with -Q that is not a volunteer queue is made up, then refused by the start-up
# check below with its reason (before anything is declared).
app.conf.task_create_missing_queues = True
# Records name their queue themselves (workers.metering), undeclared as well.
app.conf.task_routes = {
    pattern: route
    for pattern, route in celeryconfig.task_routes.items()
    if route["queue"] in celeryconfig.VOLUNTEER_QUEUES
}

from workers import metering, registration  # noqa: E402,F401  (connect their signals)
from workers.ratelimit import NodeRateLimit  # noqa: E402

app.steps["consumer"].add(NodeRateLimit)


@signals.celeryd_after_setup.connect
def _refuse_unservable_queues(sender, instance, **_) -> None:
    """Exit at start-up, with one line per problem, if a queue cannot be served here."""
    if instance.app is not app:  # the coordinator's ledger worker shares this process's signals
        return
    from workers import preflight

    queues = list(instance.app.amqp.queues.consume_from or instance.app.amqp.queues)
    try:
        found = preflight.problems(queues, sender)
    except Exception as exc:  # noqa: BLE001  a check that crashes must not let the worker start
        found = [
            f"the start-up check itself failed ({type(exc).__name__}: {exc}); run: python -m workers probe"
        ]
    if found:
        for line in found:
            print(f"grid worker {sender}: {line}", file=sys.stderr, flush=True)
        sys.exit(78)  # EX_CONFIG
