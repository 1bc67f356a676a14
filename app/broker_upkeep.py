"""The coordinator's care of the broker: what volunteers may no longer do for themselves.

A node's broker user (``app.broker_acl``) cannot read the messages in flight, load a script or
change a queue's routing, so the coordinator does each of these for the grid: the ledger
worker's upkeep thread (``app.ledger_worker.Upkeep``) every ``unacked_restore_interval``
seconds, and ``app.broker_acl`` when it creates a node's user:

- **routing**: the grid's queues are declared (their routing tables written as kombu writes
  them), and any other entry in those tables is removed and logged: only an old or a hostile
  worker can have put it there, to copy a queue's messages elsewhere;
- **scripts**: kombu's scripts (a consumer keeps its control queue's routing alive with them)
  are kept in Redis's script cache, where nodes may run them by hash; nodes may not load a
  script of their own, so none can run one that never ends and blocks Redis for everyone;
- **messages in flight**: what a dead volunteer left unacknowledged past the visibility
  timeout is put back on its queue (kombu's own restore, which a node no longer runs:
  ``workers.broker``). An entry a node wrote there is a claim like any other: it is put back
  only on a volunteer queue, never on the coordinator's or the ledger's.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import redis
from kombu import Connection
from kombu.transport import redis as kombu_redis

import celeryconfig

log = logging.getLogger(__name__)

#: kombu's scripts a consumer of an expiring queue runs (its control mailbox, event queues).
SCRIPTS = (kombu_redis.REFRESH_BINDING, kombu_redis.SWEEP_BINDINGS)
#: At most this many messages put back per round: a node that filled the hash with forged
#: entries costs each round a bounded time.
RESTORE_PER_ROUND = 1000


def _member(queue: str) -> str:
    """A direct exchange's routing entry for ``queue``, as kombu writes it (key, pattern, queue)."""
    sep = kombu_redis.Channel.sep
    return sep.join([queue, "", queue])


def prepare(admin: redis.Redis) -> dict[str, int]:
    """Declare the grid's queues and load kombu's scripts through the coordinator's own
    connection (``admin``, on the database the workers use). Returns what it changed."""
    missing = [
        script for script, found in zip(SCRIPTS, admin.script_exists(*_shas()), strict=True) if not found
    ]
    for script in missing:
        admin.script_load(script)
    foreign = 0
    for queue in celeryconfig.ALL_QUEUES:
        expected = _member(queue).encode()
        table = kombu_redis.Channel.keyprefix_queue % queue
        for member in admin.smembers(table):
            if member != expected:
                admin.srem(table, member)
                foreign += 1
                log.warning("removed a routing entry nobody declared from %s: %r", table, member[:200])
        admin.sadd(table, expected)
        admin.sadd(kombu_redis.Channel.keyprefix_binding_permanent % queue, expected)
    # Tables of expired queues, swept here as every consumer of one sweeps them: overdue ones
    # left for the nodes would meet tables their users may not delete (a refusal, logged).
    prefixes = [
        kombu_redis.Channel.keyprefix_queue % "",
        kombu_redis.Channel.keyprefix_binding_permanent % "",
    ]
    swept = admin.evalsha(_shas()[1], 1, kombu_redis.Channel.keyprefix_binding_deadlines, *prefixes, 100)
    return {"scripts_loaded": len(missing), "foreign_routes_removed": foreign, "tables_swept": int(swept)}


def _shas() -> list[str]:
    """The scripts' names in Redis's cache: the SHA1 of their text."""
    return [hashlib.sha1(script.encode()).hexdigest() for script in SCRIPTS]


class _RestoringChannel(kombu_redis.Channel):
    """kombu's channel for putting volunteers' messages back, onto volunteer queues only."""

    def _lookup(self, exchange: str, routing_key: str, default: Any = None) -> list[str]:
        queues = super()._lookup(exchange, routing_key, default)
        allowed = [q for q in queues if q in celeryconfig.VOLUNTEER_QUEUES]
        if len(allowed) != len(queues):
            log.warning(
                "a message in flight names %r (exchange %r): not a volunteer queue, dropped",
                routing_key,
                exchange,
            )
        return allowed


class RestoringTransport(kombu_redis.Transport):
    Channel = _RestoringChannel


def _restoring(url: str | None) -> Connection:
    return Connection(
        url or celeryconfig.broker_url,
        transport=RestoringTransport,
        transport_options=celeryconfig.broker_transport_options,
    )


def restore(url: str | None = None) -> None:
    """Put back what volunteers left unacknowledged past the visibility timeout."""
    with _restoring(url) as connection:
        connection.default_channel.qos.restore_visible(num=RESTORE_PER_ROUND, interval=1)


def restore_now(url: str | None, tag: str) -> None:
    """Put one message in flight back on its (volunteer) queue now, as ``restore`` does after
    the visibility timeout (its node is gone: app.watchdog)."""
    with _restoring(url) as connection:
        connection.default_channel.qos.restore_by_tag(tag)
