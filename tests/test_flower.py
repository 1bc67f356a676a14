"""Operators watch the grid in Flower: it lists the volunteers and the queues they serve."""

from __future__ import annotations

import requests

from tests.grid import free_port, wait_for


def test_flower_lists_the_workers_and_their_queues(grid):
    port = free_port()
    flower = grid.flower(port)

    def workers() -> dict | None:
        assert flower.alive(), flower.output()[-3000:]
        try:
            response = requests.get(
                f"http://127.0.0.1:{port}/api/workers", params={"refresh": "1"}, timeout=10
            )
        except requests.ConnectionError:
            return None
        if response.status_code != 200:
            return None
        found = response.json()
        names = {name.split("@")[0] for name in found}
        return found if {"ocr-node", "llm-node", "ledger"} <= names else None

    found = wait_for(workers, 60, "Flower to list ocr-node, llm-node and ledger", interval=1)
    queues = {name.split("@")[0]: {q["name"] for q in info["active_queues"]} for name, info in found.items()}
    assert queues["ocr-node"] == {"ocr"}
    assert queues["llm-node"] == {"llm"}
    assert queues["ledger"] == {"coordinator"}  # its batch consumer takes the ledger queue
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert metrics.status_code == 200 and "flower_" in metrics.text
