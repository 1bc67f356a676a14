"""Batches of jobs (``POST /api/v1/jobs/batch``, app.jobs.submit_batch): every item checked as
its single submission is, all recorded in one transaction or none, sent after the commit, each
job counted against the token's submission limit.

The jobs that run do so on the session's grid (its LLM node). The limit, the statements a batch
costs and the broker away are seen on an app in this process (as tests/test_api_limits_and_tokens.py
does), whose jobs go to a Redis database no other test uses, or to no broker at all.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event, select

from tests.grid import Client, free_port
from tests.web import address as new_address

TEXT = "Le conseil de copropriété approuve le budget des travaux de la toiture pour l'année."
#: Where the jobs of this module's own app go: a Redis database no other test uses.
BROKER_DB = 2
BATCH = "/api/v1/jobs/batch"


def _owner() -> str:
    return f"batcher-{uuid.uuid4().hex[:10]}@koprogo.test"


def _error(response, status: int) -> dict:
    """The error of an answer of the grid's API (requests') or of this module's app (Flask's)."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json() if callable(response.json) else response.json
    return body["error"]


def _listed(client: Client) -> int:
    listing = client.get("/api/v1/jobs")
    assert listing.status_code == 200, listing.text
    return listing.json()["total"]


def _app(broker_url: str | None = None, **settings):
    """An app of this module's own whose jobs go to ``broker_url`` (default: its own Redis database)."""
    import os

    from app import create_app

    app = create_app({"TESTING": True, "NOOP_JOBS": True, **settings})
    url = broker_url or os.environ["GRID_BROKER_URL"].rsplit("/", 1)[0] + f"/{BROKER_DB}"
    app.extensions["celery"].conf.broker_url = url
    return app


def _token(app, owner: str) -> str:
    from app.auth import create_token
    from app.extensions import db

    with app.app_context():
        _, token = create_token("test", owner, ["jobs:read", "jobs:write"])
        db.session.commit()
    return token


def _client(app, token: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = new_address()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


# --- on the session's grid ---------------------------------------------------------------------


def test_a_batch_runs_every_job_to_succeeded_in_order(grid, make_token):
    batcher = Client(grid.api_url, make_token(_owner()))
    items = [
        {"kind": "summarise", "text": TEXT, "language": "fr", "max_words": 10},
        {"kind": "translate", "text": TEXT, "target": "en"},
        {"kind": "summarise", "text": TEXT, "language": "en", "max_words": 10},
    ]
    answer = batcher.post(BATCH, json=items)
    assert answer.status_code == 202, answer.text
    jobs = answer.json()["items"]
    # In the order sent, each as the listing shows a job: recorded and queued.
    assert [job["kind"] for job in jobs] == ["summarise", "translate", "summarise"]
    assert [job["params"].get("language") for job in jobs] == ["fr", None, "en"]
    assert jobs[1]["params"]["target"] == "en"
    assert all(job["state"] == "queued" and "steps" not in job for job in jobs)
    assert len({job["id"] for job in jobs}) == 3
    done = [batcher.wait(job["id"], timeout=120) for job in jobs]
    assert [job["state"] for job in done] == ["succeeded"] * 3, done
    assert done[0]["result"]["summary"] and done[1]["result"]["translation"]
    assert all(job["steps"][0]["dispatched_at"] for job in done)
    assert _listed(batcher) == 3


def test_one_refused_item_refuses_the_batch_and_nothing_is_recorded(grid, make_token):
    batcher = Client(grid.api_url, make_token(_owner()))
    items = [
        {"kind": "summarise", "text": TEXT},
        {"kind": "summarise", "text": "   "},
        {"kind": "translate", "text": TEXT},
        {"kind": "translate", "text": TEXT, "target": "de"},
        {"kind": "ocr", "languages": "fra"},
        {"kind": "summarise", "text": TEXT, "max_words": 100000},
        {"kind": "summarise", "text": TEXT, "callback_url": "ftp://example.org/hook"},
        {"kind": "summarise", "text": TEXT},
    ]
    error = _error(batcher.post(BATCH, json=items), 422)
    assert error["code"] == "invalid_batch"
    refused = {item["index"]: (item["code"], item["status"]) for item in error["items"]}
    # Each with the code and status its single submission gets; the valid ones are not listed.
    assert refused == {
        1: ("empty_text", 422),
        2: ("unknown_language", 422),
        3: ("unknown_language", 422),
        4: ("invalid_parameter", 422),
        5: ("invalid_parameter", 422),
        6: ("callback_url_refused", 422),
    }, error["items"]
    single = batcher.post("/api/v1/jobs/summarise", json={"text": "   "})
    assert _error(single, 422)["code"] == "empty_text"
    assert _listed(batcher) == 0


def test_an_empty_list_a_body_that_is_no_list_and_too_many_jobs_are_refused(grid, make_token):
    batcher = Client(grid.api_url, make_token(_owner()))
    assert _error(batcher.post(BATCH, json=[]), 400)["code"] == "invalid_parameter"
    assert (
        _error(batcher.post(BATCH, json={"kind": "summarise", "text": TEXT}), 400)["code"] == "invalid_json"
    )
    assert _error(batcher.post(BATCH, data=b"[{"), 400)["code"] == "invalid_json"
    assert _error(batcher.post(BATCH, data=b"[" * 100000), 400)["code"] == "invalid_json"
    too_many = [{"kind": "summarise", "text": TEXT}] * 101
    refused = batcher.post(BATCH, json=too_many)
    error = _error(refused, 400)
    assert error["code"] == "too_many_jobs" and "100" in error["message"]
    assert refused.headers["Connection"] == "keep-alive"  # its body was read: the connection stays
    # A body over JOBS_BATCH_MAX_BYTES is refused before it is read whole, and its connection
    # closed, which the answer says: the next request goes on a new one (without the header,
    # the client would send it on the connection gunicorn closes, and get no answer).
    huge = [{"kind": "summarise", "text": "x" * 100_000}] * 50
    refused = batcher.post(BATCH, json=huge)
    assert _error(refused, 413)["code"] == "batch_too_large"
    assert refused.headers["Connection"] == "close"
    # Items that are not jobs.
    error = _error(batcher.post(BATCH, json=[5, "summarise", None, {"text": TEXT}, {"kind": ["ocr"]}]), 422)
    assert [(item["index"], item["code"]) for item in error["items"]] == [
        (index, "invalid_parameter") for index in range(5)
    ]
    assert _listed(batcher) == 0
    # The route takes a POST only: GET /api/v1/jobs/batch names no job.
    assert _error(batcher.get(BATCH), 404)["code"] == "not_found"


def test_a_hostile_mix_is_refused_whole_or_made_the_tokens_own(grid, make_token, admin):
    owner, victim = _owner(), _owner()
    batcher = Client(grid.api_url, make_token(owner))
    victims = Client(grid.api_url, make_token(victim))
    planted = str(uuid.uuid4())
    hostile = {
        "kind": "translate",
        "text": TEXT,
        "target": "nl",
        "owner": victim,
        "token_id": 1,
        "id": planted,
        "state": "succeeded",
        "result": {"translation": "forged"},
        "params": {"target": "en"},
    }
    # With an unknown kind, and a kind the grid does not offer: nothing at all is recorded.
    mixed = [hostile, {"kind": "poem", "text": TEXT}, {"kind": "noop"}, {"kind": "batch"}]
    error = _error(batcher.post(BATCH, json=mixed), 422)
    assert [(item["index"], item["code"]) for item in error["items"]] == [
        (1, "invalid_parameter"),
        (2, "invalid_parameter"),
        (3, "invalid_parameter"),
    ]
    assert _listed(batcher) == 0 and _listed(victims) == 0
    # Alone, the other owner's fields are ignored, as the single route ignores them.
    answer = batcher.post(BATCH, json=[hostile, hostile])
    assert answer.status_code == 202, answer.text
    jobs = answer.json()["items"]
    assert all(job["owner"] == owner and job["state"] == "queued" for job in jobs)
    assert planted not in {job["id"] for job in jobs}
    assert all(job["params"] == {"target": "nl"} for job in jobs)
    done = batcher.wait(jobs[0]["id"])
    assert done["state"] == "succeeded" and done["result"]["translation"] != "forged"
    assert _listed(victims) == 0 and _listed(batcher) == 2
    assert victims.get(f"/api/v1/jobs/{jobs[0]['id']}").status_code == 404
    assert admin.get(f"/api/v1/jobs/{planted}").status_code == 404
    batcher.wait(jobs[1]["id"])


def test_a_batch_needs_the_write_scope(grid, make_token):
    reader = Client(grid.api_url, make_token(_owner(), ("jobs:read",)))
    assert _error(reader.post(BATCH, json=[{"kind": "summarise", "text": TEXT}]), 403)["code"] == (
        "insufficient_scope"
    )
    assert Client(grid.api_url, "made-up").post(BATCH, json=[]).status_code == 401


# --- on an app of this module's own --------------------------------------------------------------


def test_the_submission_limit_counts_jobs_and_a_batch_over_what_is_left_costs_nothing():
    app = _app(API_SUBMIT_LIMIT="10 per minute", API_READ_LIMIT="100 per minute")
    client = _client(app, _token(app, _owner()))
    refused = [{"kind": "summarise"}]  # no text: refused, and counted as any refused submission

    assert client.post(BATCH, json=refused * 4).status_code == 422  # 4 of 10
    over = client.post(BATCH, json=refused * 7)
    error = _error(over, 429)
    assert error["code"] == "rate_limited" and "6 submissions left" in error["message"], error
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    # The refused batch took nothing: 6 are still left, which a batch of 6 takes.
    assert client.post(BATCH, json=[{"kind": "noop"}] * 6).status_code == 202
    assert _error(client.post("/api/v1/jobs/noop", json={}), 429)["code"] == "rate_limited"
    assert _error(client.post(BATCH, json=[{"kind": "noop"}]), 429)["code"] == "rate_limited"
    assert client.get("/api/v1/jobs").get_json()["total"] == 6


def test_a_malformed_batch_costs_one_submission():
    app = _app(API_SUBMIT_LIMIT="3 per minute", JOBS_BATCH_MAX=5)
    client = _client(app, _token(app, _owner()))
    assert client.post(BATCH, json={"kind": "noop"}).status_code == 400
    assert client.post(BATCH, json=[{"kind": "noop"}] * 6).status_code == 400
    assert client.post(BATCH, json=[{"kind": "noop"}]).status_code == 202
    assert client.post(BATCH, json=[{"kind": "noop"}]).status_code == 429


def test_a_batch_is_recorded_in_as_many_statements_whatever_its_size():
    from app.extensions import db
    from app.models import Job, JobInput, JobStep

    app = _app()
    client = _client(app, _token(app, _owner()))
    assert client.get("/api/v1/jobs").status_code == 200  # the token's first use is written
    counts = []
    with app.app_context():
        engine = db.engine
    for size in (2, 40):
        statements: list[str] = []

        def count(conn, cursor, statement, *args, statements=statements):
            statements.append(statement.split(None, 1)[0].upper())

        event.listen(engine, "before_cursor_execute", count)
        try:
            answer = client.post(BATCH, json=[{"kind": "noop"}] * size)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert answer.status_code == 202, answer.get_data(as_text=True)
        counts.append(statements)
        ids = [job["id"] for job in answer.get_json()["items"]]
        with app.app_context():
            assert db.session.scalar(select(db.func.count()).where(Job.id.in_(ids))) == size
            steps = db.session.scalars(select(JobStep).where(JobStep.job_id.in_(ids))).all()
            assert len(steps) == size and all(step.dispatched_at for step in steps)
            assert db.session.scalar(select(db.func.count()).where(JobInput.job_id.in_(ids))) == size
    assert counts[0] == counts[1], counts
    assert counts[1].count("INSERT") == 3, counts[1]  # jobs, inputs, steps: one statement each


def test_with_the_broker_away_the_batch_is_recorded_failed_and_said_so():
    from app.extensions import db
    from app.models import Job

    app = _app(broker_url=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    owner = _owner()
    client = _client(app, _token(app, owner))
    answer = client.post(BATCH, json=[{"kind": "noop"}, {"kind": "summarise", "text": TEXT}])
    error = _error(answer, 503)
    assert error["code"] == "broker_unavailable" and answer.headers["Retry-After"]
    assert [item["index"] for item in error["items"]] == [0, 1]
    ids = [item["id"] for item in error["items"]]
    with app.app_context():
        jobs = db.session.scalars(select(Job).where(Job.owner == owner)).all()
        assert sorted(job.id for job in jobs) == sorted(ids)
        # Nothing lost: recorded failed, as the single route records a job it could not queue.
        assert all(job.state == "failed" and job.error_code == "broker_unavailable" for job in jobs)
        assert all(job.steps[0].dispatched_at is None for job in jobs)
    single = client.post("/api/v1/jobs/noop", json={})
    assert _error(single, 503)["code"] == "broker_unavailable"


@pytest.mark.parametrize("kind", ["ocr", "pipeline", "invoice"])
def test_a_document_kind_is_sent_alone(kind):
    app = _app()
    client = _client(app, _token(app, _owner()))
    error = _error(client.post(BATCH, json=[{"kind": kind}]), 422)
    assert (
        error["items"][0]["code"] == "invalid_parameter"
        and f"/api/v1/jobs/{kind}" in error["items"][0]["message"]
    )
