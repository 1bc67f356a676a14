"""A job no verified result can reach any more ends `failed` (``stalled``), never stuck."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import celeryconfig
from app import jobs
from app.extensions import db
from app.models import Job, JobState, JobStep, StepState


def _job(age: timedelta, **step: object) -> Job:
    then = datetime.now(UTC) - age
    job = Job(kind="ocr", owner="member@koprogo.test", params={}, input_pages=1, created_at=then)
    job.steps.append(
        JobStep(
            position=0, name="ocr", task_name=celeryconfig.TASK_OCR, queue="ocr", dispatched_at=then, **step
        )
    )
    db.session.add(job)
    db.session.commit()
    return job


def test_a_job_silent_for_longer_than_every_attempt_could_take_is_failed_as_stalled(app_context):
    horizon = timedelta(seconds=celeryconfig.STALLED_AFTER_SECONDS)
    silent = _job(horizon + timedelta(minutes=5))
    recent = _job(horizon - timedelta(minutes=5))
    revived = _job(
        horizon + timedelta(minutes=5),
        state=StepState.RUNNING,
        started_at=datetime.now(UTC) - timedelta(minutes=1),
    )

    failed = jobs.fail_stalled()
    db.session.commit()

    assert silent.id in failed and recent.id not in failed and revived.id not in failed
    stalled = db.session.get(Job, silent.id)
    assert (stalled.state, stalled.error_code) == (JobState.FAILED, "stalled")
    assert stalled.steps[0].state == StepState.SKIPPED
    assert db.session.get(Job, recent.id).state == JobState.QUEUED
    assert jobs.fail_stalled() == []  # nothing twice
