"""Checks of text inputs (summaries, translations), shared by the API at submission and by the
LLM worker before it works. Pure Python: no engine is loaded."""

from __future__ import annotations

import celeryconfig as limits
from workers.protocol import errors
from workers.protocol.errors import BadInput

#: Where a step's text sits in its result: what the next step works on, and what two nodes'
#: results of the step are compared by.
RESULT_TEXT = {"ocr": "text", "summarise": "summary", "translate": "translation", "fields": "answer"}

#: The invoice fields a model may be asked for (``fields`` step), and the longest value it may give.
MODEL_FIELDS = (
    "supplier_name",
    "supplier_vat",
    "invoice_number",
    "issue_date",
    "due_date",
    "total",
    "currency",
    "iban",
    "structured_communication",
)
MODEL_FIELD_MAX_CHARS = 80
#: The JSON schema the model's answer is held to (a llama.cpp grammar): an object of those
#: fields, each a string, none required (a field not printed is left out).
MODEL_FIELDS_SCHEMA = {
    "type": "object",
    "properties": {name: {"type": "string", "maxLength": MODEL_FIELD_MAX_CHARS} for name in MODEL_FIELDS},
    "additionalProperties": False,
}


def check_language(language: object, what: str = "language") -> str:
    """A summary or translation language: fr, en or nl."""
    if not isinstance(language, str) or language not in limits.TEXT_LANGUAGES:  # lists: unhashable
        raise BadInput(
            f"Unknown {what} {language!r}: choose from {', '.join(limits.TEXT_LANGUAGES)}.",
            code=errors.UNKNOWN_LANGUAGE,
        )
    return language


def check_text(text: object) -> str:
    """Text to summarise or translate: present, within the limit, encodable."""
    if not isinstance(text, str) or not text.strip():
        raise BadInput("There is no text to work on.", code=errors.EMPTY_TEXT)
    if len(text) > limits.MAX_TEXT_CHARS:
        raise BadInput(
            f"The text has {len(text)} characters; the limit is {limits.MAX_TEXT_CHARS}.",
            code=errors.TEXT_TOO_LONG,
        )
    try:  # a lone surrogate ("\ud800" in the JSON message) cannot reach the tokenizer
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadInput(
            f"Character {exc.start + 1} of the text is not valid Unicode (half of a UTF-16 "
            "surrogate pair): send the text as UTF-8.",
            code=errors.INVALID_PARAMETER,
        ) from None
    return text


def check_max_words(value: object) -> int:
    """A summary's length in words, given as a number or as its digits."""
    try:
        words = int(value)  # type: ignore[call-overload]  (anything a message may carry)
    except (TypeError, ValueError, OverflowError):
        words = -1
    if not 10 <= words <= limits.SUMMARY_MAX_WORDS:
        raise BadInput(
            f"max_words must be a whole number from 10 to {limits.SUMMARY_MAX_WORDS}.",
            code=errors.INVALID_PARAMETER,
        )
    return words
