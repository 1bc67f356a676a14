"""A bare Celery app with a no-op task: the ceiling the grid's throughput is compared with.

Nothing of the grid here: Redis broker, Celery's defaults, no result backend. Each task
increments a Redis counter, which the producer watches to know when all were consumed.

    BENCH_BARE_BROKER=redis://… celery -A bench.bare worker -c 2
"""

from __future__ import annotations

import os

import redis
from celery import Celery

BROKER_ENV = "BENCH_BARE_BROKER"
QUEUE = "bare"
COUNTER_KEY = "bench:bare:done"
TASK_NAME = "bench.noop"

app = Celery("bench.bare", broker=os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/1"))
app.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_counter: redis.Redis | None = None


@app.task(name=TASK_NAME)
def noop() -> None:
    """Count one execution (one Redis round trip: the only work there is)."""
    global _counter
    if _counter is None:  # one connection per pool process, opened after the fork
        _counter = redis.Redis.from_url(app.conf.broker_url)
    _counter.incr(COUNTER_KEY)
