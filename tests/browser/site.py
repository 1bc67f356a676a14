"""The live web pages in headless Chromium: one browser (one profile) a role, signed in once.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs
them, scripts/system-packages.sh); Selenium drives them. A member and an operator are invited
(app.accounts) and sign in by accepting the invitation in their browser: no sign-in form is
posted, so the sign-in limit (5 a minute) is never reached, however many pages are checked.
The grid runs as in production, its session cookie ``Secure``: Chromium keeps it over plain
http://127.0.0.1, a loopback address being a secure context, so GRID_COOKIE_SECURE is left alone.
"""

from __future__ import annotations

import base64
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

ROLES = ("anonymous", "member", "operator")
PASSWORD = "a browser's long password"
#: Viewports (CSS pixels): a desktop; a phone; a 1280-pixel screen at 200 % zoom.
DESKTOP = (1280, 900)
PHONE = (375, 812)
ZOOM_200 = (640, 900)
DRIVER = "/usr/bin/chromedriver"


def _executable(name: str, fallback: str | None = None) -> str:
    found = shutil.which(name) or (fallback if fallback and Path(fallback).exists() else None)
    if found is None:
        raise AssertionError(
            f"{name} is not installed: the web pages' tests need Debian's chromium and chromium-driver "
            "(scripts/system-packages.sh test installs them; make test runs it)"
        )
    return found


def new_driver() -> WebDriver:
    """A headless Chromium of its own (a fresh profile: its own cookies)."""
    options = webdriver.ChromeOptions()
    options.binary_location = _executable("chromium", "/usr/lib/chromium/chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    driver_path = DRIVER if Path(DRIVER).exists() else _executable("chromedriver")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def with_language(path: str, lang: str | None) -> str:
    """``path`` in language ``lang``, by the pages' own switch (``?lang=``)."""
    if not lang:
        return path
    return f"{path}{'&' if '?' in path else '?'}lang={lang}"


def set_viewport(driver: WebDriver, size: tuple[int, int]) -> None:
    """The page laid out ``size`` CSS pixels wide and high (a phone's width as a phone's: the
    viewport meta applies)."""
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
    )


_OVERFLOW = """
const width = arguments[0];
const past = e => e.getBoundingClientRect().right > width + 0.5;
const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
  + (typeof e.className === 'string' && e.className.trim()
     ? '.' + e.className.trim().split(/\\s+/).join('.') : '');
const outermost = Array.from(document.body.querySelectorAll('*'))
  .filter(e => past(e) && (e.parentElement === document.body || !past(e.parentElement)));
return {
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  past: outermost.slice(0, 5).map(e => `${name(e)} (to ${Math.round(e.getBoundingClientRect().right)} px)`),
};
"""


def overflow(driver: WebDriver, width: int) -> dict:
    """How wide the page is laid out in a window ``width`` CSS pixels wide, and the elements that
    reach past its right edge (the outermost of each: its parent does not)."""
    return driver.execute_script(_OVERFLOW, width)


def screenshot(driver: WebDriver, target: Path) -> Path:
    """A PNG of the whole page (beyond the window's height)."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    content = metrics.get("cssContentSize") or metrics["contentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": content["width"], "height": content["height"], "scale": 1},
        },
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(base64.b64decode(shot["data"]))
    return target


class Site:
    """The pages at ``base_url``, each role in a browser of its own, opened when first needed.

    ``invite(email, operator)`` makes a one-time invitation and returns its link's path.
    """

    def __init__(self, base_url: str, invite: Callable[[str, bool], str]) -> None:
        self.base_url = base_url.rstrip("/")
        self._invite = invite
        self._drivers: dict[str, WebDriver] = {}
        #: Why a role's browser could not be had: said again at once to the tests after the first.
        self._failed: dict[str, str] = {}
        self.emails: dict[str, str] = {}

    def invitation(self, operator: bool = False, email: str | None = None) -> str:
        """A fresh invitation's path (``/invite/<token>``), for a new participant by default."""
        return self._invite(email or f"browser-{uuid.uuid4().hex[:10]}@koprogo.test", operator)

    def url(self, path: str) -> str:
        return self.base_url + path

    def browser(self, role: str) -> WebDriver:
        """The browser of ``role``: signed out, or signed in as a member or as an operator."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: one of {ROLES}")
        if role in self._failed:
            raise AssertionError(f"the {role}'s browser failed earlier in this session: {self._failed[role]}")
        if role not in self._drivers:
            driver = None
            try:
                driver = new_driver()
                if role != "anonymous":
                    self.emails[role] = self._sign_up(driver, operator=role == "operator")
            except Exception as exc:
                self._failed[role] = f"{type(exc).__name__}: {exc}".strip()
                if driver is not None:
                    driver.quit()
                raise
            self._drivers[role] = driver
        return self._drivers[role]

    def _sign_up(self, driver: WebDriver, operator: bool) -> str:
        email = f"{'operator' if operator else 'member'}-{uuid.uuid4().hex[:10]}@koprogo.test"
        path = self.invitation(operator, email)
        driver.get(self.url(path))
        accept_invitation(driver, PASSWORD, PASSWORD)
        # Signed in, the member lands on the pages' start (wherever it is): a page with a way out.
        WebDriverWait(driver, 15).until(
            lambda d: (
                not urlsplit(d.current_url).path.startswith("/invite/")
                and d.find_elements(By.CSS_SELECTOR, "form[action$='/sign-out']")
            ),
            f"accepting the invitation {path} did not sign {email} in",
        )
        return email

    def open(self, role: str, path: str, lang: str | None = None) -> WebDriver:
        driver = self.browser(role)
        driver.get(self.url(with_language(path, lang)))
        return driver

    def close(self) -> None:
        for driver in self._drivers.values():
            driver.quit()
        self._drivers.clear()


def accept_invitation(driver: WebDriver, password: str, confirmation: str) -> None:
    """Fill and send the invitation page's form (the page is open)."""
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "confirmation").send_keys(confirmation)
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
