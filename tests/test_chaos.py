"""The chaos suite's short run (``python -m bench.chaos --short``): worker kills, a Redis
restart, PostgreSQL away and malformed requests, on a grid of its own; every job ends, none is
lost or stuck, no success is thrown away, nothing is granted twice, no answer is a 5xx."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.grid import ROOT


@pytest.mark.slow
def test_the_grid_under_faults_loses_nothing_and_leaves_nothing_stuck():
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRID_")}  # servers of its own
    run = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--short"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )

    table = run.stdout
    assert "goals met" in table, table + run.stderr[-30000:]
    counts = {
        label.strip(): int(count)
        for label, count in (line.rsplit("  ", 1) for line in table.splitlines() if line[-1:].isdigit())
    }
    assert counts["jobs submitted"] >= 10
    assert counts["lost"] == counts["stuck (not final after the drain)"] == 0
    assert counts["discarded successes"] == counts["double grants"] == counts["5xx answers (503 apart)"] == 0
    assert counts.get("faults: whole worker", 0) + counts.get("faults: pool process", 0) >= 3
    assert run.returncode == 0
