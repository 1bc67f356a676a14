"""A streamed chat answer's text deltas, from the node that produces it to the client who asked
(docs/decisions/0018).

The node posts numbered, signed deltas (``workers.stream``) to ``/api/v1/work/<task>/delta``;
``append`` checks each as a progress report is checked (``app.progress``: the node's signature,
its own worker, an attempt the coordinator saw it start, a step not over), and more: the step is
a chat's, the numbers follow one another with no gap or repeat, the attempt is the one being
streamed, and the text of all the deltas stays under the answer's bound (``max_tokens`` ×
``STREAM_BYTES_PER_TOKEN``). Deltas are kept in a Redis list of the coordinator's own, with a
TTL; nodes have no access to it (app.broker_acl). ``read`` is the ``/v1/chat/completions``
stream's blocking read. What was streamed is a node's claim: the answer the client keeps is the
entered result (``app.api.openai_compat``).
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import redis

import celeryconfig
from app import broker_acl, progress
from app.ledger.verification import Refused
from workers import protocol

log = logging.getLogger(__name__)

KEY_PREFIX = "grid:stream:"
#: How long a task's deltas are kept: the stream reads them within seconds; a client that comes
#: back later reads the result.
TTL_SECONDS = 600
#: Seconds a Redis command may take beyond a blocking read's own wait.
REDIS_TIMEOUT_SECONDS = 2

# Atomically: the next number, the bound on the text, the attempt streamed; then the delta kept.
# KEYS: list, meta hash. ARGV: seq, attempt, bytes, bound, entry, ttl.
_APPEND = """
local expected = tonumber(redis.call('HGET', KEYS[2], 'next') or '0')
local attempt = redis.call('HGET', KEYS[2], 'attempt')
if attempt and attempt ~= ARGV[2] then return -3 end
if tonumber(ARGV[1]) ~= expected then return -1 end
local used = tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0') + tonumber(ARGV[3])
if used > tonumber(ARGV[4]) then return -2 end
redis.call('HSET', KEYS[2], 'next', expected + 1, 'attempt', ARGV[2], 'bytes', used)
redis.call('RPUSH', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return expected
"""


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return broker_acl.quick_client(REDIS_TIMEOUT_SECONDS)


def _keys(task_id: str) -> tuple[str, str]:
    return f"{KEY_PREFIX}{task_id}", f"{KEY_PREFIX}{task_id}:meta"


def bound(max_tokens: int) -> int:
    """The most bytes of text an answer of ``max_tokens`` tokens may be streamed as."""
    return max(1, int(max_tokens)) * celeryconfig.STREAM_BYTES_PER_TOKEN


def append(record: Any) -> int:
    """Keep a node's delta; its number, or ``Refused`` (not stored, like progress)."""
    try:
        parsed = protocol.parse("delta", record)
    except protocol.Invalid as invalid:
        raise Refused(invalid.reason, invalid.detail) from None
    step = progress.held_attempt(record, parsed, "chat")
    size = len(parsed.text.encode("utf-8"))
    entry = json.dumps(
        {"seq": parsed.seq, "text": parsed.text, "done": parsed.done, "attempt": parsed.attempt}
    )
    answer = _redis().eval(
        _APPEND,
        2,
        *_keys(step.task_id),
        parsed.seq,
        parsed.attempt,
        size,
        bound(step.job.params.get("max_tokens", celeryconfig.CHAT_DEFAULT_MAX_TOKENS)),
        entry,
        TTL_SECONDS,
    )
    if answer == -1:
        raise Refused("out_of_sequence", f"delta {parsed.seq} is not the next of task {step.task_id}")
    if answer == -2:
        raise Refused("oversized", f"the deltas of task {step.task_id} exceed the answer's bound")
    if answer == -3:
        raise Refused("bad_attempt", f"another attempt of task {step.task_id} is being streamed")
    return int(answer)


def read(task_id: str, start: int, wait_seconds: float) -> list[dict[str, Any]]:
    """The deltas of ``task_id`` from number ``start`` on; waits up to ``wait_seconds`` for one
    when there is none yet (polling the list: a blocking pop would take them from other readers)."""
    import time

    key = _keys(task_id)[0]
    deadline = time.monotonic() + wait_seconds
    while True:
        raw = _redis().lrange(key, start, -1)
        if raw or time.monotonic() >= deadline:
            return [json.loads(item) for item in raw]
        time.sleep(0.01)
