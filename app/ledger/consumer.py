"""The ledger worker's batch consumer of the ``ledger`` queue.

Records arrive as Celery task messages (``grid.ledger.started``, ``grid.ledger.record``), one
per execution event. Entering them one task at a time cost a transaction and a dozen round
trips each, and the ledger fell behind a single worker completing no-op tasks. This Celery
consumer step takes them in batches instead: up to ``BATCH`` records, or whatever arrived
within ``FLUSH_SECONDS``, are verified and entered in one transaction, then acknowledged. A
batch that cannot be committed (the database is down) is handed back to the queue, so nothing
is lost; one redelivered after a crash between commit and acknowledgement is refused as a
replay, so nothing is granted twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from kombu import Consumer, Message

import celeryconfig
from app.ledger import recorder

log = logging.getLogger(__name__)

BATCH = 500
FLUSH_SECONDS = 0.05

KINDS = {
    celeryconfig.TASK_LEDGER_STARTED: "started",
    celeryconfig.TASK_LEDGER_RECORD: "completed",
    celeryconfig.TASK_LEDGER_REGISTER: "register",
    celeryconfig.TASK_LEDGER_HEARTBEAT: "heartbeat",
    celeryconfig.TASK_LEDGER_STOPPING: "stopping",
}


def decode(body: Any, message: Message) -> tuple[str, Any]:
    """(kind, record) of a Celery task message (protocol 2: headers name it, body is
    [args, kwargs, embed])."""
    name = (message.headers or {}).get("task", "")
    try:
        args = body[0]
        record = args[0]
    except (IndexError, KeyError, TypeError):
        return "malformed", {"raw": repr(body)[:2000]}
    return KINDS.get(name, f"task:{name}"[:16]), record


class LedgerConsumer(bootsteps.ConsumerStep):
    """Consumes the ``ledger`` queue in batches, inside the Flask app's context."""

    def __init__(self, parent, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.pending: list[tuple[str, Any, Message]] = []
        self.flask_app = parent.app.flask_app
        self.timer_entry = None

    def get_consumers(self, channel) -> list[Consumer]:
        queue = next(q for q in celeryconfig.task_queues if q.name == celeryconfig.LEDGER_QUEUE)
        return [
            Consumer(
                channel,
                queues=[queue],
                callbacks=[self.on_message],
                accept=["json"],
                prefetch_count=2 * BATCH,
            )
        ]

    def start(self, c) -> None:
        super().start(c)
        self.timer_entry = c.timer.call_repeatedly(FLUSH_SECONDS, self.flush)
        log.info("ledger consumer ready: batches of up to %d records", BATCH)

    def stop(self, c) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
        self.flush()
        super().stop(c)

    def on_message(self, body: Any, message: Message) -> None:
        kind, record = decode(body, message)
        self.pending.append((kind, record, message))
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        began = time.perf_counter()
        try:
            with self.flask_app.app_context():
                recorder.apply_safely([(kind, record) for kind, record, _ in batch])
        except Exception as exc:  # noqa: BLE001  the database is away (or a bug): try again later
            log.error("ledger batch of %d not entered, handed back to the queue: %s", len(batch), exc)
            for *_, message in batch:
                message.requeue()
            return
        for *_, message in batch:
            message.ack()
        log.debug("ledger batch of %d entered in %.3f s", len(batch), time.perf_counter() - began)
