"""GET /api/v1/stats and /api/v1/models (and ``manage.py stats``/``models``) on a real grid:
the figures after real jobs are the ledger's, CO₂ follows its formula with the configured
assumptions, members see no money, and a model is available while a node serving it is online."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import gguf

from tests.documents import ENGLISH_LINES, text_pdf
from tests.grid import ROOT, Client, Grid, manage, wait_for
from workers.tinymodel import build_tiny_model

FAST_HEARTBEATS = {"GRID_HEARTBEAT_SECONDS": "1", "GRID_NODE_OFFLINE_AFTER": "3"}
# Figures far from the defaults, and large, so that a second of work weighs grams: the test
# reads the formula's result to the milligram.
CO2_SETTINGS = {
    "GRID_CO2_WATTS_BY_HARDWARE_CLASS": json.dumps(
        {"laptop": "2000", "raspberry-pi": "7", "desktop": "4000"}
    ),
    "GRID_CO2_GRID_G_PER_KWH": "1500",
    "GRID_CO2_CLOUD_G_PER_REQUEST": "400",
}
WATTS = {"laptop": Decimal(2000), "unknown": Decimal(4000)}  # unknown: the table's highest


def _manage(grid: Grid, *args: str) -> subprocess.CompletedProcess:
    """``python manage.py ARGS`` with the grid's settings (its CO₂ figures)."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=grid.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_stats_after_real_jobs_are_the_ledger_s_and_co2_follows_the_configured_model(fresh_grid, make_token):
    fresh_grid.env.update(CO2_SETTINGS)
    fresh_grid.ledger_worker()
    api = fresh_grid.api()
    admin = Client(api, make_token("stats-operator@koprogo.test", ("admin",)))
    member = Client(api, make_token("stats-member@koprogo.test"))
    # The OCR node says it is a laptop; the LLM node names a class the table does not have.
    fresh_grid.worker(
        "stats-ocr", "ocr", owner="stats-ocr@koprogo.test", env={"GRID_HARDWARE_CLASS": "laptop"}
    )
    fresh_grid.worker(
        "stats-llm", "llm", owner="stats-llm@koprogo.test", env={"GRID_HARDWARE_CLASS": "quantum-toaster"}
    )
    start = datetime.now(UTC) - timedelta(seconds=1)

    submitted = [
        member.submit_document("ocr", text_pdf([ENGLISH_LINES[:3]]), languages="eng"),
        member.submit_document("ocr", text_pdf([ENGLISH_LINES[:2], ENGLISH_LINES[2:4]]), languages="eng"),
        member.submit_text("summarise", text="\n".join(ENGLISH_LINES), language="en", max_words=20),
    ]
    jobs = [member.wait(job["id"], timeout=120) for job in submitted]
    assert [job["state"] for job in jobs] == ["succeeded"] * 3, jobs
    end = datetime.now(UTC) + timedelta(seconds=1)
    span = {"from": start.isoformat(), "to": end.isoformat()}

    found = admin.get("/api/v1/stats", params=span)
    assert found.status_code == 200, found.text
    stats = found.json()

    # The ledger's own account of these nodes (GET /api/v1/ledger/nodes) and of these jobs.
    ledger = {n["node"]: n for n in admin.get("/api/v1/ledger/nodes").json()["nodes"]}
    ocr_line = ledger["stats-ocr"]["capabilities"][0]
    llm_line = ledger["stats-llm"]["capabilities"][0]
    assert stats["capabilities"]["ocr"]["compute_hours"] == ocr_line["granted_hours"]
    assert stats["capabilities"]["llm"]["compute_hours"] == llm_line["granted_hours"]
    # each figure is rounded to the microhour on its own: the parts may sum one unit apart
    parts = Decimal(ocr_line["granted_hours"]) + Decimal(llm_line["granted_hours"])
    assert abs(Decimal(stats["compute_hours"]) - parts) <= Decimal("0.000001")
    granted_seconds = sum(sum(job["cost"]["granted_seconds"].values()) for job in jobs)
    assert abs(Decimal(stats["compute_hours"]) * 3600 - Decimal(str(granted_seconds))) < Decimal("0.01")
    assert stats["capabilities"]["ocr"]["executions"] == ocr_line["executions"] == 2
    assert stats["capabilities"]["ocr"]["units"] == ocr_line["units"] == 3  # pages
    assert stats["tokens"] == stats["capabilities"]["llm"]["units"] == llm_line["units"] > 0
    assert stats["requests"] == 3  # three steps done, each one cloud request
    money = stats["money"]
    assert money["earned_eur"] == {"llm": llm_line["reward_eur"], "ocr": ocr_line["reward_eur"]}
    by_jobs = sum(Decimal(job["cost"]["exact_eur"]) for job in jobs)
    assert abs(Decimal(money["earned_exact_eur"]) - by_jobs) < Decimal("1e-20")  # 28-digit divisions
    assert Decimal(money["earned_exact_eur"]) > 0

    assert stats["jobs"]["submitted"] == 3 and stats["jobs"]["by_kind"] == {"ocr": 2, "summarise": 1}
    assert stats["jobs"]["by_outcome"] == {
        "queued": 0,
        "running": 0,
        "succeeded": 3,
        "failed": 0,
        "cancelled": 0,
    }
    latencies = sorted((_moment(j["finished_at"]) - _moment(j["created_at"])).total_seconds() for j in jobs)
    latency = stats["jobs"]["latency_seconds"]
    assert latency["jobs"] == 3
    assert abs(latency["average"] - sum(latencies) / 3) < 0.002
    assert latencies[1] - 0.002 <= latency["p95"] <= latencies[2] + 0.002  # interpolated near the top
    assert stats["nodes"]["online"] >= 2 and stats["nodes"]["by_state"]["online"] == stats["nodes"]["online"]

    # CO₂: each execution's claimed seconds bounded by the coordinator's observation, from the
    # participants' statements, at 2000 W (laptop) or 4000 W (an unknown class), at 1.5 g/Wh.
    seconds = {}
    for name in ("stats-ocr", "stats-llm"):
        participant = ledger[name]["participant"]
        listed = admin.get("/api/v1/nodes", params={"per_page": 1000}).json()["items"]  # every node
        node = next(n for n in listed if n["name"] == name)
        statement = admin.get(f"/api/v1/participants/{node['participant']['id']}/statement").json()
        assert statement["participant"]["email"] == participant
        assert (
            node["hardware"]["hardware_class"]
            == {"stats-ocr": "laptop", "stats-llm": "quantum-toaster"}[name]
        )
        seconds[name] = sum(
            Decimal(str(min(line["claimed_seconds"], line["observed_seconds"])))
            for line in statement["entries"]
        )
    assert all(value > 0 for value in seconds.values())
    co2 = stats["co2"]
    by_class = co2["by_hardware_class"]
    assert set(by_class) == {"laptop", "unknown"}
    assert Decimal(str(by_class["laptop"]["seconds"])) == seconds["stats-ocr"]
    assert Decimal(str(by_class["unknown"]["seconds"])) == seconds["stats-llm"]
    wh = seconds["stats-ocr"] * WATTS["laptop"] / 3600 + seconds["stats-llm"] * WATTS["unknown"] / 3600
    grams = wh * Decimal(1500) / 1000
    assert abs(Decimal(str(co2["energy_wh"])) - wh) <= Decimal("0.001")
    assert abs(Decimal(str(co2["co2_grams"])) - grams) <= Decimal("0.001")
    assert co2["cloud_reference_grams"] == 1200.0  # three requests at the seed's figure, as configured
    assert abs(Decimal(str(co2["co2_saved_grams"])) - (1200 - grams)) <= Decimal("0.001")
    assumed = co2["assumptions"]
    assert assumed["grid_g_per_kwh"] == "1500" and assumed["cloud_g_per_request"] == "400"
    assert (
        assumed["watts_by_hardware_class"]["laptop"] == "2000" and assumed["unknown_hardware_watts"] == "4000"
    )
    # Each job shows its own, and they add up to the span's.
    assert all(job["co2_grams"] > 0 for job in jobs)
    assert abs(sum(Decimal(str(job["co2_grams"])) for job in jobs) - grams) <= Decimal("0.003")

    # A member sees the same figures, without the money.
    public = member.get("/api/v1/stats", params=span)
    assert public.status_code == 200, public.text
    public = public.json()
    assert "money" not in public and "rewards_eur" not in public["all_time"]
    assert "eur" not in json.dumps(public)
    assert public["co2"] == co2 and public["capabilities"] == stats["capabilities"]
    assert stats["all_time"]["rewards_eur"].keys() == {"settled", "paid"}

    # The operator's command line prints the same, with the money.
    printed = _manage(fresh_grid, "stats", "--from", span["from"], "--to", span["to"], "--json")
    assert printed.returncode == 0, printed.stderr
    as_printed = json.loads(printed.stdout)
    for key in ("capabilities", "compute_hours", "requests", "tokens", "co2", "money"):
        assert as_printed[key] == stats[key], key
    table = _manage(fresh_grid, "stats", "--from", span["from"], "--to", span["to"])
    assert table.returncode == 0, table.stderr
    assert f"{co2['co2_grams']} g emitted" in table.stdout
    assert f"earned {money['earned_exact_eur']} €" in table.stdout


def test_a_bad_period_is_a_400_with_a_stable_code(grid, client):
    for params in (
        {"period": "year"},
        {"period": ""},
        {"from": "yesterday"},
        {"to": "2026-11-01"},  # to without from
        {"from": "2026-11-02", "to": "2026-11-01"},
        {"from": "2026-11-01", "to": "2026-11-01"},
        {"from": "2020-01-01", "to": "2026-01-01"},  # over GRID_STATS_MAX_DAYS
        {"from": "1066-10-14", "to": "1066-10-15"},
        {"period": "day", "from": "2026-11-01"},
        {"from": "2026-11-01\x00"},
    ):
        refused = client.get("/api/v1/stats", params=params)
        assert refused.status_code == 400, (params, refused.text)
        assert refused.json()["error"]["code"] == "invalid_period", params
    for period in ("day", "week", "month"):
        shown = client.get("/api/v1/stats", params={"period": period})
        assert shown.status_code == 200 and shown.json()["period"]["name"] == period
    assert client.get("/api/v1/stats", params={"from": "2026-11-01T00:00+01:00"}).status_code == 200
    unknown = Client(grid.api_url, "kgg_not-a-token")
    assert unknown.get("/api/v1/stats").json()["error"]["code"] == "invalid_token"
    refused = manage("stats", "--from", "2026-11-02", "--to", "2026-11-01")
    assert refused.returncode == 1 and "from must come before to" in refused.stderr


def test_a_model_is_listed_from_its_node_available_while_the_node_is_online_and_not_after(
    fresh_grid, make_token, tmp_path: Path
):
    # A model of this test's own (another seed: another file), so that no other node serves it.
    model = build_tiny_model(tmp_path / "listing-tiny.gguf", seed=7, context_length=384)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    size = model.stat().st_size
    fresh_grid.env.update(FAST_HEARTBEATS)
    fresh_grid.env["GRID_EDGE_MODEL_MAX_BYTES"] = str(size)  # at most the bound: edge compatible
    fresh_grid.ledger_worker()
    api = fresh_grid.api()
    member = Client(api, make_token("models-member@koprogo.test"))
    worker = fresh_grid.worker("models-llm", "llm", env={"GRID_LLM_MODEL": str(model)})

    def listed(available: bool) -> dict | None:
        answer = member.get("/api/v1/models")
        assert answer.status_code == 200, answer.text
        ours = [m for m in answer.json()["models"] if m["sha256"] == digest]
        return ours[0] if ours and ours[0]["available"] is available else None

    shown = wait_for(lambda: listed(True), 30, "the model to be listed available", interval=0.3)
    parameters = sum(int(t.n_elements) for t in gguf.GGUFReader(model).tensors)
    assert shown == {
        "id": f"listing-tiny.gguf@{digest[:12]}",
        "file_name": "listing-tiny.gguf",
        "sha256": digest,
        "bytes": size,
        "parameters": parameters,
        "context_length": 384,
        "quantisation": "F32",
        "architecture": "llama",
        "name": "KoproGo tiny test model (random weights, seed 7)",
        "nodes": 1,
        "nodes_online": 1,
        "available": True,
        "edge_compatible": True,
    }
    printed = _manage(fresh_grid, "models", "--json")
    assert printed.returncode == 0, printed.stderr
    assert shown in json.loads(printed.stdout)["models"]
    table = _manage(fresh_grid, "models")
    assert f"listing-tiny.gguf@{digest[:12]}" in table.stdout

    worker.kill(signal.SIGKILL)  # no goodbye: its heartbeats stop
    gone = wait_for(lambda: listed(False), 30, "the model to be listed unavailable", interval=0.5)
    assert (gone["nodes"], gone["nodes_online"]) == (1, 0)


def test_nothing_a_node_registered_breaks_the_models_listing(flask_app):
    """Probes as a hostile worker could register them (the schema only bounds their size and
    depth): the listing skips or bounds them, and lists the well-formed one."""
    from app import catalog, nodes
    from app.extensions import db

    digest = hashlib.sha256(b"hostile-listing").hexdigest()
    probes = [
        {"model": "mistral.gguf", "queues": [1, 2]},
        {"model": [digest], "queues": "llm"},
        {"model": {"sha256": digest.upper(), "bytes": -1}},
        {"model": {"sha256": {"$ne": None}}},
        {"model": None, "machine": "x" * 1000},
        {
            "model": {
                "sha256": digest,
                "file_name": "../../etc/passwd",
                "bytes": 2**62,
                "context_length": "8k",
            }
        },
    ]
    with flask_app.test_request_context():
        for i, probe in enumerate(probes):
            node = nodes.create(f"hostile-probe-{i}", "hostile-probes@koprogo.test")
            node.probe = probe
        db.session.commit()
        listed = [m for m in catalog.models() if m["sha256"] == digest]
    assert listed == [
        {
            "id": f"passwd@{digest[:12]}",
            "file_name": "passwd",
            "sha256": digest,
            "bytes": None,
            "parameters": None,
            "context_length": None,
            "quantisation": None,
            "architecture": None,
            "name": None,
            "nodes": 1,
            "nodes_online": 0,
            "available": False,
            "edge_compatible": False,
        }
    ]


def test_co2_of_nodes_is_counted_at_each_node_s_class_whatever_it_registered(flask_app):
    """``footprints.of_nodes`` (summed in SQL by kind of machine) gives what counting each node
    alone at ``carbon.hardware_class`` of its probe gives: well-formed and hostile machines, a
    node the table does not have, and the coordinator's own entries (None)."""
    import uuid as _uuid

    from app import carbon, footprints, nodes
    from app.extensions import db

    pi = {"architecture": "aarch64", "cores": 4, "ram_bytes": 8 * 1024**3, "hardware_class": "raspberry-pi"}
    probes = [
        {"machine": pi},
        {"machine": {**pi, "cores": 64}},  # no Pi has 64 cores
        {"machine": {**pi, "cores": "4"}},  # a string is not a number of cores
        {"machine": {**pi, "ram_bytes": 4.0}},
        {"machine": {"hardware_class": "laptop", "extra": [1, 2]}},
        {"machine": {"hardware_class": "desktop"}},
        {"machine": {"hardware_class": ["laptop"]}},
        {"machine": "laptop"},
        {"machine": ["laptop"]},
        {},
        None,
    ]
    with flask_app.test_request_context():
        made = []
        for i, probe in enumerate(probes):
            node = nodes.create(f"co2-{i}-{_uuid.uuid4().hex[:8]}", "co2-classes@koprogo.test")
            node.probe = probe
            made.append(node)
        db.session.commit()
        model = footprints.assumptions()
        ms_by_node = {node.id: 1_000 * (i + 1) for i, node in enumerate(made)}
        ms_by_node[str(_uuid.uuid4())] = 77_000  # no such node
        ms_by_node[None] = 5_000  # the coordinator's own
        expected: dict[str, int] = {}
        for node in made:
            cls = carbon.hardware_class(node.probe, model.watts_by_class)
            expected[cls] = expected.get(cls, 0) + ms_by_node[node.id]
        expected[carbon.UNKNOWN] = expected.get(carbon.UNKNOWN, 0) + 77_000 + 5_000
        assert footprints.of_nodes(ms_by_node, model) == carbon.footprint(expected, model)
        assert len({cls for cls in expected}) >= 3  # several classes, the unknown one among them


def test_euros_distributed_in_a_span_are_the_rewards_paid_in_it(grid, admin, client, flask_app):
    """A past month settled and paid now: its rewards count as distributed today (the entry is
    written as the ledger writes one, in a month no other test settles)."""
    import uuid

    from app import nodes
    from app.extensions import db
    from app.models import LedgerEntry

    start = datetime.now(UTC) - timedelta(seconds=1)
    period, received = "2003-04", datetime(2003, 4, 15, tzinfo=UTC)
    with flask_app.app_context():
        node = nodes.create(f"paid-node-{uuid.uuid4().hex[:8]}", "paid-member@koprogo.test")
        db.session.add(
            LedgerEntry(
                task_id=str(uuid.uuid4()),
                attempt=0,
                node_id=node.id,
                node=f"{node.name}@host",
                capability="ocr",
                task_name="grid.ocr.extract",
                outcome="succeeded",
                wall_ms=5_400_000,
                cpu_ms=5_000_000,
                unit="page",
                units=40,
                received_at=received,
                claimed_ms=5_400_000,
                observed_ms=5_402_000,
                cap_ms=6_000_000,
                granted_ms=5_400_000,  # 1.5 h at 0.60 €/h
                grant_basis="claimed",
                rate_eur_per_hour=Decimal("0.60"),
                period=period,
                signature=uuid.uuid4().hex,
            )
        )
        db.session.commit()
    settled = manage("ledger", "settle", "--period", period)
    assert settled.returncode == 0, settled.stderr
    paid = manage("ledger", "pay", "--period", period, "--reference", "SEPA test batch")
    assert paid.returncode == 0 and paid.stdout.startswith("1 rewards"), paid.stdout + paid.stderr
    span = {"from": start.isoformat(), "to": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}

    money = admin.get("/api/v1/stats", params=span).json()["money"]

    assert (money["distributed_eur"], money["rewards_paid"]) == ("0.90", 1)
    everything = admin.get("/api/v1/stats", params={"period": "day"}).json()["all_time"]["rewards_eur"]
    assert Decimal(everything["paid"]) >= Decimal("0.90")
    assert "money" not in client.get("/api/v1/stats", params=span).json()
