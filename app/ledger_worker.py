"""Entry point of the coordinator's ledger worker, the consumer of the ``ledger`` queue (several
may share it, each under its own name: docs/operations.md, "Several coordinators"):

    celery -A app.ledger_worker worker            # add -B to run the settlement schedule too

Records on ``ledger`` are entered in batches straight from Redis (``app.ledger.intake``);
Celery's own task consumer takes only the coordinator's tasks (``coordinator`` queue:
settlement). It holds the database credentials; volunteers never do. It also keeps the broker
as the grid needs it and watches what it dispatched (``app.upkeep``).
"""

import sys

from celery import signals

import celeryconfig
from app import broker_acl, create_app
from app.ledger.intake import LedgerIntake
from app.upkeep import Upkeep

flask_app = create_app()
celery = flask_app.extensions["celery"]
celery.steps["worker"].add(LedgerIntake)  # batches straight from Redis
celery.steps["worker"].add(Upkeep)  # the broker's care; lost and stalled work
celery.conf.broker_transport_options = {
    **celeryconfig.broker_transport_options,
    **broker_acl.COORDINATOR_UNACKED,  # its tasks in flight out of the volunteers' reach
}


@signals.celeryd_after_setup.connect
def _only_the_coordinator_queue(sender, instance, **_) -> None:
    """The ledger queue is consumed in batches, never by Celery's task consumer as well."""
    if instance.app is not celery:
        return
    declared = instance.app.amqp.queues
    if set(declared.consume_from) == set(declared):  # started without -Q
        # Every queue stays declared (this worker sends pipeline steps on to the volunteers'
        # queues); its Celery consumer takes the coordinator's tasks only, as -Q would.
        declared.select([celeryconfig.COORDINATOR_QUEUE])
    queues = set(declared.consume_from)
    if queues != {celeryconfig.COORDINATOR_QUEUE}:
        print(
            f"ledger worker {sender}: start it without -Q (it consumes 'ledger' in batches and "
            f"'{celeryconfig.COORDINATOR_QUEUE}' for its tasks), not -Q {','.join(sorted(queues))}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(78)
