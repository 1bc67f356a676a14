"""Streaming first-token latency through the grid's OpenAI-compatible API (``/v1/chat/completions``
with ``stream: true``) against raw llama-cpp-python on the same prompt (docs/decisions/0018).

Grid: a request with the ``openai`` package on a grid of its own (API, ledger worker, one llm
volunteer on the tiny model), from the call to the first chunk holding text: authentication,
the job recorded and dispatched, the broker, the node fetching its input, the model's first token,
the node's first delta posted and read back by the API. Raw: ``create_chat_completion(stream=True)``
in this process, from the call to the first chunk holding text. Medians of ``REPEATS`` after a
warm-up of each.

    python -m bench openai        (or python -m bench.openai_stream)
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from tests.grid import Grid

REPEATS = 10
#: A Redis database of its own, apart from the suite's grid and the validation bench's.
BROKER_DB = 3
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Summarise what the general assembly voted about the roof and the budget."},
]
MAX_TOKENS = 64


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def raw_first_token() -> list[float]:
    from llama_cpp import Llama

    model = Llama(
        model_path=os.environ["GRID_LLM_MODEL"],
        n_ctx=int(os.environ["GRID_LLM_CONTEXT"]),
        n_threads=1,
        n_threads_batch=1,
        verbose=False,
    )
    times = []
    for index in range(REPEATS + 1):
        model.reset()  # no prompt cache: the grid's node reads the prompt each time too
        began = time.perf_counter()
        chunks = model.create_chat_completion(
            messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0.0, stream=True
        )
        for chunk in chunks:
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                if index:
                    times.append(time.perf_counter() - began)
                break
        for _ in chunks:  # generation finished, as the grid's node does
            pass
    model.close()
    return times


def grid_first_token(base_url: str, token: str) -> list[float]:
    import openai

    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=token, max_retries=0, timeout=60)
    times = []
    for index in range(REPEATS + 1):
        began = time.perf_counter()
        stream = client.chat.completions.create(
            model="default", messages=MESSAGES, max_tokens=MAX_TOKENS, temperature=0.0, stream=True
        )
        first = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - began
        assert first is not None, "no text streamed"
        if index:
            times.append(first)
    return times


def run(log_dir: Path, token: str) -> list[str]:
    """Start a grid, measure, stop it; the lines for the table."""
    import redis

    env = dict(os.environ)
    env["GRID_BROKER_URL"] = env["GRID_BROKER_URL"].rsplit("/", 1)[0] + f"/{BROKER_DB}"
    broker = redis.Redis.from_url(env["GRID_BROKER_URL"])
    broker.flushdb()
    _log("8. OpenAI-compatible streaming: API, ledger worker, one llm volunteer")
    grid = Grid(env, log_dir)
    try:
        grid.ledger_worker()
        grid.worker("openai-llm-node", "llm")
        base_url = grid.api()
        through_grid = grid_first_token(base_url, token)
    except AssertionError:
        print(grid.logs(), file=sys.stderr)
        raise
    finally:
        grid.stop()
        broker.flushdb()
        broker.close()
    raw = raw_first_token()
    grid_ms, raw_ms = statistics.median(through_grid) * 1000, statistics.median(raw) * 1000
    return [
        f"openai streaming, first token (median of {REPEATS}, tiny model, {MAX_TOKENS} max tokens): "
        f"grid {grid_ms:.1f} ms (p90 {sorted(through_grid)[int(0.9 * REPEATS) - 1] * 1000:.1f}), "
        f"raw llama-cpp-python {raw_ms:.2f} ms, ratio {grid_ms / raw_ms:.0f}×"
    ]


if __name__ == "__main__":
    sys.argv[1:] = ["openai"]
    from bench.__main__ import main

    sys.exit(main())
