"""A job's progress as Server-Sent Events (``GET /api/v1/jobs/<id>/events``): the job as
``GET /api/v1/jobs/<id>`` shows it, without its result, each time that changes, then ``end``.

No publish/subscribe is needed: a job's states are in PostgreSQL and its running steps' progress
in Redis (``app.progress``), where the job endpoint reads them, so the stream reads the same
every ``EVENTS_POLL_SECONDS``. Each read ends its transaction before the stream waits or writes:
between reads it holds no connection from the pool and no snapshot open in PostgreSQL. A stream
holds one of the API's threads for its life, so it lasts at most ``EVENTS_MAX_SECONDS``; the
client then reconnects with ``Last-Event-ID`` and is sent the job only if it changed since
(docs/decisions/0015).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from flask import Response, current_app, stream_with_context

from app import broker_acl, jobs
from app.errors import TooManyStreams, known_fault
from app.extensions import db
from app.models import Job, JobState

KEEP_ALIVE = ": keep-alive\n\n"


@dataclass(frozen=True)
class Pacing:
    """How often a stream reads the job and speaks, and for how long (app.config)."""

    poll_seconds: float
    heartbeat_seconds: float
    max_seconds: float
    retry_milliseconds: int

    @classmethod
    def from_config(cls) -> Pacing:
        config = current_app.config
        return cls(
            poll_seconds=float(config["EVENTS_POLL_SECONDS"]),
            heartbeat_seconds=float(config["EVENTS_HEARTBEAT_SECONDS"]),
            max_seconds=float(config["EVENTS_MAX_SECONDS"]),
            retry_milliseconds=int(config["EVENTS_RETRY_MILLISECONDS"]),
        )


def version(summary: dict[str, Any]) -> str:
    """The event id of a job's summary: the same summary has the same id, in any process of
    the API and after any reconnection."""
    canonical = json.dumps(summary, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _event(name: str, event_id: str, data: dict[str, Any]) -> str:
    # JSON on one line: a data field never holds a line break.
    return f"event: {name}\nid: {event_id}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _read(job_id: str) -> tuple[dict[str, Any], bool]:
    """The job's summary and whether it is final, the transaction ended before returning."""
    job = db.session.get(Job, job_id)
    summary = jobs.describe(job, with_result=False)
    final = job.state in JobState.FINAL
    db.session.rollback()  # nothing was written: the connection goes back to the pool
    return summary, final


def stream(job_id: str, last_event_id: str | None, pacing: Pacing) -> Iterator[str]:
    """The event stream of a job the caller may see: ``job`` events (id: ``version``), a
    ``: keep-alive`` comment after each ``heartbeat_seconds`` of silence, and ``end`` once the
    job is final; closed after ``max_seconds`` (or while a server it needs is away) with
    ``retry:`` advice."""
    started = last_spoke = time.monotonic()
    retry = f"retry: {pacing.retry_milliseconds}\n\n"
    yield retry
    sent = last_event_id
    while True:
        try:
            summary, final = _read(job_id)
        except Exception as exc:
            if known_fault(exc) is None:  # logged as a server away, the session rolled back
                raise
            yield retry  # the reconnection is answered 503 until the server is back
            return
        tag = version(summary)
        if tag != sent:
            yield _event("job", tag, summary)
            sent, last_spoke = tag, time.monotonic()
        if final:
            yield _event("end", tag, {"id": job_id, "state": summary["state"]})
            return
        now = time.monotonic()
        if now - started >= pacing.max_seconds:
            yield f": open for {pacing.max_seconds:g} s: reconnect with Last-Event-ID\n{retry}"
            return
        if now - last_spoke >= pacing.heartbeat_seconds:
            yield KEEP_ALIVE
            last_spoke = now
        time.sleep(min(pacing.poll_seconds, max(0.0, started + pacing.max_seconds - now)))


_process_streams = threading.Lock()
_open_here = 0


def _open_stream(client: str) -> Callable[[], None]:
    """Counts a stream opening for ``client`` in this process and across processes, or raises
    TooManyStreams; returns what closes it (idempotent). A stream holds one of the API's threads
    for up to EVENTS_MAX_SECONDS: without these bounds one member's tabs (or a script) could hold
    them all. The count across processes lives in the broker's Redis and expires by itself
    should a process die with streams open; with Redis away only this process's bound holds."""
    global _open_here
    config = current_app.config
    per_process = int(config["EVENTS_STREAMS_PER_PROCESS"])
    per_client = int(config["EVENTS_STREAMS_PER_CLIENT"])
    retry_after = max(1, int(config["EVENTS_RETRY_MILLISECONDS"]) // 1000)
    with _process_streams:
        if _open_here >= per_process:
            raise TooManyStreams(
                f"This server already serves {per_process} event streams: follow the job with "
                "GET /api/v1/jobs/<id> a while.",
                retry_after=retry_after,
            )
        _open_here += 1
    key = f"grid:events:open:{hashlib.sha256(client.encode()).hexdigest()[:24]}"
    counted = False
    try:
        broker = broker_acl.client()
        with broker.pipeline() as pipe:
            held, _ = pipe.incr(key).expire(key, int(config["EVENTS_MAX_SECONDS"]) + 120).execute()
        counted = True
        if held > per_client:
            broker.decr(key)
            counted = False
            raise TooManyStreams(
                f"You have {per_client} event streams open already: close one, or follow the job "
                "with GET /api/v1/jobs/<id>.",
                retry_after=retry_after,
            )
    except redis.RedisError:
        pass  # the broker away: this process's bound still holds
    except TooManyStreams:
        _release_process()
        raise
    closed = False

    def close() -> None:
        nonlocal closed
        if closed:
            return
        closed = True
        _release_process()
        if counted:
            try:
                broker_acl.client().decr(key)
            except redis.RedisError:
                pass  # the key expires by itself

    return close


def _release_process() -> None:
    global _open_here
    with _process_streams:
        _open_here = max(0, _open_here - 1)


def response(job_id: str, last_event_id: str | None, client: str) -> Response:
    """The streamed answer of a job's events, for a caller already allowed to see the job (the
    API's token holder, the web page's signed-in owner), counted as ``client``'s stream."""
    close = _open_stream(client)
    try:
        answer = Response(
            # The request's context is kept for the stream's life: the database session lives in it.
            stream_with_context(stream(job_id, last_event_id, Pacing.from_config())),
            mimetype="text/event-stream",
            # X-Accel-Buffering: nginx passes each event on at once instead of buffering the answer.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    except BaseException:
        close()
        raise
    answer.call_on_close(close)  # the stream ended, the client left, or it never started
    return answer
