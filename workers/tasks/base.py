"""What every volunteer task shares: retries for transient faults, metering, progress."""

from __future__ import annotations

from celery import Task

import celeryconfig
from workers import inputs, metering, progress
from workers.protocol.errors import TransientError


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

    def fetch_input(self) -> tuple[str, bytes]:
        """This attempt's input, from the coordinator (``workers.inputs``)."""
        request = self.request
        return inputs.fetch(request.id, self.name, request.retries, metering.worker_name(request.hostname))

    def progress(self, **info: int) -> None:
        """Tell the coordinator how far this task has gone (pages done, tokens so far)."""
        request = self.request
        if not request.id or request.called_directly:
            return
        try:
            progress.report(request.id, request.retries, metering.worker_name(request.hostname), **info)
        except Exception:  # noqa: BLE001  progress is cosmetic; the work must go on
            pass
