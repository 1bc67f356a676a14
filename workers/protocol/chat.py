"""Checks of chat and embeddings requests (the OpenAI-compatible API, docs/decisions/0018),
shared by the coordinator at submission and by the LLM worker before it works. Pure Python.

Each check raises ``BadInput`` with a stable code and, in ``param``, the request field at fault
(the API answers it in OpenAI's error shape).
"""

from __future__ import annotations

import math
from typing import Any

import celeryconfig as limits
from workers.protocol import errors
from workers.protocol.errors import BadInput

ROLES = ("system", "user", "assistant")


class ChatInvalid(BadInput):
    """A ``BadInput`` that names the request field at fault."""

    def __init__(
        self, message: str, param: str | None = None, *, code: str = errors.INVALID_PARAMETER
    ) -> None:
        super().__init__(message, code=code)
        self.param = param


def _encodable(text: str, param: str) -> None:
    try:  # a lone surrogate cannot reach the tokenizer
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ChatInvalid(f"{param} is not valid Unicode: send UTF-8.", param) from None


def check_messages(messages: Any) -> list[dict[str, str]]:
    """A list of {role: system|user|assistant, content: string}, within the limits."""
    if not isinstance(messages, list) or not messages:
        raise ChatInvalid("messages is a non-empty list of {role, content}.", "messages")
    if len(messages) > limits.CHAT_MAX_MESSAGES:
        raise ChatInvalid(f"At most {limits.CHAT_MAX_MESSAGES} messages.", "messages")
    clean, chars = [], 0
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ChatInvalid(f"{where} is an object {{role, content}}.", where)
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise ChatInvalid(f"{where}.role is one of {', '.join(ROLES)}.", f"{where}.role")
        if not isinstance(content, str):
            raise ChatInvalid(f"{where}.content is a string.", f"{where}.content")
        _encodable(content, f"{where}.content")
        chars += len(content)
        clean.append({"role": role, "content": content})
    if chars > limits.CHAT_MAX_CHARS:
        raise ChatInvalid(
            f"The messages hold {chars} characters; the limit is {limits.CHAT_MAX_CHARS}.",
            "messages",
            code=errors.CONTEXT_LENGTH_EXCEEDED,
        )
    if not any(m["content"].strip() for m in clean):
        raise ChatInvalid("The messages hold no text.", "messages", code=errors.EMPTY_TEXT)
    return clean


def check_max_tokens(value: Any) -> int:
    if value is None:
        return limits.CHAT_DEFAULT_MAX_TOKENS
    if type(value) is not int or not 1 <= value <= limits.CHAT_MAX_TOKENS:
        raise ChatInvalid(f"max_tokens is an integer from 1 to {limits.CHAT_MAX_TOKENS}.", "max_tokens")
    return value


def check_temperature(value: Any) -> float:
    if value is None:
        return 1.0
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= 2:
        raise ChatInvalid("temperature is a number from 0 to 2.", "temperature")
    return float(value)


def check_stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or len(stops) > limits.CHAT_MAX_STOP
        or not all(isinstance(s, str) and 0 < len(s) <= limits.CHAT_MAX_STOP_CHARS for s in stops)
    ):
        raise ChatInvalid(
            f"stop is a string or a list of at most {limits.CHAT_MAX_STOP} strings of 1 to "
            f"{limits.CHAT_MAX_STOP_CHARS} characters.",
            "stop",
        )
    for stop in stops:
        _encodable(stop, "stop")
    return stops


def check_embedding_inputs(value: Any) -> list[str]:
    """A string or a list of strings, within the limits."""
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not inputs:
        raise ChatInvalid("input is a string or a non-empty list of strings.", "input")
    if len(inputs) > limits.EMBEDDINGS_MAX_INPUTS:
        raise ChatInvalid(f"At most {limits.EMBEDDINGS_MAX_INPUTS} inputs.", "input")
    for index, text in enumerate(inputs):
        if not isinstance(text, str) or not text.strip():
            raise ChatInvalid(f"input[{index}] is a non-empty string.", "input", code=errors.EMPTY_TEXT)
        if len(text) > limits.EMBEDDINGS_MAX_CHARS:
            raise ChatInvalid(
                f"input[{index}] has {len(text)} characters; the limit is {limits.EMBEDDINGS_MAX_CHARS}.",
                "input",
                code=errors.CONTEXT_LENGTH_EXCEEDED,
            )
        _encodable(text, f"input[{index}]")
    return inputs
