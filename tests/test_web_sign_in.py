"""Members and operators sign in to the web pages: an operator's invitation, a password, a
session; a member's API tokens made and revoked on a page and used on the JSON API. The real app
against the session's PostgreSQL and Redis, through Flask's test client (HTML forms, no browser)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.web import PASSWORD
from tests.web import accept as _accept
from tests.web import address as _address
from tests.web import client as _client
from tests.web import csrf as _csrf
from tests.web import invite as _invite
from tests.web import new_email as _email
from tests.web import sign_in as _sign_in
from tests.web import signed_up as _signed_up


@pytest.fixture(scope="module")
def web_app():
    from app import create_app

    return create_app({"TESTING": True})


@pytest.fixture
def browser(web_app):
    return _client(web_app)


def _create_token(browser, name: str, scopes: tuple[str, ...] = ("jobs:read", "jobs:write")):
    page = browser.get("/account/tokens")
    return browser.post(
        "/account/tokens", data={"csrf_token": _csrf(page), "name": name, "scope": list(scopes)}
    )


def _new_token(page) -> str:
    found = re.search(r'id="new-token" type="text" readonly value="(kgg_[^"]+)"', page.get_data(as_text=True))
    assert found, page.get_data(as_text=True)
    return found.group(1)


def test_an_invited_member_sets_a_password_makes_a_token_that_works_on_the_api_and_revokes_it(
    web_app, browser
):
    email = _signed_up(browser)
    page = browser.get("/account/tokens")
    assert page.status_code == 200 and email in page.get_data(as_text=True)

    created = _create_token(browser, "my scanner")
    assert created.status_code == 201
    token = _new_token(created)
    api = web_app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/jobs", headers=bearer).status_code == 200
    # Shown once: the list names it by its prefix only.
    listed = browser.get("/account/tokens").get_data(as_text=True)
    assert "my scanner" in listed and token not in listed and token[:10] in listed

    from app.extensions import db
    from app.models import ApiToken

    with web_app.app_context():
        row = db.session.scalar(select(ApiToken).where(ApiToken.owner == email))
        assert row.scope_set == {"jobs:read", "jobs:write"}
    revoked = browser.post(
        f"/account/tokens/{row.id}/revoke", data={"csrf_token": _csrf(browser.get("/account/tokens"))}
    )
    assert revoked.status_code == 303
    answer = api.get("/api/v1/jobs", headers=bearer)
    assert answer.status_code == 401 and answer.get_json()["error"]["code"] == "invalid_token"
    assert "révoqué" in browser.get("/account/tokens").get_data(as_text=True)


def test_a_member_cannot_revoke_another_s_token_nor_give_a_token_the_admin_scope(
    web_app, browser, make_token
):
    _signed_up(browser)
    someone_else = make_token("someone-else@koprogo.test")
    from app.auth import hash_token
    from app.extensions import db
    from app.models import ApiToken

    with web_app.app_context():
        other = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(someone_else)))
    page = browser.get("/account/tokens")
    assert 'value="admin"' not in page.get_data(as_text=True)
    refused = browser.post(f"/account/tokens/{other.id}/revoke", data={"csrf_token": _csrf(page)})
    assert refused.status_code == 404
    assert (
        web_app.test_client()
        .get("/api/v1/jobs", headers={"Authorization": f"Bearer {someone_else}"})
        .status_code
        == 200
    )

    admin = _create_token(browser, "too much", ("admin",))
    assert admin.status_code == 400 and 'role="alert"' in admin.get_data(as_text=True)


def test_an_invited_operator_may_make_an_admin_token(web_app, browser):
    _signed_up(browser, "--operator")
    created = _create_token(browser, "treasury", ("admin",))
    assert created.status_code == 201
    token = _new_token(created)
    stats = web_app.test_client().get("/api/v1/nodes", headers={"Authorization": f"Bearer {token}"})
    assert stats.status_code == 200, stats.get_data(as_text=True)


def test_an_invitation_is_used_once(web_app, browser):
    path = _invite(_email())
    assert _accept(browser, path).status_code == 303
    again = _client(web_app)
    assert again.get(path).status_code == 404
    assert "déjà servi" in again.get(path).get_data(as_text=True)


def test_an_expired_invitation_is_refused(web_app, browser):
    from app import accounts
    from app.extensions import db
    from app.models import utcnow

    with web_app.app_context():
        invitation, token = accounts.invite(_email())
        invitation.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    page = browser.get(f"/invite/{token}")
    assert page.status_code == 404 and 'role="alert"' in page.get_data(as_text=True)
    assert browser.get("/invite/not-a-token").status_code == 404


def test_a_short_or_mistyped_password_is_refused_and_the_invitation_kept(browser):
    path = _invite(_email())
    form = browser.get(path)
    short = browser.post(path, data={"csrf_token": _csrf(form), "password": "short", "confirmation": "short"})
    assert short.status_code == 400 and "au moins 12 caractères" in short.get_data(as_text=True)
    differ = browser.post(
        path, data={"csrf_token": _csrf(form), "password": PASSWORD, "confirmation": PASSWORD + "!"}
    )
    assert differ.status_code == 400 and 'role="alert"' in differ.get_data(as_text=True)
    assert _accept(browser, path).status_code == 303


def test_a_wrong_password_and_an_unknown_email_get_the_same_message(web_app, browser):
    email = _signed_up(browser)
    signed_out = _client(web_app)
    wrong = _sign_in(signed_out, email, "not the password at all")
    unknown = _sign_in(signed_out, _email(), PASSWORD)
    message = "Adresse e-mail ou mot de passe incorrect."
    for answer in (wrong, unknown):
        assert answer.status_code == 401
        assert message in answer.get_data(as_text=True) and 'role="alert"' in answer.get_data(as_text=True)
    assert signed_out.get("/account/tokens").status_code == 302

    right = _sign_in(signed_out, email.upper(), PASSWORD)
    assert right.status_code == 303
    assert signed_out.get("/account/tokens").status_code == 200


def test_a_form_without_its_csrf_token_is_refused(browser):
    email = _signed_up(browser)
    answer = browser.post("/sign-in", data={"email": email, "password": PASSWORD})
    assert answer.status_code == 400 and 'role="alert"' in answer.get_data(as_text=True)
    assert browser.post("/account/tokens", data={"name": "x", "scope": "jobs:read"}).status_code == 400
    assert browser.post("/sign-out").status_code == 400
    assert browser.get("/account/tokens").status_code == 200  # still signed in


def test_the_sixth_sign_in_attempt_in_a_minute_from_one_address_is_refused(browser):
    answers = [_sign_in(browser, _email(), "wrong password!") for _ in range(6)]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    assert "Trop de tentatives" in answers[-1].get_data(as_text=True)


def test_a_forged_forwarded_address_does_not_escape_the_limit_unless_a_proxy_is_trusted():
    from app import create_app

    def attempts(app, forwarded: bool) -> list[int]:
        browser = _client(app)
        codes = []
        for _ in range(6):
            # Each attempt claims another client address: forged, unless a proxy sets it.
            headers = {"X-Forwarded-For": _address()} if forwarded else {}
            form = browser.get("/sign-in")
            codes.append(
                browser.post(
                    "/sign-in",
                    data={"csrf_token": _csrf(form), "email": _email(), "password": "wrong password!"},
                    headers=headers,
                ).status_code
            )
        return codes

    assert attempts(create_app({"TESTING": True}), forwarded=True) == [401] * 5 + [429]
    # Behind one trusted proxy, the address it forwards is the client's: each gets its own count.
    assert attempts(create_app({"TESTING": True, "TRUSTED_PROXIES": 1}), forwarded=True) == [401] * 6


def test_the_sixth_sign_in_attempt_in_a_minute_for_one_email_is_refused_from_any_address(web_app):
    email = _email()

    def attempt():
        return _sign_in(_client(web_app), email, "wrong password!")

    answers = [attempt() for _ in range(6)]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert int(answers[-1].headers["Retry-After"]) >= 1


def test_the_json_api_takes_bearer_tokens_without_a_csrf_token(web_app, make_token):
    api = web_app.test_client()
    bearer = {"Authorization": f"Bearer {make_token('programs@koprogo.test')}"}
    submitted = api.post(
        "/api/v1/jobs/summarise", headers=bearer, json={"text": "Le conseil a voté le budget."}
    )
    assert submitted.status_code == 202, submitted.get_data(as_text=True)
    cancelled = api.post(f"/api/v1/jobs/{submitted.get_json()['id']}/cancel", headers=bearer)
    assert cancelled.status_code == 200, cancelled.get_data(as_text=True)


def test_signing_out_ends_the_session_and_a_copy_of_its_cookie(web_app, browser):
    _signed_up(browser)
    cookie = browser.get_cookie("session")
    assert cookie is not None
    out = browser.post("/sign-out", data={"csrf_token": _csrf(browser.get("/account/tokens"))})
    assert out.status_code == 303
    assert browser.get("/account/tokens").status_code == 302

    thief = web_app.test_client()
    thief.set_cookie("session", cookie.value)
    assert thief.get("/account/tokens").status_code == 302


def test_session_cookies_are_http_only_same_site_lax_and_secure_outside_tests(browser, monkeypatch):
    from app import create_app

    path = _invite(_email())
    set_cookie = _accept(browser, path).headers.get("Set-Cookie", "")
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie

    production = create_app()
    assert production.config["SESSION_COOKIE_SECURE"] is True
    assert production.config["SESSION_COOKIE_HTTPONLY"] is True
    monkeypatch.setenv("GRID_COOKIE_SECURE", "false")
    assert create_app().config["SESSION_COOKIE_SECURE"] is False


@pytest.mark.parametrize(
    "target", ["/\t/evil.example/login", "/\n/evil.example", "//evil.example", "/\\evil"]
)
def test_signing_in_never_leads_to_another_site(web_app, browser, target):
    email = _signed_up(_client(web_app))
    form = browser.get("/sign-in", query_string={"next": target})
    assert 'name="next"' not in form.get_data(as_text=True)  # not even carried in the form
    done = browser.post(
        "/sign-in", data={"csrf_token": _csrf(form), "email": email, "password": PASSWORD, "next": target}
    )
    assert done.status_code == 303 and "evil" not in done.headers["Location"], done.headers["Location"]


def test_a_form_token_from_before_signing_in_is_worthless_after(web_app, browser):
    """Fixation: a CSRF token an attacker planted in a visitor's session does not survive sign-in."""
    email = _signed_up(_client(web_app))
    planted = _csrf(browser.get("/sign-in"))
    assert _sign_in(browser, email, PASSWORD).status_code == 303
    refused = browser.post(
        "/account/tokens", data={"csrf_token": planted, "name": "x", "scope": ["jobs:read"]}
    )
    assert refused.status_code == 400
    assert _create_token(browser, "after sign-in").status_code == 201


def test_signing_in_rightly_does_not_count_toward_the_limit(web_app, browser):
    email = _signed_up(_client(web_app))
    assert [_sign_in(browser, email, PASSWORD).status_code for _ in range(7)] == [303] * 7


def test_a_token_made_on_the_page_is_not_cached_and_the_page_keeps_the_api_s_cap(web_app):
    from app import create_app

    capped = create_app({"TESTING": True, "TOKENS_PER_OWNER": 2})
    browser = _client(capped)
    _signed_up(browser)
    made = [_create_token(browser, f"token {n}") for n in range(3)]
    assert [answer.status_code for answer in made] == [201, 201, 409]
    assert made[0].headers["Cache-Control"] == "no-store"
    assert "révoquez-en un" in made[2].get_data(as_text=True)


def test_pages_forbid_framing_inline_scripts_and_other_sites(browser):
    page = browser.get("/sign-in")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
