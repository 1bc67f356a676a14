"""Delivering a job's webhook events (docs/decisions/0017): the coordinator's task
``grid.coordinator.webhook``, run by the ledger worker's Celery consumer from the coordinator's
queue. What is checked, signed and logged is ``app.webhooks``; this module makes the attempts.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import ssl
import threading
import time
from datetime import UTC, datetime
from typing import Any

from celery import shared_task
from flask import current_app

import celeryconfig
from app import jobs
from app.extensions import db
from app.models import ApiToken, Job, JobState, WebhookDelivery
from app.webhooks import (
    DELIVERED,
    FAILED,
    GAVE_UP,
    RETRYING,
    SKIPPED,
    USER_AGENT,
    CallbackRefused,
    Target,
    check_url,
    secret,
    signature,
)

#: Bytes of a receiver's answer read at most (then the connection is closed).
ANSWER_READ_BYTES = 1024


class _PinnedHTTP(http.client.HTTPConnection):
    """A connection to ``address`` (checked) for the URL's host (its ``Host`` header)."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to ``address`` (checked), the certificate checked for the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``body`` to the target's first address; the answer's status. No redirect is followed;
    at most ``ANSWER_READ_BYTES`` of the answer are read; the whole attempt is cut off after
    ``2 × timeout`` seconds (a receiver dripping its answer holds the worker no longer)."""
    kind = _PinnedHTTPS if target.scheme == "https" else _PinnedHTTP
    connection = kind(target.host, target.port, target.addresses[0], timeout)

    def cut_off() -> None:
        sock = connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(2 * timeout, cut_off)
    timer.daemon = True
    timer.start()
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        answer = connection.getresponse()
        answer.read(ANSWER_READ_BYTES)
        return answer.status
    finally:
        timer.cancel()
        connection.close()


def _backoff(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: exponential, with jitter, capped below the broker's
    visibility timeout (a task waiting longer would be handed out twice)."""
    base = float(current_app.config["WEBHOOK_RETRY_BASE_SECONDS"])
    cap = min(600.0, celeryconfig.VISIBILITY_TIMEOUT / 2)
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311  jitter, not a secret


def body_of(job: Job, name: str, sequence: int, delivery_id: str, state: str) -> bytes:
    """The JSON body: the event, its sequence and the job's summary (without its result: fetch
    it from ``result_url``), kept small whatever the job."""
    summary = jobs.describe(job, full=False)
    public = current_app.config["PUBLIC_URL"].rstrip("/")
    return json.dumps(
        {
            "event": name,
            "sequence": sequence,
            "state": state,
            "delivery_id": delivery_id,
            "sent_at": datetime.now(UTC).isoformat(),
            "job": summary,
            "job_url": f"{public}/api/v1/jobs/{job.id}",
            "result_url": f"{public}/api/v1/jobs/{job.id}/result" if state == JobState.SUCCEEDED else None,
        },
        separators=(",", ":"),
    ).encode()


def _log(job_id: str, delivery_id: str, name: str, sequence: int, attempt: int, **fields: Any) -> None:
    db.session.add(
        WebhookDelivery(
            job_id=job_id, delivery_id=delivery_id, event=name, sequence=sequence, attempt=attempt, **fields
        )
    )
    db.session.commit()


@shared_task(name=celeryconfig.TASK_WEBHOOK, ignore_result=True, acks_late=True)
def deliver(
    job_id: str,
    name: str,
    sequence: int,
    delivery_id: str,
    state: str,
    first_at: float,
    attempt: int = 1,
    body: str | None = None,
) -> str:
    """One attempt at delivering an event; the next is sent with a countdown when it may help."""
    job = db.session.get(Job, job_id)
    token = db.session.get(ApiToken, job.token_id) if job is not None and job.token_id else None
    if job is None or not job.callback_url or token is None or token.revoked_at is not None:
        if job is not None:
            _log(job_id, delivery_id, name, sequence, attempt, outcome=SKIPPED, error="no callback or token")
        return SKIPPED
    config = current_app.config
    timeout = float(config["WEBHOOK_TIMEOUT_SECONDS"])
    raw = body.encode() if body is not None else body_of(job, name, sequence, delivery_id, state)
    started = time.monotonic()
    status, error = None, None
    try:
        target = check_url(job.callback_url, config=config)  # again: DNS may answer otherwise now
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Grid-Event": name,
            "X-Grid-Delivery": delivery_id,
            "X-Grid-Signature": signature(secret(token), timestamp, raw),
        }
        status = post(target, raw, headers, timeout)
    except CallbackRefused as exc:
        error, retry = exc.message[:200], False
    except (OSError, http.client.HTTPException) as exc:
        error, retry = f"{type(exc).__name__}: {exc}"[:200], True
    except ValueError as exc:  # a URL http.client will not send
        error, retry = f"{type(exc).__name__}: {exc}"[:200], False
    else:
        retry = status == 429 or status >= 500
    duration_ms = int((time.monotonic() - started) * 1000)
    if status is not None and 200 <= status < 300:
        outcome = DELIVERED
    elif not retry:
        outcome = FAILED
    else:
        delay = _backoff(attempt - 1)
        outcome = RETRYING
        if time.time() + delay > first_at + float(config["WEBHOOK_RETRY_SECONDS"]):
            outcome = GAVE_UP
    _log(
        job_id,
        delivery_id,
        name,
        sequence,
        attempt,
        outcome=outcome,
        status_code=status,
        error=error,
        duration_ms=duration_ms,
    )
    if outcome == RETRYING:
        deliver.apply_async(
            args=(job_id, name, sequence, delivery_id, state, first_at, attempt + 1, raw.decode()),
            countdown=delay,
            queue=celeryconfig.COORDINATOR_QUEUE,
            routing_key=celeryconfig.COORDINATOR_QUEUE,
        )
    return outcome
