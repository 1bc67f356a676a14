"""Values a node wrote in a record, as the ledger stores them: ids, times, durations, numbers
and text, coerced without ever raising (a record's schema is checked first, but what is kept
as evidence of a refusal may be anything)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


def as_uuid(value: Any) -> str | None:
    """The value if it is a UUID as the coordinator writes them (task and node ids), else None."""
    if not isinstance(value, str) or len(value) != 36:
        return None
    try:
        return value if str(uuid.UUID(value)) == value else None
    except ValueError:
        return None


def aware(moment: datetime | None) -> datetime | None:
    """The moment with its time zone (the database gives UTC back without one)."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def as_time(value: Any) -> datetime | None:
    """An ISO 8601 time, or None."""
    try:
        return aware(datetime.fromisoformat(str(value)))
    except (TypeError, ValueError):
        return None


def as_ms(seconds: Any) -> int:
    """Seconds as whole milliseconds, 0 for anything not a finite number ≥ 0."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return 0
    return max(0, round(value * 1000)) if value == value and value != float("inf") else 0


def as_int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def as_text(value: Any, limit: int) -> str | None:
    """A value as text a database accepts (PostgreSQL refuses NUL characters)."""
    text = str(value).replace("\x00", "\\0")[:limit]
    return text or None
