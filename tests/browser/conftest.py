"""The browser tests' fixtures: the session's live grid (its API under gunicorn, as in production)
seen through headless Chromium, one browser a role (tests/browser/site.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import report
from tests.browser.site import Site

#: Where ``make screenshots`` (python -m tests.browser.screenshots) has the tests keep a PNG of each page.
SCREENSHOTS_ENV = "GRID_SCREENSHOTS_DIR"


@pytest.fixture(scope="session")
def site(grid, flask_app) -> Iterator[Site]:
    """The pages as a signed-out visitor, a member and an operator see them."""

    def invite(email: str, operator: bool) -> str:
        # What ``manage.py participants invite`` does (app.participants_cli), without a process.
        from app import accounts
        from app.extensions import db

        with flask_app.app_context():
            _, token = accounts.invite(email, operator=operator)
            db.session.commit()
        return f"/invite/{token}"

    running = Site(grid.api_url, invite)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="session")
def screenshots() -> Path | None:
    """The folder the pages' screenshots go to, when asked for (``make screenshots``); else None."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    return Path(folder) if folder else None


def pytest_terminal_summary(terminalreporter) -> None:
    """The pages' axe outcome and server times (tests/browser/report.py), when pages were checked."""
    for line in report.lines():
        terminalreporter.write_line(line)
