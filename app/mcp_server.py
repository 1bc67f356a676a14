"""The grid for assistants: an MCP server (the official ``mcp`` SDK, 2.x) whose tools submit jobs
and read the grid's figures through the JSON API (docs/assistants.md).

It is a client of the API and nothing else: it never opens the database, so a tool can do what
its API token can, no more, and every job it submits is metered and granted through the ledger
like any other. Two transports:

- stdio (``python manage.py mcp``): one assistant on the member's machine, the token from
  ``GRID_API_TOKEN``; a document may then also be a local file's path;
- streamable HTTP (``python manage.py mcp --http``): its own ASGI process (uvicorn) beside the
  Flask API; each request carries ``Authorization: Bearer <API token>``, checked against the grid
  before anything runs (401 otherwise), and the tools use that token for that client's calls.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
import requests
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent
from pydantic import Field, ValidationError

log = logging.getLogger(__name__)

FINAL_STATES = ("succeeded", "failed", "cancelled")
DONE_STEP_STATES = ("succeeded", "failed", "skipped", "cancelled")
#: The API's own codes (docs/api.md), and two of the MCP server's: the grid did not answer, or
#: answered with something that is not the API's JSON.
GRID_UNREACHABLE = "grid_unreachable"
BAD_ANSWER = "bad_answer"


@dataclass(frozen=True)
class Settings:
    """What the server needs: the API's address, how long a tool waits for its job, how often it
    looks, and (stdio) the one token it acts with."""

    api_url: str
    token: str | None = None
    wait_seconds: float = 120.0
    poll_seconds: float = 0.5
    request_timeout: float = 60.0
    local_files: bool = False
    #: Over HTTP: the Host headers a reverse proxy may pass on besides local ones (``name`` or
    #: ``name:*`` for any port); other hosts are refused (DNS-rebinding protection).
    allowed_hosts: tuple[str, ...] = ()

    @classmethod
    def from_environment(cls, default_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "api_url": os.environ.get("GRID_API_URL") or default_url,
            "token": os.environ.get("GRID_API_TOKEN") or None,
            "wait_seconds": float(os.environ.get("GRID_MCP_WAIT_SECONDS", "120")),
            "poll_seconds": float(os.environ.get("GRID_MCP_POLL_SECONDS", "0.5")),
            "allowed_hosts": tuple(os.environ.get("GRID_MCP_ALLOWED_HOSTS", "").replace(",", " ").split()),
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        values["api_url"] = values["api_url"].rstrip("/")
        return cls(**values)


class GridError(Exception):
    """An answer of the API that is not a success, with its stable code (or one of ours)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "status": self.status}


class GridAPI:
    """The grid's JSON API with a bearer token per call (blocking: called in worker threads)."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._local = threading.local()

    def _session(self) -> requests.Session:
        # One connection pool per thread: requests' sessions are not documented as thread-safe.
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def call(self, token: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        try:
            response = self._session().request(
                method, self.base_url + path, headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise GridError(
                GRID_UNREACHABLE, f"The grid's API at {self.base_url} did not answer: {exc}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.ok and isinstance(body, dict):
            return body
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("code"):
            raise GridError(str(error["code"]), str(error.get("message", "")), response.status_code)
        raise GridError(BAD_ANSWER, f"HTTP {response.status_code} from {path}", response.status_code)


class GridTokenVerifier:
    """The SDK's TokenVerifier: a bearer token is valid when the grid accepts it (``GET
    /api/v1/models`` takes any valid token, whatever its scopes)."""

    def __init__(self, api: GridAPI) -> None:
        self.api = api

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            await anyio.to_thread.run_sync(partial(self.api.call, token, "GET", "/api/v1/models"))
        except GridError as exc:
            if exc.code == GRID_UNREACHABLE:
                log.warning("could not check a token: %s", exc.message)
            return None
        # The client id names the token (a digest, never the token): the SDK binds an HTTP
        # session to it, so another token cannot use a session this one opened.
        digest = hashlib.sha256(token.encode()).hexdigest()[:16]
        return AccessToken(token=token, client_id=f"grid-token-{digest}", scopes=[])


# ---------------------------------------------------------------------------------------------
# What a job answer becomes for an assistant.
# ---------------------------------------------------------------------------------------------


def progress_of(job: dict[str, Any]) -> tuple[float, float, str]:
    """How far a job is: (done, total, message), each step counting 100, its pages or pieces
    sharing them."""
    steps = job.get("steps") or []
    done = 0.0
    words = []
    for step in steps:
        progress = step.get("progress") or {}
        if step.get("state") in DONE_STEP_STATES:
            done += 100
        elif progress.get("pages_total"):
            done += 100 * min(1.0, progress.get("pages_done", 0) / progress["pages_total"])
        elif progress.get("pieces_total"):
            done += 100 * min(1.0, progress.get("pieces_done", 0) / progress["pieces_total"])
        detail = step.get("state", "")
        if progress.get("pages_total"):
            detail += f", {progress.get('pages_done', 0)}/{progress['pages_total']} pages"
        elif progress.get("pieces_total"):
            detail += f", {progress.get('pieces_done', 0)}/{progress['pieces_total']} pieces"
        words.append(f"{step.get('name')}: {detail}")
    return done, 100.0 * max(1, len(steps)), f"job {job.get('state')}; " + "; ".join(words)


def usage_of(job: dict[str, Any]) -> dict[str, Any]:
    """What the job used: pages, tokens, seconds of its steps."""
    result = job.get("result") or {}
    steps = job.get("steps") or []
    usage: dict[str, Any] = {
        "wall_seconds": round(sum(step.get("wall_seconds") or 0 for step in steps), 3),
        "cpu_seconds": round(sum(step.get("cpu_seconds") or 0 for step in steps), 3),
    }
    if result.get("pages") is not None:
        usage["pages"] = result["pages"]
    tokens = {
        key.removesuffix("_tokens"): result[key]
        for key in ("summary_tokens", "translation_tokens", "fields_tokens")
        if result.get(key) is not None
    }
    if tokens:
        usage["tokens"] = tokens
    return usage


def structured(job: dict[str, Any]) -> dict[str, Any]:
    """The structured content of a job tool's answer."""
    return {
        "job_id": job.get("id"),
        "kind": job.get("kind"),
        "state": job.get("state"),
        "error": job.get("error"),
        "steps": [
            {key: step.get(key) for key in ("name", "state", "node", "attempts", "progress", "error")}
            for step in job.get("steps") or []
        ],
        "nodes": sorted({step["node"] for step in job.get("steps") or [] if step.get("node")}),
        "usage": usage_of(job),
        "cost": job.get("cost"),
        "co2_grams": job.get("co2_grams"),
        "result": job.get("result"),
    }


def _field_lines(fields: dict[str, Any]) -> list[str]:
    lines = []
    for name, field in fields.items():
        if not isinstance(field, dict):
            continue
        value = field.get("value")
        if not isinstance(value, str | int | float):
            value = json.dumps(value, ensure_ascii=False)
        valid = "" if "valid" not in field else (" (valid)" if field["valid"] else " (check digits fail)")
        lines.append(f"{name}: {value}{valid}")
    return lines


def answer_text(job: dict[str, Any]) -> str:
    """The job's result as text for the assistant to read."""
    result = job.get("result") or {}
    parts = []
    if job.get("kind") == "invoice" or ("fields" in result and job.get("kind") != "ocr"):
        fields = result.get("fields") or {}
        parts.append("\n".join(_field_lines(fields)) or "No invoice field was found.")
    if job.get("kind") == "ocr":
        parts.append(result.get("text") or "")
    if result.get("summary") is not None:
        parts.append(result["summary"])
    if result.get("translation") is not None:
        parts.append(result["translation"])
    return "\n\n".join(part for part in parts if part) or f"Job {job.get('id')} {job.get('state')}."


def error_result(error: GridError, job_id: str | None = None) -> CallToolResult:
    """A tool error with the API's code; ``job_id``: the job was submitted, following it failed."""
    text = f"{error.code}: {error.message}"
    content: dict[str, Any] = {"error": error.as_dict()}
    if job_id is not None:
        text += f" Job {job_id} was submitted: follow it with job_status."
        content["job_id"] = job_id
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=content, is_error=True
    )


def job_result(job: dict[str, Any]) -> CallToolResult:
    """A job tool's answer: the result when it succeeded, a tool error with the job's code when
    it failed or was cancelled, a clear "still running" otherwise."""
    content = structured(job)
    state = job.get("state")
    if state == "succeeded":
        text = answer_text(job)
    elif state in ("failed", "cancelled"):
        error = job.get("error") or {"code": state, "message": f"The job was {state}."}
        text = f"{error.get('code')}: {error.get('message')} (job {job.get('id')})"
        return CallToolResult(
            content=[TextContent(type="text", text=text)], structured_content=content, is_error=True
        )
    else:
        text = (
            f"Job {job.get('id')} is still {state}: call job_status with job_id {job.get('id')} "
            "later for its result."
        )
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=content)


# ---------------------------------------------------------------------------------------------
# The tools.
# ---------------------------------------------------------------------------------------------

ContentBase64 = Annotated[
    str | None, Field(description="The document's bytes in base64 (PDF, PNG, JPEG or TIFF).")
]
Filename = Annotated[str | None, Field(description="The document's file name, e.g. facture.pdf.")]
LocalPath = Annotated[
    str | None,
    Field(description="Over stdio only: a file on this machine to send instead of content_base64."),
]
OcrLanguages = Annotated[
    str, Field(description="Tesseract languages joined by +: fra, eng, nld (default fra+eng).")
]
TextLanguage = Annotated[str, Field(description="fr, en or nl.")]
WaitSeconds = Annotated[
    float | None,
    Field(
        description="How long to wait for the job (at most the server's limit; 0: answer at once "
        "with the job id, and follow it with job_status)."
    ),
]


class GridTools:
    """The tools' work, shared by both transports; ``settings.token`` is None over HTTP, where
    each request's verified bearer token is used."""

    def __init__(self, settings: Settings, api: GridAPI | None = None) -> None:
        self.settings = settings
        self.api = api or GridAPI(settings.api_url, settings.request_timeout)

    def token(self) -> str:
        access = get_access_token()
        if access is not None:
            return access.token
        if self.settings.token:
            return self.settings.token
        raise GridError(
            "auth_required", "No API token: set GRID_API_TOKEN or send Authorization: Bearer.", 401
        )

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(partial(self.api.call, self.token(), method, path, **kwargs))

    def document(
        self, content_base64: str | None, filename: str | None, path: str | None
    ) -> tuple[str, bytes]:
        """The document a tool was given: its name and bytes."""
        if path is not None:
            if not self.settings.local_files:
                raise GridError(
                    "invalid_parameter", "path is read over stdio only: send content_base64 and filename."
                )
            if content_base64 is not None:
                raise GridError("invalid_parameter", "Give either path or content_base64, not both.")
            file = Path(path).expanduser()
            try:
                return filename or file.name, file.read_bytes()
            except OSError as exc:
                raise GridError("invalid_parameter", f"Cannot read {path}: {exc.strerror}.") from None
        if content_base64 is None:
            raise GridError("empty_document", "No document: give content_base64 (and filename).")
        try:
            data = base64.b64decode(content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise GridError("invalid_parameter", "content_base64 is not valid base64.") from None
        return filename or "document", data

    async def submit_and_follow(
        self, ctx: Context, kind: str, wait_seconds: float | None, *, document=None, **fields: Any
    ) -> CallToolResult:
        try:
            if document is not None:
                name, data = document
                form = {key: str(value) for key, value in fields.items() if value is not None}
                job = await self.call("POST", f"/api/v1/jobs/{kind}", files={"file": (name, data)}, data=form)
            else:
                body = {key: value for key, value in fields.items() if value is not None}
                job = await self.call("POST", f"/api/v1/jobs/{kind}", json=body)
        except GridError as exc:
            return error_result(exc)
        try:
            job = await self.follow(ctx, job, wait_seconds)
        except GridError as exc:  # the API went away mid-wait (503, a restart): the job goes on
            return error_result(exc, job["id"])
        return job_result(job)

    async def follow(self, ctx: Context, job: dict[str, Any], wait_seconds: float | None) -> dict[str, Any]:
        """Poll the job until it ends or the wait is over, telling the client its progress when
        the client asked for it (a progress token; the SDK sends nothing otherwise)."""
        limit = self.settings.wait_seconds
        wait = limit if wait_seconds is None else max(0.0, min(float(wait_seconds), limit))
        deadline = time.monotonic() + wait
        shown = None
        while True:
            if job.get("steps") is not None:
                progress = progress_of(job)
                if progress != shown:
                    await ctx.report_progress(*progress)
                    shown = progress
            if job.get("state") in FINAL_STATES or time.monotonic() >= deadline:
                return job
            await anyio.sleep(min(self.settings.poll_seconds, max(0.0, deadline - time.monotonic())))
            job = await self.call("GET", f"/api/v1/jobs/{job['id']}")


class GridMCPServer(MCPServer):
    """Arguments that do not fit a tool's schema (a word for a number, a missing text) are a tool
    error with the API's code, ``invalid_parameter``, like the API's own refusals."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None):
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise  # a bug: the SDK logs it and answers a generic tool error
        except ToolError as exc:
            if not isinstance(exc.__cause__, ValidationError):
                raise
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
                for error in exc.__cause__.errors()
            )
            return error_result(GridError("invalid_parameter", f"{name}: {problems}."))


def build_server(settings: Settings, *, http: bool = False) -> MCPServer:
    """The MCP server and its tools; ``http``: each request needs a bearer token the grid accepts."""
    tools = GridTools(settings)
    options: dict[str, Any] = {}
    if http:
        options = {
            "token_verifier": GridTokenVerifier(tools.api),
            "auth": AuthSettings(issuer_url=settings.api_url, resource_server_url=None),
        }
    server = GridMCPServer(
        "koprogo-grid",
        instructions=(
            "KoproGo Grid: OCR, summaries, translations and invoice fields, computed by volunteers' "
            "machines. Each job tool waits for its job up to a limit, then gives the job id to "
            "follow with job_status."
        ),
        log_level="WARNING",
        **options,
    )

    @server.tool()
    async def ocr_document(
        ctx: Context,
        content_base64: ContentBase64 = None,
        filename: Filename = None,
        path: LocalPath = None,
        languages: OcrLanguages = "fra+eng",
        force_ocr: Annotated[bool, Field(description="Read every page with Tesseract.")] = False,
        wait_seconds: WaitSeconds = None,
    ) -> CallToolResult:
        """Read a document's text (OCR by Tesseract on the grid, or a PDF's own text layer)."""
        try:
            document = tools.document(content_base64, filename, path)
        except GridError as exc:
            return error_result(exc)
        return await tools.submit_and_follow(
            ctx, "ocr", wait_seconds, document=document, languages=languages, force_ocr=str(force_ocr).lower()
        )

    @server.tool()
    async def summarise(
        ctx: Context,
        text: Annotated[str | None, Field(description="The text to summarise (or give a document).")] = None,
        content_base64: ContentBase64 = None,
        filename: Filename = None,
        path: LocalPath = None,
        language: TextLanguage = "fr",
        max_words: Annotated[int, Field(description="10 to 600.")] = 150,
        languages: OcrLanguages = "fra+eng",
        wait_seconds: WaitSeconds = None,
    ) -> CallToolResult:
        """Summarise a text, or a document (read by OCR first), with a model on the grid."""
        if text is not None and (content_base64 is not None or path is not None):
            return error_result(GridError("invalid_parameter", "Give either text or a document, not both."))
        if text is not None or (content_base64 is None and path is None):
            return await tools.submit_and_follow(
                ctx, "summarise", wait_seconds, text=text or "", language=language, max_words=max_words
            )
        try:
            document = tools.document(content_base64, filename, path)
        except GridError as exc:
            return error_result(exc)
        return await tools.submit_and_follow(
            ctx,
            "pipeline",
            wait_seconds,
            document=document,
            languages=languages,
            language=language,
            max_words=max_words,
        )

    @server.tool()
    async def translate(
        ctx: Context,
        text: Annotated[str, Field(description="The text to translate; its language is read from it.")],
        target: Annotated[str, Field(description="The language to translate into: fr, en or nl.")],
        wait_seconds: WaitSeconds = None,
    ) -> CallToolResult:
        """Translate a text with a model on the grid."""
        return await tools.submit_and_follow(ctx, "translate", wait_seconds, text=text, target=target)

    @server.tool()
    async def extract_invoice(
        ctx: Context,
        content_base64: ContentBase64 = None,
        filename: Filename = None,
        path: LocalPath = None,
        languages: OcrLanguages = "fra+eng",
        llm_fields: Annotated[
            bool, Field(description="Also ask a model for the fields the rules missed (kept if printed).")
        ] = False,
        wait_seconds: WaitSeconds = None,
    ) -> CallToolResult:
        """An invoice's or receipt's fields: supplier, VAT number, number, dates, total, VAT, IBAN,
        structured communication, each with its page, source text and confidence."""
        try:
            document = tools.document(content_base64, filename, path)
        except GridError as exc:
            return error_result(exc)
        return await tools.submit_and_follow(
            ctx,
            "invoice",
            wait_seconds,
            document=document,
            languages=languages,
            llm_fields=str(llm_fields).lower(),
        )

    @server.tool()
    async def job_status(
        ctx: Context,
        job_id: Annotated[str, Field(description="The job's id, as a job tool gave it.")],
        wait_seconds: Annotated[
            float, Field(description="How long to wait for the job to end (0: its state now).")
        ] = 0,
    ) -> CallToolResult:
        """A job's state, steps, nodes, usage and cost, and its result once it is done."""
        try:
            job = await tools.call("GET", f"/api/v1/jobs/{job_id}")
            job = await tools.follow(ctx, job, wait_seconds)
        except GridError as exc:
            return error_result(exc)
        return job_result(job)

    @server.tool()
    async def grid_stats(
        period: Annotated[
            str, Field(description="day, week or month: the last 24 hours, 7 or 30 days.")
        ] = "day",
    ) -> CallToolResult:
        """What the grid did in the period: requests, tokens, compute hours, jobs, nodes, CO₂."""
        try:
            stats = await tools.call("GET", "/api/v1/stats", params={"period": period})
        except GridError as exc:
            return error_result(exc)
        jobs = stats.get("jobs") or {}
        nodes = stats.get("nodes") or {}
        co2 = stats.get("co2") or {}
        text = (
            f"Last {period}: {jobs.get('submitted', 0)} jobs submitted, {stats.get('requests', 0)} requests, "
            f"{stats.get('tokens', 0)} tokens, {stats.get('compute_hours', 0)} compute hours; "
            f"{nodes.get('online', 0)} nodes online; {co2.get('co2_grams', 0)} g CO₂."
        )
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=stats)

    return server


def max_request_bytes() -> int:
    """A document at the API's limit, in base64 inside a JSON-RPC request, with room to spare."""
    document = int(os.environ.get("GRID_MAX_DOCUMENT_MB", "20")) * 1024 * 1024
    return document * 4 // 3 + 1024 * 1024


LOCAL_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")


def transport_security(settings: Settings) -> TransportSecuritySettings | None:
    """With allowed hosts: those and the local ones, nothing else (Host checked, and Origin when a
    browser sends one). Without: the SDK's default, the local ones only when listening on a local
    address, no check otherwise."""
    if not settings.allowed_hosts:
        return None
    hosts = [*LOCAL_HOSTS, *settings.allowed_hosts]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")],
    )


def http_app(settings: Settings, host: str):
    """The streamable-HTTP ASGI app (Starlette), at ``/mcp``."""
    server = build_server(settings, http=True)
    return server.streamable_http_app(
        stateless_http=True,
        host=host,
        max_request_body_size=max_request_bytes(),
        transport_security=transport_security(settings),
    )
