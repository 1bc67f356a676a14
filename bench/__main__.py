"""``python -m bench [grid] [ledger] [inputs] [validation] [openai]`` (``make bench``: the first three;
``grid`` includes ``validation``): servers and environment first, then the suite.

``celeryconfig`` and the coordinator read their settings from the environment when they are
imported, so this module starts throwaway Redis and PostgreSQL servers and fills ``os.environ``
before anything of the project is imported; ``bench.suite`` is imported only then.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

#: The tiny model's context window, as in the test suite.
LLM_CONTEXT = 512


def main() -> int:
    from app.servers import PostgresServer, RedisServer

    workdir = Path(tempfile.mkdtemp(prefix="grid-bench-"))
    os.chmod(workdir, 0o755)
    (workdir / "logs").mkdir()
    try:
        print("starting throwaway Redis and PostgreSQL…", file=sys.stderr, flush=True)
        with RedisServer() as redis_server, PostgresServer() as postgres:
            model = workdir / "tiny.gguf"
            os.environ.update(
                {
                    "GRID_BROKER_URL": redis_server.url,
                    "GRID_DATABASE_URL": postgres.create_database("grid_bench"),
                    "GRID_DATA_DIR": str(workdir / "var"),
                    "GRID_LLM_MODEL": str(model),
                    "GRID_LLM_CONTEXT": str(LLM_CONTEXT),
                    "GRID_LLM_THREADS": "1",
                    "GRID_SECRET_KEY": "bench-coordinator-key",
                    "OMP_THREAD_LIMIT": "1",
                    # The node rate limit (10 tasks a minute by default) is not what is measured;
                    # the API's limits stay checked on every request, raised for the bench's
                    # clients (the inputs part alone submits 100 jobs in seconds).
                    "GRID_NODE_RATE_LIMIT": "0",
                    **{
                        f"GRID_API_{name}_LIMIT": "1000000 per minute"
                        for name in ("SUBMIT", "READ", "ADDRESS", "AUTH_FAILURE", "WORK")
                    },
                    # The grid's own cost against raw engines and bare Celery is measured with
                    # one node per capability, which no other node can check; what checking
                    # costs is measured apart (bench/validation.py, on two members' nodes).
                    "GRID_VALIDATION": "false",
                    "PYTHONUNBUFFERED": "1",
                    # The bare Celery app gets a Redis database of its own.
                    "BENCH_BARE_BROKER": redis_server.url.rsplit("/", 1)[0] + "/1",
                }
            )
            from workers.tinymodel import build_tiny_model

            build_tiny_model(model, context_length=LLM_CONTEXT)

            from bench import suite

            quick = "--quick" in sys.argv[1:]
            parts = tuple(a for a in sys.argv[1:] if a != "--quick") or suite.DEFAULT_PARTS
            return suite.run(workdir, parts, quick=quick)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True) if not os.environ.get("BENCH_KEEP") else print(workdir)


if __name__ == "__main__":
    sys.exit(main())
