"""The volunteer's side of the broker: kombu's Redis transport, without reading others' messages.

kombu keeps every delivered, unacknowledged message in one hash that all consumers share
(``unacked``), and has every consumer sweep it for messages a dead worker left behind. A node
allowed to read that hash would see every task in flight, on every queue, and could race the
node the broker gave a task to. So a node's broker user may only *write* there
(``app.broker_acl``), and the sweep is the coordinator's (``app.broker_upkeep``). A node:

- never sweeps: ``restore_visible`` does nothing here;
- hands back a message it was given (a task it may not run now, prefetched messages at
  shutdown) from its own copy, in one transaction that pushes it back on its queue and drops it
  from the hash and its index: writes only, and nothing is lost if the node dies half-way.

Installed by ``workers.celery`` under kombu's own names for the Redis transport (``redis``,
``rediss``; ``redis+socket`` URLs resolve to ``redis``), so a worker configured with any broker
URL the grid accepts uses it.
"""

from __future__ import annotations

import logging

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)


class NodeQoS(kombu_redis.QoS):
    """Acknowledgements as kombu keeps them, without reading the shared ``unacked`` hash."""

    def restore_visible(self, *args, **kwargs) -> None:
        """The coordinator puts back what dead workers left (``app.broker_upkeep``)."""
        return None

    def restore_by_tag(self, tag, client=None, leftmost: bool = False) -> None:
        self.channel.give_back(tag, self._delivered.get(tag), client, leftmost)

    def restore_unacked(self, client=None) -> None:
        """Hand back what this worker held, at shutdown. Should the broker be gone (its
        connection closed under it), the messages stay in flight and the coordinator puts them
        back after the visibility timeout: never a reason for the worker to crash."""
        try:
            super().restore_unacked(client)
        except Exception as exc:  # noqa: BLE001  kombu fails on a closed connection in many ways
            log.warning("%d messages left for the coordinator to put back: %s", len(self._delivered), exc)
            self._delivered.clear()


class NodeChannel(kombu_redis.Channel):
    QoS = NodeQoS

    def give_back(self, tag, message, client=None, leftmost: bool = False) -> None:
        """Put a delivered message back on its queue from this node's own copy, and forget it
        in flight, in one transaction (a message the node no longer holds is only forgotten)."""
        with self.conn_or_acquire(client) as connection:
            with connection.pipeline() as pipe:  # MULTI … EXEC
                self.qos._remove_from_indices(tag, pipe)
                if message is not None:
                    delivery = message.delivery_info
                    self._do_restore_message(
                        message._raw, delivery["exchange"], delivery["routing_key"], pipe, leftmost
                    )
                pipe.execute()

    def _restore(self, message, leftmost: bool = False) -> None:
        self.give_back(message.delivery_tag, message, leftmost=leftmost)


class Transport(kombu_redis.Transport):
    Channel = NodeChannel


def install() -> None:
    """Make kombu's Redis transport names resolve to this one, in this process."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = f"{__name__}:Transport"
