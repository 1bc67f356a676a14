"""The compute-hours ledger.

- ``intake``: the ledger worker takes the ``ledger`` queue from Redis in batches.
- ``batch``: a batch of records entered in one transaction, each handed to the module of its
  kind (``executions``; notices to ``app.registry``), committed once.
- ``context``: what a batch reads from the database up front (steps, entries, sightings, nodes).
- ``verification``: schema, signature, node and dispatch checks; refusals kept with the reason.
- ``values``: what a node wrote, coerced for the database.
- ``executions``: starts (the input fetch) and completions, and the grant of each execution.
- ``rules``: the pure grant and cost rules; ``periods`` and ``settlement``: closing a period
  and the rewards; ``tasks``: the coordinator's scheduled tasks.

Job and step states change in ``app.lifecycle`` only.
"""
