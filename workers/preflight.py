"""Can this machine serve the queues it is asked to? Checked when a worker starts.

A worker that took OCR work without Tesseract's language packs, or LLM work without a model
that fits in memory, would fail every job it took; it refuses to start instead, with one line
that says what to install or configure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import celeryconfig

APT_OCR = "sudo apt install tesseract-ocr tesseract-ocr-fra tesseract-ocr-eng tesseract-ocr-nld poppler-utils"
#: The volunteers' guide: each refusal ends by naming the section that explains it.
GUIDE = "docs/participants.md"
#: Room llama.cpp needs beyond the weights (context cache, buffers), and the share of RAM a
#: model may take so the machine stays usable for its owner.
LLM_OVERHEAD_BYTES = 512 * 1024 * 1024
LLM_MAX_RAM_SHARE = 0.8


def see(section: str) -> str:
    """The pointer a refusal ends with: `` (see docs/participants.md#<section>)``."""
    return f" (see {GUIDE}#{section})"


def total_ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def ocr_problem() -> str | None:
    """Why this machine cannot serve ``ocr``, or None."""
    if shutil.which("tesseract") is None:
        return f"tesseract is not installed; install it with: {APT_OCR}{see('no-tesseract')}"
    missing_tools = [tool for tool in ("pdfinfo", "pdftoppm") if shutil.which(tool) is None]
    if missing_tools:
        tools = " and ".join(missing_tools)
        return f"{tools} (poppler-utils) not installed; install with: {APT_OCR}{see('no-poppler')}"
    from workers.engines import tesseract

    missing = sorted(set(celeryconfig.OCR_LANGUAGES) - tesseract.installed_languages())
    if missing:
        packs = " ".join(f"tesseract-ocr-{lang}" for lang in missing)
        return (
            f"Tesseract language pack(s) {', '.join(missing)} missing; install with: sudo apt install {packs}"
            f"{see('missing-language-pack')}"
        )
    return None


def llm_problem() -> str | None:
    """Why this machine cannot serve ``llm``, or None."""
    from workers.engines import llama

    value = os.environ.get(llama.MODEL_ENV, "")
    if not value:
        return f"no model configured; set {llama.MODEL_ENV} to the path of a GGUF model file{see('no-model')}"
    path = Path(value).expanduser()
    try:
        if not path.is_file():
            return f"model file {path} not found; check {llama.MODEL_ENV}{see('model-not-found')}"
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:  # a folder or file this worker's user may not read (a private home)
        return (
            f"model file {path} cannot be read by this worker ({exc.strerror}); make it readable "
            f"by the user the worker runs as{see('model-not-readable')}"
        )
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return (
            "llama-cpp-python is not installed; install it with: pip install -r requirements/worker.txt"
            f"{see('no-llama-cpp')}"
        )
    size = path.stat().st_size
    if magic != b"GGUF":
        return f"{path} is not a GGUF model file{see('not-gguf')}"
    ram = total_ram_bytes()
    if size + LLM_OVERHEAD_BYTES > ram * LLM_MAX_RAM_SHARE:
        return (
            f"model {path.name} ({size / 2**30:.1f} GiB) does not fit in this machine's "
            f"{ram / 2**30:.1f} GiB of RAM; configure a smaller quantised model in {llama.MODEL_ENV} "
            f"or serve only -Q ocr{see('model-too-big')}"
        )
    return None


CHECKS = {celeryconfig.OCR_QUEUE: ocr_problem, celeryconfig.LLM_QUEUE: llm_problem}


def enrolment_problem() -> str | None:
    """Why this worker cannot sign what it reports, or None."""
    from workers.metering import NODE_ID_ENV, NODE_SECRET_ENV

    missing = [name for name in (NODE_ID_ENV, NODE_SECRET_ENV) if not os.environ.get(name)]
    if missing:
        return (
            f"this node is not enrolled: {' and '.join(missing)} not set; the cooperative's operator "
            f"issues them with `python manage.py nodes create NAME --owner EMAIL`{see('not-enrolled')}"
        )
    from workers.inputs import COORDINATOR_URL_ENV

    if not os.environ.get(COORDINATOR_URL_ENV, "").startswith(("http://", "https://")):
        return (
            f"{COORDINATOR_URL_ENV} is not set to the coordinator's address (https://…): this worker "
            f"could not fetch its tasks' inputs; it is in the configuration file the cooperative sent"
            f"{see('no-coordinator-url')}"
        )
    return None


#: The node's name, from its configuration file: its worker must be named ``<name>@<host>``.
NODE_NAME_ENV = "GRID_NODE_NAME"


def worker_name_problem(hostname: str | None) -> str | None:
    """Why this worker's name (``-n``) is not its node's, or None."""
    name = os.environ.get(NODE_NAME_ENV)
    if not name or hostname is None or hostname.partition("@")[0] == name:
        return None
    return (
        f"this worker is named {hostname}, but node {name}'s worker must be named {name}@<host>: "
        f"start it with `python -m workers start`, or add -n {name}@%h{see('wrong-worker-name')}"
    )


def problems(queues: list[str], hostname: str | None = None) -> list[str]:
    """One line per reason this worker (named ``hostname``) cannot serve its queues."""
    found = []
    if (problem := enrolment_problem()) is not None:
        found.append(problem)
    if (problem := worker_name_problem(hostname)) is not None:
        found.append(problem)
    for queue in queues:
        if queue == celeryconfig.LEDGER_QUEUE:
            found.append(
                "queue 'ledger' is the coordinator's own; volunteers serve -Q ocr, llm or llm,ocr"
                f"{see('ledger-queue')}"
            )
        elif queue not in CHECKS:
            found.append(
                f"unknown queue {queue!r}; volunteers serve -Q ocr, llm or llm,ocr{see('unknown-queue')}"
            )
        elif (problem := CHECKS[queue]()) is not None:
            found.append(f"cannot serve queue {queue!r}: {problem}")
    return found
