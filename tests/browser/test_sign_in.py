"""Signing in and out through the form in a real browser: a member invited earlier signs in with
the keyboard, lands on the submission page asked for, signs out, and the pages are closed to the
browser again."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.site import PASSWORD, accept_invitation, new_driver


def test_a_member_signs_in_with_the_form_is_taken_where_they_were_going_and_signs_out(site):
    email = f"browser-form-{uuid.uuid4().hex[:8]}@koprogo.test"
    driver = new_driver()
    try:
        driver.get(site.url(site.invitation(email=email)))
        accept_invitation(driver, PASSWORD, PASSWORD)
        sign_out = "form[action$='/sign-out'] button"
        WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, sign_out))
        driver.find_element(By.CSS_SELECTOR, sign_out).click()
        WebDriverWait(driver, 15).until(lambda d: urlsplit(d.current_url).path == "/sign-in")

        # A page that needs a session sends the visitor to the form, which brings them back to it.
        driver.get(site.url("/jobs?lang=en"))
        WebDriverWait(driver, 15).until(lambda d: urlsplit(d.current_url).path == "/sign-in")
        driver.find_element(By.ID, "email").send_keys(email)
        driver.find_element(By.ID, "password").send_keys("a wrong password!", Keys.ENTER)
        WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.ID, "errors"))
        assert "Wrong email address or password." in driver.find_element(By.ID, "errors").text
        field = driver.find_element(By.ID, "password")
        field.clear()
        field.send_keys(PASSWORD, Keys.ENTER)
        WebDriverWait(driver, 15).until(lambda d: urlsplit(d.current_url).path == "/jobs")
        assert email in driver.find_element(By.CSS_SELECTOR, "form[action$='/sign-out']").text

        driver.find_element(By.CSS_SELECTOR, "form[action$='/sign-out'] button").click()
        WebDriverWait(driver, 15).until(lambda d: urlsplit(d.current_url).path == "/sign-in")
        driver.get(site.url("/dashboard"))
        assert urlsplit(driver.current_url).path == "/sign-in"
    finally:
        driver.quit()
