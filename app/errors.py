"""API errors: typed, each with an HTTP status and a stable code clients can branch on.

Document and text errors share their codes with the workers (``workers.protocol.errors``): the
API raises them at submission when it can tell then, the job fails with them when it cannot.
"""

from __future__ import annotations

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from workers.protocol import errors
from workers.protocol.errors import BadInput, GridError


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status


class AuthRequired(ApiError):
    status, code = 401, "auth_required"


class InvalidToken(ApiError):
    status, code = 401, "invalid_token"


class InsufficientScope(ApiError):
    status, code = 403, "insufficient_scope"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PausedByOperator(ApiError):
    """An owner asked to resume a node an operator paused."""

    status, code = 403, "paused_by_operator"


class Unavailable(ApiError):
    status, code = 503, "broker_unavailable"


_STATUS_OF_HTTP = {413: "document_too_large", 405: "method_not_allowed", 404: "not_found"}


def _body(code: str, message: str, status: int):
    return jsonify(error={"code": code, "message": message}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return _body(exc.code, exc.message, exc.status)

    @app.errorhandler(GridError)
    def grid_error(exc: GridError):
        # Bad documents are well-formed requests we cannot process: 422, except a document over
        # the size limit, which gets the 413 an upload over MAX_CONTENT_LENGTH gets, whichever
        # check caught it. Anything else from the shared checks (a missing poppler on the
        # coordinator) is our fault: 503.
        if not isinstance(exc, BadInput):
            return _body(exc.code, exc.message, 503)
        return _body(exc.code, exc.message, 413 if exc.code == errors.DOCUMENT_TOO_LARGE else 422)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = _STATUS_OF_HTTP.get(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"))
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"The upload is larger than {app.config['MAX_CONTENT_LENGTH'] // 2**20} MB."
        return _body(code, message, exc.code or 500)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unexpected error")
        return _body("internal_error", "Something went wrong on our side; it has been logged.", 500)
