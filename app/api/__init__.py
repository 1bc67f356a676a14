"""The HTTP API, version 1: one blueprint per resource."""

from flask import Blueprint, Flask

from app.api import catalog, jobs, ledger, nodes, stats, work


def register(app: Flask) -> None:
    api = Blueprint("api", __name__, url_prefix="/api/v1")
    api.register_blueprint(catalog.bp)
    api.register_blueprint(jobs.bp)
    api.register_blueprint(ledger.bp)
    api.register_blueprint(nodes.bp)
    api.register_blueprint(stats.bp)
    api.register_blueprint(work.bp)
    app.register_blueprint(api)
