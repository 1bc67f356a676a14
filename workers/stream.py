"""A streamed answer's text, told to the coordinator as it is produced (docs/decisions/0018).

The model's pieces of text are gathered and posted, signed like progress (``workers.progress``),
to ``/api/v1/work/<task>/delta``: the first piece at once (the client waits for its first
token), then whatever came every ``INTERVAL_SECONDS``, each post numbered, the last one marked
``done``. One thread posts, in order, so generation never waits for the network. Best effort: a
post refused or lost ends the stream for this task (the coordinator then gives the client the
rest from the entered result); the work goes on.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error

import celeryconfig
from workers import coordinator_http, inputs, metering

log = logging.getLogger(__name__)

#: How often gathered text is posted after the first piece.
INTERVAL_SECONDS = 0.05
#: Seconds each wait for the coordinator, and the whole call, may take.
_TIMEOUT = 5
#: The coordinator answers 204, or an error in a few hundred bytes of JSON.
_ANSWER_BYTES = 64 * 1024


class DeltaSender:
    def __init__(self, task_id: str, attempt: int, worker: str) -> None:
        self.task_id, self.attempt, self.worker = task_id, attempt, worker
        self.seq = 0
        self.broken = False
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"delta-{task_id[:8]}", daemon=True)
        self._thread.start()

    def put(self, text: str) -> None:
        """A piece of text the model produced (called by the engine, never blocks)."""
        with self._lock:
            self._pending.append(text)
        if self.seq == 0:
            self._wake.set()

    def close(self) -> None:
        """Post what is left, marked ``done``."""
        self._stop.set()
        self._wake.set()
        self._thread.join(_TIMEOUT * 2)
        if not self._thread.is_alive():
            self._flush(done=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(INTERVAL_SECONDS)
            self._wake.clear()
            if not self._stop.is_set():
                self._flush(done=False)

    def _flush(self, done: bool) -> None:
        with self._lock:
            text, self._pending = "".join(self._pending), []
        if self.broken or (not text and not done):
            return
        limit = celeryconfig.STREAM_MAX_DELTA_CHARS
        pieces = [text[i : i + limit] for i in range(0, len(text), limit)] or [""]
        for index, piece in enumerate(pieces):
            last = done and index == len(pieces) - 1
            if not self._post(piece, last):
                self.broken = True
                return

    def _post(self, text: str, done: bool) -> bool:
        record = metering.signed(
            "delta",
            task_id=self.task_id,
            node=self.worker,
            attempt=self.attempt,
            seq=self.seq,
            text=text,
            done=done,
        )
        try:
            coordinator_http.post_json(
                inputs.work_url(self.task_id, "delta"),
                json.dumps(record).encode(),
                _TIMEOUT,
                _ANSWER_BYTES,
                deadline=_TIMEOUT,
            )
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.info("stream of task %s stopped: %s", self.task_id, exc)
            return False
        self.seq += 1
        return True
