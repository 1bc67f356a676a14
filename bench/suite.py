"""The measurements described in ``bench/__init__.py``, on a grid of real processes.

Imported by ``bench.__main__`` only once the environment points at the throwaway servers.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import ledger, ocr_eval, validation
from tests.documents import FRENCH_LINES, cer, text_pdf
from tests.grid import ROOT, Client, Grid

if TYPE_CHECKING:
    from flask import Flask

OCR_PAGES = 4
OCR_REPEATS = 3
OCR_DPI = 300
LLM_REPEATS = 5
#: 40 words: a budget of 80 tokens (the engine counts 2 tokens a word), one llama.cpp call.
LLM_MAX_WORDS = 40
LLM_TEXT = "\n".join(FRENCH_LINES[:4])
#: The smallest grid job there is: one word summarised into at most 10 words (20 tokens).
TINY_TEXT = "Facture"
TINY_MAX_WORDS = 10
#: Jobs run before measuring, so every pool process of the LLM volunteer has loaded its model.
WARM_UP_JOBS = 4


class BenchError(RuntimeError):
    """A benchmark could not measure what it claims to (a job failed, a parity check broke)."""


@dataclass(frozen=True)
class Ratio:
    """One line of the table: ``grid`` and ``raw`` in seconds, ``ratio = grid / raw``."""

    name: str
    grid: float
    raw: float
    n: str
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.grid / self.raw if self.raw > 0 else float("inf")

    def line(self) -> str:
        text = (
            f"{self.name}: grid {self.grid:.3g} s vs raw {self.raw:.3g} s → ratio {self.ratio:.3g} "
            f"(n={self.n})"
        )
        return f"{text}\n    {self.note}" if self.note else text


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _median(values: list[float]) -> float:
    return statistics.median(values)


# --- the grid ---------------------------------------------------------------------------------


def _migrate() -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "db", "upgrade"],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise BenchError(f"database migration failed:\n{done.stdout}\n{done.stderr}")


def _tokens(flask_app: Flask, owners: list[str]) -> dict[str, str]:
    """An API token (jobs:read, jobs:write) per owner: separate owners keep job counts apart."""
    from app.auth import create_token
    from app.extensions import db

    with flask_app.app_context():
        tokens = {owner: create_token("bench", owner, ["jobs:read", "jobs:write"])[1] for owner in owners}
        db.session.commit()
    return tokens


def _start_grid(log_dir: Path) -> Grid:
    grid = Grid(dict(os.environ), log_dir)
    grid.ledger_worker()
    grid.worker("ocr-node", "ocr")
    grid.worker("llm-node", "llm", concurrency=2)
    grid.api()
    return grid


def _submit(client: Client, kind: str, **request: Any) -> str:
    response = client.post(f"/api/v1/jobs/{kind}", **request)
    if response.status_code != 202:
        raise BenchError(f"{kind} job refused: {response.status_code} {response.text}")
    return response.json()["id"]


def _succeeded(client: Client, job_id: str, timeout: float) -> dict:
    job = client.wait(job_id, timeout=timeout)
    if job["state"] != "succeeded":
        raise BenchError(f"job {job_id} {job['state']}: {job['error']}")
    return job


def _timed_job(client: Client, kind: str, timeout: float, **request: Any) -> tuple[float, dict]:
    """Seconds from just before the POST to the job's ``finished_at``, and the job.

    ``finished_at`` is stamped by the ledger worker on this same host when it records success,
    so the polling interval does not enter the figure.
    """
    started = time.time()
    job = _succeeded(client, _submit(client, kind, **request), timeout)
    return _epoch(job["finished_at"]) - started, job


# --- 1. OCR -----------------------------------------------------------------------------------


def _ocr_pages() -> list[list[str]]:
    return [[*FRENCH_LINES, f"Page {number} sur {OCR_PAGES}"] for number in range(1, OCR_PAGES + 1)]


def raw_ocr(pdf: Path, workdir: Path) -> tuple[float, list[str]]:
    """The Tesseract CLI on every page, one after the other, as the grid does it."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    texts: list[str] = []
    started = time.perf_counter()
    for page in range(1, OCR_PAGES + 1):
        stem = workdir / f"raw-page-{page}"
        subprocess.run(
            [
                "pdftoppm",
                "-r",
                str(OCR_DPI),
                "-gray",
                "-f",
                str(page),
                "-l",
                str(page),
                "-singlefile",
                str(pdf),
                str(stem),
            ],
            check=True,
            capture_output=True,
        )
        read = subprocess.run(
            ["tesseract", f"{stem}.pgm", "stdout", "-l", "fra"], check=True, capture_output=True, env=env
        )
        texts.append(read.stdout.decode("utf-8"))
    elapsed = time.perf_counter() - started
    for page in range(1, OCR_PAGES + 1):
        (workdir / f"raw-page-{page}.pgm").unlink(missing_ok=True)
    return elapsed, texts


def _mean_cer(expected: list[list[str]], texts: list[str]) -> float:
    return statistics.fmean(cer("\n".join(lines), text) for lines, text in zip(expected, texts, strict=True))


def bench_ocr(client: Client, workdir: Path) -> list[Ratio]:
    pages = _ocr_pages()
    pdf = workdir / "bench.pdf"
    pdf.write_bytes(text_pdf(pages))
    raw_times: list[float] = []
    grid_times: list[float] = []
    worker_times: list[float] = []
    raw_texts: list[str] = []
    grid_text = ""
    for _ in range(OCR_REPEATS):  # alternated, so drifting load hits both sides alike
        elapsed, raw_texts = raw_ocr(pdf, workdir)
        raw_times.append(elapsed)
        elapsed, job = _timed_job(
            client,
            "ocr",
            timeout=300,
            files={"file": ("bench.pdf", pdf.read_bytes())},
            # Its pages carry a text layer: read by Tesseract here, as the raw side does.
            data={"languages": "fra", "force_ocr": "true"},
        )
        grid_times.append(elapsed)
        worker_times.append(job["steps"][0]["wall_seconds"])
        grid_text = job["result"]["text"]
        _log(f"  ocr: raw {raw_times[-1]:.2f} s, grid {elapsed:.2f} s (worker {worker_times[-1]:.2f} s)")
    grid_pages = grid_text.split("\f")
    if len(grid_pages) != OCR_PAGES:
        raise BenchError(f"the OCR job returned {len(grid_pages)} pages, not {OCR_PAGES}")
    quality = (
        f"mean character error rate: grid {_mean_cer(pages, grid_pages):.2%}, "
        f"raw {_mean_cer(pages, raw_texts):.2%}"
    )
    raw = _median(raw_times)
    n = str(OCR_REPEATS)
    # The same born-digital pages read from their text layer (the default), against OCR.
    layer_times = []
    for _ in range(OCR_REPEATS):
        elapsed, layer_job = _timed_job(
            client,
            "ocr",
            timeout=300,
            files={"file": ("bench.pdf", pdf.read_bytes())},
            data={"languages": "fra"},
        )
        layer_times.append(layer_job["steps"][0]["wall_seconds"])
    methods = {r["method"] for r in layer_job["result"]["page_readings"]}
    layer_quality = (
        f"read as {', '.join(sorted(methods))}; character error rate "
        f"{_mean_cer(pages, layer_job['result']['text'].split(chr(12))):.2%} (ratio under 0.05: 20× faster)"
    )
    return [
        Ratio(
            f"ocr, {OCR_PAGES} born-digital pages, text layer vs OCR (worker side)",
            _median(layer_times),
            _median(worker_times),
            n,
            layer_quality,
        ),
        Ratio(f"ocr, {OCR_PAGES} pages, end to end", _median(grid_times), raw, n, quality),
        Ratio(
            f"ocr, {OCR_PAGES} pages, worker side",
            _median(worker_times),
            raw,
            n,
            "the step's wall_seconds: pdf2image + pytesseract vs the CLI; the rest of end to end is queueing "
            "and bookkeeping",
        ),
    ]


# --- 2. LLM -----------------------------------------------------------------------------------


class RawLlama:
    """llama-cpp-python in this process, loaded as the volunteer loads it."""

    def __init__(self) -> None:
        from llama_cpp import Llama

        threads = int(os.environ["GRID_LLM_THREADS"])
        self.model = Llama(
            model_path=os.environ["GRID_LLM_MODEL"],
            n_ctx=int(os.environ["GRID_LLM_CONTEXT"]),
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )

    def chat(self, system: str, user: str, max_tokens: int) -> tuple[float, dict[str, int]]:
        started = time.perf_counter()
        response = self.model.create_chat_completion(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            max_tokens=max_tokens,
            temperature=0.0,
            repeat_penalty=1.1,
        )
        return time.perf_counter() - started, dict(response["usage"])


def _summary_prompt(text: str, max_words: int) -> tuple[str, str]:
    """The volunteer's own French system prompt and instruction, so both sides read the same."""
    from workers.engines import llama as engine

    return engine._SYSTEM["fr"], engine._SUMMARISE["fr"].format(words=max_words, text=text)


def _warm_up(client: Client) -> None:
    ids = [
        _submit(client, "summarise", json={"text": TINY_TEXT, "language": "fr", "max_words": TINY_MAX_WORDS})
        for _ in range(WARM_UP_JOBS)
    ]
    for job_id in ids:
        _succeeded(client, job_id, timeout=120)


def bench_llm(client: Client, flask_app: Flask) -> list[Ratio]:
    _warm_up(client)
    raw_model = RawLlama()
    system, user = _summary_prompt(LLM_TEXT, LLM_MAX_WORDS)
    max_tokens = 2 * LLM_MAX_WORDS
    raw_model.chat(system, user, max_tokens)  # first use, as the volunteer's warm-up had
    raw_times: list[float] = []
    grid_times: list[float] = []
    worker_times: list[float] = []
    raw_usage: dict[str, int] = {}
    job_id = ""
    for _ in range(LLM_REPEATS):
        elapsed, raw_usage = raw_model.chat(system, user, max_tokens)
        raw_times.append(elapsed)
        elapsed, job = _timed_job(
            client,
            "summarise",
            timeout=120,
            json={"text": LLM_TEXT, "language": "fr", "max_words": LLM_MAX_WORDS},
        )
        grid_times.append(elapsed)
        worker_times.append(job["steps"][0]["wall_seconds"])
        job_id = job["id"]
    summary = _step_result(flask_app, job_id)
    if summary.get("llm_calls") != 1:
        calls = summary.get("llm_calls")
        raise BenchError(f"the grid's summary took {calls} llama.cpp calls, not 1: not comparable")
    tokens = (
        f"tokens prompt/completion: grid {summary['prompt_tokens']}/{summary['completion_tokens']}, "
        f"raw {raw_usage['prompt_tokens']}/{raw_usage['completion_tokens']}"
    )
    raw = _median(raw_times)
    n = str(LLM_REPEATS)
    return [
        Ratio(
            "llm summarise (tiny model), end to end",
            _median(grid_times),
            raw,
            n,
            f"{tokens}; the tiny model is very fast, so this is mostly the grid's fixed overhead per job",
        ),
        Ratio(
            "llm summarise (tiny model), worker side",
            _median(worker_times),
            raw,
            n,
            "the step's wall_seconds: the call plus the engine's token counting and progress reports",
        ),
    ]


def _step_result(flask_app: Flask, job_id: str) -> dict:
    """A job's first step's full result as the ledger stored it (the API shows only its total
    tokens; the parity check needs the prompt and completion tokens and the llama.cpp calls)."""
    from app.extensions import db
    from app.models import Job

    with flask_app.app_context():
        job = db.session.get(Job, job_id)
        if job is None:
            raise BenchError(f"job {job_id} not in the database")
        return dict(job.steps[0].result or {})


# --- the run ----------------------------------------------------------------------------------


#: What ``make bench`` runs: the ratio lines, then every goal part (bench/goals.py).
DEFAULT_PARTS = ("grid", "ledger", "inputs", "goals")


def run(workdir: Path, parts: tuple[str, ...] = DEFAULT_PARTS, quick: bool = False) -> int:
    """Start the grid, measure, print the table; returns the exit status."""
    from bench import goals as goal_parts

    goal_names = list(goal_parts.PARTS) if "goals" in parts else [p for p in parts if p in goal_parts.PARTS]
    measured_goals: list[goal_parts.Goal] = []
    log_dir = workdir / "logs"
    grid: Grid | None = None
    began = time.monotonic()
    load = os.getloadavg()
    try:
        _log("migrating the database, starting the grid (API, ledger worker, ocr and llm volunteers)…")
        _migrate()
        from app import create_app

        flask_app = create_app({"TESTING_NO_METRICS": True})
        results: list[Ratio] = []
        if "grid" in parts:
            tokens = _tokens(flask_app, ["ocr@bench.local", "llm@bench.local"])
            grid = _start_grid(log_dir)
            assert grid.api_url is not None
            clients = {owner.split("@")[0]: Client(grid.api_url, token) for owner, token in tokens.items()}
            _log(f"1. OCR: {OCR_PAGES} pages, {OCR_REPEATS} repetitions")
            ocr_lines = bench_ocr(clients["ocr"], workdir)
            results += ocr_lines
            end_to_end = next(line for line in ocr_lines if line.name.endswith("end to end"))
            measured_goals.append(
                goal_parts.Goal.ratio(
                    "OCR pages/s, grid over the raw Tesseract CLI (end to end)",
                    OCR_PAGES / end_to_end.grid,
                    OCR_PAGES / end_to_end.raw,
                    0.95,
                    f"{OCR_PAGES / end_to_end.grid:.3g} vs {OCR_PAGES / end_to_end.raw:.3g} pages/s, "
                    f"medians of {OCR_REPEATS} alternated runs of {OCR_PAGES} pages",
                )
            )
            _log(f"2. LLM: summarise, {LLM_REPEATS} repetitions")
            results += bench_llm(clients["llm"], flask_app)
            # Throughput against bare Celery is the goal part ``throughput`` (bench/throughput.py).
            grid.stop()
            grid = None
        ledger_lines = []
        if "ledger" in parts or "ledger-rate" in parts:
            ledger_lines = ledger.run(flask_app, log_dir, settle="ledger" in parts)
        if "inputs" in parts:
            from bench import inputs

            ledger_lines += inputs.run(
                flask_app, log_dir, _tokens(flask_app, ["inputs@bench.local"])["inputs@bench.local"]
            )
        # --quick keeps to the goals: the checking overhead and reading quality are left out.
        if "validation" in parts or ("grid" in parts and not quick):  # python -m bench validation: alone
            token = _tokens(flask_app, ["validation@bench.local"])["validation@bench.local"]
            ledger_lines += validation.run(flask_app, log_dir, token)
        if "ocr" in parts or ("grid" in parts and not quick):  # python -m bench ocr: quality, in process
            ledger_lines += ocr_eval.run(workdir)
        if "openai" in parts:  # python -m bench openai: streaming first-token latency, alone
            from bench import openai_stream

            token = _tokens(flask_app, ["openai@bench.local"])["openai@bench.local"]
            ledger_lines += openai_stream.run(log_dir, token)
        if "stats" in parts:  # python -m bench stats: alone (it fills the database with a year)
            from bench import stats

            ledger_lines += stats.run(flask_app)
        if goal_names:
            measured_goals += goal_parts.run(goal_names, workdir / "goals", quick)
    except (BenchError, AssertionError, subprocess.CalledProcessError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        if grid is not None:
            print(grid.logs(), file=sys.stderr)
        return 1
    except Exception:
        if grid is not None:
            print(grid.logs(), file=sys.stderr)
        raise
    finally:
        if grid is not None:
            grid.stop()
    print(
        f"\nKoproGo Grid benchmarks: ratios within this one run ({os.cpu_count()} cores, load average "
        f"{load[0]:.2f} at start, {time.monotonic() - began:.0f} s). Compare ratios, not seconds.\n"
    )
    for result in results:
        print(result.line())
    for line in ledger_lines:
        print(line)
    if measured_goals:
        print()
        print(goal_parts.table(measured_goals, quick))
    return 0
