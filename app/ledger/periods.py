"""Settlement periods: calendar months in UTC, named YYYY-MM."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import select

from app.extensions import db
from app.models import LedgerPeriod

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$", re.ASCII)  # not other scripts' digits


def parse(period: str) -> tuple[int, int]:
    match = _PERIOD.fullmatch(period or "")  # not match: "$" also matches before a final "\n"
    if not match or not 1 <= int(match[1]) <= 9998:  # bounds() needs the next month's year too
        raise ValueError(f"a period is written YYYY-MM, e.g. 2026-11, not {period!r}")
    return int(match[1]), int(match[2])


def of(moment: datetime) -> str:
    moment = moment.astimezone(UTC) if moment.tzinfo else moment
    return f"{moment.year:04d}-{moment.month:02d}"


def bounds(period: str) -> tuple[datetime, datetime]:
    """First instant of the period and first instant of the next one."""
    year, month = parse(period)
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def following(period: str) -> str:
    return of(bounds(period)[1])


def closed() -> set[str]:
    return set(db.session.scalars(select(LedgerPeriod.period).where(LedgerPeriod.closed_at.is_not(None))))


def open_period_for(moment: datetime, closed_periods: set[str]) -> str:
    """The period an entry received at ``moment`` counts in: its month, or the first open
    month after it when that one is already closed (a late entry)."""
    period = of(moment)
    while period in closed_periods:
        period = following(period)
    return period
