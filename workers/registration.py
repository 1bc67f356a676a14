"""A worker tells the coordinator it is there: it registers its probe when it starts, sends a
heartbeat every ``HEARTBEAT_SECONDS`` and says when it stops. All of it signed with the node's
secret and sent to the ledger queue, like the metering records (docs/decisions/0007)."""

from __future__ import annotations

import logging
import os
import threading
import time

from celery import signals

import celeryconfig
from workers import metering, probe, spool

log = logging.getLogger(__name__)

_stop = threading.Event()


def _stamp() -> dict:
    """When a notice is sent, and a nonce: the coordinator refuses a copy or a stale one."""
    return {"sent_at": time.time(), "nonce": os.urandom(16).hex()}


def _volunteer(app) -> bool:
    from workers.celery import app as volunteer_app

    return app is volunteer_app


@signals.worker_ready.connect
def _register(sender, **_) -> None:
    app = sender.app
    if not _volunteer(app):
        return
    queues = sorted(app.amqp.queues.consume_from or app.amqp.queues)
    worker = sender.hostname
    found = probe.report(tuple(q for q in queues if q in celeryconfig.VOLUNTEER_QUEUES))
    metering.send(
        app,
        "register",
        worker=worker,
        queues=queues,
        concurrency=_concurrency(sender),
        probe=found,
        **_stamp(),
    )
    _stop.clear()
    threading.Thread(target=_beat, args=(app, worker), name="grid-heartbeat", daemon=True).start()
    threading.Thread(target=_send_kept, args=(app,), name="grid-spool", daemon=True).start()


def _concurrency(consumer) -> int:
    """How many tasks this worker runs at once (the most, when it autoscales)."""
    controller = getattr(consumer, "controller", None)
    autoscaler = getattr(controller, "autoscaler", None)
    if autoscaler is not None:
        return int(autoscaler.max_concurrency)
    return int(getattr(controller, "concurrency", None) or 1)


def _beat(app, worker: str) -> None:
    while not _stop.wait(celeryconfig.HEARTBEAT_SECONDS):
        try:
            metering.send(app, "heartbeat", worker=worker, **_stamp())
        except Exception:  # noqa: BLE001  the broker is away: the next beat tries again
            log.warning("heartbeat not sent", exc_info=True)


def _send_kept(app) -> None:
    """Send the records kept while the broker was away (``workers.spool``), once it is back."""
    while not _stop.wait(spool.FLUSH_SECONDS):
        try:
            spool.flush(lambda kind, record: metering.publish(app, kind, record))
        except metering.BROKER_AWAY:
            pass  # still away: next time
        except Exception:  # noqa: BLE001  the thread must go on
            log.exception("kept records not sent")


@signals.worker_shutdown.connect
def _stopping(sender, **_) -> None:
    _stop.set()
    app = getattr(sender, "app", None)
    if app is None or not _volunteer(app):
        return
    try:
        metering.send(app, "stopping", worker=sender.hostname, **_stamp())
    except Exception:  # noqa: BLE001  it will simply show offline
        log.warning("stop notice not sent", exc_info=True)
