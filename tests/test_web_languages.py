"""The pages speak French by default, Dutch and English on request: the switch, the browser's
preference, and catalogues that translate every message the code and templates hold."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def web_app():
    from app import create_app

    return create_app({"TESTING": True})


def _lang(page) -> str:
    found = re.search(r'<html lang="([a-z]+)"', page.get_data(as_text=True))
    assert found, page.get_data(as_text=True)[:500]
    return found.group(1)


def test_french_by_default_and_when_the_browser_asks_for_a_language_not_offered(web_app):
    browser = web_app.test_client()
    page = browser.get("/sign-in")
    assert _lang(page) == "fr" and "Adresse e-mail" in page.get_data(as_text=True)
    page = browser.get("/sign-in", headers={"Accept-Language": "de-DE,de;q=0.9"})
    assert _lang(page) == "fr"


def test_the_browser_s_preference_among_the_three(web_app):
    page = web_app.test_client().get("/sign-in", headers={"Accept-Language": "nl-BE,nl;q=0.9,en;q=0.5"})
    assert _lang(page) == "nl" and "E-mailadres" in page.get_data(as_text=True)


def test_the_switch_is_kept_for_the_session_and_an_unknown_language_is_ignored(web_app):
    browser = web_app.test_client()
    page = browser.get("/sign-in?lang=en", headers={"Accept-Language": "fr"})
    assert _lang(page) == "en" and "Email address" in page.get_data(as_text=True)
    assert _lang(browser.get("/sign-in", headers={"Accept-Language": "fr"})) == "en"
    assert _lang(browser.get("/sign-in?lang=xx")) == "en"
    text = browser.get("/sign-in?lang=nl").get_data(as_text=True)
    # The switch links this page in each language, each named in its own language.
    for code, name in (("fr", "Français"), ("nl", "Nederlands"), ("en", "English")):
        assert f'href="/sign-in?lang={code}" lang="{code}" hreflang="{code}"' in text and name in text


def test_every_message_of_the_pages_is_translated_into_french_and_dutch(tmp_path):
    """``make translations`` refreshes the catalogues: a message added to a page without its
    French and Dutch translation fails here."""
    template = tmp_path / "messages.pot"
    done = subprocess.run(
        [
            Path(sys.executable).with_name("pybabel"),
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "lazy_gettext",
            "-o",
            template,
            "app",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    with template.open("rb") as source:
        wanted = {message.id for message in read_po(source) if message.id}
    assert len(wanted) > 40
    for language in ("fr", "nl"):
        with (ROOT / "app" / "translations" / language / "LC_MESSAGES" / "messages.po").open("rb") as source:
            catalogue = read_po(source, locale=language)
        translated = {
            message.id for message in catalogue if message.id and message.string and not message.fuzzy
        }
        missing = sorted(str(m) for m in wanted - translated)
        assert not missing, (
            f"{language}: {len(missing)} message(s) without a translation (make translations): {missing[:20]}"
        )
        # A translation keeps the placeholders of its message.
        for message in catalogue:
            if message.id and message.string:
                assert sorted(re.findall(r"%\(\w+\)s", str(message.id))) == sorted(
                    re.findall(r"%\(\w+\)s", str(message.string))
                ), (language, message.id, message.string)
