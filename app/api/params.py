"""What a request brings, read so that nothing malformed gets further than a 4xx: its JSON
body (one reader for every route), the ids in its path, its query parameters.

Ids are checked before any lookup: an id that cannot name anything (not a UUID, a NUL byte,
an integer beyond PostgreSQL's) is "not found" without reaching the database, which would
refuse some of them with an error of its own.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import g, request

from app.errors import ApiError, BatchTooLarge, InvalidJson, InvalidParameter

#: PostgreSQL's ``integer``: the largest id an ``Integer`` primary key holds.
MAX_INTEGER_ID = 2**31 - 1


def parse_json(data: bytes | str) -> Any:
    """JSON text as Python values; ``ValueError`` for anything that is not JSON, including
    text that is not UTF-8 and nesting too deep for the parser (a RecursionError otherwise)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def body_at_most(limit: int) -> bytes | None:
    """The request body if it is at most ``limit`` bytes, else None: never more than
    ``limit + 1`` bytes are read, whatever the body announced (or did not: chunked)."""
    if (request.content_length or 0) > limit:
        return None
    chunks, size = [], 0
    while size <= limit:
        chunk = request.stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks) if size <= limit else None


def json_object() -> dict[str, Any]:
    """The request's JSON body, which must be an object: else 400 ``invalid_json``."""
    try:
        body = parse_json(request.get_data(cache=True))
    except ValueError:
        raise InvalidJson("The body is not valid JSON (or is nested too deeply).") from None
    if not isinstance(body, dict):
        raise InvalidJson("The JSON body must be an object.")
    return body


def json_array(max_bytes: int) -> list[Any]:
    """The request's JSON body, which must be a list (else 400 ``invalid_json``) of at most
    ``max_bytes`` bytes (else 413 ``batch_too_large``, read no further). Read once a request,
    by whoever asks first: the rate limiter counts a batch's jobs before its route reads them."""
    if "json_array" not in g:
        body = body_at_most(max_bytes)
        try:
            if body is None:
                raise BatchTooLarge(f"The body is over {max_bytes} bytes: send fewer jobs at once.")
            try:
                value = parse_json(body)
            except ValueError:
                raise InvalidJson("The body is not valid JSON (or is nested too deeply).") from None
            if not isinstance(value, list):
                raise InvalidJson("The JSON body must be a list of jobs.")
            g.json_array = value
        except ApiError as exc:
            g.json_array = exc
    if isinstance(g.json_array, ApiError):
        raise g.json_array
    return g.json_array


def fields() -> dict[str, Any]:
    """The request's fields: its JSON object if it is JSON, else its form fields."""
    return json_object() if request.is_json else request.form.to_dict()


def uuid_id(value: str) -> str | None:
    """An id in its stored form (a UUID), or None when ``value`` cannot be one."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def integer_id(value: int) -> int | None:
    """An integer id PostgreSQL can hold, or None."""
    return value if 0 < value <= MAX_INTEGER_ID else None


def query_int(name: str, default: int, low: int, high: int) -> int:
    """The query parameter ``name``: ASCII digits within ``low``–``high``, else 400."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 12 and low <= int(raw) <= high):
        raise InvalidParameter(f"{name} must be a whole number from {low} to {high}.")
    return int(raw)


def query_text(name: str, limit: int = 254) -> str | None:
    """The query parameter ``name`` as text a database can compare, or None when absent."""
    raw = request.args.get(name)
    if not raw:
        return None
    if len(raw) > limit or not raw.isprintable():
        raise InvalidParameter(f"{name} must be at most {limit} printable characters.")
    return raw
