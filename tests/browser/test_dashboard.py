"""The member's dashboard in a real browser (headless Chromium against the live grid): a member
pauses one of their nodes by its button, the page that answers shows it paused and the registry
has it paused by its owner; then they resume it the same way."""

from __future__ import annotations

from urllib.parse import urlsplit

from selenium.webdriver.common.by import By

from tests.browser.member_nodes import member, new_node, node_state
from tests.browser.pages import answered


def _state_shown(driver, name: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"#node-{name} [data-state]").get_attribute("data-state")


def test_a_member_pauses_and_resumes_a_node_on_the_dashboard(site):
    name = new_node(member(site), "browser-pause")
    driver = site.open("member", "/dashboard", "en")
    assert _state_shown(driver, name) == "online"

    button = driver.find_element(By.ID, f"pause-{name}")
    assert button.text == f"Pause {name}"
    button.click()
    answered(driver, button)

    assert urlsplit(driver.current_url).path == "/dashboard"
    assert _state_shown(driver, name) == "paused"
    section = driver.find_element(By.ID, f"node-{name}")
    assert "paused" in section.find_element(By.CSS_SELECTOR, ".state").text
    assert "Paused by you" in section.text
    assert node_state(name) == ("paused", "owner")

    button = driver.find_element(By.ID, f"resume-{name}")
    button.click()
    answered(driver, button)

    assert _state_shown(driver, name) == "online"
    assert driver.find_elements(By.ID, f"pause-{name}")
    assert node_state(name) == ("online", None)


def test_a_member_sees_no_one_else_s_node(site):
    someone_else = new_node("someone-else-in-browser@koprogo.test", "browser-theirs")
    driver = site.open("member", "/dashboard", "en")

    assert driver.find_element(By.TAG_NAME, "h1").text == "My nodes and earnings"
    assert not driver.find_elements(By.ID, f"node-{someone_else}")
