"""The Celery app Flower runs with on the coordinator's host: ``celery -A app.flower flower``.

The coordinator's own app: it knows every queue of ``celeryconfig`` (Flower's broker page shows
their lengths) and imports no engine, so a coordinator installed from
``requirements/coordinator.txt`` alone serves Flower (``-A workers`` would need Tesseract's and
llama.cpp's Python packages).
"""

from app import create_app

celery = create_app().extensions["celery"]
