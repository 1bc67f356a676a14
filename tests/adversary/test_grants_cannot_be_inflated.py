"""Attack 3: inflate grants. A hostile node takes three tasks, fetches their inputs at once
though it registered one slot, and claims an hour and fifty pages for each one-page job. It is
paid for what the coordinator saw and counted, and for one slot's time, not three."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tests.documents import FRENCH_LINES, text_pdf
from tests.grid import Client, wait_for
from workers import protocol

DB = 13


def _completion(task_id: str, worker: str) -> str:
    now = datetime.now(UTC).isoformat()
    return json.dumps(
        protocol.body(
            "completed",
            task_id=task_id,
            task_name="grid.ocr.extract",
            capability="ocr",
            node=worker,
            attempt=0,
            outcome="succeeded",
            final=True,
            started_at=now,
            finished_at=now,
            wall_seconds=3600.0,  # an hour
            cpu_seconds=3600.0,
            units={"pages": 50},  # of a one-page document
            result={"text": "invented", "pages": 50},
        )
    )


@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_a_node_is_paid_for_what_the_coordinator_saw_and_for_the_slots_it_registered(
    fresh_grid, hostile, make_token, flask_app
):
    from app.extensions import db
    from app.models import LedgerEntry

    fresh_grid.ledger_worker()
    api = fresh_grid.api()  # no honest volunteer: the hostile node takes every task
    env = hostile.on(fresh_grid)
    worker = f"{hostile.name}@hostile-host"
    registered = protocol.body(
        "register",
        worker=worker,
        sent_at=time.time(),
        nonce=os.urandom(16).hex(),
        queues=["ocr"],
        concurrency=1,
        probe={},
    )
    assert hostile.run("send", "register", json.dumps(registered), env=env).returncode == 0
    client = Client(api, make_token("member@koprogo.test"))
    jobs = [client.submit_document("ocr", text_pdf([FRENCH_LINES[:2]]), languages="fra") for _ in range(3)]

    task_ids = []
    began = time.monotonic()
    for _ in jobs:  # three tasks taken, three inputs fetched at once
        raw = wait_for(lambda: hostile.run("pop", "ocr", env=env).stdout.strip(), 30, "a task to take")
        task_id = json.loads(raw)["headers"]["id"]
        fetched = hostile.run("fetch", task_id, "grid.ocr.extract", "0", env=env).stdout.split()
        assert fetched[:2] == ["200", "ok"]
        task_ids.append(task_id)
    time.sleep(3)  # "working"
    for task_id in task_ids:
        sent = hostile.run("send", "completed", _completion(task_id, worker), env=env)
        assert sent.returncode == 0, sent.stderr
    # what the coordinator can have seen: at most the time this test took to take and answer
    seen_at_most_ms = (time.monotonic() - began) * 1000

    def entries() -> list[LedgerEntry]:
        with flask_app.app_context():
            rows = db.session.scalars(
                select(LedgerEntry).where(LedgerEntry.task_id.in_(task_ids)).order_by(LedgerEntry.received_at)
            ).all()
            db.session.expunge_all()
            return rows if len(rows) == 3 else []

    paid = wait_for(entries, 60, "the three completions to be entered")
    assert [e.units for e in paid] == [1, 1, 1]  # the pages the coordinator counted
    assert all(e.claimed_ms == 3_600_000 for e in paid)
    assert paid[0].grant_basis == "observed" and 3_000 <= paid[0].granted_ms <= seen_at_most_ms + 1_000
    assert [e.grant_basis for e in paid[1:]] == ["concurrency", "concurrency"]
    # One slot's time (the first fetch to the last completion) and one allowance, not three.
    window = (paid[-1].received_at - paid[0].received_at).total_seconds() * 1000 + paid[0].observed_ms
    assert sum(e.granted_ms for e in paid) <= window + 500
    assert sum(e.granted_ms for e in paid) < 3 * paid[0].granted_ms - 2_000
