"""Signing in and out, invitations, and a member's own API tokens."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from app import accounts
from app.auth import SCOPES, create_token, expired, make_room_for_token, revoke
from app.errors import ApiError
from app.extensions import db, limiter
from app.models import ApiToken, utcnow

bp = Blueprint("web", __name__)

#: What a token made on the page may do; ``admin`` for operators only.
MEMBER_SCOPES = tuple(scope for scope in SCOPES if scope != "admin")
NAME_MAX_CHARS = 120


def _sign_in_limit() -> str:
    return current_app.config["SIGN_IN_LIMIT"]


def _failed(response) -> bool:
    """Only attempts that fail count: members signing in rightly never lock others out."""
    return response.status_code == 401


def _email_key() -> str:
    return "email:" + request.form.get("email", "").strip().lower()


def _local(target: str | None) -> str | None:
    """A path on this site to go back to after signing in, never another site's address: no
    ``//`` or ``\\`` start, and no control character or space anywhere (browsers drop tabs and
    line breaks from an address, so ``/\t/evil.example`` would become ``//evil.example``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(character) < 0x21 or ord(character) == 0x7F for character in target):
        return None
    return target


def landing() -> str:
    """Where a signed-in participant starts: the submission page when it exists."""
    for endpoint in ("web.submit", "web.dashboard", "web.tokens"):
        if endpoint in current_app.view_functions:
            return url_for(endpoint)
    return url_for("web.tokens")


@bp.get("/")
def home():
    if current_user.is_authenticated:
        return redirect(landing(), 303)
    return redirect(url_for("web.sign_in"), 303)


def _start_session(member) -> None:
    """A new session for ``member``: nothing from before signing in is kept but the language
    (a CSRF token planted before it included), then signed in."""
    language = session.get("lang")
    session.clear()
    if language:
        session["lang"] = language
    login_user(member)
    session.permanent = True  # lasts GRID_SESSION_HOURS, not until the browser closes


@bp.route("/sign-in", methods=["GET", "POST"])
@limiter.limit(_sign_in_limit, methods=["POST"], deduct_when=_failed)
@limiter.limit(_sign_in_limit, methods=["POST"], key_func=_email_key, deduct_when=_failed)
def sign_in():
    """The sign-in form; a wrong email or password gets one message, whichever was wrong."""
    if request.method == "GET":
        return render_template("sign_in.html", email="", next_page=_local(request.args.get("next")))
    email = request.form.get("email", "")
    next_page = _local(request.form.get("next"))
    member = accounts.authenticate(email, request.form.get("password", ""))
    if member is None:
        return render_template(
            "sign_in.html", email=email, next_page=next_page, error="invalid_credentials"
        ), 401
    _start_session(member)
    return redirect(next_page or landing(), 303)


@bp.post("/sign-out")
def sign_out():
    """Ends this session and every other of the member's (a copied cookie included)."""
    if current_user.is_authenticated:
        accounts.end_sessions(current_user)
        db.session.commit()
    logout_user()
    return redirect(url_for("web.sign_in"), 303)


@bp.route("/invite/<token>", methods=["GET", "POST"])
def invite(token: str):
    """An invited participant sets a password, then is signed in."""
    invitation = accounts.open_invitation(token, lock=request.method == "POST")
    if invitation is None:
        return render_template("refused.html", reason="invitation"), 404
    if request.method == "GET":
        return render_template("invite.html", email=invitation.participant.email)
    password = request.form.get("password", "")
    problem = accounts.password_problem(password, request.form.get("confirmation", ""))
    if problem is not None:
        return render_template("invite.html", email=invitation.participant.email, error=problem), 400
    member = accounts.accept(invitation, password)
    db.session.commit()
    _start_session(member)
    return redirect(landing(), 303)


def _scopes_offered() -> tuple[str, ...]:
    return SCOPES if current_user.operator else MEMBER_SCOPES


def _tokens_page(status: int = 200, **context):
    rows = db.session.scalars(
        select(ApiToken).where(ApiToken.owner == current_user.email).order_by(ApiToken.id.desc())
    ).all()
    return (
        render_template("tokens.html", tokens=rows, scopes=_scopes_offered(), expired=expired, **context),
        status,
    )


def _expiry(raw: str) -> datetime | None | bool:
    """The expiry asked for on the form (empty: none), or False when it is not a whole number
    of days within TOKEN_MAX_DAYS."""
    raw = raw.strip()
    if not raw:
        return None
    longest = int(current_app.config["TOKEN_MAX_DAYS"])
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6 and 1 <= int(raw) <= longest):
        return False
    return utcnow() + timedelta(days=int(raw))


@bp.get("/account/tokens")
@login_required
def tokens():
    return _tokens_page()


@bp.post("/account/tokens")
@login_required
def create():
    """A new token of the member's, shown once on the page that answers."""
    name = request.form.get("name", "").strip()
    scopes = request.form.getlist("scope")
    if not name or len(name) > NAME_MAX_CHARS:
        return _tokens_page(400, error="token_name")
    if not scopes or not set(scopes) <= set(_scopes_offered()):
        return _tokens_page(400, error="token_scopes")
    expires_at = _expiry(request.form.get("expires_in_days", ""))
    if expires_at is False:
        return _tokens_page(400, error="token_expiry")
    try:
        make_room_for_token(current_user.email)
    except ApiError as exc:
        db.session.rollback()
        return _tokens_page(exc.status, error=exc.code)
    row, token = create_token(name, current_user.email, scopes, expires_at=expires_at)
    db.session.commit()
    page, status = _tokens_page(201, created=row, token=token)
    # The token is on this page once: no cache keeps it.
    return page, status, {"Cache-Control": "no-store"}


@bp.post("/account/tokens/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int):
    row = db.session.get(ApiToken, token_id)
    if row is None or row.owner != current_user.email:
        return render_template("refused.html", reason="token"), 404
    revoke(row)
    db.session.commit()
    return redirect(url_for("web.tokens"), 303)
