"""Coordinator settings: defaults here, overridden by ``GRID_*`` environment variables.

``GRID_DATABASE_URL`` (PostgreSQL in production), ``GRID_SECRET_KEY`` (node secrets derive from
it), ``GRID_REVENUE_SPLIT`` (a JSON object of share name to decimal string)… Broker and queue settings live in
``celeryconfig.py``, shared with the volunteers.
"""

from __future__ import annotations

import celeryconfig


class Defaults:
    DATABASE_URL = f"sqlite:///{celeryconfig.DATA_DIR / 'grid.db'}"
    #: How a job's cost is split (seed ADR-0001). Strings: money is never a float.
    REVENUE_SPLIT = {"cooperative": "0.80", "solidarity_fund": "0.20"}
    #: The coordinator's key; node secrets are derived from it. Unset: a key kept in var/.
    SECRET_KEY = None
    #: The largest LLM model file the cooperative runs: a node claiming a bigger one (for a
    #: higher reference cost per token) is capped as if it ran this one.
    LLM_MODEL_MAX_BYTES = 8 * 1024**3
    #: Uploads larger than this are refused with 413 before they are read.
    MAX_CONTENT_LENGTH = celeryconfig.MAX_DOCUMENT_BYTES + 1024 * 1024
    JOBS_PER_PAGE_MAX = 100
    JSON_SORT_KEYS = False
