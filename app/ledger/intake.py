"""Batch intake of the ``ledger`` queue straight from Redis, for the ledger worker.

Taking records one Celery message at a time costs kombu a few Redis round trips each (fetch,
unacked bookkeeping, ack), and each execution sends two records (start and completion): the
ledger could then never keep up with one worker completing no-op tasks. On a Redis broker the
ledger worker instead moves up to ``BATCH`` messages at once, atomically, from the queue's list
to an in-flight list of its own, enters them in one transaction, and only then drops the
in-flight list. A worker that dies mid-batch finds its in-flight list when it starts again
(same worker name) and puts it back at the head of the queue: nothing is lost, and what was
already committed is refused as a replay, so nothing is granted twice. Several ledger workers
(one per coordinator, each its own name) share the queue batch by batch; a batch left by one
that never comes back is put back by another once its ``alive`` key has expired.

The messages are Celery's (kombu's Redis format, protocol 2), so volunteers send records as
any Celery task.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis
from celery import bootsteps

import celeryconfig
from app import broker_acl, registry
from app.errors import database_away
from app.ledger import batch
from workers import protocol

log = logging.getLogger(__name__)

#: Records taken at once by default (the setting ``LEDGER_BATCH``, app.config).
BATCH = 1000
#: A batch stops growing past this many bytes of messages (results can be large).
BATCH_BYTES = 32 * 1024 * 1024
#: A batch of nodes' notices only (heartbeats: nothing waits on them) waits up to this long for
#: more records, looking every ``NOTICE_LOOK_SECONDS``: a thousand nodes' heartbeats are then
#: entered several to a transaction instead of one each. Any other record taken ends the wait.
NOTICE_WAIT_SECONDS = 0.5
NOTICE_LOOK_SECONDS = 0.05
#: A ledger worker's in-flight list is its own while this key, refreshed as it runs, lives.
ALIVE_SECONDS = 60
#: How long an empty queue is waited on before the loop looks at its stop flag again.
WAIT_SECONDS = 1
IN_FLIGHT_PREFIX = "grid:ledger:in-flight:"
#: What an oversized message is replaced with as it is taken (its size follows): it is refused
#: without ever being read into the ledger worker.
OVERSIZED = b"\x00grid:oversized:"
ALIVE_PREFIX = "grid:ledger:alive:"

# KEYS: in-flight list, then the queue's lists. ARGV: how many, how many bytes at most, the
# largest message, the oversized marker. Moves the oldest messages to the in-flight list,
# oldest first, until either limit is met; a message over the largest size is replaced by the
# marker and its size, so no batch ever holds one.
_TAKE = """
local taken, size = {}, 0
for k = 2, #KEYS do
  while #taken < tonumber(ARGV[1]) and (#taken == 0 or size < tonumber(ARGV[2])) do
    local item = redis.call('RPOP', KEYS[k])
    if not item then break end
    if #item > tonumber(ARGV[3]) then item = ARGV[4] .. #item end
    redis.call('RPUSH', KEYS[1], item)
    taken[#taken + 1] = item
    size = size + #item
  end
end
return taken
"""
#: A running ledger worker looks this often for batches that ledger workers gone for good (their
#: ``alive`` key expired: another coordinator's, never restarted) left in flight.
SWEEP_SECONDS = 15
# KEYS: in-flight list, queue list[, alive key]. Puts what is in flight back at the head of the
# queue; with an alive key, only if it is gone (checked in the same atomic step).
_PUT_BACK = """
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local items = redis.call('LRANGE', KEYS[1], 0, -1)
for i = #items, 1, -1 do redis.call('RPUSH', KEYS[2], items[i]) end
redis.call('DEL', KEYS[1])
return #items
"""


def decode(raw: bytes) -> tuple[str, Any]:
    """(kind, record) of one message as stored in Redis, or (kind, ``protocol.Invalid``) for a
    message that is not a record: never an exception, whatever the bytes."""
    if raw.startswith(OVERSIZED):
        size = raw[len(OVERSIZED) :].decode("ascii", "replace")
        return "message", protocol.Invalid(
            "oversized", f"a message of {size} bytes, more than {protocol.MAX_MESSAGE_BYTES}"
        )
    try:
        return protocol.parse_message(raw)
    except protocol.Invalid as invalid:
        invalid.evidence = repr(raw[:500])
        return "message", invalid


def _notices_only(raw: list[bytes]) -> bool:
    """Whether these messages are all nodes' notices (register, heartbeat, stopping)."""
    return all(decode(item)[0] in registry.KINDS for item in raw)


class RedisIntake:
    """Takes batches off the ledger queue's Redis lists, parked in flight until committed."""

    def __init__(self, url: str, worker_name: str, queue: str = celeryconfig.LEDGER_QUEUE) -> None:
        self.redis = broker_acl.client(url)
        # kombu keeps priorities 3, 6, 9 in lists of their own; records are sent at the
        # default priority (the plain list), the others are read so nothing sits there forever.
        self.queue_keys = celeryconfig.queue_lists(queue)
        self.queue = queue
        self.in_flight = f"{IN_FLIGHT_PREFIX}{worker_name}"
        self.alive = f"{ALIVE_PREFIX}{worker_name}"
        self._take = self.redis.register_script(_TAKE)
        self._put_back = self.redis.register_script(_PUT_BACK)
        self._limits = (protocol.MAX_MESSAGE_BYTES, OVERSIZED)
        #: Whether the last ``take`` returned a batch left in flight (retried as it is).
        self.resumed = False

    def put_back(self, in_flight: str | None = None) -> int:
        """Return what this worker (or a dead one) had in flight to the head of the queue."""
        return int(self._put_back(keys=[in_flight or self.in_flight, self.queue]))

    def sweep(self) -> int:
        """Put back what ledger workers that are gone (under any name) left in flight. A worker
        whose ``alive`` key lives keeps its batch: the check and the move are one atomic step."""
        returned = 0
        for key in self.redis.scan_iter(match=f"{IN_FLIGHT_PREFIX}*"):
            name = key.decode()[len(IN_FLIGHT_PREFIX) :]
            if key.decode() != self.in_flight:
                alive = f"{ALIVE_PREFIX}{name}"
                returned += int(self._put_back(keys=[key.decode(), self.queue, alive]))
        return returned

    def take(self, count: int) -> list[bytes]:
        """Up to ``count`` of the oldest messages, waiting up to ``WAIT_SECONDS`` for the first.

        A batch still in flight (its commit failed and it could not be put back) comes first,
        as it is: it is never mixed with new messages nor dropped by ``done``.
        """
        self.redis.set(self.alive, "1", ex=ALIVE_SECONDS)
        pending = self.redis.lrange(self.in_flight, 0, -1)
        self.resumed = bool(pending)
        if pending:
            return pending
        taken = self._take(keys=[self.in_flight, *self.queue_keys], args=[count, BATCH_BYTES, *self._limits])
        if taken:
            return taken
        first = self.redis.blmove(self.queue, self.in_flight, WAIT_SECONDS, "RIGHT", "RIGHT")
        if first is None:
            return []
        if len(first) > protocol.MAX_MESSAGE_BYTES:  # BLMOVE cannot swap it for the marker
            first = OVERSIZED + str(len(first)).encode()
            self.redis.lset(self.in_flight, -1, first)
        more = self._take(
            keys=[self.in_flight, *self.queue_keys], args=[count - 1, BATCH_BYTES - len(first), *self._limits]
        )
        return [first, *more]

    def gather_notices(self, raw: list[bytes], count: int, stopping: threading.Event) -> list[bytes]:
        """``raw`` and what comes within ``NOTICE_WAIT_SECONDS`` while it holds nodes' notices
        only (``app.registry.KINDS``), up to ``count`` messages, taken into the same in-flight
        list; the first other record ends the wait. A batch ``take`` resumed is left as it is."""
        if self.resumed:
            return raw
        deadline = time.monotonic() + NOTICE_WAIT_SECONDS
        size = sum(len(item) for item in raw)
        notices = _notices_only(raw)
        while notices and len(raw) < count and size < BATCH_BYTES and time.monotonic() < deadline:
            if stopping.wait(NOTICE_LOOK_SECONDS):
                break
            more = self._take(
                keys=[self.in_flight, *self.queue_keys],
                args=[count - len(raw), BATCH_BYTES - size, *self._limits],
            )
            raw, size, notices = [*raw, *more], size + sum(len(item) for item in more), _notices_only(more)
        return raw

    def done(self) -> None:
        """The batch is committed: nothing is in flight any more."""
        self.redis.delete(self.in_flight)


class LedgerIntake(bootsteps.StartStopStep):
    """A thread of the ledger worker's main process that enters the ledger queue in batches."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.worker = worker
        self.flask_app = worker.app.flask_app
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, worker) -> None:
        self.intake = RedisIntake(worker.app.conf.broker_url, worker.hostname)
        self.batch = max(1, int(self.flask_app.config.get("LEDGER_BATCH", BATCH)))
        returned = self.intake.put_back() + self.intake.sweep()
        if returned:
            log.warning("put %d records left in flight by stopped ledger workers back on the queue", returned)
        self.thread = threading.Thread(target=self.run, name="ledger-intake", daemon=True)
        self.thread.start()
        log.info("ledger intake ready: batches of up to %d records from Redis", self.batch)

    def stop(self, worker) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(WAIT_SECONDS + 30)

    def run(self) -> None:
        backoff = 1.0
        swept = time.monotonic()
        while not self.stopping.is_set():
            try:
                if time.monotonic() - swept > SWEEP_SECONDS:  # another coordinator's, gone for good
                    swept = time.monotonic()
                    returned = self.intake.sweep()
                    if returned:
                        log.warning("put %d records left in flight by a gone ledger worker back", returned)
                raw = self.intake.take(self.batch)
                if not raw:
                    continue
                raw = self.intake.gather_notices(raw, self.batch, self.stopping)
                began = time.perf_counter()
                with self.flask_app.app_context():
                    batch.apply_safely([decode(item) for item in raw])
                self.intake.done()
                backoff = 1.0
                log.debug("ledger batch of %d entered in %.3f s", len(raw), time.perf_counter() - began)
            except Exception as exc:  # noqa: BLE001  a server is away (or a bug): keep the batch, wait
                if database_away(exc) or isinstance(exc, redis.RedisError):
                    log.error("ledger batch not entered, retrying in %.0f s: %s", backoff, exc)
                else:
                    log.exception("ledger batch not entered, retrying in %.0f s", backoff)
                # The batch stays in flight: the next take() returns it first, as it is.
                self.stopping.wait(backoff)
                backoff = min(60.0, backoff * 2)
