"""The operators' overview in a real browser (headless Chromium against the live grid): an
operator approves a member's node awaiting approval by its button, and the page that answers says
so in its status region and lists the node no more; the database has it approved."""

from __future__ import annotations

from urllib.parse import urlsplit

from selenium.webdriver.common.by import By

from tests.browser.nodes import node_state, pending_node
from tests.browser.pages import answered


def test_an_operator_approves_a_pending_node_on_the_page(site):
    name = pending_node("approve-in-browser")
    driver = site.open("operator", "/operators", "en")
    row = driver.find_element(By.XPATH, f"//table[@id='pending-nodes']//tr[th[normalize-space()='{name}']]")
    assert "browser-volunteer@koprogo.test" in row.text
    button = row.find_element(By.XPATH, f".//button[normalize-space()='Approve {name}']")

    button.click()
    answered(driver, button)

    assert urlsplit(driver.current_url).path == "/operators"
    status = driver.find_element(By.CSS_SELECTOR, "[role=status][aria-live=polite]")
    assert status.text == f"Node {name} is approved: its worker can now connect."
    pending = driver.find_elements(By.ID, "pending-nodes")
    assert not pending or name not in pending[0].text
    state = node_state(name)
    assert state["approved_at"] is not None and state["revoked_at"] is None


def test_a_member_is_refused_the_operators_overview(site):
    driver = site.open("member", "/operators", "en")

    assert driver.find_element(By.TAG_NAME, "h1").text == "Request refused"
    assert "for the cooperative's operators" in driver.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert not driver.find_elements(By.CSS_SELECTOR, "nav a[href='/operators']")
