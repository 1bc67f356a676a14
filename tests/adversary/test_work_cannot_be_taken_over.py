"""Attack 4: read the members' documents off the queue and take over other nodes' work. Task
messages carry parameters only; the input is served, by reference, to the one node that
starts each attempt, and that request is the coordinator's own sight of the start."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid

import pytest

from tests.documents import FRENCH_LINES, text_pdf
from tests.grid import Client

SECRET_LINE = "Compte du syndic BE71 0961 2345 6769, code 4471"


@pytest.mark.parametrize("fresh_grid", [11], indirect=True)
def test_a_task_message_carries_no_document_and_its_input_goes_to_one_node_per_attempt(
    fresh_grid, hostile, honest_node, make_token, rejections
):
    api = fresh_grid.api()  # no volunteer serves this grid: the attacker takes the message
    client = Client(api, make_token("syndic@koprogo.test"))
    document = text_pdf([[SECRET_LINE, *FRENCH_LINES[:3]]])
    job = client.submit_document("ocr", document, languages="fra")
    env = hostile.on(fresh_grid)

    popped = hostile.run("pop", "ocr", env=env)

    raw = popped.stdout.strip()
    assert raw, popped.stderr
    assert len(raw) < 4096  # parameters only: the 20 MB limit no longer sits in Redis
    body = base64.b64decode(json.loads(raw)["body"])
    assert SECRET_LINE.encode() not in body and base64.b64encode(document[:300]) not in body
    assert json.loads(body)[0] == ["fra"]
    task_id = json.loads(raw)["headers"]["id"]

    taken = hostile.run("fetch", task_id, "grid.ocr.extract", "0", env=env).stdout.split()
    assert taken == ["200", "ok", hashlib.sha256(document).hexdigest(), str(len(document))]
    again = hostile.run("fetch", task_id, "grid.ocr.extract", "0", env=env).stdout.split()
    assert again[:2] == ["200", "ok"]  # the holder may ask again (a retried request)

    other = honest_node.run("fetch", task_id, "grid.ocr.extract", "0", env=honest_node.on(fresh_grid))
    assert other.stdout.split()[:2] == ["409", "cross_node"]  # one node per attempt
    invented = hostile.run("fetch", str(uuid.uuid4()), "grid.ocr.extract", "0", env=env)
    assert invented.stdout.split()[:2] == ["404", "never_dispatched"]
    ahead = hostile.run("fetch", task_id, "grid.ocr.extract", "1", env=env)
    assert ahead.stdout.split()[:2] == ["503", "previous_attempt_pending"]  # attempt 0 has not ended
    guessed = {**honest_node.on(fresh_grid), "GRID_NODE_SECRET": "guess"}
    unsigned = honest_node.run("fetch", task_id, "grid.ocr.extract", "0", env=guessed)
    assert unsigned.stdout.split()[:2] == ["403", "bad_signature"]

    # Signed refusals are kept as evidence; an early attempt and unsigned knocks are not.
    assert [row.reason for row in rejections.new()] == ["cross_node", "never_dispatched"]
    seen = client.job(job["id"])
    assert seen["state"] == "running" and seen["steps"][0]["node"] == f"{hostile.name}@hostile-host"
