"""Coordinator settings: defaults here, overridden by ``GRID_*`` environment variables.

``GRID_DATABASE_URL`` (PostgreSQL in production), ``GRID_RATES_EUR_PER_HOUR`` (a JSON object of
capability to decimal string), ``GRID_SECRET_KEY``… Broker and queue settings live in
``celeryconfig.py``, shared with the volunteers.
"""

from __future__ import annotations

from decimal import Decimal

import celeryconfig


class Defaults:
    DATABASE_URL = f"sqlite:///{celeryconfig.DATA_DIR / 'grid.db'}"
    #: € per granted compute hour, per capability. Strings: money is never a float.
    RATES_EUR_PER_HOUR = {"ocr": "0.60", "llm": "1.20"}
    #: Uploads larger than this are refused with 413 before they are read.
    MAX_CONTENT_LENGTH = celeryconfig.MAX_DOCUMENT_BYTES + 1024 * 1024
    JOBS_PER_PAGE_MAX = 100
    JSON_SORT_KEYS = False


def rates(config) -> dict[str, Decimal]:
    """Per-capability €/hour rates as Decimal (a value parsed from JSON as a float is re-read
    through its shortest decimal repr, which is the digits the operator wrote)."""
    return {cap: Decimal(str(value)) for cap, value in config["RATES_EUR_PER_HOUR"].items()}
