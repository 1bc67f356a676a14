"""Every web page the browser tests check (tests/browser/test_accessibility.py) and photograph
(``make screenshots``): add yours here.

An entry names the page (the screenshots' file name), its path, and who opens it: ``anonymous``
(signed out), ``member`` or ``operator`` (each signed in, in a browser of its own, once a test
session). ``path`` is a string, or a function of the :class:`~tests.browser.site.Site` that makes
what the page needs (an invitation, a job…) and returns the path. ``act``, if given, is done on
the opened page before it is checked (a form filled and sent, to check the page that answers).
Each page is checked in every language of ``LANGUAGES``, chosen by the pages' ``?lang=`` switch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import member_jobs, member_nodes
from tests.browser.nodes import pending_node
from tests.browser.site import Site, accept_invitation

#: The languages each page is checked in.
LANGUAGES = ("fr", "en")


@dataclass(frozen=True)
class Page:
    name: str
    path: str | Callable[[Site], str]
    role: str = "anonymous"
    act: Callable[[WebDriver, Site], None] | None = None

    def path_on(self, site: Site) -> str:
        return self.path(site) if callable(self.path) else self.path


def gone(element) -> Callable[[WebDriver], bool]:
    """A wait's condition: ``element``'s page was replaced. Chromium's driver may answer a look
    at an element mid-navigation with "Node with given id does not belong to the document"
    rather than a stale reference: that too means the old page is gone."""

    def check(_driver: WebDriver) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return check


def answered(driver: WebDriver, sent_from) -> None:
    """Wait until the page that answers a form (sent from element ``sent_from``) has loaded."""
    WebDriverWait(driver, 15).until(gone(sent_from))
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")


def submitted(driver: WebDriver, field_id: str) -> None:
    """Send the form holding ``field_id`` by its submit button; wait for the page that answers."""
    field = driver.find_element(By.ID, field_id)
    field.find_element(By.XPATH, "ancestor::form//button[@type='submit']").click()
    answered(driver, field)


def _passwords_differ(driver: WebDriver, site: Site) -> None:
    field = driver.find_element(By.ID, "password")
    accept_invitation(driver, "one long password here", "another long password")
    answered(driver, field)
    assert driver.find_elements(By.CSS_SELECTOR, "[role=alert]"), "no error shown"


def _token_created(driver: WebDriver, site: Site) -> None:
    driver.find_element(By.ID, "name").send_keys("scanner of the office")
    submitted(driver, "name")
    assert driver.find_element(By.ID, "new-token").get_attribute("value"), "no token shown"


def _with_a_pending_node(site: Site) -> str:
    """The operators' overview with a member's node awaiting approval (its forms checked too)."""
    pending_node()
    return "/operators"


def _node_approved(driver: WebDriver, site: Site) -> None:
    button = driver.find_element(By.CSS_SELECTOR, "#pending-nodes button[type=submit]")
    button.click()
    answered(driver, button)
    assert driver.find_element(By.CSS_SELECTOR, "[role=status] .notice").text, "no confirmation shown"


def _node_enrolled(driver: WebDriver, site: Site) -> None:
    name = f"{member_nodes.ENROLLED_PREFIX}-{uuid.uuid4().hex[:8]}"
    driver.find_element(By.ID, "node-name").send_keys(name)
    submitted(driver, "node-name")
    assert driver.find_element(By.ID, "configuration").get_attribute("value"), "no configuration shown"


PAGES: list[Page] = [
    Page("sign-in", "/sign-in"),
    Page("invite", lambda site: site.invitation()),
    Page("invite-passwords-differ", lambda site: site.invitation(), act=_passwords_differ),
    Page("invite-unknown", "/invite/no-such-invitation"),
    Page("tokens-member", "/account/tokens", "member"),
    Page("tokens-member-created", "/account/tokens", "member", act=_token_created),
    Page("tokens-operator", "/account/tokens", "operator"),
    Page("dashboard", member_nodes.dashboard, "member"),
    Page("dashboard-statement", member_nodes.statement, "member"),
    Page("dashboard-enrolled", member_nodes.room_to_enrol, "member", act=_node_enrolled),
    Page("operators", _with_a_pending_node, "operator"),
    Page("operators-approved", _with_a_pending_node, "operator", act=_node_approved),
    Page("submit", "/submit", "member"),
    Page("submit-refused", "/submit", "member", act=member_jobs.refused_submission),
    Page("job-finished", member_jobs.finished_job, "member"),
    Page("jobs", member_jobs.jobs_list, "member"),
]
