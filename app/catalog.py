"""The models the grid can serve: what the nodes registered about their GGUF model files
(``workers.probe``, ``workers.model_file``), grouped by file digest, with how many online nodes
serve each now (``GET /api/v1/models``, ``manage.py models``).

Every figure here is a node's claim. Each is checked for its type and bounds and dropped when
it fails them; a node whose model has no well-formed digest is left out (nothing could tell its
file from another). Nodes serving one digest may still disagree on its other facts: the value
most of them give is shown. Nothing a node registered can make the listing fail.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import load_only

import celeryconfig
from app import registry
from app.extensions import db
from app.models import Node, utcnow

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_QUANTISATION = re.compile(r"^[A-Z0-9_]{1,16}$")
_ARCHITECTURE = re.compile(r"^[a-z0-9_.-]{1,32}$")
#: Bounds on the numbers a node may claim about its model file.
MAX_BYTES = 2**50
MAX_PARAMETERS = 10**13
MAX_CONTEXT = 10**8
MAX_TEXT = 120
#: The facts shown for a model, besides its file name and digest.
FACTS = ("bytes", "parameters", "context_length", "quantisation", "architecture", "name")


def _count(value: Any, limit: int) -> int | None:
    return value if type(value) is int and 0 < value <= limit else None


def _text(value: Any, pattern: re.Pattern[str] | None = None) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()[:MAX_TEXT]
    if not value or not value.isprintable() or (pattern is not None and not pattern.fullmatch(value)):
        return None
    return value


def _file_name(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    base = re.split(r"[\\/]", text)[-1]  # a name, never a path on the node's disk
    return base if base not in ("", ".", "..") else None


def claim(probe: Any) -> dict[str, Any] | None:
    """The model a node registered, checked: None when it named no model or no well-formed
    digest; each other fact None when it is missing or out of bounds."""
    model = probe.get("model") if isinstance(probe, dict) else None
    if not isinstance(model, dict):
        return None
    digest = model.get("sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        return None
    return {
        "sha256": digest,
        "file_name": _file_name(model.get("file_name")) or _file_name(model.get("path")),
        "bytes": _count(model.get("bytes"), MAX_BYTES),
        "parameters": _count(model.get("parameters"), MAX_PARAMETERS),
        "context_length": _count(model.get("context_length"), MAX_CONTEXT),
        "quantisation": _text(model.get("quantisation"), _QUANTISATION),
        "architecture": _text(model.get("architecture"), _ARCHITECTURE),
        "name": _text(model.get("name")),
        "usable": model.get("exists") is True and model.get("fits_in_ram") is True,
    }


def serves(node: Node, usable: bool, llm_verdict: Any, now: datetime) -> bool:
    """Whether the node serves its model now: online, consuming the LLM queue, and its probe
    found the model usable and the queue servable (``llm_verdict``: its probe's verdict)."""
    if not usable or registry.state(node, now) != registry.ONLINE:
        return False
    if celeryconfig.LLM_QUEUE not in (node.queues or []):
        return False
    return isinstance(llm_verdict, dict) and llm_verdict.get("can_serve") is True


def _most_common(values: list[Any]) -> Any:
    """The value most nodes gave (ties: the smallest as text), ignoring missing ones."""
    counted = Counter(v for v in values if v is not None)
    if not counted:
        return None
    return min(counted.items(), key=lambda item: (-item[1], str(item[0])))[0]


def models(now: datetime | None = None) -> list[dict[str, Any]]:
    """Every model an approved, unrevoked node registered: available ones first."""
    now = now or utcnow()
    edge_max = int(current_app.config["EDGE_MODEL_MAX_BYTES"])
    # Only the parts of each probe that are read here, and only nodes whose probe names a model.
    model, verdicts = Node.probe["model"], Node.probe["queues"]
    rows = db.session.execute(
        select(Node, model, verdicts[celeryconfig.LLM_QUEUE])
        .options(load_only(*registry.STATE_COLUMNS, Node.queues))
        .where(
            Node.revoked_at.is_(None),
            Node.approved_at.is_not(None),
            func.json_typeof(model) == "object",
        )
    )
    claims: dict[str, list[dict[str, Any]]] = defaultdict(list)
    online: Counter[str] = Counter()
    for node, registered, llm_verdict in rows:
        found = claim({"model": registered})
        if found is None:
            continue
        claims[found["sha256"]].append(found)
        if serves(node, found["usable"], llm_verdict, now):
            online[found["sha256"]] += 1
    out = []
    for digest, found in claims.items():
        facts = {name: _most_common([c[name] for c in found]) for name in FACTS}
        file_name = _most_common([c["file_name"] for c in found]) or "model.gguf"
        size = facts["bytes"]
        out.append(
            {
                "id": f"{file_name}@{digest[:12]}",
                "file_name": file_name,
                "sha256": digest,
                **facts,
                "nodes": len(found),
                "nodes_online": online[digest],
                "available": online[digest] > 0,
                "edge_compatible": size is not None and size <= edge_max,
            }
        )
    out.sort(key=lambda m: (not m["available"], m["id"]))
    return out
