"""The API's OpenAPI 3.1 document, generated from the code (apispec): every route of the app's
URL map under /api/v1, /v1, /healthz, /readyz and /metrics, with its path parameters read
from the route, its operation from ``OPERATIONS`` below (keyed by endpoint and method, beside
nothing else: a route without an entry fails :func:`build`, so none goes undocumented), the
signed records of /api/v1/work from the workers' pydantic models (workers.protocol.records),
and the error codes from where they live (app.errors, workers.protocol.errors, the work
routes' refusals, werkzeug's HTTP errors).

Served at ``GET /api/v1/openapi.json`` (no token) and as a page at ``GET /api/docs``, rendered
on the server from the same document (nothing fetched from elsewhere). docs/api.md.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from apispec import APISpec
from flask import Blueprint, Flask, current_app, render_template
from werkzeug.http import HTTP_STATUS_CODES

import workers.protocol.errors as protocol_errors
from app import errors as app_errors
from app import jobs
from app.auth import SCOPES
from workers.protocol.records import Delta, Progress, Started

bp = Blueprint("openapi", __name__)

#: The paths documented: the JSON API, the OpenAI-compatible API, health and metrics.
DOCUMENTED = re.compile(r"^/(api/v1/|v1/|healthz$|readyz$|metrics$)")


# --- the error codes ---------------------------------------------------------------------------

#: Codes answered by the routes beyond the modules' constants: refusals of signed records by the
#: work routes (app.ledger.verification, app.progress, app.chat_stream) and a few named inline.
_OTHER_CODES = (
    "malformed",
    "oversized",
    "no_input",
    "node_exists",
    "node_revoked",
    "job_finished",
    "model_not_found",
    "timeout",
    "job_cancelled",
    "stream_mismatch",
    "replay",
    "duplicate_execution",
    "wrong_channel",
    "too_deep",
    "unknown_task",
    "unsupported_version",
    "callback_url_refused",
)


def error_codes() -> list[str]:
    """Every stable error code an answer may carry."""
    from app.api import work

    codes: set[str] = set(_OTHER_CODES) | set(work._STATUS)
    for module in (app_errors, protocol_errors):
        codes |= {
            value
            for name, value in vars(module).items()
            if name.isupper() and isinstance(value, str) and re.fullmatch(r"[a-z_]+", value)
        }
    pending = [app_errors.ApiError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    # werkzeug's HTTP errors, named as app.errors.http_error names them
    codes |= {name.lower().replace(" ", "_") for status, name in HTTP_STATUS_CODES.items() if status >= 400}
    return sorted(codes)


# --- schemas -----------------------------------------------------------------------------------

_TEXT = {"type": "string"}
_TEXT_OR_NULL = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_OBJECT = {"type": "object"}
_OBJECT_OR_NULL = {"type": ["object", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _schemas(app: Flask) -> dict[str, dict[str, Any]]:
    batch_kinds = [kind for kind in jobs.BATCH_KINDS if kind in jobs.offered_kinds(app.config)]
    codes = error_codes()
    batch_max = int(app.config["JOBS_BATCH_MAX"])
    error_detail = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string", "enum": codes}, "message": _TEXT},
    }
    job = {
        "type": "object",
        "required": ["id", "kind", "state", "owner", "params", "created_at"],
        "properties": {
            "id": _TEXT,
            "kind": {"type": "string", "enum": list(jobs.KINDS)},  # any a job may have been given
            "state": _TEXT,
            "owner": _TEXT,
            "params": _OBJECT,
            "created_at": _TEXT,
            "started_at": _TEXT_OR_NULL,
            "finished_at": _TEXT_OR_NULL,
            "error": {
                "oneOf": [
                    {"type": "null"},
                    {**error_detail, "properties": {"code": _TEXT, "message": _TEXT_OR_NULL}},
                ]
            },
            "input": _OBJECT,
            "content_erased": {"type": "boolean"},
            "callback_url": _TEXT,
            "steps": {"type": "array", "items": _OBJECT},
            "result": _OBJECT_OR_NULL,
            "cost": _OBJECT_OR_NULL,
            "webhook_deliveries": {"type": "array", "items": _OBJECT},
        },
    }
    node = {
        "type": "object",
        "required": ["id", "name", "participant", "state", "created_at"],
        "properties": {
            "id": _TEXT,
            "name": _TEXT,
            "participant": {
                "type": "object",
                "required": ["id", "email"],
                "properties": {"id": _INT, "email": _TEXT},
            },
            "state": _TEXT,
            "worker": _TEXT_OR_NULL,
            "queues": {"type": "array", "items": _TEXT},
            "capabilities": _OBJECT,
            "created_at": _TEXT_OR_NULL,
            "registered_at": _TEXT_OR_NULL,
            "last_seen_at": _TEXT_OR_NULL,
            "paused_at": _TEXT_OR_NULL,
            "paused_by": _TEXT_OR_NULL,
            "approved_at": _TEXT_OR_NULL,
            "revoked_at": _TEXT_OR_NULL,
            "uptime_percent": _OBJECT,
            "compute_hours": {"type": "object", "additionalProperties": _TEXT},
        },
    }
    token = {
        "type": "object",
        "required": ["id", "name", "owner", "prefix", "scopes", "state", "created_at"],
        "properties": {
            "id": _INT,
            "name": _TEXT,
            "owner": _TEXT,
            "prefix": _TEXT,
            "scopes": {"type": "array", "items": {"type": "string", "enum": list(SCOPES)}},
            "state": {"type": "string", "enum": ["active", "expired", "revoked"]},
            "created_at": _TEXT,
            "last_used_at": _TEXT_OR_NULL,
            "expires_at": _TEXT_OR_NULL,
            "revoked_at": _TEXT_OR_NULL,
        },
    }
    usage = {
        "type": "object",
        "required": ["prompt_tokens", "total_tokens"],
        "properties": {"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT},
    }
    return {
        "Error": {
            "type": "object",
            "description": "Every error of the grid's API: a stable code to branch on, a message for people; "
            "a batch of jobs' error lists the items it is about (index, code, message; status or id).",
            "required": ["error"],
            "properties": {
                "error": {
                    **error_detail,
                    "properties": {
                        **error_detail["properties"],
                        "items": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["index", "code"],
                                "properties": {
                                    "index": _INT,
                                    "code": _TEXT,
                                    "message": _TEXT,
                                    "status": _INT,
                                    "id": _TEXT,
                                },
                            },
                        },
                    },
                }
            },
        },
        "OpenAIError": {
            "type": "object",
            "description": "An error of the OpenAI-compatible API, in OpenAI's shape; code is the grid's.",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": _TEXT,
                        "type": _TEXT,
                        "param": _TEXT_OR_NULL,
                        "code": {"type": "string", "enum": codes},
                    },
                }
            },
        },
        "Event": {
            "type": "object",
            "description": "One Server-Sent Event: its data is JSON text (a job's state, a chunk) or [DONE].",
            "required": ["data"],
            "properties": {"event": _TEXT, "data": _TEXT, "id": _TEXT, "retry": _INT},
        },
        "Job": job,
        "JobList": {
            "type": "object",
            "required": ["items", "page", "per_page", "total", "next"],
            "properties": {
                "items": {"type": "array", "items": _ref("Job")},
                "page": _INT,
                "per_page": _INT,
                "total": _INT,
                "next": _TEXT_OR_NULL,
            },
        },
        "JobResult": {
            "type": "object",
            "required": ["id", "state", "result"],
            "properties": {"id": _TEXT, "state": _TEXT, "result": _OBJECT_OR_NULL},
        },
        "JobSubmission": {
            "type": "object",
            "description": "A job's parameters (JSON, or form fields beside the document's file).",
            "properties": {
                "text": _TEXT,
                "language": {"type": "string", "enum": ["fr", "en", "nl"]},
                "max_words": _INT,
                "target": {"type": "string", "enum": ["fr", "en", "nl"]},
                "translate_to": {"type": "string", "enum": ["fr", "en", "nl"]},
                "languages": _TEXT,
                "force_ocr": {"type": ["boolean", "string"]},
                "ocr_quality": _TEXT,
                "invoice_fields": {"type": ["boolean", "string"]},
                "llm_fields": {"type": ["boolean", "string"]},
                "callback_url": _TEXT,
            },
        },
        "JobBatch": {
            "type": "array",
            "description": "Jobs to submit at once: each its kind and the fields POST /api/v1/jobs/<kind> "
            "takes as JSON (JobSubmission). Kinds with a document are submitted alone.",
            "minItems": 1,
            "maxItems": batch_max,
            "items": {
                "type": "object",
                "required": ["kind"],
                "properties": {"kind": {"type": "string", "enum": batch_kinds}},
            },
        },
        "JobBatchAnswer": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": _ref("Job")}},
        },
        "Node": node,
        "NodeList": {
            "type": "object",
            "required": ["items", "page", "per_page", "total", "next"],
            "properties": {
                "items": {"type": "array", "items": _ref("Node")},
                "page": _INT,
                "per_page": _INT,
                "total": _INT,
                "next": _TEXT_OR_NULL,
            },
        },
        "Enrolment": {
            "type": "object",
            "required": ["node", "secret", "configuration"],
            "properties": {"node": _ref("Node"), "secret": _TEXT, "configuration": {}},
        },
        "Token": token,
        "TokenList": {
            "type": "object",
            "required": ["items"],
            "properties": {"items": {"type": "array", "items": _ref("Token")}},
        },
        "NewToken": {
            "allOf": [
                _ref("Token"),
                {
                    "type": "object",
                    "required": ["token", "webhook_secret"],
                    "properties": {"token": _TEXT, "webhook_secret": _TEXT},
                },
            ]
        },
        "WebhookSecret": {
            "type": "object",
            "required": ["id", "webhook_secret"],
            "properties": {"id": _INT, "webhook_secret": _TEXT},
        },
        "Models": {
            "type": "object",
            "required": ["models", "edge_max_bytes"],
            "properties": {"models": {"type": "array", "items": _OBJECT}, "edge_max_bytes": _INT},
        },
        "Stats": {
            "type": "object",
            "required": ["period", "requests", "jobs", "all_time"],
            "properties": {
                "period": _OBJECT,
                "requests": _INT,
                "jobs": _OBJECT,
                "all_time": _OBJECT,
                "money": _OBJECT,
            },
        },
        "Statement": {
            "type": "object",
            "required": ["participant", "period", "period_start", "period_end", "settled", "entries"],
            "properties": {
                "participant": {"type": "object", "required": ["id", "email"]},
                "period": _TEXT,
                "period_start": _TEXT,
                "period_end": _TEXT,
                "settled": {"type": "boolean"},
                "entries": {"type": "array", "items": _OBJECT},
                "total_exact_eur": _TEXT,
                "total_eur": _TEXT,
            },
        },
        "LedgerNodes": {
            "type": "object",
            "required": ["nodes", "note"],
            "properties": {"nodes": {"type": "array", "items": _OBJECT}, "note": _TEXT},
        },
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
        "Readiness": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"type": "string", "enum": ["ready", "unavailable"]},
                "checks": _OBJECT,
                "error": error_detail,
            },
        },
        "OpenAIModels": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "object"],
                        "properties": {"id": _TEXT, "object": {"const": "model"}},
                    },
                },
            },
        },
        "ChatCompletion": {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices", "usage"],
            "properties": {
                "id": _TEXT,
                "object": {"const": "chat.completion"},
                "created": _INT,
                "model": _TEXT,
                "choices": {"type": "array", "items": _OBJECT},
                "usage": usage,
                "execution_info": _OBJECT,
            },
        },
        "Embeddings": {
            "type": "object",
            "required": ["object", "data", "model", "usage"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _OBJECT},
                "model": _TEXT,
                "usage": usage,
                "execution_info": _OBJECT,
            },
        },
    }


# --- operations --------------------------------------------------------------------------------

BEARER = [{"bearer": []}]
NODE = [{"nodeSignature": []}]
METRICS = [{"metricsToken": []}, {}]

#: What each error status means, as the API answers it.
_ERROR_MEANING = {
    400: "The request is malformed (invalid_json, invalid_parameter, too_many_jobs, bad_request, …).",
    401: "No token, or an unknown, revoked (auth_required, invalid_token) or expired one (token_expired).",
    403: "The token lacks the scope (insufficient_scope), or the node may not (work routes).",
    404: "Nothing of the caller's by that id (not_found); the work routes: never_dispatched, wrong_task.",
    405: "Method not allowed on this path.",
    408: "The body did not arrive in time (request_timeout).",
    409: "The state forbids it (conflict; work routes: cross_node, not_started, …).",
    410: "Gone for good (content_erased; work routes: step_finished, attempt_over, …).",
    413: "The body or document is too large (document_too_large, oversized, batch_too_large).",
    415: "The body's media type is not one this route reads.",
    422: "Well-formed but refused (a bad document or text, callback_url_refused, invalid_parameter).",
    429: "Over a limit (rate_limited, too_many_tokens, too_many_streams), with Retry-After.",
    503: "PostgreSQL or Redis is away (database_unavailable, broker_unavailable), with Retry-After.",
}
_CLIENT = (400, 401, 403, 404, 405, 408, 413, 429, 503)
_WORK = (400, 403, 404, 405, 408, 409, 410, 413, 429, 503)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(statuses: tuple[int, ...], schema: str = "Error") -> dict[str, Any]:
    return {str(status): _json(_ref(schema), _ERROR_MEANING[status]) for status in statuses}


def _op(
    summary: str,
    tag: str,
    ok: dict[str, Any],
    *,
    status: int = 200,
    security: list | None = None,
    errors: tuple[int, ...] = _CLIENT,
    body: dict[str, Any] | None = None,
    query: tuple[tuple[str, dict[str, Any], str], ...] = (),
    error_schema: str = "Error",
    more: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "security": BEARER if security is None else security,
        "responses": {str(status): ok, **_errors(errors, error_schema)},
    }
    for code, response in (more or {}).items():
        operation["responses"][str(code)] = response
    if body is not None:
        operation["requestBody"] = body
    if query:
        operation["parameters"] = [
            {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
            for name, schema, text in query
        ]
    return operation


def _body(
    schema: dict[str, Any], *, form: bool = False, required: bool = True, example: Any = None
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if example is not None:
        content["application/json"]["example"] = example
    if form:
        content["multipart/form-data"] = {
            "schema": {
                "allOf": [
                    schema,
                    {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}},
                ]
            }
        }
    return {"required": required, "content": content}


_OWNER = {
    "type": "object",
    "required": ["owner"],
    "properties": {"owner": {"type": "string", "format": "email"}},
}
_PERIOD = ("period", {"type": "string"}, "A month, YYYY-MM (default: this one).")
_SIGNED = {
    "description": "No token: the body is a record signed with the node's own secret (HMAC-SHA256 over its "
    "canonical JSON, in `signature`; `node_id` names the node). workers.protocol.records."
}
_EVENTS = {"description": "Server-Sent Events", "content": {"text/event-stream": {"schema": _ref("Event")}}}


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    """Each documented route's operation, by (endpoint, method)."""
    job, node, token = _ref("Job"), _ref("Node"), _ref("Token")
    return {
        ("api.jobs.submit", "post"): _op(
            "Submit a job of this kind: 202 with the job and its Location.",
            "jobs",
            _json(job, "Accepted: queued (or failed at once if the broker is away)."),
            status=202,
            errors=(*_CLIENT, 415, 422),
            body=_body(
                _ref("JobSubmission"),
                form=True,
                example={
                    "text": "Le conseil s'est réuni le 3 mars pour examiner le budget.",
                    "max_words": 20,
                },
            ),
        ),
        ("api.jobs.batch", "post"): _op(
            "Submit up to JOBS_BATCH_MAX jobs at once, all or none: 202 with them in order.",
            "jobs",
            _json(_ref("JobBatchAnswer"), "Accepted: every job queued, as the listing shows it."),
            status=202,
            errors=(*_CLIENT, 422),
            body=_body(
                _ref("JobBatch"),
                example=[
                    {"kind": "summarise", "text": "Le conseil approuve le budget.", "max_words": 20},
                    {"kind": "translate", "text": "Le conseil approuve le budget.", "target": "en"},
                ],
            ),
        ),
        ("api.jobs.index", "get"): _op(
            "Your jobs, newest first (an admin token: everyone's, or ?owner=).",
            "jobs",
            _json(_ref("JobList"), "A page of jobs."),
            query=(
                ("state", _TEXT, "Only jobs in this state."),
                ("kind", _TEXT, "Only jobs of this kind."),
                ("page", {"type": "integer", "minimum": 1, "maximum": 1_000_000}, "Page, from 1."),
                ("per_page", {"type": "integer", "minimum": 1}, "Jobs per page (at most JOBS_PER_PAGE_MAX)."),
                ("owner", _TEXT, "Admin tokens: one owner's jobs."),
                ("mine", _TEXT, "Admin tokens: only your own."),
            ),
        ),
        ("api.jobs.show", "get"): _op("A job: state, steps, result, cost.", "jobs", _json(job, "The job.")),
        ("api.jobs.result", "get"): _op(
            "The job's result alone.",
            "jobs",
            _json(_ref("JobResult"), "The result (null until the job succeeded)."),
            errors=(*_CLIENT, 410),
        ),
        ("api.jobs.events", "get"): _op(
            "The job's progress as Server-Sent Events (Last-Event-ID resumes).", "jobs", _EVENTS
        ),
        ("api.jobs.cancel", "post"): _op(
            "Cancel a job.", "jobs", _json(job, "The job, cancelled."), errors=(*_CLIENT, 409)
        ),
        ("api.nodes.index", "get"): _op(
            "Your nodes (an admin token: every node), by name.",
            "nodes",
            _json(_ref("NodeList"), "A page of nodes."),
            query=(
                ("page", {"type": "integer", "minimum": 1, "maximum": 1_000_000}, "Page, from 1."),
                (
                    "per_page",
                    {"type": "integer", "minimum": 1},
                    "Nodes per page (NODES_PER_PAGE by default, at most NODES_PER_PAGE_MAX).",
                ),
            ),
        ),
        ("api.nodes.enrol", "post"): _op(
            "Enrol a node: its id, secret and worker configuration, shown this once.",
            "nodes",
            _json(_ref("Enrolment"), "Enrolled."),
            status=201,
            errors=(*_CLIENT, 409, 415, 422),
            body=_body(
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{1,62}$"},
                        "owner": {"type": "string", "format": "email"},
                    },
                },
                form=True,
                example={"name": "example-node"},
            ),
        ),
        ("api.nodes.show", "get"): _op("A node.", "nodes", _json(node, "The node.")),
        ("api.nodes.approve", "post"): _op(
            "Approve a pending node (operators).", "nodes", _json(node, "Approved."), errors=(*_CLIENT, 409)
        ),
        ("api.nodes.pause", "post"): _op(
            "Pause (drain) a node.", "nodes", _json(node, "Paused."), errors=(*_CLIENT, 409)
        ),
        ("api.nodes.resume", "post"): _op(
            "Resume a node.", "nodes", _json(node, "Resumed."), errors=(*_CLIENT, 409)
        ),
        ("api.nodes.revoke", "post"): _op(
            "Revoke a node for good.", "nodes", _json(node, "Revoked."), errors=(*_CLIENT, 409)
        ),
        ("api.ledger.nodes", "get"): _op(
            "Granted hours and unsettled rewards per node and capability (operators).",
            "ledger",
            _json(_ref("LedgerNodes"), "Per node."),
        ),
        ("api.ledger.validation", "get"): _op(
            "Results checked by replicas and their cost (operators).",
            "ledger",
            _json(_OBJECT, "The summary."),
        ),
        ("api.ledger.statement", "get"): _op(
            "A participant's executions in a period, line by line.",
            "ledger",
            _json(_ref("Statement"), "The statement."),
            query=(_PERIOD,),
        ),
        ("api.stats.show", "get"): _op(
            "What the grid did in a span (money for admin tokens).",
            "stats",
            _json(_ref("Stats"), "The figures."),
            query=(
                ("period", {"type": "string", "enum": ["day", "week", "month"]}, "A span ending now."),
                ("from", _TEXT, "ISO 8601 start (with to)."),
                ("to", _TEXT, "ISO 8601 end (with from)."),
            ),
        ),
        ("api.catalog.index", "get"): _op(
            "The models the grid's nodes serve.", "models", _json(_ref("Models"), "Models.")
        ),
        ("api.tokens.index", "get"): _op(
            "Your tokens (an admin token: everyone's, or ?owner=).",
            "tokens",
            _json(_ref("TokenList"), "Tokens, never their secrets."),
            query=(("owner", _TEXT, "Admin tokens: one owner's."),),
        ),
        ("api.tokens.create", "post"): _op(
            "A new token (shown once), with no more scopes nor life than the caller's.",
            "tokens",
            _json(_ref("NewToken"), "Created."),
            status=201,
            body=_body(
                {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 120},
                        "scopes": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "enum": list(SCOPES)},
                        },
                        "expires_in_days": {"type": "number", "exclusiveMinimum": 0},
                        "expires_at": {"type": "string", "format": "date-time"},
                    },
                },
                example={"name": "ci", "scopes": ["jobs:read"], "expires_in_days": 30},
            ),
        ),
        ("api.tokens.revoke_token", "post"): _op("Revoke a token.", "tokens", _json(token, "Revoked.")),
        ("api.tokens.rotate_webhook_secret", "post"): _op(
            "A new webhook signing secret for a live token of yours (shown once).",
            "tokens",
            _json(_ref("WebhookSecret"), "The new secret."),
        ),
        ("api.admin.erase", "post"): _op(
            "Erase an owner's content and personal data (GDPR, operators).",
            "admin",
            _json(_OBJECT, "What was done."),
            errors=(*_CLIENT, 422),
            body=_body(_OWNER, example={"owner": "nobody@example.org"}),
        ),
        ("api.admin.export", "post"): _op(
            "Everything the grid holds about an owner (GDPR, operators).",
            "admin",
            _json(_OBJECT, "The export."),
            errors=(*_CLIENT, 422),
            body=_body(_OWNER, example={"owner": "member@example.org"}),
        ),
        ("api.work.fetch_input", "post"): _op(
            "A node fetches its task's input with a signed start record (volunteers' workers).",
            "work",
            {
                "description": "The input; X-Grid-Input says its kind.",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            },
            security=NODE,
            errors=_WORK,
            body=_body(_ref("Started")),
        ),
        ("api.work.report_progress", "post"): _op(
            "A node reports how far it has gone (signed).",
            "work",
            {"description": "Kept."},
            status=204,
            security=NODE,
            errors=_WORK,
            body=_body(_ref("Progress")),
        ),
        ("api.work.report_delta", "post"): _op(
            "A node posts streamed chat text (signed, in sequence).",
            "work",
            {"description": "Kept."},
            status=204,
            security=NODE,
            errors=_WORK,
            body=_body(_ref("Delta")),
        ),
        ("openapi.spec", "get"): _op(
            "This document.",
            "meta",
            _json(_OBJECT, "The OpenAPI 3.1 document."),
            security=[],
            errors=(405, 503),
        ),
        ("health.healthz", "get"): _op(
            "The process answers.", "health", _json(_ref("Health"), "Alive."), security=[], errors=(405,)
        ),
        ("health.readyz", "get"): _op(
            "PostgreSQL and Redis answer.",
            "health",
            _json(_ref("Readiness"), "Ready."),
            security=[],
            errors=(405,),
            more={503: _json(_ref("Readiness"), "Not ready: which server is away, with Retry-After.")},
        ),
        ("metrics", "get"): _op(
            "Prometheus metrics (the metrics token when GRID_METRICS_TOKEN is set).",
            "health",
            {
                "description": "Prometheus' text format (or OpenMetrics, if asked for).",
                "content": {
                    "text/plain": {"schema": _TEXT},
                    "application/openmetrics-text": {"schema": _TEXT},
                },
            },
            security=METRICS,
            errors=(401, 405, 503),
        ),
        ("openai.models", "get"): _op(
            "The models, in OpenAI's list shape.",
            "openai",
            _json(_ref("OpenAIModels"), "Models."),
            error_schema="OpenAIError",
        ),
        ("openai.chat_completions", "post"): _op(
            "A chat completion (stream: true for Server-Sent Events ending [DONE]).",
            "openai",
            {
                "description": "The completion, or its chunks as Server-Sent Events.",
                "content": {
                    "application/json": {"schema": _ref("ChatCompletion")},
                    "text/event-stream": {"schema": _ref("Event")},
                },
            },
            errors=(*_CLIENT, 409, 415),
            error_schema="OpenAIError",
            body=_body(
                {
                    "type": "object",
                    "required": ["messages"],
                    "properties": {
                        "model": _TEXT,
                        "messages": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["role", "content"],
                                "properties": {
                                    "role": {"type": "string", "enum": ["system", "user", "assistant"]},
                                    "content": _TEXT,
                                },
                            },
                        },
                        "max_tokens": {"type": "integer", "minimum": 1},
                        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                        "stop": {"type": ["string", "array"], "items": _TEXT},
                        "stream": {"type": "boolean"},
                        "stream_options": {
                            "type": "object",
                            "properties": {"include_usage": {"type": "boolean"}},
                        },
                    },
                },
                example={"messages": [{"role": "user", "content": "Bonjour"}], "max_tokens": 8},
            ),
            more={504: _json(_ref("OpenAIError"), "The job did not end in time (timeout); it goes on.")},
        ),
        ("openai.embeddings", "post"): _op(
            "Embeddings of a text or a list of texts.",
            "openai",
            _json(_ref("Embeddings"), "The vectors."),
            errors=(*_CLIENT, 409, 415),
            error_schema="OpenAIError",
            body=_body(
                {
                    "type": "object",
                    "required": ["input"],
                    "properties": {
                        "input": {"oneOf": [_TEXT, {"type": "array", "items": _TEXT}]},
                        "model": _TEXT,
                        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                    },
                },
                example={"input": "Bonjour", "encoding_format": "float"},
            ),
            more={504: _json(_ref("OpenAIError"), "The job did not end in time (timeout); it goes on.")},
        ),
    }


# --- the document ------------------------------------------------------------------------------

_CONVERTER = re.compile(r"<(?:(?P<converter>[a-z]+)(?:\([^)]*\))?:)?(?P<name>\w+)>")


def _path(rule: str, kinds: tuple[str, ...]) -> tuple[str, list[dict[str, Any]]]:
    """An OpenAPI path and its parameters from a werkzeug rule; ``kinds``: the job kinds offered."""
    parameters = []
    for match in _CONVERTER.finditer(rule):
        name, converter = match["name"], match["converter"]
        description = f"The {name.replace('_', ' ')}."
        extra: dict[str, Any] = {}
        if converter == "int":
            schema: dict[str, Any] = {"type": "integer", "minimum": 0}
        elif name == "kind":
            schema = {"type": "string", "enum": list(kinds)}
            description = "The kind of job to submit."
            extra = {"example": "summarise"}
        else:
            schema = {"type": "string"}
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": schema,
                "description": description,
                **extra,
            }
        )
    return _CONVERTER.sub(lambda m: "{" + m["name"] + "}", rule), parameters


def _shape(path: str) -> str:
    return re.sub(r"\{\w+\}", "{}", path)


def build(app: Flask) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes; KeyError for a documented route without an operation."""
    spec = APISpec(
        title="KoproGo Grid API",
        version="1",
        openapi_version="3.1.0",
        info={
            "description": "The coordinator's API: jobs, nodes, ledger, statistics, models, tokens, the "
            "operators' routes, the volunteers' signed work routes, health, metrics and the "
            'OpenAI-compatible /v1. Errors: {"error": {"code", "message"}} (OpenAI\'s shape on /v1), '
            "the codes listed in the Error schema. docs/api.md."
        },
    )
    spec.components.security_scheme(
        "bearer", {"type": "http", "scheme": "bearer", "description": "An API token (POST /api/v1/tokens)."}
    )
    spec.components.security_scheme(
        "metricsToken", {"type": "http", "scheme": "bearer", "description": "GRID_METRICS_TOKEN, when set."}
    )
    spec.components.security_scheme(
        "nodeSignature",
        {"type": "http", "scheme": "grid-node-signature", **_SIGNED},
    )
    for name, schema in _schemas(app).items():
        spec.components.schema(name, schema)
    for model in (Started, Progress, Delta):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            spec.components.schema(name, definition)
        spec.components.schema(model.__name__, schema)
    known = operations()
    shapes: dict[str, list[tuple[Any, list[dict[str, Any]]]]] = {}
    kinds = jobs.offered_kinds(app.config)
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        if DOCUMENTED.match(rule.rule):
            path, parameters = _path(rule.rule, kinds)
            shapes.setdefault(_shape(path), []).append((rule, parameters))
    paths: dict[str, dict[str, Any]] = {}
    for shape, rules in shapes.items():
        # Rules alike but for their variables' names (/jobs/<kind>, /jobs/<job_id>) are one path
        # to OpenAPI: its variables are named after all of theirs (kind_or_job_id), each
        # operation with its own parameters' schemas.
        names = [
            "_or_".join(sorted({parameters[index]["name"] for _, parameters in rules}))
            for index in range(shape.count("{}"))
        ]
        path = shape
        for name in names:
            path = path.replace("{}", "{" + name + "}", 1)
        entry = paths.setdefault(path, {})
        for rule, parameters in rules:
            parameters = [
                {**parameter, "name": name} for parameter, name in zip(parameters, names, strict=True)
            ]
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                operation = dict(known[(rule.endpoint, method.lower())])
                if parameters:
                    operation["parameters"] = parameters + operation.get("parameters", [])
                entry[method.lower()] = operation
    for path in sorted(paths):
        spec.path(path=path, operations=paths[path])
    return spec.to_dict()


@cache
def _document(app_id: int) -> dict[str, Any]:
    return build(current_app._get_current_object())


@bp.get("/api/v1/openapi.json")
def spec():
    """The OpenAPI 3.1 document (no token)."""
    return _document(id(current_app._get_current_object()))


@bp.get("/api/docs")
def page():
    """The document as a page: every operation, its parameters, body and answers."""
    document = _document(id(current_app._get_current_object()))
    return render_template("api_docs.html", spec=document)


def register(app: Flask) -> None:
    app.register_blueprint(bp)
