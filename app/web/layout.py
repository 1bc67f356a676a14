"""What every page's frame shows: the navigation (only the pages that exist and that the person
may open), the language switch and the page's language."""

from __future__ import annotations

from flask import Flask, current_app, request, url_for
from flask_babel import get_locale, lazy_gettext
from flask_login import current_user

#: The navigation: (endpoint, label, who sees it). ``anonymous``: signed out only; ``member``:
#: any signed-in participant; ``operator``: operators only. An endpoint not registered (yet) is
#: left out.
NAVIGATION = (
    ("web.submit", lazy_gettext("Submit"), "member"),
    ("web.jobs", lazy_gettext("My jobs"), "member"),
    ("web.dashboard", lazy_gettext("My nodes and earnings"), "member"),
    ("web.operators", lazy_gettext("Operators' overview"), "operator"),
    ("web.tokens", lazy_gettext("API tokens"), "member"),
    ("web.sign_in", lazy_gettext("Sign in"), "anonymous"),
)


def navigation() -> list[dict[str, object]]:
    signed_in = current_user.is_authenticated
    operator = signed_in and bool(current_user.operator)
    links = []
    for endpoint, label, audience in NAVIGATION:
        if endpoint not in current_app.view_functions:
            continue
        if (audience == "anonymous") == signed_in or (audience == "operator" and not operator):
            continue
        href = url_for(endpoint)
        links.append({"href": href, "label": label, "current": request.path == href})
    return links


def register(app: Flask) -> None:
    @app.context_processor
    def frame():
        return {"navigation": navigation, "page_language": lambda: str(get_locale() or "fr")}
