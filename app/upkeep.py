"""The ledger worker's upkeep: a thread of its main process that does, for the whole grid,
what volunteers may not do for themselves and watches what the coordinator dispatched.

Every ``unacked_restore_interval`` seconds it keeps the broker as the grid needs it
(``app.broker_upkeep``: routing, kombu's scripts, messages dead workers left in flight); every
``WATCHDOG_SECONDS`` it sends again the steps whose message vanished (``app.watchdog``) and
fails the jobs that can no longer end (``app.jobs.fail_stalled``) and folds the operators'
figures' running tallies together (``app.figures.compact_tallies``), wherever a ledger worker
runs, with or without beat. With several ledger workers, one at a time watches (a lock in
Redis); the broker's care is idempotent.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery import bootsteps

import celeryconfig
from app import broker_acl, broker_upkeep, figures, jobs, watchdog
from app.extensions import db
from app.validation import checks

log = logging.getLogger(__name__)

#: Held by the ledger worker whose upkeep is watching dispatched steps this round.
WATCH_LOCK = "grid:coordinator:watch"


class Upkeep(bootsteps.StartStopStep):
    """A thread of the ledger worker's main process that keeps the broker as the grid needs it,
    and watches what the coordinator dispatched (``app.watchdog``, the stalled sweep)."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.interval = float(celeryconfig.broker_transport_options["unacked_restore_interval"])
        self.watched_at = 0.0

    def start(self, worker) -> None:
        self.url = worker.app.conf.broker_url
        self.flask_app = worker.app.flask_app
        self.round()
        self.thread = threading.Thread(target=self.run, name="broker-upkeep", daemon=True)
        self.thread.start()

    def stop(self, worker) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(30)

    def run(self) -> None:
        while not self.stopping.wait(min(self.interval, celeryconfig.WATCHDOG_SECONDS)):
            self.round()

    def round(self) -> None:
        try:
            with broker_acl.client(self.url) as admin:
                changed = broker_upkeep.prepare(admin)
                if changed["scripts_loaded"]:
                    log.info("loaded %d of kombu's scripts into the broker", changed["scripts_loaded"])
                broker_upkeep.restore(self.url)
                if time.monotonic() - self.watched_at >= celeryconfig.WATCHDOG_SECONDS:
                    self.watched_at = time.monotonic()
                    self.watch(admin)
        except Exception:  # noqa: BLE001  a server may be away: try again next round
            log.exception("broker upkeep failed; trying again in %.0f s", self.interval)

    def watch(self, admin: redis.Redis) -> None:
        """Steps whose message vanished are sent again; jobs that can no longer end are failed.
        One ledger worker at a time does it (a lock in Redis)."""
        if not admin.set(WATCH_LOCK, "1", nx=True, ex=max(5, celeryconfig.WATCHDOG_SECONDS - 1)):
            return
        with self.flask_app.app_context():
            try:
                for task_id, action in watchdog.revive(admin, self.url):
                    log.warning("task %s: %s", task_id, action)
                stalled = jobs.fail_stalled()
                db.session.commit()
                if stalled:
                    log.warning("failed %d stalled jobs: %s", len(stalled), ", ".join(stalled))
                refused = checks.refuse_stranded()
                db.session.commit()
                if refused:
                    log.info(
                        "%d held grants of ended jobs refused (their results were never validated)", refused
                    )
                # The figures' running tallies gain delta rows with every batch: fold them.
                figures.compact_tallies(db.session)
                db.session.commit()
            finally:
                db.session.rollback()
                db.session.remove()
