"""The web pages for members and operators, rendered on the server (Jinja2, app/templates/,
one stylesheet in app/static/), working without JavaScript and better with it; in French, Dutch
and English (app.web.i18n). See docs/participants.md."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, render_template
from flask_limiter import RateLimitExceeded
from flask_wtf.csrf import CSRFError

from app import accounts, broker_acl, nodes
from app.api.limits import seconds_to_wait
from app.extensions import csrf, limiter, login_manager
from app.web import dashboard as _dashboard  # noqa: F401  (routes on bp)
from app.web import i18n, layout
from app.web import jobs as _jobs  # noqa: F401  (routes on bp)
from app.web import operators as _operators  # noqa: F401  (routes on bp)
from app.web.account import bp

#: What the pages may load and run: their own scripts, styles and images (SVG charts are inline
#: markup, the enrolment's configuration a data: link); nothing else, and never inside a frame.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def register(app: Flask) -> None:
    """Sessions, CSRF protection, the sign-in limit and the pages."""
    if not app.config.get("SECRET_KEY"):
        # Sessions and CSRF tokens are signed with the coordinator's key, kept in var/ when none
        # is configured (app.nodes.secret_key); itsdangerous salts each use apart.
        with app.app_context():
            app.config["SECRET_KEY"] = nodes.secret_key().decode("utf-8")
    secure = app.config["COOKIE_SECURE"]
    if secure is None:
        secure = not (app.debug or app.testing)
    for cookie in ("SESSION_COOKIE", "REMEMBER_COOKIE"):
        app.config[f"{cookie}_SECURE"] = bool(secure)
        app.config[f"{cookie}_HTTPONLY"] = True
        app.config[f"{cookie}_SAMESITE"] = "Lax"
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=float(app.config["SESSION_HOURS"]))
    # The counts live in the broker's Redis (any URL form it takes, redis+socket:// included).
    # Without retries and within a second: while the broker is away, each process counts in
    # its own memory (checking now and then whether Redis is back) rather than refuse or slow
    # the requests that need only PostgreSQL.
    app.config["RATELIMIT_STORAGE_URI"] = "redis://"
    app.config["RATELIMIT_STORAGE_OPTIONS"] = {"connection_pool": broker_acl.quick_client(1).connection_pool}
    app.config["RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"] = True
    # Off: Flask-Limiter would write its Retry-After on every answer (a 503's included, its
    # own seconds replaced by the window's); the 429 handlers below and app.api.limits set it.
    app.config["RATELIMIT_HEADERS_ENABLED"] = False

    i18n.register(app)
    layout.register(app)
    login_manager.init_app(app)
    login_manager.login_view = "web.sign_in"
    login_manager.login_message = None  # the sign-in page says why by itself
    login_manager.user_loader(accounts.load)
    csrf.init_app(app)
    limiter.init_app(app)
    app.register_blueprint(bp)

    @app.after_request
    def guarded(response):
        # The pages run no inline script and load nothing from elsewhere: a policy that says so
        # keeps text a hostile volunteer wrote (a node's name, an error message) inert even if a
        # template ever failed to escape it, and no other site may frame the pages (clickjacking).
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.errorhandler(CSRFError)
    def csrf_refused(exc: CSRFError):
        # Only the pages' forms are checked: the JSON API is exempt (app.api.register).
        return render_template("refused.html", reason="csrf"), 400

    @app.errorhandler(RateLimitExceeded)
    def too_many(exc: RateLimitExceeded):
        page = render_template("refused.html", reason="rate_limited")
        return page, 429, {"Retry-After": str(seconds_to_wait())}
