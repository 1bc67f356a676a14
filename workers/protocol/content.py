"""What of a task's result is content (the document's text, a summary, a translation, invoice
fields) and what is metadata (pages, tokens, languages, the engine): the metadata alone is what
a worker's log line and Celery's task events show, and what a job keeps once its content is
erased (``app.gdpr``, docs/decisions/0016).

Kept by name (an allow-list), never by guessing: a result is written by a node, which may put
text under any name. A kept value is a number, a flag or a short word; anything longer goes.
"""

from __future__ import annotations

from typing import Any

#: Keys of a result that are metadata. Everything else (``text``, ``summary``, ``translation``,
#: ``fields``, ``answer``, whatever a node adds) is content.
METADATA_KEYS = frozenset(
    {
        "pages",
        "languages",
        "language",
        "kind",
        "characters",
        "page_readings",
        "engine",
        "tokens",
        "prompt_tokens",
        "completion_tokens",
        "llm_calls",
        "pieces",
        "pieces_read",
        "complete",
        "finish_reason",
        "dimensions",
    }
)
#: The longest string kept (a language list, an engine's name and version, a model file's name).
MAX_WORD = 64
#: How deep and how long the kept lists and objects may be (``page_readings``: one per page).
MAX_DEPTH = 3
MAX_ITEMS = 1000


def _scalar(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_WORD else None
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, list):
        return [_scalar(item, depth + 1) for item in value[:MAX_ITEMS]]
    if isinstance(value, dict):
        return {
            str(key)[:MAX_WORD]: _scalar(item, depth + 1)
            for key, item in list(value.items())[:MAX_ITEMS]
            if isinstance(key, str) and key not in ("text", "summary", "translation", "fields", "answer")
        }
    return None


def metadata(result: Any) -> dict[str, Any] | None:
    """The metadata of a result (None for anything but an object): no text of the work."""
    if not isinstance(result, dict):
        return None
    return {key: _scalar(value, 1) for key, value in result.items() if key in METADATA_KEYS}
