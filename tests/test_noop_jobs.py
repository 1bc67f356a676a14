"""No-op jobs (GRID_NOOP_JOBS, the throughput benchmark's): refused unless the operator turned
them on; on, they take the whole path of a job (dispatch, the node's input fetch, metering, the
ledger's entry and grant) and are bounded like any LLM step."""

from __future__ import annotations

from sqlalchemy import select

from tests.grid import Client


def test_a_noop_job_is_refused_where_the_setting_is_off(client: Client, make_token):
    member = Client(client.base_url, make_token("no-noop@koprogo.test"))
    refused = member.post("/api/v1/jobs/noop", json={})
    # As a kind the grid does not know.
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "invalid_parameter"
    unknown = member.post("/api/v1/jobs/nothing", json={})
    assert unknown.status_code == 422 and "summarise" in unknown.json()["error"]["message"]
    assert "noop" not in unknown.json()["error"]["message"]  # the kinds offered here
    batch = member.post("/api/v1/jobs/batch", json=[{"kind": 7}]).json()["error"]
    assert "summarise" in str(batch) and "noop" not in str(batch)
    document = member.get("/api/v1/openapi.json").json()
    assert "noop" not in document["components"]["schemas"]["JobBatch"]["items"]["properties"]["kind"]["enum"]
    listed = member.get("/api/v1/jobs", params={"kind": "noop"})
    assert listed.status_code == 200
    assert listed.json()["total"] == 0  # nothing was recorded, nothing dispatched


def test_the_noop_setting_is_off_by_default():
    from app.config import Defaults

    assert Defaults.NOOP_JOBS is False


def test_a_noop_job_is_dispatched_run_metered_entered_and_granted_when_on(fresh_grid, make_token, flask_app):
    from app.extensions import db
    from app.ledger import rules
    from app.models import JobStep, LedgerEntry

    fresh_grid.env.update({"GRID_NOOP_JOBS": "true"})
    fresh_grid.ledger_worker()
    fresh_grid.worker("noop-llm", "llm")
    member = Client(fresh_grid.api(), make_token("noop@koprogo.test"))
    document = member.get("/api/v1/openapi.json").json()
    assert "noop" in document["components"]["schemas"]["JobBatch"]["items"]["properties"]["kind"]["enum"]

    submitted = member.post("/api/v1/jobs/noop", json={})
    assert submitted.status_code == 202, submitted.text
    answer = submitted.json()
    # The answer describes the job as this request recorded it: queued and sent, nothing entered.
    assert answer["state"] == "queued" and answer["kind"] == "noop"
    assert answer["steps"][0]["state"] == "queued" and answer["steps"][0]["dispatched_at"]
    assert answer["cost"]["eur"] == "0.00" and answer["co2_grams"] == 0
    assert submitted.headers["Location"].endswith(f"/api/v1/jobs/{answer['id']}")
    assert member.job(answer["id"])["state"] in ("queued", "running", "succeeded")

    job = member.wait(answer["id"], timeout=60)
    assert job["state"] == "succeeded", job
    assert job["result"] == {"noop_bytes": 4}
    with flask_app.app_context():
        step = db.session.scalar(select(JobStep).where(JobStep.job_id == job["id"]))
        entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.task_id == step.task_id))
        assert step.task_name == "grid.llm.noop" and step.node_id is not None
        # Entered from the node seen starting it (its input fetch), bounded like any LLM step:
        # its 4 bytes of input are at most 4 tokens, whose reference time caps the grant.
        assert entry.outcome == "succeeded" and entry.node_id == step.node_id
        assert entry.units == 4 and entry.observed_ms > 0
        assert entry.cap_ms == rules.cap_ms("llm", 4, rules.ReferenceCosts())
        assert entry.granted_ms == min(entry.claimed_ms, entry.observed_ms, entry.cap_ms)
        assert entry.grant_basis in ("claimed", "observed", "cap", "concurrency")
    assert "llm" in job["cost"]["granted_seconds"]
