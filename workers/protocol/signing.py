"""Signatures of what a node reports: HMAC-SHA256 with the node's own secret over a canonical
encoding of the record (JSON, keys sorted, no spaces, UTF-8, the signature itself left out).

Shared by the worker, which signs, and the coordinator, which verifies: pure Python.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

SIGNATURE_KEY = "signature"


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes that are signed: the same record always gives the same bytes."""
    unsigned = {key: value for key, value in record.items() if key != SIGNATURE_KEY}
    return json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def signature(record: dict[str, Any], secret: str) -> str:
    return hmac.new(secret.encode("utf-8"), canonical(record), hashlib.sha256).hexdigest()


def sign(record: dict[str, Any], secret: str) -> dict[str, Any]:
    """The record with its signature added."""
    return {**record, SIGNATURE_KEY: signature(record, secret)}


def verify(record: dict[str, Any], secret: str) -> bool:
    """True when the record carries a valid signature by ``secret``."""
    claimed = record.get(SIGNATURE_KEY)
    if not isinstance(claimed, str):
        return False
    try:
        expected = signature(record, secret)
    except (TypeError, ValueError):  # not JSON-encodable: nobody signed that
        return False
    return hmac.compare_digest(claimed, expected)
