"""What every volunteer task shares: retries for transient faults, metering, progress."""

from __future__ import annotations

import logging
import random
import time

from celery import Task
from celery.exceptions import Ignore

import celeryconfig
from workers import inputs, metering, progress
from workers.protocol import content
from workers.protocol.errors import TransientError

log = logging.getLogger(__name__)
_jitter = random.Random()


class GridTask(Task):
    """A volunteer task: transient faults retried with backoff, at most ``MAX_RETRIES`` times."""

    Request = "workers.metering:GridRequest"
    autoretry_for = (TransientError, MemoryError)
    max_retries = celeryconfig.MAX_RETRIES
    retry_backoff = celeryconfig.RETRY_BACKOFF_SECONDS
    #: Delay before re-running after a dead pool process (Celery's default is three minutes).
    default_retry_delay = celeryconfig.RETRY_BACKOFF_SECONDS
    retry_backoff_max = celeryconfig.RETRY_BACKOFF_MAX_SECONDS
    retry_jitter = True
    #: A pool process that dies mid-task (killed, out of memory) counts as a failed attempt,
    #: so a document that kills every worker ends `failed` instead of circulating forever.
    retry_on_worker_lost = True
    ignore_result = True
    typing = True

    def __call__(self, *args, **kwargs):
        """Run the task; in a worker, its result goes to the ledger's record (``workers.metering``)
        and Celery is given its metadata only: Celery logs a task's return value at INFO
        ("succeeded in …: <result>") and sends it in the ``task-succeeded`` event (Flower), and
        neither may hold the document's text (docs/decisions/0016). Called directly (tests), the
        result itself."""
        request = self.request
        if request.called_directly or not request.id:
            return super().__call__(*args, **kwargs)
        result = self.run(*args, **kwargs)
        metering.keep_result(request.id, result)
        return content.metadata(result)

    def fetch_input(self) -> tuple[str, bytes]:
        """This attempt's input, from the coordinator (``workers.inputs``)."""
        request = self.request
        try:
            return inputs.fetch(
                request.id, self.name, request.retries, metering.worker_name(request.hostname)
            )
        except inputs.NotOurs as refused:
            raise self.pass_on(refused) from None

    def pass_on(self, refused: inputs.NotOurs) -> Exception:
        """Give a replica this node may not run to the others: put a copy of its message back on
        its queue, keep the one in hand a moment (so this worker takes nothing meanwhile, and
        another one may take the copy), then let it go.

        Handing the very message back at once would not do: with two nodes each holding a
        replica only the other may run, each would take its own back at once, for ever. The
        pause is random so that, of two such nodes, one soon takes the other's copy."""
        request = self.request
        log.info("task %s passed on to another node (%s)", request.id, refused.reason)
        try:
            self.app.send_task(
                self.name,
                args=request.args,
                kwargs=request.kwargs,
                task_id=request.id,
                retries=request.retries,
                priority=celeryconfig.REPLICA_PRIORITY,
                queue=self.app.amqp.queues[celeryconfig.CAPABILITY_OF_TASK[self.name]],
            )
        except Exception:  # noqa: BLE001  the broker is away: hand the message itself back
            return inputs.hand_back(refused.seconds)
        time.sleep(_jitter.uniform(0.5, 2.0) * max(refused.seconds, 0.5))
        return Ignore()

    def progress(self, **info: int) -> None:
        """Tell the coordinator how far this task has gone (pages done, tokens so far)."""
        request = self.request
        if not request.id or request.called_directly:
            return
        try:
            progress.report(request.id, request.retries, metering.worker_name(request.hostname), **info)
        except Exception:  # noqa: BLE001  progress is cosmetic; the work must go on
            pass
