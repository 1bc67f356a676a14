"""Volunteer side of the grid: Celery app (``workers.celery``, found by ``celery -A workers``),
tasks per capability, metering signals, engines, preflight checks.

It needs only the broker URL and its engines; it never holds database credentials and never
imports the coordinator (``app``).
"""
