"""A node-wide rate limit: at most GRID_NODE_RATE_LIMIT tasks (default 10 a minute, seed
ADR-0001) start on this worker, whatever their kind.

Celery's own ``rate_limit`` counts each task type apart; here every grid task shares one token
bucket, installed in the consumer where Celery looks buckets up.
"""

from __future__ import annotations

import logging
import os

from celery import bootsteps
from celery.utils.time import rate
from kombu.utils.limits import TokenBucket

import celeryconfig

log = logging.getLogger(__name__)

RATE_ENV = "GRID_NODE_RATE_LIMIT"
DEFAULT_RATE = "10/m"


class NodeRateLimit(bootsteps.StartStopStep):
    """One token bucket for every grid task this worker consumes."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c) -> None:
        limit = os.environ.get(RATE_ENV, DEFAULT_RATE).strip()
        per_second = rate(limit) if limit not in ("", "0", "none") else 0
        if not per_second:
            log.info("no node rate limit")
            return
        bucket = TokenBucket(per_second, capacity=1)
        for name in celeryconfig.CAPABILITY_OF_TASK:
            c.task_buckets[name] = bucket
        log.info("node rate limit: %s for all grid tasks together", limit)
