"""The pages' languages (Flask-Babel): French, Dutch and English, French by default.

The pages are written with English message ids (``_("Submit a document")``); the catalogues in
``app/translations/<lang>/LC_MESSAGES/messages.po`` give French and Dutch (``make translations``
refreshes them from the code, docs/participants.md). A catalogue is compiled to its ``.mo`` when
the app starts if the ``.po`` is newer, so that no deployment step can be forgotten.

The language is, in order: ``?lang=xx`` on any page (then kept in the session), the one kept in
the session, the browser's ``Accept-Language`` among the three, French.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlencode

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Flask, current_app, request, session
from flask_babel import Babel

log = logging.getLogger(__name__)

TRANSLATIONS = Path(__file__).resolve().parent.parent / "translations"
#: Each language's own name, as the switch shows it.
NAMES = {"fr": "Français", "nl": "Nederlands", "en": "English"}

babel = Babel()


def languages() -> tuple[str, ...]:
    return tuple(current_app.config["LANGUAGES"])


def select_locale() -> str:
    offered = languages()
    asked = request.args.get("lang", "")
    if asked in offered:
        session["lang"] = asked
        return asked
    kept = session.get("lang")
    if kept in offered:
        return kept
    return request.accept_languages.best_match(offered) or offered[0]


def switch_links() -> list[dict[str, str]]:
    """The language switch: this page in each other language (``?lang=``, other arguments kept)."""
    current = select_locale()
    links = []
    for code in languages():
        args = {key: value for key, value in request.args.items(multi=True) if key != "lang"}
        args["lang"] = code
        links.append(
            {
                "code": code,
                "name": NAMES.get(code, code),
                "href": f"{request.path}?{urlencode(args)}",
                "current": code == current,
            }
        )
    return links


def compile_catalogues(directory: Path = TRANSLATIONS) -> list[Path]:
    """Compiles each ``messages.po`` whose ``.mo`` is missing or older; returns those compiled."""
    compiled = []
    for po in sorted(directory.glob("*/LC_MESSAGES/messages.po")):
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        try:
            with po.open("rb") as source:
                catalogue = read_po(source, locale=po.parent.parent.name)
            partial = mo.with_name(f"{mo.name}.{os.getpid()}.tmp")  # several API processes start at once
            with partial.open("wb") as target:
                write_mo(target, catalogue)
            partial.replace(mo)
            compiled.append(mo)
        except OSError as exc:  # a read-only installation: the .mo shipped with it is used
            log.warning("could not compile %s: %s", po, exc)
    return compiled


def register(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", app.config["LANGUAGES"][0])
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(TRANSLATIONS)
    compile_catalogues()
    babel.init_app(app, locale_selector=select_locale)

    @app.context_processor
    def language_switch():
        return {"language_links": switch_links}
