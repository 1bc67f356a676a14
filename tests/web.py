"""What the web pages' tests share: a browser of Flask's test client at an address of its own,
invitations through ``manage.py participants invite``, forms with their CSRF token."""

from __future__ import annotations

import re
import uuid

from tests.grid import manage

PASSWORD = "correct horse battery staple"


def address() -> str:
    """A client address of the test's own: sign-in attempts are counted per address."""
    number = uuid.uuid4().int
    return f"10.{number % 250}.{number // 250 % 250}.{number // 62500 % 250 + 1}"


def client(web_app):
    """A browser at an address of its own."""
    browser = web_app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address()
    return browser


def new_email() -> str:
    return f"member-{uuid.uuid4().hex[:10]}@koprogo.test"


def csrf(page) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert found, page.get_data(as_text=True)
    return found.group(1)


def invite(email: str, *options: str) -> str:
    """The path of the link ``manage.py participants invite`` prints."""
    done = manage("participants", "invite", email, *options)
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"https?://\S+/invite/[A-Za-z0-9_-]{40,}", link), done.stdout
    return "/invite/" + link.rsplit("/invite/", 1)[1]


def accept(browser, path: str, password: str = PASSWORD):
    form = browser.get(path)
    assert form.status_code == 200, form.get_data(as_text=True)
    return browser.post(path, data={"csrf_token": csrf(form), "password": password, "confirmation": password})


def signed_up(browser, *options: str) -> str:
    email = new_email()
    done = accept(browser, invite(email, *options))
    assert done.status_code == 303, done.get_data(as_text=True)
    return email


def sign_in(browser, email: str, password: str):
    form = browser.get("/sign-in")
    return browser.post("/sign-in", data={"csrf_token": csrf(form), "email": email, "password": password})
