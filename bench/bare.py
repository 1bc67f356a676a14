"""Bare Celery apps with a no-op task: the ceilings the grid is compared with.

Nothing of the grid here: Redis broker, Celery's defaults.

- ``app``: no result backend; each task increments a Redis counter, which the producer watches
  to know when all were consumed (the ledger's grant rate against one worker's, bench/ledger.py).

      BENCH_BARE_BROKER=redis://… celery -A bench.bare worker -c 2

- ``results_app``: the Redis result backend (each task's result stored under
  ``celery-task-meta-<id>`` and published, as Celery does), the throughput goal's baseline
  (bench/throughput.py). Its producer sends by name from an app without a backend, so that a
  send does not subscribe to the task's result channel (what a producer waiting with
  ``AsyncResult.get`` pays, once per task); it sees each success by reading the result keys, as
  the grid's client sees its jobs succeed by asking the API.

      BENCH_BARE_BROKER=redis://… celery -A bench.bare:results_app worker -Q bare-results -c 2
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


RESULTS_QUEUE = "bare-results"
RESULTS_TASK_NAME = "bench.noop_stored"
#: Where the Redis result backend keeps a task's result.
RESULT_KEY = "celery-task-meta-{}"

results_app = Celery(
    "bench.bare.results", broker=app.conf.broker_url, backend=app.conf.broker_url, set_as_current=False
)
results_app.conf.update(
    task_ignore_result=False,
    task_default_queue=RESULTS_QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@results_app.task(name=RESULTS_TASK_NAME)
def noop_stored() -> None:
    """Nothing: its result (None, SUCCESS) is stored by the result backend."""
    return None
