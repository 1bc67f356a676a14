"""Rate limits on the JSON API (Flask-Limiter, counted in the broker's Redis: every process of
the API, on every coordinator, shares the counts).

- ``API_SUBMIT_LIMIT``: requests that change something (POST) per token; a batch of jobs
  (``POST /api/v1/jobs/batch``) costs one per job it holds, and one that does not fit in what is
  left of the window is refused whole and costs nothing (a smaller one may still pass);
- ``API_READ_LIMIT``: reads (GET, HEAD) per token (an event stream counts once, when it opens);
- ``API_ADDRESS_LIMIT``: every request per client address, whatever token it carries;
- ``API_AUTH_FAILURE_LIMIT``: 401 answers per client address; past it the address gets 429 for
  the rest of the window, so a client cycling made-up tokens (each its own per-token count) is
  stopped by its address; requests with a live token are not held back by it;
- ``API_WORK_LIMIT``: the volunteers' workers on ``/api/v1/work`` (signed by their node, no
  token), per address, apart from every limit above: a client's flood never starves them.

A token is counted by a prefix of its SHA-256 (the hash the database keeps), never by the token
itself. ``/healthz``, ``/readyz``, ``/metrics`` and the web pages are not under these limits. A
request over a limit is 429 ``rate_limited`` with ``Retry-After`` (seconds), as JSON.
"""

from __future__ import annotations

import time

from flask import Blueprint, current_app, g, request
from flask_limiter import RateLimitExceeded, RequestLimit
from flask_limiter.util import get_remote_address
from limits.storage import RedisStorage, Storage

from app.api import params
from app.auth import bearer, hash_token, state, token_row
from app.errors import RATE_LIMITED, ApiError, TooManyJobs, answer
from app.extensions import db, limiter
from app.models import ApiToken

WRITES = ["POST", "PUT", "PATCH", "DELETE"]
READS = ["GET", "HEAD"]


def address_key() -> str:
    return f"address:{get_remote_address()}"


def token_key() -> str:
    """The token's count (by its hash's first 16 hex digits); a request without one is counted
    by its address."""
    token = bearer()
    return f"token:{hash_token(token)[:16]}" if token else address_key()


def _setting(name: str):
    def limit() -> str:
        return current_app.config[name]

    limit.__name__ = name.lower()
    return limit


submit_limit = _setting("API_SUBMIT_LIMIT")
read_limit = _setting("API_READ_LIMIT")
address_limit = _setting("API_ADDRESS_LIMIT")
auth_failure_limit = _setting("API_AUTH_FAILURE_LIMIT")
work_limit = _setting("API_WORK_LIMIT")


#: The route of a batch of jobs: its cost of the submission limit is its jobs.
BATCH_ENDPOINT = "api.jobs.batch"


def submission_cost() -> int:
    """What a write costs of its token's submission limit: one, or for a batch of jobs one per
    job (a body that is no batch of 1 to JOBS_BATCH_MAX jobs costs one: the route refuses it).
    A batch's body is read here, before its route checks the token, only for a token that may
    submit jobs: any other costs one unread (the route answers 401 or 403), else anyone could
    have the API build ~100 MB of objects out of a body of ``[{},{},…]`` at the byte limit."""
    if request.endpoint != BATCH_ENDPOINT or not _may_submit():
        return 1
    try:
        items = params.json_array(current_app.config["JOBS_BATCH_MAX_BYTES"])
    except ApiError:
        return 1
    return len(items) if 1 <= len(items) <= current_app.config["JOBS_BATCH_MAX"] else 1


def give_back_batch(limit: RequestLimit) -> None:
    """A batch over what is left of its token's submission limit is refused whole: what its hit
    added to the count (at most the count: a window that has just ended is not drawn on) is taken
    back, so that a smaller batch may still pass. Kept in ``g.batch_refused`` (its jobs, those
    left, the limit) for the 429's message, or the 400 ``too_many_jobs`` of a batch larger than
    the whole limit (JOBS_BATCH_MAX may be above it), which no wait would let pass."""
    if request.endpoint != BATCH_ENDPOINT:
        return
    cost = submission_cost()
    count = take_back(limit.limiter.storage, limit.key, cost, limit.limit.get_expiry())
    g.batch_refused = (cost, max(0, limit.limit.amount - count), limit.limit.amount)


#: Takes back at most what a count holds, in one step: a count whose window has ended (its key
#: gone) stays gone. Read and decremented apart, a window ending between the two had the
#: decrement make a new count below zero, with a whole window's expiry: that much over the
#: limit in the next window, for a refused batch sent as the window ends.
_TAKE_BACK = """
local current = tonumber(redis.call("get", KEYS[1]) or "0")
local back = math.min(tonumber(ARGV[1]), current)
if back > 0 then
    return redis.call("decrby", KEYS[1], back)
end
return current
"""


def take_back(storage: Storage, key: str, amount: int, expiry: int) -> int:
    """Takes up to ``amount`` hits off ``key``'s count, never below zero nor on a count that is
    gone; returns the count left. Atomic in Redis; the in-memory fallback (Redis away) is the
    process's own."""
    if isinstance(storage, RedisStorage):
        return int(storage.get_connection().eval(_TAKE_BACK, 1, storage.prefixed_key(key), amount))
    back = min(amount, storage.get(key))
    return storage.incr(key, expiry, amount=-back) if back > 0 else storage.get(key)


def refused_authentication(response) -> bool:
    return response.status_code == 401


def _live_token() -> ApiToken | None:
    """The request's token if it is known, neither revoked nor expired. Any fault reading it
    (the database away) counts as no token, and the route then answers it."""
    token = bearer()
    if token is None:
        return None
    try:
        row = token_row(token)
    except Exception:  # noqa: BLE001  the route meets the same fault and answers it (503)
        db.session.rollback()
        g.pop("api_token_rows", None)
        return None
    return row if row is not None and state(row) == "active" else None


def carries_live_token() -> bool:
    """True when the request's token is live: its holder is not held back by the failures of
    others at the same address (a shared proxy, an office)."""
    return _live_token() is not None


def _may_submit() -> bool:
    """True when the request's token is live and may submit jobs (``jobs:write`` or ``admin``)."""
    row = _live_token()
    return row is not None and bool({"jobs:write", "admin"} & row.scope_set)


def seconds_to_wait() -> int:
    """Seconds until the window of the limit the request broke ends (``Retry-After``)."""
    current = limiter.current_limit
    return max(1, int(current.reset_at - time.time())) if current is not None else 60


def too_many(exc: RateLimitExceeded):
    """429 ``rate_limited`` as JSON, ``Retry-After`` the seconds until the window ends."""
    wait = seconds_to_wait()
    message = f"Too many requests ({exc.description}); try again in {wait} s."
    if "batch_refused" in g:
        cost, left, most = g.batch_refused
        if cost > most:  # never fits, whenever sent again: not a 429 to wait out
            return answer(
                TooManyJobs(
                    f"A batch of {cost} jobs is more than this token's whole submission limit "
                    f"({exc.description}): send at most {most} at once. Nothing was recorded."
                )
            )
        message = (
            f"A batch of {cost} jobs is more than the {left} submissions left of this token's limit "
            f"({exc.description}): send fewer, or these in {wait} s. Nothing was recorded."
        )
    return answer(ApiError(message, code=RATE_LIMITED, status=429, retry_after=wait))


def register(api: Blueprint, work: Blueprint) -> None:
    """Every route of ``api`` (and its nested blueprints) under the clients' limits, except
    ``work``'s, which has its own: a limit on a nested blueprint replaces its parents'."""
    limiter.shared_limit(
        submit_limit,
        "api-submit",
        key_func=token_key,
        methods=WRITES,
        cost=submission_cost,
        on_breach=give_back_batch,
    )(api)
    limiter.shared_limit(read_limit, "api-read", key_func=token_key, methods=READS)(api)
    limiter.shared_limit(address_limit, "api-address", key_func=address_key)(api)
    limiter.shared_limit(
        auth_failure_limit,
        "api-auth-failures",
        key_func=address_key,
        deduct_when=refused_authentication,
        exempt_when=carries_live_token,
    )(api)
    limiter.shared_limit(work_limit, "api-work", key_func=address_key)(work)
    # Raised in the limiter's before_request: the handler of the request's blueprint answers,
    # before the web pages' HTML one (app.web).
    api.register_error_handler(RateLimitExceeded, too_many)
