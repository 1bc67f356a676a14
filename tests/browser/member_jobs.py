"""The browser tests' member's jobs, for the pages of app/web/jobs.py: a pipeline job of the member
the site signed in (``Site.emails["member"]``) on the demo's sample PDF, submitted as the page
submits it (app.jobs.submit) and done by the session grid's OCR and LLM workers."""

from __future__ import annotations

import time
from functools import cache

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser.site import Site
from tests.grid import ROOT

#: The demo's two-page French minutes (tests/documents.py write_sample).
SAMPLE = ROOT / "samples" / "proces-verbal-ag.pdf"


@cache
def _app():
    from app import create_app

    return create_app()


@cache
def _finished_job(email: str) -> str:
    from app import jobs
    from app.extensions import db
    from app.models import Job, JobState

    with _app().app_context():
        job = jobs.submit(
            "pipeline",
            {"languages": "fra", "language": "fr", "max_words": "40", "translate_to": "en"},
            jobs.Document(SAMPLE.read_bytes(), SAMPLE.name),
            owner=email,
        )
        job_id = job.id
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            db.session.expire_all()
            state = db.session.get(Job, job_id).state
            if state in JobState.FINAL:
                assert state == JobState.SUCCEEDED, f"the sample pipeline job {job_id} ended {state}"
                return job_id
            db.session.rollback()
            time.sleep(0.3)
    raise AssertionError(f"the sample pipeline job {job_id} did not end in 180 s")


def finished_job(site: Site) -> str:
    """The page of a finished pipeline job of the site's member (summary, translation, text)."""
    site.browser("member")
    return f"/jobs/{_finished_job(site.emails['member'])}"


def jobs_list(site: Site) -> str:
    """The member's list of jobs, with one finished job at least."""
    finished_job(site)
    return "/jobs"


def refused_submission(driver: WebDriver, site: Site) -> None:
    """The form sent with a pasted text and an action that reads a document: refused on the page."""
    from tests.browser.pages import submitted

    driver.find_element(By.ID, "text").send_keys("Un texte collé pour une lecture OCR.")
    driver.find_element(By.ID, "action-ocr").click()
    submitted(driver, "text")
    assert "needs_document" in driver.find_element(By.ID, "errors").text
