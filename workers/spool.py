"""Records kept on the node's disk while the broker is away, and sent once it is back.

A completion is a volunteer's paid work: it must not be lost because Redis restarted while the
task ran. ``workers.metering.send`` keeps a record it could not send here, one file each,
written whole (a temporary name, then renamed) so that a process killed while writing leaves
nothing half-read; a thread of the worker's main process (``workers.registration``) sends them
in the order they were kept once the broker answers again, and a record is deleted only once
sent. Records are signed and each carries its own identity, so the ledger enters a record sent
twice once (a copy is a ``replay``).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import celeryconfig

log = logging.getLogger(__name__)

SPOOL_DIR_ENV = "GRID_SPOOL_DIR"
#: How often the main process tries to send what is kept.
FLUSH_SECONDS = 5
#: The most records kept; beyond it heartbeats are dropped (they only say the node was alive),
#: never completions.
MAX_KEPT = 10_000
_KEEP_ALWAYS = ("completed", "register", "stopping")


def folder() -> Path:
    node = os.environ.get("GRID_NODE_ID", "") or "unenrolled"
    base = os.environ.get(SPOOL_DIR_ENV) or str(celeryconfig.DATA_DIR / "spool")
    return Path(base) / node


def _files(where: Path) -> list[Path]:
    try:
        return sorted(p for p in where.iterdir() if p.suffix == ".json")
    except FileNotFoundError:
        return []


def keep(kind: str, record: dict[str, Any]) -> bool:
    """Keep a record the broker would not take; False if it had to be dropped."""
    where = folder()
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    if kind not in _KEEP_ALWAYS and len(_files(where)) >= MAX_KEPT:
        log.error("the spool holds %d records: a %s record is dropped", MAX_KEPT, kind)
        return False
    name = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
    temporary = where / f".{name}.tmp"
    temporary.write_text(json.dumps({"kind": kind, "record": record}))
    os.replace(temporary, where / f"{name}.json")
    return True


def flush(send: Callable[[str, dict[str, Any]], None]) -> int:
    """Send what is kept, oldest first, until the broker refuses; returns how many were sent."""
    sent = 0
    for path in _files(folder()):
        try:
            kept = json.loads(path.read_text())
            kind, record = kept["kind"], kept["record"]
        except (OSError, ValueError, KeyError, TypeError):
            log.error("an unreadable record in the spool is set aside: %s", path)
            path.rename(path.with_suffix(".unreadable"))
            continue
        send(kind, record)  # raises while the broker is away: the rest waits for the next try
        path.unlink(missing_ok=True)
        sent += 1
    if sent:
        log.warning("sent %d records kept while the broker was away", sent)
    return sent
