"""Attacks 2 and 6: steer the coordinator's control commands with a forged registration, and
replay a node's notices. A node registers only under the name the coordinator gave it, for
volunteer queues only; a notice already entered, an older one or one from the future is
refused with its reason."""

from __future__ import annotations

import json
import os
import time

from tests.grid import Client, wait_for
from workers import protocol


def notice(kind: str, worker: str, *, sent_at: float | None = None, nonce: str | None = None, **extra) -> str:
    record = {
        "v": protocol.VERSION,
        "worker": worker,
        "sent_at": time.time() if sent_at is None else sent_at,
        "nonce": nonce or os.urandom(16).hex(),
        **extra,
    }
    if kind == "register":
        record.setdefault("queues", ["ocr"])
        record.setdefault("concurrency", 1)
        record.setdefault("probe", {})
    return json.dumps(record)


def test_a_node_cannot_register_as_the_ledger_worker_and_pausing_it_stops_nothing_else(
    grid, client, hostile, rejections, make_token
):
    as_ledger = hostile.run("send", "register", notice("register", "ledger@coordinator-host"))
    on_coordinator = hostile.run(
        "send", "register", notice("register", f"{hostile.name}@x", queues=["coordinator", "ocr"])
    )
    as_honest = hostile.run("send", "register", notice("register", "ocr-node@honest-host"))
    assert as_ledger.returncode == on_coordinator.returncode == as_honest.returncode == 0

    refused = wait_for(lambda: (rows := rejections.new()) and len(rows) >= 3 and rows, 30, "three refusals")
    assert [row.reason for row in refused] == ["wrong_worker_name", "malformed", "wrong_worker_name"]
    assert "queues" in refused[1].detail
    operator = Client(grid.api_url, make_token("operator@koprogo.test", ("admin",)))
    node = operator.get(f"/api/v1/nodes/{hostile.id}").json()
    assert node["worker"] is None and node["queues"] == []  # nothing of it was taken

    assert operator.post(f"/api/v1/nodes/{hostile.id}/pause").status_code == 200
    time.sleep(1)  # a broadcast to a steered name would have reached it by now
    job = client.submit_text("summarise", text="La réunion a voté le budget des travaux.", language="fr")
    assert client.wait(job["id"], timeout=60)["state"] == "succeeded"  # the ledger and the nodes work on


def test_a_replayed_stale_or_future_notice_is_refused_with_its_reason(grid, hostile, rejections, make_token):
    worker = f"{hostile.name}@replay-host"
    first = notice("heartbeat", worker)
    assert hostile.run("send", "heartbeat", first).returncode == 0
    operator = Client(grid.api_url, make_token("operator@koprogo.test", ("admin",)))
    wait_for(
        lambda: operator.get(f"/api/v1/nodes/{hostile.id}").json()["last_seen_at"],
        30,
        "the heartbeat entered",
    )

    hostile.run("send", "heartbeat", first)  # the very same record again
    hostile.run("send", "heartbeat", notice("heartbeat", worker, sent_at=time.time() - 30))  # older
    hostile.run("send", "heartbeat", notice("heartbeat", worker, sent_at=time.time() - 3600))
    hostile.run("send", "register", notice("register", worker, sent_at=time.time() + 3600))

    refused = wait_for(lambda: (rows := rejections.new()) and len(rows) >= 4 and rows, 30, "four refusals")
    assert [row.reason for row in refused] == ["replay", "stale", "stale", "clock_skew"]
    assert all(row.node_id == hostile.id for row in refused)
