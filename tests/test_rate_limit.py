"""A node takes at most GRID_NODE_RATE_LIMIT tasks, of all kinds together."""

from __future__ import annotations

from datetime import datetime

from tests.grid import Client


def test_a_node_starts_no_more_tasks_than_its_rate_limit_allows(fresh_grid, make_token):
    fresh_grid.env["GRID_NODE_RATE_LIMIT"] = "20/m"  # one task every 3 s, whatever its kind
    fresh_grid.ledger_worker()
    fresh_grid.worker("limited-node", "llm")
    client = Client(fresh_grid.api(), make_token("member@koprogo.test"))

    submitted = [
        client.submit_text("summarise", text="Facture de chauffage, à payer.", language="fr", max_words=10),
        client.submit_text("translate", text="Facture.", target="en"),
        client.submit_text("summarise", text="Meeting minutes.", language="en", max_words=10),
    ]
    done = [client.wait(job["id"], timeout=60) for job in submitted]

    assert all(job["state"] == "succeeded" for job in done)
    starts = sorted(datetime.fromisoformat(job["steps"][0]["started_at"]) for job in done)
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(starts, starts[1:], strict=False)]
    assert all(gap >= 2.5 for gap in gaps), gaps
