"""The coordinator's Celery app: it sends volunteer tasks by name and runs the ledger tasks."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from flask import Flask

import celeryconfig


class CoordinatorCelery(Celery):
    """The coordinator sends tasks and never waits for their results: outcomes come back as
    signed records on the ledger queue. So a send never subscribes to a result.

    Celery's ``send_task`` does otherwise unless told (it does not consult
    ``task_ignore_result``): with the Redis result backend it first subscribes to the task's
    result channel, one more channel for each task the process ever sent, and while Redis is
    away that subscription retries for 20 s, then raises a RuntimeError ("the Celery
    application must be restarted") instead of the broker's OperationalError. Measured: a job
    submitted with Redis stopped took 19 s to fail; ignoring the result, 0.6 s.
    """

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        options.setdefault("ignore_result", True)
        return super().send_task(name, args, kwargs, **options)


def celery_init_app(app: Flask) -> Celery:
    """A Celery app whose tasks run inside this Flask app's context."""

    class FlaskTask(Task):
        def __call__(self, *args: object, **kwargs: object) -> object:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = CoordinatorCelery(
        app.name, task_cls=FlaskTask, include=["app.ledger.tasks", "app.webhook_delivery"]
    )
    celery.config_from_object(celeryconfig)
    celery.set_default()
    celery.flask_app = app  # for the ledger worker's batch consumer
    app.extensions["celery"] = celery
    return celery
