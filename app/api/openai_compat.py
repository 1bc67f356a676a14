"""/v1: the OpenAI-compatible API (docs/decisions/0018, docs/api.md "OpenAI-compatible API").

``POST /v1/chat/completions`` (streamed as Server-Sent Events or not), ``POST /v1/embeddings``
and ``GET /v1/models``, for clients built on OpenAI's SDKs. Each request is a job of the grid
(kind ``chat`` or ``embeddings``, one step on the ``llm`` queue), the token owner's like any
other: listed at /api/v1/jobs, metered and granted through the ledger. The ``usage`` answered is
the ledger's: the tokens it entered for the step. Errors are answered in OpenAI's shape
(``{"error": {"message", "type", "param", "code"}}``) with the grid's stable codes in ``code``.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, stream_with_context
from flask_limiter import RateLimitExceeded
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from app import catalog, chat_stream, footprints, job_events, jobs
from app.api import limits, params
from app.auth import current_token, require
from app.errors import ApiError, response_for
from app.extensions import csrf, db, limiter
from app.models import Job, JobState, LedgerEntry
from workers.protocol import errors
from workers.protocol.chat import ChatInvalid
from workers.protocol.errors import BadInput, GridError

bp = Blueprint("openai", __name__, url_prefix="/v1")

#: The model name a client may send to take whichever model the grid's nodes serve.
DEFAULT_MODEL = "default"
#: Seconds between two reads of the job while a request waits for it.
POLL_SECONDS = 0.05
#: Error codes a job fails with because of what the client sent: answered 400, as OpenAI does.
CLIENT_CODES = {
    errors.CONTEXT_LENGTH_EXCEEDED,
    errors.INVALID_PARAMETER,
    errors.EMPTY_TEXT,
    errors.TEXT_TOO_LONG,
}
#: OpenAI's error ``type`` by HTTP status.
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


class OpenAIError(ApiError):
    """An ``ApiError`` naming the request field at fault."""

    def __init__(self, message: str, *, code: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message, code=code, status=status)
        self.param = param


def register(app: Flask) -> None:
    app.register_blueprint(bp)
    csrf.exempt(bp)  # bearer tokens, never cookies


# The clients' limits of /api/v1 (app.api.limits), in the same counts: a token's submissions
# and reads, an address's requests and refused authentications, whichever API they reach.
limiter.shared_limit(limits.submit_limit, "api-submit", key_func=limits.token_key, methods=limits.WRITES)(bp)
limiter.shared_limit(limits.read_limit, "api-read", key_func=limits.token_key, methods=limits.READS)(bp)
limiter.shared_limit(limits.address_limit, "api-address", key_func=limits.address_key)(bp)
limiter.shared_limit(
    limits.auth_failure_limit,
    "api-auth-failures",
    key_func=limits.address_key,
    deduct_when=limits.refused_authentication,
    exempt_when=limits.carries_live_token,
)(bp)


# --- errors, in OpenAI's shape -----------------------------------------------------------------


def _error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _answer(status: int, code: str, message: str, param: str | None = None, headers: dict | None = None):
    return jsonify(_error_body(status, code, message, param)), status, headers or {}


@bp.errorhandler(RateLimitExceeded)
def _too_many(exc: RateLimitExceeded):
    response, status, headers = limits.too_many(exc)  # 429 rate_limited, Retry-After
    grid = response.get_json()["error"]
    return _answer(status, grid["code"], grid["message"], None, dict(headers))


@bp.errorhandler(Exception)
def _openai_error(exc: Exception):
    if isinstance(exc, BadInput):  # the shared checks: a 400, as OpenAI answers them
        return _answer(400, exc.code, exc.message, getattr(exc, "param", None))
    if isinstance(exc, GridError):
        return _answer(503, exc.code, exc.message)
    if isinstance(exc, HTTPException):
        original = getattr(exc, "original_exception", None)
        if exc.code != 500 or original is None:
            return _answer(
                exc.code or 500, (exc.name or "error").lower().replace(" ", "_"), exc.description or ""
            )
        exc = original  # raised outside the view: it may still be a server away
    response, status, headers = response_for(exc)  # the grid's answer, reshaped
    grid = response.get_json()["error"]
    return _answer(status, grid["code"], grid["message"], getattr(exc, "param", None), dict(headers))


# --- models ------------------------------------------------------------------------------------


def _models() -> list[dict[str, Any]]:
    return [
        {
            "id": model["id"],
            "object": "model",
            "created": 0,
            "owned_by": "koprogo-grid",
            # extensions
            "file_name": model["file_name"],
            "context_length": model["context_length"],
            "available": model["available"],
            "nodes_online": model["nodes_online"],
        }
        for model in catalog.models()
    ]


@bp.get("/models")
@require("jobs:read")
def models():
    """The models the grid's nodes registered (app.catalog), in OpenAI's list shape."""
    return {"object": "list", "data": _models()}


def _check_model(value: Any) -> str:
    """The model asked for: one the registry knows (by id or file name), or ``default``."""
    if value in (None, DEFAULT_MODEL):
        return DEFAULT_MODEL
    known = catalog.models()
    if isinstance(value, str) and any(value in (m["id"], m["file_name"]) for m in known):
        return value
    raise OpenAIError(
        f"The model {str(value)[:128]!r} is not served by this grid: see GET /v1/models, or send "
        f"{DEFAULT_MODEL!r}.",
        code="model_not_found",
        status=404,
        param="model",
    )


# --- a job, waited for -------------------------------------------------------------------------


def _fresh(job_id: str) -> Job:
    """The job as it is now (the ledger worker moves it on), the transaction then ended."""
    db.session.rollback()
    job = db.session.get(Job, job_id)
    return job


def _wait(job_id: str, deadline: float) -> Job:
    while True:
        job = _fresh(job_id)
        if job.state in JobState.FINAL or time.monotonic() >= deadline:
            return job
        db.session.rollback()
        time.sleep(POLL_SECONDS)


def _failure(job: Job) -> tuple[int, str, str]:
    """(status, code, message) for a job that did not succeed."""
    if job.state not in JobState.FINAL:
        return (
            504,
            "timeout",
            f"Job {job.id} did not end within {current_app.config['OPENAI_WAIT_SECONDS']} s; it goes on: "
            f"read it at /api/v1/jobs/{job.id}.",
        )
    if job.state == JobState.CANCELLED:
        return 409, "job_cancelled", f"Job {job.id} was cancelled."
    code = job.error_code or errors.INTERNAL_ERROR
    message = f"{job.error_message or 'The job failed.'} (job {job.id})"
    return (400 if code in CLIENT_CODES else 500), code, message


def _entered_units(job: Job) -> int | None:
    """Tokens the ledger entered for the job's step (its succeeded execution), if entered."""
    step = job.steps[0]
    return db.session.scalar(
        select(LedgerEntry.units).where(
            LedgerEntry.task_id == step.task_id,
            LedgerEntry.outcome == "succeeded",
            LedgerEntry.reverses_id.is_(None),
        )
    )


def _usage(job: Job, with_completion: bool = True) -> dict[str, int]:
    """The ledger's count: the tokens it entered for the step, the node's prompt count within it."""
    result = job.steps[0].result or {}
    total = _entered_units(job)
    if total is None:
        total = int(result.get("tokens") or 0)
    prompt = min(int(result.get("prompt_tokens") or 0), total)
    usage = {"prompt_tokens": prompt, "total_tokens": total}
    if with_completion:
        usage["completion_tokens"] = total - prompt
    return usage


def _execution_info(job: Job) -> dict[str, Any]:
    step = job.steps[0]
    latency = None
    if job.finished_at is not None and job.created_at is not None:
        latency = round((job.finished_at - job.created_at).total_seconds() * 1000)
    return {
        "job_id": job.id,
        "node": step.node,
        "latency_ms": latency,
        "co2_grams": footprints.job_co2_grams(job.id),
    }


def _model_used(job: Job) -> str:
    engine = (job.steps[0].result or {}).get("engine") or {}
    return engine.get("model") or job.params.get("model") or DEFAULT_MODEL


# --- chat completions --------------------------------------------------------------------------


def _holding_a_thread(view: Callable) -> Callable:
    """A request that waits for its job holds one of the API's threads, as a job's event stream
    does: it is counted with them (``app.job_events``: per process and per client), and past
    either bound answered 429 ``too_many_streams`` before any job is made."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        close = job_events._open_stream(current_token().owner)
        try:
            answer = view(*args, **kwargs)
        except BaseException:
            close()
            raise
        if isinstance(answer, Response) and answer.is_streamed:
            answer.call_on_close(close)  # the stream ended, or its client left
        else:
            close()
        return answer

    return wrapper


@bp.post("/chat/completions")
@require("jobs:write")
@_holding_a_thread
def chat_completions():
    body = params.json_object()
    if body.get("n") not in (None, 1):
        raise OpenAIError("Only n = 1 is supported.", code=errors.INVALID_PARAMETER, param="n")
    for unsupported in ("tools", "functions", "logprobs", "response_format"):
        if body.get(unsupported) not in (None, False):
            raise OpenAIError(
                f"{unsupported} is not supported by this grid.",
                code=errors.INVALID_PARAMETER,
                param=unsupported,
            )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise OpenAIError("stream is true or false.", code=errors.INVALID_PARAMETER, param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise OpenAIError(
            "stream_options is an object.", code=errors.INVALID_PARAMETER, param="stream_options"
        )
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    model = _check_model(body.get("model"))
    token = current_token()
    job = jobs.submit(
        "chat",
        {
            "messages": body.get("messages"),
            "max_tokens": max_tokens,
            "temperature": body.get("temperature"),
            "stop": body.get("stop"),
            "model": model,
        },
        None,
        owner=token.owner,
        token=token,
    )
    deadline = time.monotonic() + current_app.config["OPENAI_WAIT_SECONDS"]
    if stream:
        events = _stream(
            job.id, job.steps[0].task_id, int(job.created_at.timestamp()), model, options, deadline
        )
        return Response(
            stream_with_context(events),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Grid-Job": job.id},
        )
    job = _wait(job.id, deadline)
    if job.state != JobState.SUCCEEDED:
        status, code, message = _failure(job)
        return _answer(status, code, message)
    result = job.steps[0].result or {}
    answer = {
        "id": f"chatcmpl-{job.id}",
        "object": "chat.completion",
        "created": int(job.created_at.timestamp()),
        "model": _model_used(job),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.get("text") or ""},
                "finish_reason": result.get("finish_reason") or "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(job),
        "execution_info": _execution_info(job),
    }
    return answer, 200, {"X-Grid-Job": job.id}


def _event(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _stream(
    job_id: str, task_id: str, created: int, model: str, options: dict, deadline: float
) -> Iterator[str]:
    """The answer as OpenAI's ``chat.completion.chunk`` events: the text as the node streams it
    (``app.chat_stream``), then what the entered result holds beyond it, the finish reason, the
    usage if asked for, ``[DONE]``. If the entered result does not begin with what was streamed
    (a node that streamed one text and reported another, or a retry on another node), the
    stream ends with an error event ``stream_mismatch``: the client learns the text it holds is
    not the grid's answer, which stays at /api/v1/jobs/<id>."""

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> str:
        return _event(
            {
                "id": f"chatcmpl-{job_id}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                **extra,
            }
        )

    yield chunk({"role": "assistant", "content": ""})
    streamed: list[str] = []
    seq, done, next_check = 0, False, 0.0
    while True:
        deltas = [] if done else chat_stream.read(task_id, seq, 0.25)
        for delta in deltas:
            seq += 1
            done = done or delta["done"]
            if delta["text"]:
                streamed.append(delta["text"])
                yield chunk({"content": delta["text"]})
        now = time.monotonic()
        if now >= next_check or done:
            state = _fresh(job_id).state
            db.session.rollback()
            if state in JobState.FINAL or now >= deadline:
                break
            next_check = now + 0.25
            if done:
                time.sleep(POLL_SECONDS)
    job = _fresh(job_id)
    if job.state != JobState.SUCCEEDED:
        status, code, message = _failure(job)
        yield _event(_error_body(status, code, message))
        return
    result = job.steps[0].result or {}
    text, sent = result.get("text") or "", "".join(streamed)
    if not text.startswith(sent):
        yield _event(
            _error_body(
                502,
                "stream_mismatch",
                f"The text streamed differs from the answer the grid entered: read the answer at "
                f"/api/v1/jobs/{job_id}.",
            )
        )
        return
    if text[len(sent) :]:
        yield chunk({"content": text[len(sent) :]})
    info = _execution_info(job)
    yield chunk({}, result.get("finish_reason") or "stop", execution_info=info)
    if options.get("include_usage"):
        yield _event(
            {
                "id": f"chatcmpl-{job_id}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(job),
                "execution_info": info,
            }
        )
    db.session.rollback()
    yield "data: [DONE]\n\n"


# --- embeddings --------------------------------------------------------------------------------


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


@bp.post("/embeddings")
@require("jobs:write")
@_holding_a_thread
def embeddings():
    body = params.json_object()
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise OpenAIError(
            "encoding_format is float or base64.", code=errors.INVALID_PARAMETER, param="encoding_format"
        )
    if body.get("dimensions") is not None:
        raise OpenAIError(
            "dimensions is not supported: vectors have the model's size.",
            code=errors.INVALID_PARAMETER,
            param="dimensions",
        )
    model = _check_model(body.get("model"))
    token = current_token()
    job = jobs.submit(
        "embeddings", {"input": body.get("input"), "model": model}, None, owner=token.owner, token=token
    )
    job = _wait(job.id, time.monotonic() + current_app.config["OPENAI_WAIT_SECONDS"])
    if job.state != JobState.SUCCEEDED:
        status, code, message = _failure(job)
        return _answer(status, code, message)
    vectors = (job.steps[0].result or {}).get("vectors") or []
    encode = _base64 if encoding == "base64" else (lambda vector: vector)
    answer = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": encode(vector)}
            for index, vector in enumerate(vectors)
        ],
        "model": _model_used(job),
        "usage": _usage(job, with_completion=False),
        "execution_info": _execution_info(job),
    }
    return answer, 200, {"X-Grid-Job": job.id}


__all__ = ["ChatInvalid", "bp", "register"]
