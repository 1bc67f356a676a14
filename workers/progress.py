"""How far a task has gone, told to the coordinator: signed, over HTTP, at most once a second.

The coordinator shows it to the job's owner (``app.api.work``); nothing is written in the
broker, where a node could overwrite another task's progress. Best effort: a report that does
not arrive is replaced by the next one, and never slows the work down for long.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error

from workers import coordinator_http, inputs, metering

log = logging.getLogger(__name__)

#: At most one report a second per task; the last one of a task is always sent.
MIN_INTERVAL_SECONDS = 1.0
#: Seconds each wait for the coordinator, and the whole call, may take.
_TIMEOUT = 5
#: The coordinator answers 204, or an error in a few hundred bytes of JSON.
_ANSWER_BYTES = 64 * 1024
_last_sent: dict[str, float] = {}


def report(task_id: str, attempt: int, worker: str, *, final: bool = False, **info: int) -> None:
    """Tell the coordinator how far attempt ``attempt`` of ``task_id`` has gone."""
    now = time.monotonic()
    final = final or any(
        info.get(f"{unit}_done") is not None and info.get(f"{unit}_done") == info.get(f"{unit}_total")
        for unit in ("pages", "pieces")
    )
    if not final and now - _last_sent.get(task_id, 0.0) < MIN_INTERVAL_SECONDS:
        return
    _last_sent[task_id] = now
    if len(_last_sent) > 1000:  # tasks long over
        for old in sorted(_last_sent, key=_last_sent.get)[:500]:
            _last_sent.pop(old, None)
    record = metering.signed("progress", task_id=task_id, node=worker, attempt=attempt, **info)
    try:
        coordinator_http.post_json(
            inputs.work_url(task_id, "progress"),
            json.dumps(record).encode(),
            _TIMEOUT,
            _ANSWER_BYTES,
            deadline=_TIMEOUT,
        )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.debug("progress of task %s not reported: %s", task_id, exc)
