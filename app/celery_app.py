"""The coordinator's Celery app: it sends volunteer tasks by name and runs the ledger tasks."""

from __future__ import annotations

from celery import Celery, Task
from flask import Flask

import celeryconfig


def celery_init_app(app: Flask) -> Celery:
    """A Celery app whose tasks run inside this Flask app's context."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask, include=["app.ledger.tasks"])
    celery.config_from_object(celeryconfig)
    celery.set_default()
    celery.flask_app = app  # for the ledger worker's batch consumer
    app.extensions["celery"] = celery
    return celery
