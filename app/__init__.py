"""The coordinator: Flask API, database, ledger. It sends work to volunteers by task name and
never imports their engines."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask


def create_app(config: dict[str, Any] | None = None) -> Flask:
    # Imported here: the settings read the environment, which a caller (the test suite, the
    # demo) may fill in after importing this package (app.servers).
    from app.config import Defaults

    app = Flask(__name__)
    app.config.from_object(Defaults)
    app.config.from_prefixed_env("GRID")
    if config:
        app.config.update(config)
    scheme, _, rest = app.config.get("SQLALCHEMY_DATABASE_URI", app.config["DATABASE_URL"]).partition("://")
    if scheme not in ("postgresql", "postgres", "postgresql+psycopg2"):
        # The ledger's guarantees (append-only entries, settled periods that never change, row
        # locks between the API and the ledger worker) are PostgreSQL's: docs/decisions/0008.
        raise ValueError(f"GRID_DATABASE_URL must be a PostgreSQL URL (postgresql://…), not {scheme}://")
    # A plain postgresql:// would pick SQLAlchemy's default driver (psycopg 3), not the one we pin.
    app.config["SQLALCHEMY_DATABASE_URI"] = f"postgresql+psycopg2://{rest}"
    # Batched UPDATEs (psycopg2's execute_batch): the ledger moves hundreds of steps at once.
    # A connection that cannot be made within DATABASE_CONNECT_TIMEOUT (a host that does not
    # answer) is a 503 database_unavailable, not a request left hanging (app.errors); a timeout
    # in the URL (?connect_timeout=) wins.
    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS",
        {
            "pool_pre_ping": True,
            "executemany_mode": "values_plus_batch",
            "connect_args": {}
            if "connect_timeout=" in rest
            else {"connect_timeout": int(app.config["DATABASE_CONNECT_TIMEOUT"])},
        },
    )
    logging.basicConfig(level=app.config.get("LOG_LEVEL", "WARNING"))

    from app import models  # noqa: F401  (tables known to Alembic)
    from app.api import register as register_api
    from app.celery_app import celery_init_app
    from app.errors import register_error_handlers, response_for
    from app.extensions import db, migrate
    from app.health import bp as health
    from app.request_body import BoundedBody

    db.init_app(app)
    migrate.init_app(
        app,
        db,
        directory=str(Path(__file__).resolve().parent.parent / "migrations"),
    )
    celery_init_app(app)
    register_error_handlers(app)
    register_api(app)
    from app.api import openai_compat

    openai_compat.register(app)  # /v1: the OpenAI-compatible API
    from app import openapi

    openapi.register(app)  # /api/v1/openapi.json and its page, /api/docs
    from app.web import register as register_web

    register_web(app)
    app.register_blueprint(health)
    app.wsgi_app = BoundedBody(app.wsgi_app, float(app.config["REQUEST_BODY_TIMEOUT"]))
    hops = int(app.config["TRUSTED_PROXIES"])
    if hops > 0:  # the client's address and scheme as the proxies in front saw them
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    if not app.config.get("TESTING_NO_METRICS"):
        from app import metrics

        metrics.init_app(app)  # request metrics, and the grid's figures on /metrics

    @app.after_request
    def commit_session(response):
        # The request boundary commits (a token's last use); views that create commit earlier.
        if response.status_code < 400:
            try:
                db.session.commit()
            except Exception as exc:  # noqa: BLE001  the database went away at the last moment
                return app.make_response(response_for(exc))
        return response

    from app.cli import register as register_cli

    register_cli(app)
    return app
