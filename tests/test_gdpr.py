"""Data protection (app.gdpr, docs/decisions/0016): the content of ended jobs erased after the
retention period, a person's data erased or exported on request, the ledger untouched, and no
document text in any log line or Redis key."""

from __future__ import annotations

import json
import secrets
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

import celeryconfig as cc
from tests.documents import text_pdf
from tests.grid import Client, manage


def _marker() -> str:
    """A word no engine, model or log line would write by chance."""
    return "Quokkazebra" + secrets.token_hex(4)


def _redis_holds(url: str, marker: str) -> list[str]:
    """The keys of the Redis database at ``url`` whose value holds ``marker``."""
    client = redis.Redis.from_url(url)
    found = []
    needle = marker.encode()
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"hash":
            values = [*client.hkeys(key), *client.hvals(key)]
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"zset":
            values = client.zrange(key, 0, -1)
        else:
            values = []
        if needle in key or any(needle in value for value in values):
            found.append(key.decode(errors="replace"))
    return found


def _ended_job(owner: str, marker: str, *, age_days: float, state: str = "succeeded"):
    """A summarise job written straight to the database, ended ``age_days`` ago (not committed)."""
    from app.extensions import db
    from app.models import Job, JobInput, JobStep, utcnow

    now = utcnow()
    job = Job(
        kind="summarise",
        state=state,
        owner=owner,
        params={"language": "fr", "max_words": 50},
        created_at=now - timedelta(days=age_days, minutes=5),
        started_at=now - timedelta(days=age_days, minutes=4) if state != "queued" else None,
        finished_at=now - timedelta(days=age_days) if state in ("succeeded", "failed", "cancelled") else None,
    )
    job.steps.append(
        JobStep(
            position=0,
            name="summarise",
            task_name=cc.TASK_SUMMARISE,
            queue=cc.LLM_QUEUE,
            state=state if state != "queued" else "queued",
            result={"summary": f"A summary about {marker}.", "language": "fr", "tokens": 42}
            if state == "succeeded"
            else None,
            wall_ms=1500,
            cpu_ms=1200,
        )
    )
    db.session.add(job)
    db.session.flush()
    db.session.add(JobInput(job_id=job.id, kind="text", data=f"Text about {marker}.".encode()))
    return job


def _content_of(job_id: str) -> tuple[bool, list]:
    from app.extensions import db
    from app.models import JobInput, JobStep

    kept_input = db.session.get(JobInput, job_id) is not None
    results = [s.result for s in db.session.scalars(select(JobStep).where(JobStep.job_id == job_id))]
    return kept_input, results


# --- content in logs and Redis, and retention, through the real grid ---------------------------


def test_a_job_s_text_is_in_no_log_and_is_gone_from_redis_and_the_database_once_erased(
    grid, client: Client, flask_app, redis_url
):
    from app import gdpr
    from app.extensions import db
    from app.models import Job, LedgerEntry

    marker = _marker()
    ocr = client.submit_document(
        "ocr", text_pdf([[f"Invoice for {marker} consulting", "Total 12.00 EUR"]]), force_ocr="false"
    )
    summary = client.submit_text("summarise", text=f"The {marker} met the board about the roof. " * 5)
    ocr_done = client.wait(ocr["id"])
    summary_done = client.wait(summary["id"])
    assert ocr_done["state"] == "succeeded", ocr_done
    assert summary_done["state"] == "succeeded", summary_done
    assert marker in ocr_done["result"]["text"]  # the grid did read it

    # No process of the grid logged the text: not Celery's "succeeded in …: <result>" line on the
    # volunteers, not the ledger worker, not the API.
    for process in grid.processes:
        assert marker not in process.output(), f"{process.name}'s log holds the document's text"

    with flask_app.app_context():
        entries_before = [
            (e.id, e.node, e.granted_ms, e.rate_eur_per_hour)
            for e in db.session.scalars(
                select(LedgerEntry).where(LedgerEntry.job_id.in_([ocr["id"], summary["id"]]))
            )
        ]
        assert entries_before
        # Both ended 31 days ago: past the default 30 days.
        db.session.execute(
            text("UPDATE jobs SET finished_at = finished_at - interval '31 days' WHERE id IN (:a, :b)"),
            {"a": ocr["id"], "b": summary["id"]},
        )
        db.session.commit()
        erased = set()
        while batch := gdpr.erase_expired(limit=50):  # every job the suite left ended long ago
            erased |= set(batch)
        assert {ocr["id"], summary["id"]} <= erased
        for job_id in (ocr["id"], summary["id"]):
            kept_input, results = _content_of(job_id)
            assert not kept_input
            assert marker not in json.dumps(results)
            assert db.session.get(Job, job_id).input_name is None
        ocr_step = _content_of(ocr["id"])[1][0]
        assert ocr_step["pages"] == 1 and ocr_step["characters"] > 0  # metadata stays
        entries_after = [
            (e.id, e.node, e.granted_ms, e.rate_eur_per_hour)
            for e in db.session.scalars(
                select(LedgerEntry).where(LedgerEntry.job_id.in_([ocr["id"], summary["id"]]))
            )
        ]
        assert entries_after == entries_before
        db.session.rollback()

    assert _redis_holds(redis_url, marker) == []

    shown = client.job(ocr["id"])
    assert shown["content_erased"] is True and shown["result"] is None
    assert (
        shown["state"] == "succeeded" and shown["input"]["pages"] == 1 and shown["input"]["filename"] is None
    )
    assert shown["cost"] == ocr_done["cost"]
    assert shown["steps"][0]["wall_seconds"] == ocr_done["steps"][0]["wall_seconds"]
    assert marker not in json.dumps(shown) and marker not in json.dumps(client.job(summary["id"]))
    gone = client.get(f"/api/v1/jobs/{ocr['id']}/result")
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "content_erased"
    listed = client.get("/api/v1/jobs", params={"per_page": 100}).json()["items"]
    assert any(j["id"] == ocr["id"] and j.get("content_erased") for j in listed)


def test_a_kept_job_s_result_is_served_alone(grid, client: Client):
    marker = _marker()
    job = client.submit_text("summarise", text=f"The {marker} repaired the stairs. " * 3)
    done = client.wait(job["id"])
    assert done["state"] == "succeeded" and "content_erased" not in done
    answer = client.get(f"/api/v1/jobs/{job['id']}/result")
    assert answer.status_code == 200
    assert answer.json() == {"id": job["id"], "state": "succeeded", "result": done["result"]}


def test_retention_erases_old_ended_jobs_in_bounded_batches_and_leaves_recent_and_running_ones(app_context):
    from app import gdpr
    from app.extensions import db
    from app.models import Job

    marker = _marker()
    owner = f"retention-{secrets.token_hex(3)}@koprogo.test"
    # Older than anything else the suite leaves, so they come first in the oldest-first batches.
    old = [
        _ended_job(owner, marker, age_days=4000 + i, state=state)
        for i, state in enumerate(("succeeded", "failed", "cancelled"))
    ]
    recent = _ended_job(owner, marker, age_days=29)
    running = _ended_job(owner, marker, age_days=5000, state="running")  # started long ago, not ended
    db.session.commit()
    old_ids = [job.id for job in old]

    first = gdpr.erase_expired(limit=2)
    assert first == [old_ids[2], old_ids[1]]  # oldest end first, two at most
    second = gdpr.erase_expired(limit=1)
    assert second == [old_ids[0]]
    for job_id in old_ids:
        job = db.session.get(Job, job_id)
        assert job.content_erased_at is not None
        kept_input, results = _content_of(job_id)
        assert not kept_input and marker not in json.dumps(results)
        assert job.steps[0].wall_ms == 1500 and job.steps[0].cpu_ms == 1200  # timings stay
    assert _content_of(old_ids[0])[1] == [{"language": "fr", "tokens": 42}]
    for kept in (recent, running):
        db.session.refresh(kept)
        assert kept.content_erased_at is None
        assert _content_of(kept.id)[0]  # its input stays
    assert marker in json.dumps(_content_of(recent.id)[1])
    # Idempotent: an erased job is not erased again (nor counted).
    assert not set(gdpr.erase_expired(limit=10_000)) & set(old_ids)
    assert gdpr.erase_job_content(db.session.get(Job, running.id)) is False  # never a running job
    db.session.rollback()


def test_the_schedule_runs_the_erasure_on_the_coordinator_queue(flask_app):
    import app.ledger.tasks  # noqa: F401  (registers the coordinator's tasks)

    scheduled = [s for s in cc.beat_schedule.values() if s["task"] == cc.TASK_ERASE_EXPIRED]
    assert scheduled and scheduled[0]["options"]["queue"] == cc.COORDINATOR_QUEUE
    assert cc.TASK_ERASE_EXPIRED.startswith("grid.coordinator.")
    assert flask_app.config["RETENTION_DAYS"] == 30
    celery = flask_app.extensions["celery"]
    assert cc.TASK_ERASE_EXPIRED in celery.tasks
    # Run as the ledger worker runs it (eagerly here): it answers a count, never content.
    assert isinstance(celery.tasks[cc.TASK_ERASE_EXPIRED].apply().get(), int)


def test_a_result_s_metadata_keeps_no_text_wherever_a_node_put_it():
    from workers.protocol.content import metadata

    text = "Jeanne Membre, rue de la Loi 16, owes 1,234.00 EUR to the co-owners. " * 3
    result = {
        "text": text,
        "summary": text,
        "pages": 2,
        "characters": 420,
        "languages": "fra+eng",
        "kind": text,  # a node may put text under a metadata key…
        "engine": {"name": "tesseract", "version": "5.3.0", "note": text, "text": "short"},
        "page_readings": [{"page": 1, "method": "ocr", "confidence": 91.5, "words": [text]}],
        "my_notes": "short",  # … or under a key of its own
    }
    kept = metadata(result)
    assert text[:20] not in json.dumps(kept) and "short" not in json.dumps(kept)
    assert kept == {
        "pages": 2,
        "characters": 420,
        "languages": "fra+eng",
        "kind": None,
        "engine": {"name": "tesseract", "version": "5.3.0", "note": None},
        "page_readings": [{"page": 1, "method": "ocr", "confidence": 91.5, "words": None}],
    }
    assert metadata("a bare text") is None and metadata(None) is None


# --- erasure and export on request -----------------------------------------------------------


def _participant_with_a_node_and_ledger(email: str, marker: str):
    """A member who submits jobs and lends a node that earned in the open period (committed)."""
    from app import accounts, nodes
    from app.auth import create_token
    from app.extensions import db
    from app.ledger import periods
    from app.models import LedgerEntry, utcnow

    node = nodes.create(f"gdpr-{secrets.token_hex(3)}", email)
    node.participant.name = "Jeanne Membre"
    node.worker = f"{node.name}@jeannes-laptop"
    accounts.invite(email)
    create_token("jeanne's laptop", email, ["jobs:read", "jobs:write"])
    done = _ended_job(email, marker, age_days=1)
    running = _ended_job(email, marker, age_days=0.01, state="running")
    done.steps[0].node, done.steps[0].node_id = node.worker, node.id
    db.session.flush()
    now = utcnow()
    period = periods.open_period_for(now, periods.closed())
    db.session.add(
        LedgerEntry(
            task_id=done.steps[0].task_id,
            attempt=0,
            job_id=done.id,
            step_id=done.steps[0].id,
            node_id=node.id,
            node=node.worker,
            capability="llm",
            task_name=cc.TASK_SUMMARISE,
            outcome="succeeded",
            wall_ms=1500,
            cpu_ms=1200,
            unit="token",
            units=42,
            received_at=now,
            claimed_ms=1500,
            observed_ms=1500,
            granted_ms=1500,
            grant_basis="claimed",
            rate_eur_per_hour="0.60",
            period=period,
        )
    )
    db.session.commit()
    return node, done, running, period


def test_erasure_on_request_keeps_the_ledger_and_its_sums_and_export_shows_everything_first(grid, flask_app):
    from app.extensions import db
    from app.ledger import settlement
    from app.models import ApiToken, Invitation, Job, LedgerEntry, Node, Participant

    marker = _marker()
    email = f"jeanne-{secrets.token_hex(3)}@koprogo.test"
    with flask_app.app_context():
        node, done, running, period = _participant_with_a_node_and_ledger(email, marker)
        node_id, done_id, running_id = node.id, done.id, running.id
        participant = db.session.get(Participant, node.participant_id)
        participant_id = participant.id
        statement_before = settlement.statement(participant, period)
        entries_before = [
            {c.name: getattr(e, c.name) for c in LedgerEntry.__table__.columns}
            for e in db.session.scalars(select(LedgerEntry).where(LedgerEntry.node_id == node_id))
        ]
        db.session.rollback()

    exported = manage("gdpr", "export", "--owner", email.upper())
    assert exported.returncode == 0, exported.stderr
    found = json.loads(exported.stdout)
    assert found["participant"]["email"] == email and found["participant"]["name"] == "Jeanne Membre"
    assert [t["name"] for t in found["tokens"]] == ["jeanne's laptop"]
    assert "token_hash" not in json.dumps(found)
    assert len(found["invitations"]) == 1
    assert {j["id"] for j in found["jobs"]} == {done_id, running_id}
    assert marker in json.dumps(found["jobs"])
    assert [n["id"] for n in found["nodes"]] == [node_id] and found["nodes"][0]["worker"].endswith(
        "@jeannes-laptop"
    )
    assert [e["id"] for e in found["ledger_entries"]] == [e["id"] for e in entries_before]

    refused = manage("gdpr", "erase", "--owner", email)  # no --yes, nobody to confirm
    assert refused.returncode != 0
    erased = manage("gdpr", "erase", "--owner", email, "--yes")
    assert erased.returncode == 0, erased.stderr
    assert "1 nodes pseudonymised" in erased.stdout and "1 cancelled first" in erased.stdout

    with flask_app.app_context():
        participant = db.session.get(Participant, participant_id)
        assert participant.email.startswith("erased-") and participant.email.endswith("@invalid")
        assert participant.name is None and participant.password_hash is None
        assert (
            db.session.scalars(select(Invitation).where(Invitation.participant_id == participant.id)).all()
            == []
        )
        tokens = db.session.scalars(select(ApiToken).where(ApiToken.owner == participant.email)).all()
        assert len(tokens) == 1 and tokens[0].revoked_at is not None and tokens[0].name == "erased"
        assert db.session.scalar(select(ApiToken).where(ApiToken.owner == email)) is None
        for job_id, state in ((done_id, "succeeded"), (running_id, "cancelled")):
            job = db.session.get(Job, job_id)
            assert job.owner == participant.email and job.state == state and job.content_erased_at
            assert marker not in json.dumps(_content_of(job_id)[1]) and not _content_of(job_id)[0]
        node = db.session.get(Node, node_id)
        assert node.name.startswith("node-") and node.worker is None and node.revoked_at is not None
        assert db.session.get(Job, done_id).steps[0].node == f"{node.name}@erased"
        # The ledger: the very same rows, and the statement sums the same.
        entries_after = [
            {c.name: getattr(e, c.name) for c in LedgerEntry.__table__.columns}
            for e in db.session.scalars(select(LedgerEntry).where(LedgerEntry.node_id == node_id))
        ]
        assert entries_after == entries_before
        statement_after = settlement.statement(participant, period)
        for key in ("total_exact_eur", "total_eur"):
            assert statement_after[key] == statement_before[key]
        assert [line["granted_seconds"] for line in statement_after["entries"]] == [
            line["granted_seconds"] for line in statement_before["entries"]
        ]
        assert statement_after["participant"]["email"] == participant.email
        # Still append-only: erasure never needed to change an entry, and nothing may.
        entry_id = entries_before[0]["id"]
        for statement in (
            "UPDATE ledger_entries SET node = 'x' WHERE id = :id",
            "DELETE FROM ledger_entries WHERE id = :id",
        ):
            with pytest.raises(DBAPIError, match="append-only"):
                db.session.execute(text(statement), {"id": entry_id})
            db.session.rollback()

    again = manage("gdpr", "export", "--owner", email)
    assert again.returncode != 0 and "holds nothing" in again.stderr
    nothing = manage("gdpr", "erase", "--owner", email, "--yes")
    assert nothing.returncode != 0 and "holds nothing" in nothing.stderr


def test_the_admin_route_erases_for_admins_only_and_checks_its_input(grid, admin: Client, make_token):
    owner = f"leaver-{secrets.token_hex(3)}@koprogo.test"
    leaver = Client(grid.api_url, make_token(owner))
    marker = _marker()
    job = leaver.submit_text("summarise", text=f"The {marker} left the cooperative. " * 3)
    assert leaver.wait(job["id"])["state"] == "succeeded"

    member = Client(grid.api_url, make_token(f"member-{secrets.token_hex(3)}@koprogo.test"))
    for path in ("/api/v1/admin/gdpr/erase", "/api/v1/admin/gdpr/export"):
        refused = member.post(path, json={"owner": owner})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"
        assert leaver.post(path, json={"owner": owner}).status_code == 403
        for body in ({}, {"owner": 5}, {"owner": ""}, {"owner": "no address"}, {"owner": "x@" + "y" * 300}):
            invalid = admin.post(path, json=body)
            assert invalid.status_code == 422, (body, invalid.text)
            assert invalid.json()["error"]["code"] == "invalid_parameter"
        assert admin.post(path, data="{", headers={"Content-Type": "application/json"}).status_code == 400
        unknown = admin.post(path, json={"owner": f"nobody-{secrets.token_hex(3)}@koprogo.test"})
        assert unknown.status_code == 404
    kept = leaver.job(job["id"])["result"]
    assert kept is not None  # nothing was erased by the refusals

    exported = admin.post("/api/v1/admin/gdpr/export", json={"owner": owner})
    assert exported.status_code == 200
    assert [(j["id"], j["result"]) for j in exported.json()["jobs"]] == [(job["id"], kept)]
    erased = admin.post("/api/v1/admin/gdpr/erase", json={"owner": owner.upper()})
    assert erased.status_code == 200, erased.text
    done = erased.json()
    assert done["jobs_erased"] == 1 and done["tokens_revoked"] == 1 and owner not in json.dumps(done)
    assert leaver.get(f"/api/v1/jobs/{job['id']}").status_code == 401  # its token is revoked
    shown = admin.get(f"/api/v1/jobs/{job['id']}").json()
    assert (
        shown["content_erased"] is True
        and shown["owner"] == done["owner"]
        and marker not in json.dumps(shown)
    )
    assert admin.get(f"/api/v1/jobs/{job['id']}/result").json()["error"]["code"] == "content_erased"
