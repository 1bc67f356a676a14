"""End to end over HTTP: real API server, real Redis and PostgreSQL, real worker processes."""

from __future__ import annotations

from sqlalchemy import select

from tests.documents import ENGLISH_LINES, FRENCH_LINES, cer, text_pdf


def _entries(flask_app, job_id: str):
    from app.extensions import db
    from app.models import LedgerEntry

    with flask_app.app_context():
        return db.session.scalars(select(LedgerEntry).where(LedgerEntry.job_id == job_id)).all()


def test_pipeline_job_runs_ocr_and_summary_on_different_nodes(client, admin, flask_app):
    response = client.post(
        "/api/v1/jobs/pipeline",
        files={"file": ("pv.pdf", text_pdf([FRENCH_LINES]))},
        data={"languages": "fra", "language": "fr", "translate_to": "nl"},
    )
    assert response.status_code == 202, response.text
    assert response.headers["Location"].endswith(f"/api/v1/jobs/{response.json()['id']}")
    assert response.json()["state"] == "queued"

    job = client.wait(response.json()["id"])

    assert job["state"] == "succeeded", job
    steps = {step["name"]: step for step in job["steps"]}
    assert [s["name"] for s in job["steps"]] == ["ocr", "summarise", "translate"]
    assert steps["ocr"]["node"].startswith("ocr-node@")
    assert steps["summarise"]["node"].startswith("llm-node@")
    assert steps["translate"]["node"].startswith("llm-node@")
    assert steps["ocr"]["progress"] == {"pages_done": 1, "pages_total": 1}
    assert all(s["wall_seconds"] > 0 and s["state"] == "succeeded" for s in job["steps"])
    assert cer("\n".join(FRENCH_LINES), job["result"]["text"]) <= 0.02
    assert job["result"]["summary"] and job["result"]["summary_tokens"] > 0
    assert job["result"]["translation"] and job["result"]["translation_language"] == "nl"

    entries = _entries(flask_app, job["id"])
    assert sorted((e.task_name, e.node.split("@")[0]) for e in entries) == [
        ("grid.llm.summarise", "llm-node"),
        ("grid.llm.translate", "llm-node"),
        ("grid.ocr.extract", "ocr-node"),
    ]
    assert all(e.outcome == "succeeded" and e.grant_basis == "claimed" for e in entries)
    assert all(0 < e.granted_ms == e.claimed_ms <= min(e.observed_ms, e.cap_ms) for e in entries)
    assert all(e.signature and e.node_id for e in entries)
    ocr_entry = next(e for e in entries if e.capability == "ocr")
    assert (ocr_entry.unit, ocr_entry.units) == ("page", 1)
    with flask_app.app_context():
        from app.extensions import db
        from app.models import JobInput

        assert db.session.get(JobInput, job["id"]) is None  # the job is over: its document let go

    nodes = {n["node"].split("@")[0]: n for n in admin.get("/api/v1/ledger/nodes").json()["nodes"]}
    assert {"ocr-node", "llm-node"} <= set(nodes)
    ocr_line = nodes["ocr-node"]["capabilities"][0]
    assert ocr_line["capability"] == "ocr" and ocr_line["rates_eur_per_hour"] == ["0.600000"]
    assert float(ocr_line["granted_hours"]) > 0
    assert set(job["cost"]["split"]) == {"cooperative", "solidarity_fund"}
    assert job["cost"]["exact_eur"] != "0"


def test_ocr_job_reads_english_with_the_english_pack(client):
    job = client.submit_document("ocr", text_pdf([ENGLISH_LINES]), "minutes.pdf", languages="eng")
    job = client.wait(job["id"])
    assert job["state"] == "succeeded", job
    assert cer("\n".join(ENGLISH_LINES), job["result"]["text"]) <= 0.02


def test_a_born_digital_pdf_is_read_from_its_text_layer_unless_ocr_is_forced(client):
    pdf = text_pdf([FRENCH_LINES, ENGLISH_LINES])

    layer = client.wait(
        client.submit_document("ocr", pdf, "facture.pdf", languages="fra+eng", force_ocr="false")["id"]
    )
    forced = client.wait(
        client.submit_document("ocr", pdf, "facture.pdf", languages="fra+eng", force_ocr="true")["id"]
    )

    assert layer["state"] == forced["state"] == "succeeded"
    assert [r["method"] for r in layer["result"]["page_readings"]] == ["text_layer", "text_layer"]
    assert layer["result"]["text"].split("\f") == ["\n".join(FRENCH_LINES), "\n".join(ENGLISH_LINES)]
    assert layer["params"]["force_ocr"] is False and forced["params"]["force_ocr"] is True
    assert [r["method"] for r in forced["result"]["page_readings"]] == ["ocr", "ocr"]
    assert all(r["confidence"] >= 80 for r in forced["result"]["page_readings"])


def test_force_ocr_takes_yes_or_no_only(client):
    response = client.post(
        "/api/v1/jobs/ocr", files={"file": ("a.pdf", text_pdf([FRENCH_LINES]))}, data={"force_ocr": "perhaps"}
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_parameter"
