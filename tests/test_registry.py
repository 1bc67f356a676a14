"""The registry knows its nodes: what they registered, whether they are online, their uptime;
and a paused node receives nothing until it is resumed."""

from __future__ import annotations

import os
import signal
import time

from tests.documents import ENGLISH_LINES, text_pdf
from tests.grid import Client, enrolment, wait_for

FAST_HEARTBEATS = {"GRID_HEARTBEAT_SECONDS": "1", "GRID_NODE_OFFLINE_AFTER": "3"}
NODE_OWNER = ("jobs:read", "jobs:write", "nodes:write")


def test_a_node_registers_beats_is_paused_resumed_and_goes_offline(fresh_grid, make_token):
    fresh_grid.env.update(FAST_HEARTBEATS)
    fresh_grid.ledger_worker()
    api = fresh_grid.api()
    admin = Client(api, make_token("operator@koprogo.test", ("admin",)))
    owner = Client(api, make_token("volunteer@koprogo.test", NODE_OWNER))
    stranger = Client(api, make_token("stranger@koprogo.test"))
    node_id = enrolment("registry-node")["GRID_NODE_ID"]
    worker = fresh_grid.worker("registry-node", "ocr")

    def registered() -> dict | None:
        node = admin.get(f"/api/v1/nodes/{node_id}").json()
        return node if node["state"] == "online" and node["capabilities"] else None

    node = wait_for(registered, 30, "the node to register", interval=0.3)
    assert node["capabilities"]["ocr"]["can_serve"] is True
    assert node["queues"] == ["ocr"] and node["worker"].startswith("registry-node@")
    assert node["hardware"]["cores"] == os.cpu_count()
    assert node["software"]["tesseract"]["version"].startswith("tesseract")
    assert node["uptime_percent"]["24h"] > 0
    assert node_id in {n["id"] for n in owner.get("/api/v1/nodes").json()["items"]}
    assert stranger.get(f"/api/v1/nodes/{node_id}").status_code == 404

    paused = owner.post(f"/api/v1/nodes/{node_id}/pause").json()
    assert paused["state"] == "paused"
    time.sleep(1)  # the broadcast reaches the worker
    job = owner.submit_document("ocr", text_pdf([ENGLISH_LINES[:2]]), languages="eng")
    time.sleep(4)
    assert owner.job(job["id"])["state"] == "queued"  # a paused node takes nothing

    assert owner.post(f"/api/v1/nodes/{node_id}/resume").json()["state"] == "online"
    done = owner.wait(job["id"], timeout=60)
    assert done["state"] == "succeeded" and done["steps"][0]["node"].startswith("registry-node@")

    worker.kill(signal.SIGKILL)  # no goodbye: the heartbeats stop
    offline = wait_for(
        lambda: (n := admin.get(f"/api/v1/nodes/{node_id}").json())["state"] == "offline" and n,
        30,
        "the node to be counted offline",
        interval=0.5,
    )
    assert 0 < offline["uptime_percent"]["24h"] <= 100
    assert float(offline["compute_hours"]["ocr"]) > 0


def test_a_participant_enrols_a_node_through_the_api_and_gets_its_configuration_once(grid, make_token):
    member = Client(grid.api_url, make_token("newcomer@koprogo.test", NODE_OWNER))
    response = member.post("/api/v1/nodes", json={"name": "newcomer-laptop"})

    assert response.status_code == 201, response.text
    body = response.json()
    node = body["node"]
    assert (node["name"], node["participant"]["email"], node["state"]) == (
        "newcomer-laptop",
        "newcomer@koprogo.test",
        "pending",  # until an operator approves it
    )
    assert "GRID_NODE_NAME=newcomer-laptop" in body["configuration"]
    assert f"GRID_NODE_ID={node['id']}" in body["configuration"]
    assert f"GRID_NODE_SECRET={body['secret']}" in body["configuration"]
    assert "secret" not in member.get(f"/api/v1/nodes/{node['id']}").json()  # shown once
    again = member.post("/api/v1/nodes", json={"name": "newcomer-laptop"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "node_exists"
    bad = member.post("/api/v1/nodes", json={"name": "Not A Name!"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_parameter"


def test_a_token_for_jobs_cannot_enrol_nodes(grid, make_token):
    submitter = Client(grid.api_url, make_token("submitter@koprogo.test"))

    refused = submitter.post("/api/v1/nodes", json={"name": "sneaky-node"})

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_scope"


def test_a_participant_enrols_at_most_the_node_limit_and_an_operator_approves_them(grid, make_token):
    member = Client(grid.api_url, make_token("many-nodes@koprogo.test", NODE_OWNER))
    admin = Client(grid.api_url, make_token("operator@koprogo.test", ("admin",)))
    enrolled = [member.post("/api/v1/nodes", json={"name": f"many-{i}"}) for i in range(5)]
    assert [r.status_code for r in enrolled] == [201] * 5

    sixth = member.post("/api/v1/nodes", json={"name": "many-5"})
    assert sixth.status_code == 409 and sixth.json()["error"]["code"] == "node_limit"
    first = enrolled[0].json()["node"]["id"]
    assert member.post(f"/api/v1/nodes/{first}/approve").status_code == 403  # not their decision
    approved = admin.post(f"/api/v1/nodes/{first}/approve")
    assert approved.status_code == 200 and approved.json()["state"] == "offline"
    assert approved.json()["approved_at"] is not None
    assert member.post(f"/api/v1/nodes/{first}/revoke").status_code == 200
    assert member.post("/api/v1/nodes", json={"name": "many-5"}).status_code == 201  # room again


def test_the_coordinator_s_worker_names_cannot_be_node_names(grid, make_token):
    admin = Client(grid.api_url, make_token("operator@koprogo.test", ("admin",)))

    refused = admin.post("/api/v1/nodes", json={"name": "ledger"})

    assert refused.status_code == 400 and "coordinator's own workers" in refused.json()["error"]["message"]


def test_a_node_an_operator_paused_is_resumed_by_an_operator_only(grid, make_token):
    member = Client(grid.api_url, make_token("paused-owner@koprogo.test", NODE_OWNER))
    admin = Client(grid.api_url, make_token("operator@koprogo.test", ("admin",)))
    node_id = member.post("/api/v1/nodes", json={"name": "paused-by-whom"}).json()["node"]["id"]
    assert admin.post(f"/api/v1/nodes/{node_id}/approve").status_code == 200

    assert member.post(f"/api/v1/nodes/{node_id}/pause").json()["paused_by"] == "owner"
    assert member.post(f"/api/v1/nodes/{node_id}/resume").status_code == 200  # its own pause
    assert admin.post(f"/api/v1/nodes/{node_id}/pause").json()["paused_by"] == "operator"
    assert member.post(f"/api/v1/nodes/{node_id}/pause").json()["paused_by"] == "operator"  # kept

    refused = member.post(f"/api/v1/nodes/{node_id}/resume")

    assert refused.status_code == 403 and refused.json()["error"]["code"] == "paused_by_operator"
    assert member.get(f"/api/v1/nodes/{node_id}").json()["state"] == "paused"
    resumed = admin.post(f"/api/v1/nodes/{node_id}/resume").json()
    assert resumed["state"] != "paused" and resumed["paused_by"] is None


def test_enrolments_sent_at_once_never_exceed_the_node_limit(grid, make_token):
    from concurrent.futures import ThreadPoolExecutor

    member = Client(grid.api_url, make_token("racing-owner@koprogo.test", NODE_OWNER))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: member.post("/api/v1/nodes", json={"name": f"race-{i}"}), range(8)))

    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 5 + [409] * 3, [r.text for r in answers]
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {"node_limit"}
