"""Entry point of the coordinator's ledger worker, the only consumer of the ``ledger`` queue:

    celery -A app.ledger_worker worker -Q ledger

It holds the database credentials; volunteers never do.
"""

from app import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
