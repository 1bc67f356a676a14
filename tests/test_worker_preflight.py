"""A volunteer asked to serve a queue its machine cannot serve refuses at start-up, clearly."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import celeryconfig
from tests.grid import CELERY, ROOT, UNUSED_ENROLMENT

ENROLLED = UNUSED_ENROLMENT


def start_worker(queues: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CELERY, "-A", "workers", "worker", "-Q", queues, "-n", "preflight@%h", "--loglevel=WARNING"],
        cwd=ROOT,
        env={**os.environ, **ENROLLED, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def refusal(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("grid worker ")]
    assert result.returncode == 78, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


def test_worker_of_a_node_not_enrolled_refuses_to_start():
    line = refusal(start_worker("ocr", GRID_NODE_ID="", GRID_NODE_SECRET=""))
    assert "not enrolled" in line and "manage.py nodes create" in line


def test_a_worker_not_named_after_its_node_refuses_to_start():
    line = refusal(start_worker("ocr", GRID_NODE_NAME="alice-pi"))
    assert "named preflight@" in line and "-n alice-pi@%h" in line


def test_llm_worker_without_a_model_refuses_to_start():
    line = refusal(start_worker("llm", GRID_LLM_MODEL=""))
    assert "cannot serve queue 'llm'" in line and "set GRID_LLM_MODEL" in line


def test_llm_worker_with_a_missing_model_file_refuses_to_start(tmp_path: Path):
    line = refusal(start_worker("llm", GRID_LLM_MODEL=str(tmp_path / "absent.gguf")))
    assert "not found" in line and "absent.gguf" in line


def test_llm_worker_with_a_model_bigger_than_ram_refuses_to_start(tmp_path: Path):
    huge = tmp_path / "mistral-70b.gguf"
    with huge.open("wb") as handle:  # sparse: costs no disk, but its size is that of a huge model
        handle.write(b"GGUF")
        handle.truncate(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 2)
    line = refusal(start_worker("llm", GRID_LLM_MODEL=str(huge)))
    assert "does not fit in this machine's" in line and "-Q ocr" in line


def test_ocr_worker_without_tesseract_refuses_to_start(tmp_path: Path):
    (tmp_path / "bin").mkdir()
    line = refusal(start_worker("ocr", PATH=str(tmp_path / "bin")))
    assert "tesseract is not installed" in line and "apt install tesseract-ocr" in line


def test_ocr_worker_without_a_language_pack_refuses_to_start(tmp_path: Path):
    tessdata = next(
        p for p in Path("/usr/share/tesseract-ocr").glob("*/tessdata") if (p / "eng.traineddata").exists()
    )
    (tmp_path / "eng.traineddata").symlink_to(tessdata / "eng.traineddata")
    line = refusal(start_worker("ocr", TESSDATA_PREFIX=str(tmp_path)))
    assert "fra, nld missing" in line and "tesseract-ocr-fra tesseract-ocr-nld" in line


@pytest.mark.parametrize("queues", ["ledger", "llm,ledger", "gpu"])
def test_volunteer_cannot_serve_the_ledger_or_unknown_queues(queues: str):
    result = start_worker(queues)
    assert result.returncode == 78, result.stderr[-2000:]
    assert "volunteers serve -Q ocr, llm or llm,ocr" in result.stderr


def test_worker_that_can_serve_its_queues_starts(redis_url: str):
    process = subprocess.Popen(
        [CELERY, "-A", "workers", "worker", "-Q", "llm,ocr", "-n", "able@%h", "--loglevel=INFO"],
        cwd=ROOT,
        env={**os.environ, **ENROLLED, "GRID_BROKER_URL": redis_url.rsplit("/", 1)[0] + "/3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in process.stdout:
            assert not line.startswith("grid worker "), line
            if " ready." in line:
                break
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(30)


GUIDE = ROOT / "docs" / "participants.md"


def guide_sections() -> set[str]:
    """The anchors of the volunteers' guide's headings (GitHub's: lower case, dashes)."""
    anchors, fenced = set(), False
    for line in GUIDE.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} +(.+)", line)):
            title = heading.group(1).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_every_refusal_names_a_section_of_the_volunteers_guide(monkeypatch, tmp_path: Path):
    from workers import preflight
    from workers.engines import tesseract

    model = tmp_path / "small.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    not_gguf = tmp_path / "model.bin"
    not_gguf.write_bytes(b"<html>not a model</html>")

    def without(*tools: str):
        return lambda patch: patch.setattr(
            preflight.shutil, "which", lambda name: None if name in tools else f"/usr/bin/{name}"
        )

    def unreadable(path: Path):
        def opener(self, *args, **kwargs):
            if self == path:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(self, *args, **kwargs)

        return lambda patch: patch.setattr(Path, "open", opener)

    real_open = Path.open
    # Each case breaks one thing on a machine that can otherwise serve both queues.
    cases = {
        "not-enrolled": (["ocr"], lambda patch: patch.delenv("GRID_NODE_SECRET")),
        "no-coordinator-url": (["ocr"], lambda patch: patch.delenv("GRID_COORDINATOR_URL")),
        "no-tesseract": (["ocr"], without("tesseract")),
        "no-poppler": (["ocr"], without("pdftoppm")),
        "missing-language-pack": (
            ["ocr"],
            lambda patch: patch.setattr(tesseract, "installed_languages", lambda: frozenset({"eng"})),
        ),
        "no-model": (["llm"], lambda patch: patch.setenv("GRID_LLM_MODEL", "")),
        "model-not-found": (
            ["llm"],
            lambda patch: patch.setenv("GRID_LLM_MODEL", str(tmp_path / "gone.gguf")),
        ),
        "model-not-readable": (["llm"], unreadable(model)),
        "no-llama-cpp": (["llm"], lambda patch: patch.setitem(sys.modules, "llama_cpp", None)),
        "not-gguf": (["llm"], lambda patch: patch.setenv("GRID_LLM_MODEL", str(not_gguf))),
        "model-too-big": (["llm"], lambda patch: patch.setattr(preflight, "total_ram_bytes", lambda: 2**28)),
        "ledger-queue": (["ledger"], lambda patch: None),
        "unknown-queue": (["gpu"], lambda patch: None),
        "wrong-worker-name": (["ocr"], lambda patch: patch.setenv("GRID_NODE_NAME", "alice-pi")),
    }
    source = Path(preflight.__file__).read_text(encoding="utf-8")
    assert set(cases) == set(re.findall(r"see\('([a-z-]+)'\)", source)), "a refusal without a case here"
    sections = guide_sections()

    def refusals(queues: list[str], arrange) -> list[str]:
        with monkeypatch.context() as patch:
            patch.setenv("GRID_NODE_ID", ENROLLED["GRID_NODE_ID"])
            patch.setenv("GRID_NODE_SECRET", ENROLLED["GRID_NODE_SECRET"])
            patch.setenv("GRID_COORDINATOR_URL", ENROLLED["GRID_COORDINATOR_URL"])
            patch.setenv("GRID_LLM_MODEL", str(model))
            patch.setenv("GRID_NODE_NAME", "preflight")
            patch.setattr(preflight.shutil, "which", lambda name: f"/usr/bin/{name}")
            patch.setattr(tesseract, "installed_languages", lambda: frozenset(celeryconfig.OCR_LANGUAGES))
            patch.setattr(preflight, "total_ram_bytes", lambda: 16 * 2**30)
            arrange(patch)
            return preflight.problems(queues, "preflight@host")

    assert refusals(["ocr", "llm"], lambda patch: None) == []
    for section, (queues, arrange) in cases.items():
        lines = refusals(queues, arrange)
        assert len(lines) == 1 and "\n" not in lines[0], lines
        assert lines[0].endswith(f" (see docs/participants.md#{section})"), lines[0]
        assert section in sections, f"docs/participants.md has no heading for #{section}"
