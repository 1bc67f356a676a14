"""API errors: typed, each with an HTTP status and a stable code clients can branch on.

Document and text errors share their codes with the workers (``workers.protocol.errors``): the
API raises them at submission when it can tell then, the job fails with them when it cannot.

No request ends in a 500 because a server the coordinator needs is away, or because of what a
client sent: the handlers below turn PostgreSQL or Redis being unreachable into 503 with
``Retry-After`` (``database_unavailable``, ``broker_unavailable``), and a value PostgreSQL
refuses to store or compare (too long, out of range, a NUL character) into 400
``invalid_parameter``, whichever route met it. A 500 ``internal_error`` is left for bugs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import kombu.exceptions
import redis.exceptions
from flask import Flask, current_app, jsonify
from sqlalchemy import exc as sa
from werkzeug.exceptions import HTTPException

from app.extensions import db
from workers.protocol import errors
from workers.protocol.errors import BadInput, GridError

log = logging.getLogger(__name__)

# Stable codes of the API's own answers (docs/api.md lists them for clients; the document and
# text codes are workers.protocol.errors').
BAD_REQUEST = "bad_request"
INVALID_JSON = "invalid_json"
INVALID_PARAMETER = errors.INVALID_PARAMETER
INCOMPLETE_BODY = "incomplete_body"
REQUEST_TIMEOUT = "request_timeout"
BROKER_UNAVAILABLE = "broker_unavailable"
DATABASE_UNAVAILABLE = "database_unavailable"
INTERNAL_ERROR = "internal_error"
INVALID_PERIOD = "invalid_period"
#: Over one of the API's limits (app.api.limits): 429 with ``Retry-After``.
RATE_LIMITED = "rate_limited"
#: A token past its ``expires_at``: 401, apart from ``invalid_token`` so a client knows to get
#: a new one rather than check what it sent.
TOKEN_EXPIRED = "token_expired"
#: ``POST /api/v1/tokens`` by an owner already holding GRID_TOKENS_PER_OWNER live tokens.
TOO_MANY_TOKENS = "too_many_tokens"
#: One more open event stream than GRID_EVENTS_STREAMS_PER_CLIENT (a client's) or
#: GRID_EVENTS_STREAMS_PER_PROCESS (the API process's): 429; poll the job instead (app.job_events).
TOO_MANY_STREAMS = "too_many_streams"
#: A job whose content was erased (retention or a request, app.gdpr): its result is gone for good.
CONTENT_ERASED = "content_erased"
#: A job's ``callback_url`` that may not be called (not https, a private or loopback address, no
#: URL at all, …): 422 (app.webhooks).
CALLBACK_URL_REFUSED = "callback_url_refused"
#: ``POST /api/v1/jobs/batch`` with an item refused: 422, nothing recorded; ``error.items`` lists
#: every refused item (its index, and the code and status its single submission would get).
INVALID_BATCH = "invalid_batch"
#: A batch's body over GRID_JOBS_BATCH_MAX_BYTES: 413 (read no further).
BATCH_TOO_LARGE = "batch_too_large"
#: A batch of more jobs than GRID_JOBS_BATCH_MAX: 400.
TOO_MANY_JOBS = "too_many_jobs"


class ApiError(Exception):
    status = 400
    code = BAD_REQUEST

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        items: list[dict] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        #: Seconds the client should wait before asking again (``Retry-After``), if it should.
        self.retry_after = retry_after
        #: The items of a batch this error is about (``error.items``), each with its ``index``.
        self.items = items


class InvalidJson(ApiError):
    """A JSON body that does not parse (nested too deep included) or is not an object."""

    code = INVALID_JSON


class InvalidParameter(ApiError):
    code = INVALID_PARAMETER


class InvalidPeriod(ApiError):
    """A statistics period that is unknown, malformed, reversed or too long."""

    code = INVALID_PERIOD


class IncompleteBody(ApiError):
    """The body ended before the length its ``Content-Length`` announced (``app.request_body``)."""

    code = INCOMPLETE_BODY


class AuthRequired(ApiError):
    status, code = 401, "auth_required"


class InvalidToken(ApiError):
    status, code = 401, "invalid_token"


class TokenExpired(ApiError):
    status, code = 401, TOKEN_EXPIRED


class InsufficientScope(ApiError):
    status, code = 403, "insufficient_scope"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class BatchRefused(ApiError):
    """A batch of jobs with items refused (``items``: each one's index, code, status, message)."""

    status, code = 422, INVALID_BATCH


class BatchTooLarge(ApiError):
    status, code = 413, BATCH_TOO_LARGE


class TooManyJobs(ApiError):
    status, code = 400, TOO_MANY_JOBS


class TooManyStreams(ApiError):
    status, code = 429, TOO_MANY_STREAMS


class ContentErased(ApiError):
    """410: the job's content was erased (retention or a request); its metadata stays."""

    status, code = 410, CONTENT_ERASED


class PausedByOperator(ApiError):
    """An owner asked to resume a node an operator paused."""

    status, code = 403, "paused_by_operator"


class ServiceUnavailable(ApiError):
    """A server the coordinator needs is away for now: 503, and when to ask again
    (``Retry-After``: GRID_RETRY_AFTER_SECONDS)."""

    status, code = 503, BROKER_UNAVAILABLE


class Unavailable(ServiceUnavailable):
    """The broker (Redis) is unreachable."""

    code = BROKER_UNAVAILABLE


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL is unreachable (or could not serve the request now: retry)."""

    code = DATABASE_UNAVAILABLE


# --- what a fault is --------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it was raised from or while handling, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def database_away(exc: BaseException) -> bool:
    """True for the faults that come from the database being unreachable, not from a request:
    no connection (refused, reset, timed out), a connection lost mid-request, or no pooled
    connection free in time. PostgreSQL's own operational refusals (a deadlock, a cancelled
    statement) are classed with them: the request may be sent again as it is."""
    return isinstance(exc, sa.OperationalError | sa.InterfaceError | sa.TimeoutError) or (
        isinstance(exc, sa.DBAPIError) and exc.connection_invalidated
    )


#: Redis errors that mean it cannot be reached (connection refused or lost, timed out, still
#: loading its data, authentication refused), and kombu's wrapping of any broker fault.
_BROKER_FAULTS = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def broker_away(exc: BaseException) -> bool:
    """True if the broker being unreachable is the cause of ``exc`` (Celery wraps some of
    these faults in errors of its own, such as a RuntimeError from its result consumer)."""
    return any(isinstance(link, _BROKER_FAULTS) for link in _chain(exc))


def refused_by_database(exc: BaseException) -> bool:
    """True for a value PostgreSQL refuses to store or compare (class 22 errors: too long, out
    of range, not valid in its type; and the NUL character psycopg2 refuses to send): it came
    from a request that nothing checked, so it is the client's, answered with a 400."""
    if isinstance(exc, sa.DataError):
        return True
    return isinstance(exc, ValueError) and "NUL (0x00)" in str(exc)


# --- answers ----------------------------------------------------------------------------------


_STATUS_OF_HTTP = {
    413: "document_too_large",
    405: "method_not_allowed",
    404: "not_found",
    408: REQUEST_TIMEOUT,
    400: BAD_REQUEST,
}


def _body(code: str, message: str, status: int, retry_after: int | None = None, items: list | None = None):
    """The JSON answer; every 503 says when to ask again (``Retry-After``)."""
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    elif status == 503:
        headers["Retry-After"] = str(current_app.config["RETRY_AFTER_SECONDS"])
    detail = {"code": code, "message": message}
    if items is not None:
        detail["items"] = items
    return jsonify(error=detail), status, headers


def bad_input_status(exc: BadInput) -> int:
    """A bad document or text is a well-formed request we cannot process: 422, except a document
    over the size limit, which gets the 413 an upload over MAX_CONTENT_LENGTH gets."""
    return 413 if exc.code == errors.DOCUMENT_TOO_LARGE else 422


def answer(error: ApiError):
    return _body(error.code, error.message, error.status, error.retry_after, error.items)


def _rollback() -> None:
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001  the connection is gone already: nothing to undo
        log.debug("rollback after a database fault failed", exc_info=True)


def known_fault(exc: BaseException) -> ApiError | None:
    """The answer to an exception that is not a bug (a server away, a value the database
    refused), or None. Rolls the session back when the fault came from the database."""
    if database_away(exc):
        _rollback()
        log.warning("database unavailable: %s", str(exc).splitlines()[0] if str(exc) else type(exc))
        return DatabaseUnavailable("The database is unreachable for now. Try again shortly.")
    if broker_away(exc):
        log.warning("broker unavailable: %s", exc)
        return Unavailable("The broker is unreachable for now. Try again shortly.")
    if refused_by_database(exc):
        _rollback()
        log.warning("the database refused a value from a request: %s", str(exc).splitlines()[0])
        return InvalidParameter(
            "A value in the request is too long, out of range or holds characters that cannot be stored."
        )
    return None


def response_for(exc: BaseException):
    """The answer to any exception raised while serving a request: an expected fault's, or
    500 ``internal_error`` (logged) for a bug."""
    if isinstance(exc, ApiError):
        return answer(exc)
    known = known_fault(exc)
    if known is not None:
        return answer(known)
    current_app.logger.error("unexpected error", exc_info=exc)
    _rollback()
    return _body(INTERNAL_ERROR, "Something went wrong on our side; it has been logged.", 500)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return answer(exc)

    @app.errorhandler(GridError)
    def grid_error(exc: GridError):
        # Bad documents are well-formed requests we cannot process (bad_input_status), whichever
        # check caught them. Anything else from the shared checks (a missing poppler on the
        # coordinator) is our fault: 503.
        if not isinstance(exc, BadInput):
            return _body(exc.code, exc.message, 503)
        return _body(exc.code, exc.message, bad_input_status(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        original = getattr(exc, "original_exception", None)
        if exc.code == 500 and original is not None:
            # Raised outside the view (an after_request function): Flask hands it over as a
            # 500; it may still be a server away.
            return response_for(original)
        code = _STATUS_OF_HTTP.get(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"))
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"The upload is larger than {app.config['MAX_CONTENT_LENGTH'] // 2**20} MB."
        return _body(code, message, exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        return response_for(exc)
