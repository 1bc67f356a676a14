"""``python -m workers probe`` tells a volunteer what their machine can serve; ``start`` runs
the worker on exactly that."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.grid import ROOT, UNUSED_ENROLMENT, wait_for

ENROLLED = UNUSED_ENROLMENT


def workers(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workers", *args],
        cwd=ROOT,
        env={**os.environ, **ENROLLED, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_probe_verdicts_match_what_this_machine_has_installed():
    done = workers("probe", "--json")
    found = json.loads(done.stdout)

    assert done.returncode == 0
    assert {"fra", "eng", "nld"} <= set(found["software"]["tesseract"]["languages"])
    assert found["software"]["poppler"].startswith("pdfinfo version")
    assert found["model"]["exists"] and found["model"]["fits_in_ram"]
    assert found["machine"]["cores"] == os.cpu_count()
    assert {q: v["can_serve"] for q, v in found["queues"].items()} == {"ocr": True, "llm": True}
    assert found["enrolment"] == "enrolled"


def test_probe_says_why_a_queue_cannot_be_served(tmp_path: Path):
    (tmp_path / "bin").mkdir()
    huge = tmp_path / "huge.gguf"
    with huge.open("wb") as handle:
        handle.write(b"GGUF")
        handle.truncate(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 2)

    done = workers("probe", PATH=str(tmp_path / "bin"), GRID_LLM_MODEL=str(huge))

    assert done.returncode == 78
    assert "queue ocr   no   tesseract is not installed" in done.stdout
    assert "does NOT fit in RAM" in done.stdout and "queue llm   no   model huge.gguf" in done.stdout
    assert "cannot serve any queue yet" in done.stdout


def test_start_runs_the_worker_on_exactly_the_queues_the_probe_allows(redis_url: str):
    process = subprocess.Popen(
        [sys.executable, "-m", "workers", "start", "-n", "probed@%h", "--loglevel=INFO"],
        cwd=ROOT,
        env={
            **os.environ,
            **ENROLLED,
            "GRID_LLM_MODEL": "",
            "GRID_BROKER_URL": redis_url.rsplit("/", 1)[0] + "/4",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:

        def ready() -> bool:
            line = process.stdout.readline()
            seen.append(line)
            return " ready." in line or process.poll() is not None

        wait_for(ready, 60, "the started worker to be ready", interval=0)
        output = "".join(seen)
        assert process.poll() is None, output
        assert "serving -Q ocr (what this machine can serve)" in output
        queues = output.split("[queues]", 1)[1].split("[tasks]", 1)[0]
        assert "ocr" in queues and "llm" not in queues
    finally:
        process.terminate()
        process.wait(30)


def test_start_checks_an_explicit_queue_too():
    done = workers("start", "-Q", "llm", GRID_LLM_MODEL="")
    assert done.returncode == 78
    assert "cannot serve queue 'llm': no model configured" in done.stderr


def test_start_refuses_a_node_that_is_not_enrolled():
    done = workers("start", GRID_NODE_ID="", GRID_NODE_SECRET="")
    assert done.returncode == 78
    assert "not enrolled" in done.stderr
