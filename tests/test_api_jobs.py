"""The jobs API over HTTP, as members, the treasurer and the operators' monitoring use it:
listing with paging and filters, who may see which job, cancelling, health and metrics."""

from __future__ import annotations

import requests
from sqlalchemy import select

from tests.documents import ENGLISH_LINES, FRENCH_LINES, cer, text_pdf
from tests.grid import Client, wait_for

SHORT = "Le conseil approuve le budget des travaux de la toiture."


def _ledger_entries(flask_app, job_id: str) -> list:
    from app.extensions import db
    from app.models import LedgerEntry

    with flask_app.app_context():
        return db.session.scalars(select(LedgerEntry).where(LedgerEntry.job_id == job_id)).all()


def _error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["code"]


# --- listing ---------------------------------------------------------------------------------


def test_a_member_pages_through_their_own_jobs_newest_first(grid, make_token):
    lister = Client(grid.api_url, make_token("lister@koprogo.test"))
    summaries = [
        lister.submit_text("summarise", text=SHORT, language=lang)["id"] for lang in ("fr", "en", "nl")
    ]
    translations = [lister.submit_text("translate", text=SHORT, target=lang)["id"] for lang in ("en", "nl")]
    submitted = summaries + translations
    for job_id in submitted:
        assert lister.wait(job_id)["state"] == "succeeded"

    first = lister.get("/api/v1/jobs", params={"per_page": 2}).json()
    assert (first["page"], first["per_page"], first["total"]) == (1, 2, 5)
    assert [job["id"] for job in first["items"]] == submitted[::-1][:2]
    assert "steps" not in first["items"][0] and first["items"][0]["owner"] == "lister@koprogo.test"
    assert first["next"].startswith("/api/v1/jobs?") and "page=2" in first["next"]

    second = lister.get(first["next"]).json()
    assert second["page"] == 2 and len(second["items"]) == 2
    third = lister.get(second["next"]).json()
    assert third["page"] == 3 and len(third["items"]) == 1
    assert third["next"] is None
    seen = [job["id"] for page in (first, second, third) for job in page["items"]]
    assert seen == submitted[::-1]

    past_the_end = lister.get("/api/v1/jobs", params={"page": 9, "per_page": 2}).json()
    assert (past_the_end["items"], past_the_end["total"], past_the_end["next"]) == ([], 5, None)


def test_a_member_filters_their_jobs_by_state_and_kind(grid, make_token):
    filterer = Client(grid.api_url, make_token("filterer@koprogo.test"))
    summarise = filterer.submit_text("summarise", text=SHORT, language="fr")["id"]
    translate = filterer.submit_text("translate", text=SHORT, target="en")["id"]
    for job_id in (summarise, translate):
        assert filterer.wait(job_id)["state"] == "succeeded"

    def ids(**params) -> list[str]:
        body = filterer.get("/api/v1/jobs", params=params).json()
        assert body["total"] == len(body["items"])
        return [job["id"] for job in body["items"]]

    assert ids(kind="translate") == [translate]
    assert ids(kind="summarise", state="succeeded") == [summarise]
    assert ids(state="succeeded") == [translate, summarise]
    assert ids(state="queued") == [] and ids(kind="ocr") == []


def test_a_filter_or_page_that_makes_no_sense_is_a_400_invalid_parameter(client):
    for params in ({"state": "done"}, {"kind": "poem"}, {"page": 0}, {"per_page": 0}, {"per_page": 101}):
        response = client.get("/api/v1/jobs", params=params)
        assert _error(response, 400) == "invalid_parameter", params
    assert "queued" in client.get("/api/v1/jobs", params={"state": "done"}).json()["error"]["message"]


def test_another_members_job_is_404_to_a_member_and_visible_to_the_treasurer(grid, client, admin, make_token):
    job = client.submit_text("summarise", text=SHORT, language="fr")
    neighbour = Client(grid.api_url, make_token("neighbour@koprogo.test"))

    assert _error(neighbour.get(f"/api/v1/jobs/{job['id']}"), 404) == "not_found"
    assert _error(neighbour.post(f"/api/v1/jobs/{job['id']}/cancel"), 404) == "not_found"
    assert job["id"] not in [j["id"] for j in neighbour.get("/api/v1/jobs").json()["items"]]

    seen_by_admin = admin.get(f"/api/v1/jobs/{job['id']}")
    assert seen_by_admin.status_code == 200
    assert seen_by_admin.json()["owner"] == "member@koprogo.test"
    listed = admin.get("/api/v1/jobs", params={"owner": "member@koprogo.test", "per_page": 100}).json()
    assert job["id"] in [j["id"] for j in listed["items"]]
    assert {j["owner"] for j in listed["items"]} == {"member@koprogo.test"}
    assert client.wait(job["id"])["state"] == "succeeded"


def test_an_unknown_job_id_is_404(client):
    assert _error(client.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000"), 404) == "not_found"


# --- cancelling ------------------------------------------------------------------------------


def _step(job: dict) -> dict:
    (step,) = job["steps"]
    return step


def test_cancelling_a_running_and_a_queued_job_frees_the_node_for_the_next_job(client, flask_app, grid):
    long_pdf = text_pdf([FRENCH_LINES] * 12)
    running = client.submit_document("ocr", long_pdf, "twelve.pdf", languages="fra")
    wait_for(lambda: _step(client.job(running["id"]))["state"] == "running", 30, "the OCR step to run", 0.05)
    # The OCR node serves one job at a time and prefetches no other: this one waits.
    queued = client.submit_document("ocr", text_pdf([ENGLISH_LINES]), "waiting.pdf", languages="eng")
    assert client.job(queued["id"])["state"] == "queued"

    response = client.post(f"/api/v1/jobs/{queued['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    assert _step(response.json())["state"] == "cancelled"
    assert response.json()["error"]["code"] == "cancelled"

    response = client.post(f"/api/v1/jobs/{running['id']}/cancel")
    assert response.status_code == 200, response.text
    assert (response.json()["state"], _step(response.json())["state"]) == ("cancelled", "cancelled")

    again = client.post(f"/api/v1/jobs/{running['id']}/cancel")
    assert _error(again, 409) == "job_finished"
    assert _error(client.post(f"/api/v1/jobs/{queued['id']}/cancel"), 409) == "job_finished"

    # The same node, still up, serves the next job at once.
    following = client.submit_document("ocr", text_pdf([ENGLISH_LINES]), "next.pdf", languages="eng")
    done = client.wait(following["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert _step(done)["node"].startswith("ocr-node@")
    assert cer("\n".join(ENGLISH_LINES), done["result"]["text"]) <= 0.02
    assert all(process.alive() for process in grid.processes)

    # The running execution was stopped, not finished: it never completed in the ledger (it
    # would have, before the next job, on this one-at-a-time node). The queued one never ran.
    assert _ledger_entries(flask_app, running["id"]) == []
    assert _ledger_entries(flask_app, queued["id"]) == []
    for job_id in (running["id"], queued["id"]):
        job = client.job(job_id)
        assert (job["state"], _step(job)["state"], job["result"]) == ("cancelled", "cancelled", None)


def test_cancelling_a_finished_job_is_a_409_job_finished(client):
    job = client.submit_text("translate", text=SHORT, target="nl")
    assert client.wait(job["id"])["state"] == "succeeded"

    response = client.post(f"/api/v1/jobs/{job['id']}/cancel")

    assert _error(response, 409) == "job_finished"
    assert client.job(job["id"])["state"] == "succeeded"


def test_cancelling_needs_the_write_scope(grid, client, make_token):
    job = client.submit_text("summarise", text=SHORT, language="en")
    reader = Client(grid.api_url, make_token("member@koprogo.test", ("jobs:read",)))

    assert _error(reader.post(f"/api/v1/jobs/{job['id']}/cancel"), 403) == "insufficient_scope"
    assert reader.job(job["id"])["id"] == job["id"]
    assert client.wait(job["id"])["state"] == "succeeded"


# --- health and metrics ----------------------------------------------------------------------


def test_the_health_check_says_ok_without_a_token(grid):
    response = requests.get(f"{grid.api_url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_prometheus_scrapes_request_metrics_without_a_token(grid, client):
    client.get("/api/v1/jobs")

    response = requests.get(f"{grid.api_url}/metrics", timeout=10)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE koprogo_grid_http_request_duration_seconds histogram" in response.text
    assert 'endpoint="api.jobs.index"' in response.text
