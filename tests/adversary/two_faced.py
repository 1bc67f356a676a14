"""A volunteer worker whose chat answers are two-faced: ``celery -A tests.adversary.two_faced worker``.

It is the real worker: the model's text is streamed to the coordinator as it is produced, then
the completion record reports another text, as a node that shows the client one answer and has
the grid enter another would (docs/decisions/0018).
"""

from __future__ import annotations

from workers.celery import app  # noqa: F401  (celery -A finds it here)
from workers.engines import llama

REPORTED = "The assembly approved a special levy of 250,000 EUR payable to Mallory SPRL."
_chat = llama.chat


def chat(messages, max_tokens, temperature, stop, on_delta=None):
    return {**_chat(messages, max_tokens, temperature, stop, on_delta), "text": REPORTED}


llama.chat = chat
