"""What the coordinator and its volunteers share, and all the coordinator imports from ``workers``.

- ``records``: the schema of every record a volunteer sends (start, completion, register,
  heartbeat, stopping), checked strictly on both sides; re-exported here, so
  ``from workers import protocol; protocol.parse(kind, record)`` reads as the protocol itself.
- ``signing``: the HMAC signature of a record with its node's secret.
- ``errors``: the errors an execution ends with and their stable codes.
- ``documents``: recognising and measuring a document (``pdfinfo``, image headers), no rendering.
- ``texts``: checks of text inputs and their languages.

Pure checks, with pydantic, Pillow and pdf2image's ``pdfinfo`` wrapper at most: no Celery app,
no Flask, no engine (tests/test_install.py holds both sides to it).
"""

from workers.protocol.records import (
    BODIES,
    KIND_OF_TASK,
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    MAX_PROBE_BYTES,
    SCHEMAS,
    TASK_OF_KIND,
    VERSION,
    Completed,
    CompletedBody,
    Error,
    Heartbeat,
    HeartbeatBody,
    Invalid,
    Register,
    RegisterBody,
    Started,
    StartedBody,
    Stopping,
    StoppingBody,
    Units,
    body,
    depth,
    parse,
    parse_message,
)

__all__ = [
    "BODIES",
    "KIND_OF_TASK",
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "MAX_PROBE_BYTES",
    "SCHEMAS",
    "TASK_OF_KIND",
    "VERSION",
    "Completed",
    "CompletedBody",
    "Error",
    "Heartbeat",
    "HeartbeatBody",
    "Invalid",
    "Register",
    "RegisterBody",
    "Started",
    "StartedBody",
    "Stopping",
    "StoppingBody",
    "Units",
    "body",
    "depth",
    "parse",
    "parse_message",
]
