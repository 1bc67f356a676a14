"""Results are checked on other members' nodes before they are given or paid: real API, ledger
worker, PostgreSQL, Redis, and volunteer worker processes — honest ones, and a tampered one whose
engine returns an empty or invented text while it spends the hours (tests/adversary/tampered.py).
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from tests.documents import FRENCH_LINES, cer, text_image
from tests.grid import Client, manage

DB = 15
#: Small numbers so a test sees every stage in a few dozen results.
POLICY = {
    "GRID_VALIDATION": "true",
    "GRID_VALIDATION_PROBATION_RESULTS": "3",
    "GRID_SUSPICION_INVALID_RESULTS": "2",
}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _node(flask_app, name: str):
    from app.extensions import db
    from app.models import Node

    with flask_app.app_context():
        node = db.session.scalar(select(Node).where(Node.name == name))
        db.session.expunge(node)
        return node


def _grants(flask_app, node_name: str) -> list[tuple[bool, str | None, str | None]]:
    """(held, decision, reason) of every execution entry of a node."""
    from app.extensions import db
    from app.models import GrantDecision, LedgerEntry, Node

    with flask_app.app_context():
        rows = db.session.execute(
            select(LedgerEntry.held, GrantDecision.decision, GrantDecision.reason)
            .join(Node, Node.id == LedgerEntry.node_id)
            .outerjoin(GrantDecision, GrantDecision.entry_id == LedgerEntry.id)
            .where(Node.name == node_name, LedgerEntry.outcome == "succeeded")
        ).all()
        return [tuple(row) for row in rows]


@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_a_tampered_worker_is_never_believed_never_paid_and_ends_paused(fresh_grid, flask_app, make_token):
    fresh_grid.env.update(POLICY)
    fresh_grid.ledger_worker()
    honest = [_name("honest-a"), _name("honest-b")]
    liar = _name("tampered")
    fresh_grid.worker(honest[0], "ocr", owner="alice@koprogo.test")
    fresh_grid.worker(honest[1], "ocr", owner="bob@koprogo.test")
    fresh_grid.worker(liar, "ocr", owner="mallory@koprogo.test", app="tests.adversary.tampered")
    client = Client(fresh_grid.api(), make_token("member@koprogo.test"))
    page = text_image(FRENCH_LINES[:4])
    expected = "\n".join(FRENCH_LINES[:4])

    def one(_: int) -> dict:
        job = client.submit_document("ocr", page, "page.png", languages="fra")
        return client.wait(job["id"], timeout=150)

    done: list[dict] = []
    with ThreadPoolExecutor(3) as pool:  # until the liar is caught (it takes work like the others)
        for _ in range(8):
            done += pool.map(one, range(3))
            if _node(flask_app, liar).paused_by == "suspicion":
                break
        done += pool.map(one, range(3))  # and the grid goes on without it

    liar_node = _node(flask_app, liar)
    assert liar_node.paused_by == "suspicion" and "invalid" in liar_node.pause_reason
    assert liar_node.invalid_results >= 2 and liar_node.validated_streak == 0
    for job in done:  # every member got a real text, never the liar's
        assert job["state"] == "succeeded", job
        assert cer(expected, job["result"]["text"]) < 0.1, job["result"]["text"]
        step = job["steps"][0]
        assert liar not in (step["node"] or "")
        check = step["verification"]  # re-run, or a trusted honest node's result
        assert check is None or check["state"] == "decided", check
    # The liar's grants: all held, none released; those decided are refused as invalid.
    liar_grants = _grants(flask_app, liar)
    assert liar_grants and all(held for held, _, _ in liar_grants)
    assert not [g for g in liar_grants if g[1] == "released"]
    assert ("refused" in {d for _, d, _ in liar_grants}) and {r for _, _, r in liar_grants} <= {
        "invalid_result",
        None,
    }
    # Honest nodes' checked results are validated and their grants released.
    for name in honest:
        grants = _grants(flask_app, name)
        assert grants and all(decision == "released" for held, decision, _ in grants if held), grants
    # The registry shows it to operators and owners alike.
    admin = Client(fresh_grid.api_url, make_token("treasurer@koprogo.test", ("admin",)))
    listed = admin.get("/api/v1/nodes", params={"per_page": 1000}).json()["items"]  # every node
    shown = next(n for n in listed if n["name"] == liar)
    assert shown["state"] == "paused" and shown["paused_by"] == "suspicion" and shown["pause_reason"]
    assert shown["trust"]["level"] == "probation" and shown["trust"]["invalid"] >= 2
    # Its owner cannot resume it; an operator can.
    owner = Client(fresh_grid.api_url, make_token("mallory@koprogo.test", ("jobs:read", "nodes:write")))
    refused = owner.post(f"/api/v1/nodes/{liar_node.id}/resume")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "paused_by_operator"
    listed = manage("nodes", "list")
    assert liar in listed.stdout and "paused by suspicion: " in listed.stdout
    resumed = manage("nodes", "resume", liar)
    assert resumed.returncode == 0, resumed.stderr
    cleared = _node(flask_app, liar)
    assert cleared.paused_at is None and cleared.pause_reason is None and cleared.validated_streak == 0


@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_new_honest_nodes_earn_trust_and_are_then_only_spot_checked(fresh_grid, flask_app, make_token):
    fresh_grid.env.update(POLICY)
    fresh_grid.ledger_worker()
    names = [_name("llm-a"), _name("llm-b")]
    fresh_grid.worker(names[0], "llm", owner="alice@koprogo.test")
    fresh_grid.worker(names[1], "llm", owner="bob@koprogo.test")
    client = Client(fresh_grid.api(), make_token("member@koprogo.test"))
    admin = Client(fresh_grid.api_url, make_token("treasurer@koprogo.test", ("admin",)))

    jobs = []
    for index in range(10):
        job = client.submit_text(
            "summarise", text=f"Réunion {index}: le budget est voté. " * 8, language="fr"
        )
        jobs.append(client.wait(job["id"], timeout=120))

    assert all(job["state"] == "succeeded" and job["result"]["summary"] for job in jobs)
    checked = [job for job in jobs if job["steps"][0]["verification"]]
    # Both start on probation: the first three results each are re-run on the other node.
    assert all(job["steps"][0]["verification"]["reason"] == "probation" for job in jobs[:3])
    assert all(job["steps"][0]["verification"]["replicas"][0]["verdict"] == "valid" for job in checked)
    shown = {n["name"]: n for n in admin.get("/api/v1/nodes", params={"per_page": 1000}).json()["items"]}
    for name in names:
        trust = shown[name]["trust"]
        assert trust["level"] == "trusted" and trust["invalid"] == 0, trust
        assert trust["validated_in_a_row"] >= 3
        assert 0 < trust["check_probability"] <= 1 / 3
    # Once trusted, not every result is re-run; those that are not are paid at once.
    assert len(checked) < len(jobs)
    unchecked = [job for job in jobs if not job["steps"][0]["verification"]]
    assert all(job["cost"]["exact_eur"] != "0" for job in unchecked)
    assert all(job["steps"][0]["verification"]["reason"] == "spot_check" for job in checked[3:])
    # Operators see what checking cost beside the compute it checked.
    stats = admin.get("/api/v1/ledger/validation").json()
    assert stats["replicas_run"] >= len(checked) and stats["original_results"]["valid"] >= len(checked)
    assert stats["grants"]["released"] >= 2 * len(checked) and 0 < stats["checking_overhead"]


@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_two_nodes_checking_each_other_under_load_never_deadlock(fresh_grid, make_token):
    """Two nodes, each finishing a job at once: each is then offered the replica of its own result
    first, which only the other may run. Passed on, not handed back, they swap within seconds."""
    fresh_grid.env.update(POLICY)
    fresh_grid.ledger_worker()
    fresh_grid.worker(_name("pair-a"), "ocr", owner="alice@koprogo.test")
    fresh_grid.worker(_name("pair-b"), "ocr", owner="bob@koprogo.test")
    client = Client(fresh_grid.api(), make_token("member@koprogo.test"))
    page = text_image(FRENCH_LINES[:3])

    jobs = [client.submit_document("ocr", page, "page.png", languages="fra") for _ in range(8)]
    done = [client.wait(job["id"], timeout=120) for job in jobs]

    assert all(job["state"] == "succeeded" for job in done), [job["state"] for job in done]
    checked = [job for job in done if job["steps"][0]["verification"]]
    assert len(checked) >= 3  # both new: their first results were all re-run on the other
    assert all(job["steps"][0]["verification"]["replicas"][0]["verdict"] == "valid" for job in checked)
