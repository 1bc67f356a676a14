"""The compute-hours ledger: pure rules (``rules``), the recorder that applies completion
records to the database (``recorder``), and the Celery tasks of the ``ledger`` queue (``tasks``)."""
