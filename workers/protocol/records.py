"""What a volunteer sends the coordinator: one schema per record, defined once, checked strictly.

A node reports on the ``ledger`` queue, as Celery task messages, five kinds of record: an
execution's start (``started``) and end (``completed``), and its worker's ``register``,
``heartbeat`` and ``stopping`` notices. The worker builds each from the schema below, signs it
with its node's secret (``workers.protocol.signing``) and sends it; the coordinator's intake
parses every message with ``parse_message`` and every record with ``parse`` before it looks at
anything else.
What does not fit (too big, too deep, a field of the wrong type or out of bounds, an unknown
field or task) raises ``Invalid`` with a stable reason: the coordinator stores the message as a
refused record with that reason and goes on with the batch. No message can do more.

Pure Python shared by both sides (pydantic for the checks): no Celery, no Flask, no engine.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

import celeryconfig

#: Records of another version are refused (``unsupported_version``): both sides ship together.
VERSION = 3
#: A message larger than this is refused unread (``oversized``): a 100-page OCR result is well
#: under 2 MB.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Nesting deeper than this anywhere in a record is refused (``too_deep``).
MAX_DEPTH = 12
#: A node's probe report, encoded, at most.
MAX_PROBE_BYTES = 64 * 1024

#: The record kind each ledger task name carries.
KIND_OF_TASK = {
    celeryconfig.TASK_LEDGER_STARTED: "started",
    celeryconfig.TASK_LEDGER_RECORD: "completed",
    celeryconfig.TASK_LEDGER_REGISTER: "register",
    celeryconfig.TASK_LEDGER_HEARTBEAT: "heartbeat",
    celeryconfig.TASK_LEDGER_STOPPING: "stopping",
}
TASK_OF_KIND = {kind: task for task, kind in KIND_OF_TASK.items()}

_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
Uuid = Annotated[str, StringConstraints(pattern=_UUID)]
Signature = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
#: A Celery worker name, ``name@host``: a node's name (63 at most) and a host, 200 in all (the
#: coordinator's column).
WorkerName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,63}@[A-Za-z0-9._-]{1,136}$")]
Nonce = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Seconds = Annotated[float, Field(ge=0, le=10**7, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=10**9)]
TaskName = Literal[tuple(celeryconfig.CAPABILITY_OF_TASK)]  # type: ignore[valid-type]
Capability = Literal[celeryconfig.VOLUNTEER_QUEUES]  # type: ignore[valid-type]


class Invalid(ValueError):
    """A message or record that does not fit the protocol; ``reason`` is stable."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:1000]
        #: What the message looked like, for the record the coordinator keeps (set by its reader).
        self.evidence = ""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Units(_Strict):
    """Work units a node counted (claims: the coordinator bounds them by its own counts)."""

    pages: Count | None = None
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None


class Error(_Strict):
    code: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,64}$")]
    message: Annotated[str, StringConstraints(max_length=4000)]


class _Body(_Strict):
    v: Literal[VERSION] = VERSION  # type: ignore[valid-type]


class StartedBody(_Body):
    """An execution began on this node."""

    task_id: Uuid
    task_name: TaskName
    node: WorkerName
    attempt: Annotated[int, Field(ge=0, le=celeryconfig.MAX_RETRIES)]
    started_at: Annotated[str, StringConstraints(max_length=40)]
    redelivered: bool = False

    @field_validator("started_at")
    @classmethod
    def _iso(cls, value: str) -> str:
        return _moment(value)


class CompletedBody(_Body):
    """An execution ended: what it claims to have done, and its result or error."""

    task_id: Uuid
    task_name: TaskName
    capability: Capability
    node: WorkerName
    attempt: Annotated[int, Field(ge=0, le=celeryconfig.MAX_RETRIES)]
    outcome: Literal["succeeded", "failed", "retried", "lost"]
    final: bool
    started_at: Annotated[str, StringConstraints(max_length=40)]
    finished_at: Annotated[str, StringConstraints(max_length=40)]
    wall_seconds: Seconds
    cpu_seconds: Seconds
    units: Units
    result: dict[str, Any] | None = None
    error: Error | None = None

    @field_validator("started_at", "finished_at")
    @classmethod
    def _iso(cls, value: str) -> str:
        return _moment(value)


class ProgressBody(_Body):
    """How far an execution has gone, told to the coordinator over HTTP (``app.api.work``),
    which shows it only to the job's owner and only within what it knows of the work."""

    task_id: Uuid
    node: WorkerName
    attempt: Annotated[int, Field(ge=0, le=celeryconfig.MAX_RETRIES)]
    pages_done: Count | None = None
    pages_total: Count | None = None
    pieces_done: Count | None = None
    pieces_total: Count | None = None
    tokens: Count | None = None


class DeltaBody(_Body):
    """Text a streamed answer produced since the last delta, told to the coordinator over HTTP
    (``app.api.work``, ``app.chat_stream``): numbered from 0, so one lost or sent twice shows,
    and bounded; ``done`` on the last. Shown to the job's owner as it comes, never paid."""

    task_id: Uuid
    node: WorkerName
    attempt: Annotated[int, Field(ge=0, le=celeryconfig.MAX_RETRIES)]
    seq: Annotated[int, Field(ge=0, le=10**6)]
    text: Annotated[str, StringConstraints(max_length=celeryconfig.STREAM_MAX_DELTA_CHARS)]
    done: bool = False


class _Notice(_Body):
    """A worker's notice: when it was sent and a nonce, so that a copy is refused."""

    worker: WorkerName
    sent_at: Annotated[float, Field(gt=0, le=10**11, allow_inf_nan=False)]
    nonce: Nonce


class RegisterBody(_Notice):
    """A worker started: the queues it serves and what its machine can do."""

    queues: Annotated[list[Capability], Field(min_length=1, max_length=len(celeryconfig.VOLUNTEER_QUEUES))]
    #: Tasks it runs at once: the ledger pays for no more executions at a time.
    concurrency: Annotated[int, Field(ge=1, le=celeryconfig.NODE_MAX_CONCURRENCY)]
    probe: dict[str, Any]

    @field_validator("probe")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(value)) > MAX_PROBE_BYTES:
            raise ValueError(f"the probe report is over {MAX_PROBE_BYTES} bytes")
        return value


class HeartbeatBody(_Notice):
    """The worker is alive."""


class StoppingBody(_Notice):
    """The worker is shutting down."""


class _Signed(_Strict):
    node_id: Uuid
    signature: Signature


class Started(StartedBody, _Signed):
    pass


class Completed(CompletedBody, _Signed):
    pass


class Register(RegisterBody, _Signed):
    pass


class Progress(ProgressBody, _Signed):
    pass


class Delta(DeltaBody, _Signed):
    pass


class Heartbeat(HeartbeatBody, _Signed):
    pass


class Stopping(StoppingBody, _Signed):
    pass


SCHEMAS: dict[str, type[_Signed]] = {
    "started": Started,
    "completed": Completed,
    "progress": Progress,
    "delta": Delta,
    "register": Register,
    "heartbeat": Heartbeat,
    "stopping": Stopping,
}
BODIES: dict[str, type[_Body]] = {
    "started": StartedBody,
    "completed": CompletedBody,
    "progress": ProgressBody,
    "delta": DeltaBody,
    "register": RegisterBody,
    "heartbeat": HeartbeatBody,
    "stopping": StoppingBody,
}


def _moment(value: str) -> str:
    """An ISO 8601 time with its offset, in this era (a database stores and reads it back)."""
    moment = datetime.fromisoformat(value)  # ValueError: not an ISO 8601 time
    if moment.tzinfo is None or not 2000 <= moment.year <= 2200:
        raise ValueError(f"{value!r} is not a time with an offset between the years 2000 and 2200")
    return value


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply ``value`` nests lists and objects, counted without recursion, up to ``limit + 1``."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            stack.extend((child, level) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def body(kind: str, **fields: Any) -> dict[str, Any]:
    """A record of ``kind``, built and checked on the worker's side, ready to be signed."""
    return BODIES[kind](**fields).model_dump(mode="json", exclude_none=True)


def parse(kind: str, record: Any) -> _Signed:
    """The record as its schema, or ``Invalid``; ``record`` is what a node sent, unverified."""
    schema = SCHEMAS.get(kind)
    if schema is None:
        raise Invalid("unknown_task", f"no such record kind {kind!r}")
    if not isinstance(record, dict):
        raise Invalid("malformed", f"a record is a JSON object, not {type(record).__name__}")
    if depth(record) > MAX_DEPTH:
        raise Invalid("too_deep", f"the record nests more than {MAX_DEPTH} levels")
    version = record.get("v")
    if type(version) is not int:
        raise Invalid("malformed", "the record has no version number (v)")
    if version != VERSION:
        raise Invalid("unsupported_version", f"record version {version}, not {VERSION}: update the worker")
    try:
        return schema.model_validate(record)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)
        where = ", ".join(f"{'.'.join(map(str, e['loc'])) or '(record)'}: {e['msg']}" for e in first[:3])
        raise Invalid("malformed", where) from None


def parse_message(raw: bytes) -> tuple[str, Any]:
    """(kind, record) of one ledger queue message as kombu stores it in Redis (Celery protocol
    2: a JSON envelope whose headers name the task and whose body, often base64, is
    ``[args, kwargs, embed]``). ``Invalid`` for anything else; never any other exception."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise Invalid("oversized", f"{len(raw)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        envelope = json.loads(raw)
        if not isinstance(envelope, dict):
            raise Invalid("malformed", "the message is not a JSON object")
        headers, properties = envelope.get("headers") or {}, envelope.get("properties") or {}
        if not isinstance(headers, dict) or not isinstance(properties, dict):
            raise Invalid("malformed", "headers and properties are JSON objects")
        task = headers.get("task")
        kind = KIND_OF_TASK.get(task) if isinstance(task, str) else None
        if kind is None:
            raise Invalid("unknown_task", f"no record is sent as task {str(task)[:80]!r}")
        content = envelope.get("body")
        if not isinstance(content, str):
            raise Invalid("malformed", "the message body is not text")
        if properties.get("body_encoding") == "base64":
            content = base64.b64decode(content, validate=True)
        payload = json.loads(content)
        if not (
            isinstance(payload, list) and payload and isinstance(payload[0], list) and len(payload[0]) == 1
        ):
            raise Invalid("malformed", "the body is not Celery's [[record], kwargs, embed]")
        return kind, payload[0][0]
    except Invalid:
        raise
    except RecursionError:
        raise Invalid("too_deep", "the message nests deeper than JSON can be read") from None
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise Invalid(
            "malformed", f"not a readable message: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    except Exception as exc:  # noqa: BLE001  whatever a message is, it can only be refused
        raise Invalid("malformed", f"{type(exc).__name__}: {str(exc)[:200]}") from None
