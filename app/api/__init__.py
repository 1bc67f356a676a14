"""The HTTP API, version 1: one blueprint per resource."""

from flask import Blueprint, Flask

from app.api import admin, catalog, jobs, ledger, limits, nodes, stats, tokens, work
from app.extensions import csrf


def register(app: Flask) -> None:
    api = Blueprint("api", __name__, url_prefix="/api/v1")
    api.register_blueprint(admin.bp)
    api.register_blueprint(catalog.bp)
    api.register_blueprint(jobs.bp)
    api.register_blueprint(ledger.bp)
    api.register_blueprint(nodes.bp)
    api.register_blueprint(stats.bp)
    api.register_blueprint(tokens.bp)
    api.register_blueprint(work.bp)
    limits.register(api, work.bp)  # per token and per address; the workers' routes apart
    app.register_blueprint(api)
    # Clients authenticate with bearer tokens, never cookies: no CSRF token to ask for. Flask-WTF
    # looks up the blueprint of the request's endpoint, a nested one ("api.jobs") included, so
    # each is exempt, not only their parent.
    for name, blueprint in app.blueprints.items():
        if name == api.name or name.startswith(f"{api.name}."):
            csrf.exempt(blueprint)
