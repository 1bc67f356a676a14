"""Webhooks: a job submitted with a ``callback_url`` is POSTed to it when it starts running and
when it ends, signed with its API token's webhook secret (docs/decisions/0017, docs/api.md).

- At submission the URL is checked (``check_url``): absolute, at most 2,000 characters, https
  (http only with ``WEBHOOK_ALLOW_HTTP``), no credentials in it, and every address its host
  resolves to public (private, loopback, link-local, multicast, reserved and unspecified ones
  only with ``WEBHOOK_ALLOW_PRIVATE``). Both are false unless set: the test configuration only.
- A job's state change (``app.lifecycle``) notes an event in the session; once the transaction
  commits, a task is sent to the coordinator's queue (``grid.coordinator.webhook``), never a
  volunteer's: nothing is delivered on a request's path nor in the ledger's transaction.
- The task (``app.webhook_delivery``) checks the URL again, connects to the very address it
  checked (no second lookup a rebinding DNS could answer differently), follows no redirect,
  reads at most a little of the answer, gives each operation ``WEBHOOK_TIMEOUT_SECONDS`` and an
  attempt twice that in all, and retries network errors, 429 and 5xx with exponential backoff
  and jitter for at most ``WEBHOOK_RETRY_SECONDS`` after the event; any other answer ends the
  delivery.
- Every attempt is logged (``WebhookDelivery``): event, sequence, attempt, status or error,
  duration. Neither the secret nor the body is kept there.

The secret of a token is derived from the coordinator's key, the token's id and its generation
(``ApiToken.webhook_secret_generation``): nothing secret is stored, and rotating it is counting
one generation on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import event, select
from sqlalchemy.orm import Session

import celeryconfig
from app.errors import CALLBACK_URL_REFUSED, ApiError
from app.extensions import db
from app.models import ApiToken, Job, JobState, WebhookDelivery

log = logging.getLogger(__name__)

URL_MAX_CHARS = 2000
SECRET_PREFIX = "whsec_"
USER_AGENT = "KoproGo-Grid-Webhooks/1"
#: Events and their sequence numbers: a job runs once and ends once, so a receiver orders a
#: job's events by ``sequence`` whatever order they arrive in.
EVENTS = {
    JobState.RUNNING: ("job.running", 1),
    JobState.SUCCEEDED: ("job.succeeded", 2),
    JobState.FAILED: ("job.failed", 2),
    JobState.CANCELLED: ("job.cancelled", 2),
}
#: Outcomes of an attempt, as the log shows them.
DELIVERED, RETRYING, FAILED, GAVE_UP, SKIPPED = "delivered", "retrying", "failed", "gave_up", "skipped"


class CallbackRefused(ApiError):
    status = 422
    code = CALLBACK_URL_REFUSED


# --- the secret ---------------------------------------------------------------------------------


def secret(token: ApiToken) -> str:
    """The webhook signing secret of ``token`` (it must have its id: flushed)."""
    from app.nodes import secret_key

    message = f"grid-webhook:{token.id}:{token.webhook_secret_generation or 1}".encode()
    digest = hmac.new(secret_key(), message, hashlib.sha256).digest()
    return SECRET_PREFIX + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def rotate(token: ApiToken) -> str:
    """A new secret for ``token`` (not committed); the one before stops signing at once."""
    token.webhook_secret_generation = (token.webhook_secret_generation or 1) + 1
    return secret(token)


def signature(secret_value: str, timestamp: int, body: bytes) -> str:
    """``X-Grid-Signature``: ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``."""
    mac = hmac.new(secret_value.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret_value: str, header: str, body: bytes, tolerance: int = 300, now: float | None = None
) -> bool:
    """True if ``header`` signs ``body`` with ``secret_value`` within ``tolerance`` seconds of
    ``now``: what docs/api.md tells a receiver to do."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = signature(secret_value, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


# --- the URL ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    #: Addresses the host resolved to, every one of them allowed.
    addresses: tuple[str, ...]


def _refuse(message: str) -> CallbackRefused:
    return CallbackRefused(f"callback_url refused: {message}")


def _address_refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        return _address_refused(mapped)
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_url(url: object, *, config: Any = None) -> Target:
    """The callback URL's target if it may be called, else ``CallbackRefused`` (422) saying why.
    Resolves the host: every address it resolves to must be allowed."""
    config = config if config is not None else current_app.config
    if not isinstance(url, str) or not url or len(url) > URL_MAX_CHARS:
        raise _refuse(f"give an absolute https URL of at most {URL_MAX_CHARS} characters.")
    if not url.isprintable() or any(char.isspace() for char in url) or not url.isascii():
        raise _refuse("the URL holds spaces, control or non-ASCII characters (percent-encode them).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refuse("this is not a URL.") from None
    allowed = ("https", "http") if config.get("WEBHOOK_ALLOW_HTTP") else ("https",)
    if parts.scheme not in allowed:
        raise _refuse(f"the scheme must be {' or '.join(allowed)}, not {parts.scheme[:20] or 'none'!r}.")
    host = parts.hostname
    if not host:
        raise _refuse("the URL names no host.")
    if parts.username is not None or parts.password is not None:
        raise _refuse("the URL may not carry a user name or password (the signature authenticates).")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise _refuse(f"the host {host[:100]!r} does not resolve.") from None
    addresses = []
    for *_, sockaddr in found:
        text = str(sockaddr[0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        if _address_refused(address) and not config.get("WEBHOOK_ALLOW_PRIVATE"):
            # Which address is not said: a member could otherwise map the coordinator's
            # internal names (db.internal resolves to 10.0.0.12) through this answer.
            raise _refuse(
                f"the host {host[:100]!r} resolves to a private, loopback, link-local, multicast, "
                "reserved or unspecified address: only public addresses are called."
            )
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise _refuse(f"the host {host[:100]!r} does not resolve.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path, tuple(addresses))


# --- events: noted by the state change, sent once committed ---------------------------------------

_PENDING = "grid_webhook_events"


def job_changed(job: Job) -> None:
    """The job took a new state (``app.lifecycle``): if it has a callback and the state is an
    event, a delivery is sent to the coordinator's queue once the transaction commits."""
    if not job.callback_url or job.state not in EVENTS:
        return
    name, sequence = EVENTS[job.state]
    db.session.info.setdefault(_PENDING, []).append((job.id, name, sequence, str(uuid.uuid4()), job.state))


@event.listens_for(Session, "after_commit")
def _send_noted_events(session: Session) -> None:
    noted = session.info.pop(_PENDING, None)
    if not noted:
        return
    celery = current_app.extensions["celery"]
    queue = next(q for q in celeryconfig.task_queues if q.name == celeryconfig.COORDINATOR_QUEUE)
    first_at = time.time()
    for job_id, name, sequence, delivery_id, state in noted:
        try:
            celery.send_task(
                celeryconfig.TASK_WEBHOOK,
                args=(job_id, name, sequence, delivery_id, state, first_at),
                queue=queue,
                routing_key=queue.name,
            )
        except Exception:  # noqa: BLE001  the broker is away: the state change stands, the event is lost
            log.exception("webhook %s of job %s could not be queued", name, job_id)


@event.listens_for(Session, "after_rollback")
def _drop_noted_events(session: Session) -> None:
    session.info.pop(_PENDING, None)


# --- what the API shows --------------------------------------------------------------------------


def deliveries(job: Job, limit: int | None = None) -> list[dict[str, Any]]:
    """The job's last delivery attempts, newest first (never a secret nor a body)."""
    limit = limit or int(current_app.config["WEBHOOK_LOG_SHOWN"])
    rows = db.session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job.id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    ).all()
    return [
        {
            "delivery_id": row.delivery_id,
            "event": row.event,
            "sequence": row.sequence,
            "attempt": row.attempt,
            "outcome": row.outcome,
            "status_code": row.status_code,
            "error": row.error,
            "duration_ms": row.duration_ms,
            "at": row.at.isoformat() if row.at else None,
        }
        for row in rows
    ]
