"""Errors an execution can end with, each with a stable code clients can branch on.

The codes travel in completion records to the coordinator, which shows them on the job. The
API raises the same codes when it can tell at submission (``app.errors`` re-exports them).
"""

from __future__ import annotations


class GridError(Exception):
    """A failure a person can act on; permanent unless ``transient`` is true."""

    code = "internal_error"
    transient = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __reduce__(self):  # keep code and message through pickling and Celery's serialisation
        return (_rebuild, (type(self), self.message, self.code))

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def _rebuild(cls: type[GridError], message: str, code: str) -> GridError:
    return cls(message, code=code)


class BadInput(GridError):
    """The submitted document or text cannot be processed as asked; retrying will not help."""

    code = "bad_input"


class TransientError(GridError):
    """A fault of the machine, not of the input (memory, disk, a dying engine): retried."""

    code = "transient_failure"
    transient = True


# Stable codes. Keep them in one place: docs/api.md lists them for clients.
UNSUPPORTED_TYPE = "unsupported_type"
DOCUMENT_TOO_LARGE = "document_too_large"
CORRUPT_DOCUMENT = "corrupt_document"
ENCRYPTED_DOCUMENT = "encrypted_document"
EMPTY_DOCUMENT = "empty_document"
TOO_MANY_PAGES = "too_many_pages"
PAGE_TOO_LARGE = "page_too_large"
UNKNOWN_LANGUAGE = "unknown_language"
EMPTY_TEXT = "empty_text"
TEXT_TOO_LONG = "text_too_long"
INVALID_PARAMETER = "invalid_parameter"
OCR_FAILED = "ocr_failed"
LLM_FAILED = "llm_failed"
ENGINE_UNAVAILABLE = "engine_unavailable"
TIME_LIMIT = "time_limit"
WORKER_LOST = "worker_lost"
INTERNAL_ERROR = "internal_error"
#: A chat's messages and ``max_tokens`` do not fit the model's context window (OpenAI's code).
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"

#: Refusals with which the coordinator says a replica (a re-run that checks another node's
#: result) is not this node's to run: another node must (app.validation, workers.tasks.base).
REPLICA_REFUSALS = ("same_node", "same_owner", "other_model")
