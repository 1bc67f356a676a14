"""A task's input, fetched from the coordinator by the node the broker gave the task to.

Task messages carry only parameters (docs/decisions/0009). The worker asks the coordinator for
the document or text with a start record signed by its node's secret (``workers.protocol``);
that request is the coordinator's own sight of the start, and the input goes to one node per
attempt. Whoever reads the queue sees no document.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
from datetime import UTC, datetime

from celery.exceptions import Ignore, Reject

import celeryconfig
from workers import coordinator_http, metering
from workers.protocol import errors

log = logging.getLogger(__name__)

COORDINATOR_URL_ENV = "GRID_COORDINATOR_URL"
#: Statuses with which the coordinator says the task is over or cancelled (410) or never existed
#: (404): the message is let go. On any other refusal (another node holds this attempt, the
#: previous one is not entered yet, this node may not run anything now) the message is handed
#: back to the broker unrun, so that the node that may run it gets it: nothing is lost.
_NOT_OURS = (404, 410)
#: How long to wait before handing back a task whose input could not be fetched (the
#: coordinator is away): the broker gives it out again.
RETRY_SECONDS = 5


class NotOurs(Exception):
    """The coordinator wants this replica run by another node (``GridTask.pass_on``)."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seconds = seconds


_TIMEOUT = 60


def fetch(task_id: str, task_name: str, attempt: int, worker: str) -> tuple[str, bytes]:
    """(kind, data) of the task's input: ``document`` bytes or ``text`` in UTF-8."""
    record = metering.signed(
        "started",
        task_id=task_id,
        task_name=task_name,
        node=worker,
        attempt=attempt,
        started_at=datetime.now(UTC).isoformat(),
    )
    url = work_url(task_id, "input")
    try:
        headers, data = coordinator_http.post_json(
            url, json.dumps(record).encode(), _TIMEOUT, celeryconfig.MAX_DOCUMENT_BYTES
        )
        return headers.get("X-Grid-Input", "document"), data
    except urllib.error.HTTPError as exc:
        reason = _reason(exc)
        if exc.code in _NOT_OURS:
            log.warning("task %s is not ours to run (%s): %s", task_id, exc.code, reason)
            raise Ignore() from None
        if exc.code == 409 and reason in errors.REPLICA_REFUSALS:
            raise NotOurs(reason, _retry_after(exc)) from None
        log.warning("task %s handed back: the coordinator said %s (%s)", task_id, exc.code, reason)
        raise hand_back(_retry_after(exc)) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.error("the coordinator could not be reached for the input of task %s: %s", task_id, exc)
        raise hand_back() from None


def work_url(task_id: str, what: str) -> str:
    """The coordinator's address for a task's ``input`` or ``progress``."""
    return f"{os.environ.get(COORDINATOR_URL_ENV, '').rstrip('/')}/api/v1/work/{task_id}/{what}"


def _reason(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read(4096))["error"]["code"]
    except (ValueError, KeyError, TypeError, OSError):
        return "?"


def _retry_after(exc: urllib.error.HTTPError) -> float:
    """The pause the coordinator asked for (``Retry-After`` in seconds), within reason."""
    try:
        return min(max(float(exc.headers.get("Retry-After", RETRY_SECONDS)), 0.2), 60.0)
    except (TypeError, ValueError):
        return RETRY_SECONDS


def hand_back(seconds: float = RETRY_SECONDS) -> Reject:
    """What gives the message back to the broker, unrun, after a pause: no attempt is spent."""
    time.sleep(seconds)
    return Reject("the input could not be fetched", requeue=True)
