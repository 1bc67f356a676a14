"""``make screenshots``: a PNG of every web page (tests/browser/pages.py) in French and English, at
a desktop's width and a phone's, for the docs. Not kept in the repository.

    python -m tests.browser.screenshots [FOLDER]      (default: var/screenshots)

It runs the browser tests (tests/browser/) with their fixtures: the session's own Redis,
PostgreSQL and grid, a member and an operator signed in through invitations. Each page is
photographed whole before it is checked; the exit status is the tests'.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.browser.conftest import SCREENSHOTS_ENV
from tests.grid import ROOT


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else ROOT / "var" / "screenshots").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    os.environ[SCREENSHOTS_ENV] = str(folder)
    os.chdir(ROOT)
    # The 200 % zoom checks take no picture.
    status = pytest.main(["-q", "-p", "no:cacheprovider", "-k", "not zoom-200", "tests/browser"])
    shots = sorted(folder.glob("*.png"))
    print(f"{len(shots)} screenshots in {folder}")
    return int(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
