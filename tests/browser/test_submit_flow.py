"""A member submits the sample PDF through the form in headless Chromium and reads its summary on
the job's page, which follows the job by itself: through Server-Sent Events; with the keyboard
alone (focus visible, in a sensible order); and by polling when the browser has no EventSource.
The session's live grid does the work (its OCR and LLM workers, tests/conftest.py)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.member_jobs import SAMPLE
from tests.browser.site import DESKTOP, set_viewport

#: Seconds a pipeline on the two-page sample may take on a loaded machine.
DONE_WITHIN = 180
FORM_ORDER = [
    "file",
    "text",
    "action-pipeline",
    "languages-fra",
    "languages-eng",
    "languages-nld",
    "language",
    "target",
    "max_words",
    "ocr_quality-standard",
    "force_ocr",
    "invoice_fields",
    "llm_fields",
    "send",
]

_FOCUS = """
const e = document.activeElement;
const style = getComputedStyle(e);
return {id: e.id, tag: e.tagName.toLowerCase(), text: (e.textContent || '').trim().slice(0, 60),
        copy: e.getAttribute('data-copy'), outline: style.outlineStyle, width: parseFloat(style.outlineWidth),
        visible: e.matches(':focus-visible')};
"""


def _fetch(driver: WebDriver, path: str) -> str:
    return driver.execute_async_script(
        "fetch(arguments[0], {credentials: 'same-origin'}).then(r => r.text()).then(arguments[1])", path
    )


def _on_job_page(driver: WebDriver) -> str:
    WebDriverWait(driver, 30).until(
        lambda d: re.fullmatch(r"/jobs/[0-9a-f-]{36}", urlsplit(d.current_url).path)
    )
    WebDriverWait(driver, 15).until(lambda d: d.execute_script("return document.readyState") == "complete")
    return urlsplit(driver.current_url).path


_STATE = "const e = document.getElementById('job-state'); return e && e.dataset.state;"


def _wait_done(driver: WebDriver) -> None:
    # Read in one script: the page redraws the job's state as it changes, so an element found
    # by one WebDriver call may be gone by the next (a stale element reference).
    WebDriverWait(driver, DONE_WITHIN).until(
        lambda d: (
            d.execute_script(_STATE) in ("succeeded", "failed")
            and d.execute_script("return !!document.getElementById('result-summary')")
        ),
        "the job's page did not show the job succeeded with its summary",
    )
    assert driver.execute_script(_STATE) == "succeeded"


def _key(driver: WebDriver, *keys: str) -> dict:
    ActionChains(driver).send_keys(*keys).perform()
    return driver.execute_script(_FOCUS)


def _assert_focus_visible(focus: dict) -> None:
    assert focus["visible"] and focus["outline"] != "none" and focus["width"] >= 2, (
        f"focus not visible: {focus}"
    )


def test_a_member_submits_the_sample_pdf_and_reads_its_summary_as_the_page_follows_the_job(site):
    driver = site.browser("member")
    set_viewport(driver, DESKTOP)
    driver.get(site.url("/submit?lang=en"))
    driver.find_element(By.ID, "file").send_keys(str(SAMPLE))
    driver.find_element(By.ID, "action-pipeline").click()
    driver.find_element(By.ID, "max_words").clear()
    driver.find_element(By.ID, "max_words").send_keys("40")
    driver.find_element(By.ID, "send").click()

    path = _on_job_page(driver)
    driver.execute_script("window.__notReloaded = true;")
    assert driver.find_element(By.ID, "job").get_attribute("data-live") == "events"
    _wait_done(driver)

    assert driver.execute_script("return window.__notReloaded === true"), "the page reloaded itself"
    # Followed by its events all along: the page fell back to polling at no point.
    assert driver.find_element(By.ID, "job").get_attribute("data-live") == "events"
    news = driver.find_element(By.ID, "job-news")
    assert news.get_attribute("aria-live") == "polite" and "ended" in news.text, news.text
    progress = driver.find_element(By.ID, "pages-progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "2"
    summary = driver.find_element(By.ID, "result-summary").text
    assert summary and summary == _fetch(driver, f"{path}/summary.txt").strip()
    assert driver.find_elements(By.ID, "result-text")
    assert not driver.find_elements(By.ID, "cancel")  # over: nothing to cancel


def test_the_same_flow_with_the_keyboard_alone_focus_visible_and_in_order(site):
    driver = site.browser("member")
    set_viewport(driver, DESKTOP)
    driver.get(site.url("/submit?lang=en"))
    driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": site.base_url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )

    # From the top: the skip link first, then the frame, then the form's file input.
    seen = [_key(driver, Keys.TAB)]
    assert "skip" in driver.execute_script("return document.activeElement.className"), seen
    while seen[-1]["id"] != "file":
        assert len(seen) < 30, f"the file input was never reached: {[f['id'] or f['text'] for f in seen]}"
        seen.append(_key(driver, Keys.TAB))
    for focus in seen:
        _assert_focus_visible(focus)
    driver.switch_to.active_element.send_keys(str(SAMPLE))  # what choosing a file by keyboard does

    order = ["file"]
    focus = _key(driver, Keys.TAB)
    while focus["id"] != "send":
        _assert_focus_visible(focus)
        order.append(focus["id"])
        if focus["id"] == "action-pipeline":
            # Arrows move within the actions: to the invoice, and back.
            assert _key(driver, Keys.ARROW_DOWN)["id"] == "action-invoice"
            assert _key(driver, Keys.ARROW_UP)["id"] == "action-pipeline"
        if focus["id"] == "max_words":
            driver.switch_to.active_element.send_keys(Keys.CONTROL, "a")
            driver.switch_to.active_element.send_keys("40")
        assert len(order) < 30, order
        focus = _key(driver, Keys.TAB)
    order.append("send")
    _assert_focus_visible(focus)
    assert order == FORM_ORDER
    # Back and forth: Shift+Tab returns to the options before the button.
    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    assert driver.execute_script(_FOCUS)["id"] == "llm_fields"
    assert _key(driver, Keys.TAB)["id"] == "send"
    assert driver.find_element(By.ID, "action-pipeline").is_selected()
    _key(driver, Keys.ENTER)

    path = _on_job_page(driver)
    _wait_done(driver)
    # Tab from the top of the page to the summary, then to its Copy button.
    driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);")
    reached = []
    focus = _key(driver, Keys.TAB)
    while focus.get("copy") != "result-summary":
        reached.append(focus["id"] or focus["text"])
        _assert_focus_visible(focus)
        assert len(reached) < 40, f"the Copy button was never reached: {reached}"
        focus = _key(driver, Keys.TAB)
    _assert_focus_visible(focus)
    assert reached[-1] == "result-summary", reached  # the summary itself comes first (it scrolls)
    _key(driver, Keys.SPACE)
    WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "copy-news").get_attribute("textContent"))
    assert driver.find_element(By.ID, "copy-news").get_attribute("textContent") == "Copied to the clipboard."
    copied = driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], () => arguments[0](null))"
    )
    summary = _fetch(driver, f"{path}/summary.txt")
    assert copied is None or copied.strip() == summary.strip()


def test_without_event_source_the_page_polls_until_the_job_is_done(site):
    driver = site.browser("member")
    set_viewport(driver, DESKTOP)
    script = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource;"}
    )
    try:
        driver.get(site.url("/submit?lang=en"))
        assert driver.execute_script("return typeof window.EventSource") == "undefined"
        driver.find_element(By.ID, "file").send_keys(str(SAMPLE))
        driver.find_element(By.ID, "action-summarise").click()  # a document's summary: the pipeline
        driver.find_element(By.ID, "send").click()

        _on_job_page(driver)
        assert driver.find_element(By.ID, "job").get_attribute("data-live") == "polling"
        _wait_done(driver)
        assert driver.find_element(By.ID, "result-summary").text
        assert "ended" in driver.find_element(By.ID, "job-news").text
    finally:
        driver.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]}
        )


_DROP = """
const zone = document.getElementById('dropzone');
const moved = new DataTransfer();
moved.items.add(new File([arguments[0]], 'dropped.pdf', {type: 'application/pdf'}));
for (const name of ['dragenter', 'dragover']) {
  zone.dispatchEvent(new DragEvent(name, {dataTransfer: moved, bubbles: true, cancelable: true}));
}
const over = zone.classList.contains('over');
zone.dispatchEvent(new DragEvent('drop', {dataTransfer: moved, bubbles: true, cancelable: true}));
const input = document.getElementById('file');
return {over: over, after: zone.classList.contains('over'), files: Array.from(input.files).map(f => f.name),
        focused: document.activeElement === input};
"""


def test_a_file_dropped_on_the_drop_zone_goes_into_the_form_s_file_input(site):
    driver = site.browser("member")
    driver.get(site.url("/submit?lang=en"))
    assert driver.find_element(By.ID, "drop-hint").is_displayed()  # said only where dropping works

    dropped = driver.execute_script(_DROP, "%PDF-1.4 not read here")

    assert dropped == {"over": True, "after": False, "files": ["dropped.pdf"], "focused": True}
