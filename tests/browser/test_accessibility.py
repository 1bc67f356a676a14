"""Every web page (tests/browser/pages.py), signed out, as a member and as an operator, in French
and English, in headless Chromium against the live grid: no violation of the WCAG 2.1 A and AA
rules axe-core checks; its language said on ``<html lang>``; no horizontal scrolling on a phone
(375 CSS pixels) nor at 200 % zoom (a 1280-pixel window at 200 %: 640 CSS pixels)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By

from tests.browser import axe, report
from tests.browser.pages import LANGUAGES, PAGES, Page
from tests.browser.site import DESKTOP, PHONE, ZOOM_200, overflow, screenshot, set_viewport, with_language

DUPLICATE_IDS = """
const seen = {};
for (const element of document.querySelectorAll('[id]')) seen[element.id] = (seen[element.id] || 0) + 1;
return Object.keys(seen).filter(id => seen[id] > 1);
"""

CASES = [pytest.param(page, lang, id=f"{page.name}-{lang}") for page in PAGES for lang in LANGUAGES]


def _open(site, page: Page, lang: str, size: tuple[int, int]):
    driver = site.browser(page.role)
    set_viewport(driver, size)
    path = page.path_on(site)
    driver.get(site.url(with_language(path, lang)))
    if page.act is None:
        # Not sent elsewhere (to the sign-in page, for a session that was not kept).
        assert urlsplit(driver.current_url).path == urlsplit(path).path, driver.current_url
    else:
        page.act(driver, site)
    return driver


@pytest.mark.parametrize(("page", "lang"), CASES)
def test_the_page_has_no_wcag_2_1_a_or_aa_violation_and_says_its_language(site, screenshots, page, lang):
    driver = _open(site, page, lang, DESKTOP)
    if screenshots is not None:
        screenshot(driver, screenshots / f"{page.name}-{lang}-desktop.png")

    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang
    # Every id once (WCAG 2.1's 4.1.1; axe only leaves a repeated id a label points at to review).
    repeated = driver.execute_script(DUPLICATE_IDS)
    assert not repeated, f"{page.name} ({lang}): ids used more than once: {repeated}"
    outcome = axe.assert_accessible(driver, f"{page.name} ({lang}, as {page.role})")
    report.record(driver, page.name, lang, page.role, outcome)


@pytest.mark.parametrize("size", [PHONE, ZOOM_200], ids=["phone", "zoom-200"])
@pytest.mark.parametrize(("page", "lang"), CASES)
def test_the_page_fits_a_phone_and_200_percent_zoom_without_scrolling_sideways(
    site, screenshots, page, lang, size
):
    driver = _open(site, page, lang, size)
    if screenshots is not None and size == PHONE:
        screenshot(driver, screenshots / f"{page.name}-{lang}-phone.png")

    measured = overflow(driver, size[0])
    # A phone lays out a page wider than itself at that width and shows it zoomed out: the window
    # is as wide as asked only when nothing reaches past its edge (and the viewport meta is there).
    assert measured["innerWidth"] == size[0] and measured["scrollWidth"] <= size[0], (
        f"{page.name} ({lang}) is laid out {max(measured['innerWidth'], measured['scrollWidth'])} px wide "
        f"in a {size[0]} px window; reaching past its edge: {', '.join(measured['past']) or 'nothing'}"
    )


def test_each_role_s_browser_is_signed_in_as_that_role_by_a_cookie_scripts_cannot_read(site):
    def scopes(role: str) -> set[str]:
        driver = site.open(role, "/account/tokens")
        return {box.get_attribute("value") for box in driver.find_elements(By.NAME, "scope")}

    assert "admin" in scopes("operator")
    assert scopes("member") and "admin" not in scopes("member")
    anonymous = site.open("anonymous", "/account/tokens")
    assert urlsplit(anonymous.current_url).path == "/sign-in"
    # The grid runs as in production: its cookie is Secure, which Chromium keeps over plain
    # http://127.0.0.1 (a loopback address is a secure context).
    session = {cookie["name"]: cookie for cookie in site.browser("member").get_cookies()}["session"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Lax", session
    assert site.browser("member").execute_script("return document.cookie") == ""
