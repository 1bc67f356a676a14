"""Goal part ``llm`` (issue 14, "LLM overhead on a realistic model"): what the grid adds to a
summary job when the model costs what a real one does.

The model is ``workers.tinymodel``'s ``bench`` size: random weights, 273 M parameters in 4-bit
blocks (161 MB), a few tens of tokens a second on one thread here, as a 7B model quantised to 4
bits on a small machine. Built once (a few seconds) and kept under ``var/models/``, named by a
hash of what makes it (the generator's source, size, seed, context, the ``gguf`` package's
version), so later runs reuse it. Random weights never end a reply: every summary runs to its
``max_tokens`` (200: ``max_words`` 100), so both sides do exactly the same work, checked.

Side by side in one run and at the same time (the raw engine's process works while the grid runs
the job: on a machine shared with other work both sides then meet the same load; run one after
the other, they differed by up to a fifth from one minute to the next), each
job's text different (the prompt cache then keeps only the system prompt and instruction, on
both sides alike):

- raw: llama-cpp-python in a process of its own (``Raw``: no grid code around the call, its own
  session as the volunteer's worker has, so the kernel gives both the same share), the
  volunteer's prompt (``workers.engines.llama``'s
  system prompt and instruction), ``max_tokens``, temperature, repeat penalty, context and one
  thread, the model loaded and used once beforehand;
- grid: summarise jobs over HTTP to a grid of its own (API under gunicorn, ledger worker, one
  llm volunteer of concurrency 1 and one thread on this model, warmed up by a job), from just
  before the POST to the job's ``finished_at`` (stamped by the ledger worker on this host when
  it enters the success, as ``bench.suite`` times jobs).

Goals:

1. tokens/s, grid over raw, ≥ 0.95: ``PAIRS`` pairs of one 200-token summary each, medians;
   beside them the CPU seconds of each side (the volunteer's whole task, the raw thread's), which
   the machine's load does not stretch;
2. the grid's added latency per job, p99 ≤ 50 ms: a job's end to end minus its engine's own
   time, the seconds the volunteer spent inside llama.cpp's calls (``engine.seconds`` of the step's
   result, measured in the volunteer's process), on ``PROBES`` short jobs run alone (one text, so
   the prompt is cached: the grid's whole path for little engine time), with its parts: the POST,
   the volunteer's task around the engine (``wall_seconds`` less ``engine.seconds``: the input
   fetched from the coordinator, the result kept, the record signed and sent) and the rest (the
   broker's dispatch, the ledger worker entering the record). Nearest-rank p99: below 100
   samples, the largest.

Beside them, not a goal here: the p99 of a 200-token summary job under 4 concurrent jobs (the
seed's "P99 < 10 s" is for its target hardware), grid (4 jobs posted at once from 4 threads,
``ROUNDS`` rounds) and raw (the same 4 prompts to the one raw engine, served one after
the other as one engine does: the k-th waits for the k-1 before it), at the same time; and per
round, what the grid added to the four: its last job's end minus its first POST, less the four
jobs' engine seconds.

    python -m bench llm [--quick]
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from bench.goals import Goal
from bench.throughput import _cpu_seconds
from tests.documents import FRENCH_LINES
from tests.grid import ROOT, Grid

SIZE = "bench"
SEED = 0
#: The training context written in the file, and the context the volunteer and raw side run.
MODEL_CONTEXT = 4096
CONTEXT = 2048
THREADS = 1
#: A 200-token summary (the engine gives a summary two tokens a word).
MAX_WORDS = 100
MAX_TOKENS = 2 * MAX_WORDS
#: Short jobs that add samples of the grid's added latency for little engine time.
PROBE_WORDS = 10
CONCURRENT = 4
#: (full, quick)
PAIRS = (4, 2)
PROBES = (12, 6)
ROUNDS = (2, 1)
RATIO_TARGET = 0.95
ADDED_MS_TARGET = 50.0
SEED_P99_SECONDS = 10.0
#: A Redis database of its own (the suite's grid uses 0, bare Celery 1, other parts 3-4).
BROKER_DB = 6
MODELS_DIR = ROOT / "var" / "models"

_BEGAN = time.monotonic()


def _log(message: str) -> None:
    print(f"  llm [{time.monotonic() - _BEGAN:.0f} s]: {message}", file=sys.stderr, flush=True)


# --- the model --------------------------------------------------------------------------------


def model_key() -> str:
    """What the file is a function of: the generator's source, its arguments, gguf's version."""
    from importlib.metadata import version

    from workers import tinymodel

    made_by = {
        "source": hashlib.sha256(Path(tinymodel.__file__).read_bytes()).hexdigest(),
        "size": SIZE,
        "shape": repr(tinymodel.SIZES[SIZE]),
        "seed": SEED,
        "context_length": MODEL_CONTEXT,
        "gguf": version("gguf"),
    }
    return hashlib.sha256(json.dumps(made_by, sort_keys=True).encode()).hexdigest()[:16]


def bench_model() -> tuple[Path, str]:
    """The bench model's file, built if no run built it yet; and how it was got."""
    from workers import tinymodel

    path = MODELS_DIR / f"{SIZE}-{model_key()}.gguf"
    if path.is_file():
        return path, "cached"
    began = time.perf_counter()
    tinymodel.build_model(path, SIZE, seed=SEED, context_length=MODEL_CONTEXT)
    built = time.perf_counter() - began
    for stale in MODELS_DIR.glob(f"{SIZE}-*.gguf"):  # an older generator's: 161 MB each
        if stale != path:
            stale.unlink(missing_ok=True)
    return path, f"built in {built:.1f} s"


# --- the two sides ----------------------------------------------------------------------------


def texts(count: int) -> list[str]:
    """``count`` different texts of four minutes' lines (about 300 prompt tokens each)."""
    n = len(FRENCH_LINES)
    return [
        "\n".join([f"Document {index + 1}", *(FRENCH_LINES[(index + k) % n] for k in range(4))])
        for index in range(count)
    ]


class RawEngine:
    """llama-cpp-python, loaded as the volunteer loads it (workers.engines.llama): the raw side."""

    def __init__(self, path: Path) -> None:
        from llama_cpp import Llama

        self.model = Llama(
            model_path=str(path), n_ctx=CONTEXT, n_threads=THREADS, n_threads_batch=THREADS, verbose=False
        )

    def summary(self, text: str, max_words: int = MAX_WORDS) -> tuple[float, dict[str, int], float]:
        """The volunteer's prompt for a French summary of ``text``: seconds, token counts, and the
        CPU seconds of this thread (llama.cpp computes in the calling thread with one thread)."""
        from workers.engines import llama as engine

        started, cpu = time.perf_counter(), time.thread_time()
        response = self.model.create_chat_completion(
            messages=[
                {"role": "system", "content": engine._SYSTEM["fr"]},
                {"role": "user", "content": engine._SUMMARISE["fr"].format(words=max_words, text=text)},
            ],
            max_tokens=2 * max_words,
            temperature=0.0,
            repeat_penalty=1.1,
        )
        return time.perf_counter() - started, dict(response["usage"]), time.thread_time() - cpu


def serve_raw_engine(path: str) -> None:
    """``python -m bench.llm --raw-engine MODEL``: one request a line on stdin (text, max_words),
    one answer a line on stdout (seconds, usage, cpu), timed here around the engine's call."""
    engine = RawEngine(Path(path))
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        asked = json.loads(line)
        seconds, usage, cpu = engine.summary(asked["text"], asked["max_words"])
        print(json.dumps({"seconds": seconds, "usage": usage, "cpu": cpu}), flush=True)
    engine.model.close()


class Raw:
    """The raw engine in a process of its own, in a session of its own as the volunteer's worker
    is (``tests.grid``): the kernel shares the CPU out by session (autogroups), so an engine in a
    thread of the bench shared its session's share with the throwaway PostgreSQL serving the grid,
    and was slowed by up to half while the grid's ran on (measured)."""

    def __init__(self, path: Path) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.llm", "--raw-engine", str(path)],
            cwd=ROOT,
            env=os.environ,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the raw engine's process exited ({self.proc.wait(10)})")
        return json.loads(line)

    def summary(self, text: str, max_words: int = MAX_WORDS) -> tuple[float, dict[str, int], float]:
        self.proc.stdin.write(json.dumps({"text": text, "max_words": max_words}) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        return answer["seconds"], answer["usage"], answer["cpu"]

    def close(self) -> None:
        import subprocess

        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class GridSide:
    """Summary jobs over HTTP, timed to their ``finished_at``; their steps' results from the
    database (the API shows a job's total tokens only)."""

    def __init__(self, base_url: str, token: str, flask_app: Any) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.flask_app = flask_app
        #: Seconds each job's POST took (the submission's share of what the grid adds).
        self.posts: dict[str, float] = {}

    def submit(self, text: str, max_words: int = MAX_WORDS) -> tuple[float, str]:
        started = time.time()
        response = self.session.post(
            f"{self.base_url}/api/v1/jobs/summarise",
            json={"text": text, "language": "fr", "max_words": max_words},
            timeout=30,
        )
        if response.status_code != 202:
            raise RuntimeError(f"summarise job refused: {response.status_code} {response.text}")
        job_id = response.json()["id"]
        self.posts[job_id] = time.time() - started
        return started, job_id

    def finished(self, job_id: str, poll: float, timeout: float = 600) -> dict:
        """The job once it has ended. Polled every ``poll`` seconds: its end is its ``finished_at``,
        so polling more often would only take CPU from the engine. The API shares this machine's
        2 cores with the volunteer here: polled every 0.25 s, the volunteer's engine took about a
        fifth longer than the same generation in raw llama-cpp-python (one run); every second, not."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.session.get(f"{self.base_url}/api/v1/jobs/{job_id}", timeout=30)
            job = response.json()
            if job.get("state") in ("succeeded", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} not finished after {timeout:.0f} s")
            time.sleep(poll)
        if job["state"] != "succeeded":
            raise RuntimeError(f"job {job_id} {job['state']}: {job.get('error')}")
        return job

    def step_result(self, job_id: str) -> dict:
        from app.extensions import db
        from app.models import Job

        with self.flask_app.app_context():
            job = db.session.get(Job, job_id)
            result = dict(job.steps[0].result or {})
            db.session.rollback()
        return result

    def timed(self, text: str, max_words: int = MAX_WORDS) -> dict:
        started, job_id = self.submit(text, max_words)
        return self.measure(started, job_id)

    def measure(self, started: float, job_id: str, poll: float = 1.0) -> dict:
        job = self.finished(job_id, poll)
        result = self.step_result(job_id)
        end_to_end = datetime.fromisoformat(job["finished_at"]).timestamp() - started
        engine = float(result["engine"]["seconds"])
        step = job["steps"][0]
        # When the coordinator saw the step start (its input fetched) and end (the completion
        # entered): the broker's wait before, the ledger's after.
        step_started, step_finished = (
            datetime.fromisoformat(step[stamp]).timestamp() if step[stamp] else None
            for stamp in ("started_at", "finished_at")
        )
        return {
            "to_start": None if step_started is None else step_started - started,
            "start_to_step_end": None
            if step_started is None or step_finished is None
            else step_finished - step_started,
            "end_to_end": end_to_end,
            "engine": engine,
            "added": end_to_end - engine,
            "post": self.posts[job_id],
            "wall": job["steps"][0]["wall_seconds"],
            "cpu": job["steps"][0]["cpu_seconds"],
            "prompt_tokens": result["prompt_tokens"],
            "completion_tokens": result["completion_tokens"],
            "llm_calls": result["llm_calls"],
        }


def _token(flask_app: Any) -> str:
    from app.auth import create_token
    from app.extensions import db

    with flask_app.app_context():
        token = create_token("bench-llm", "llm-overhead@bench.local", ["jobs:read", "jobs:write"])[1]
        db.session.commit()
    return token


def p99(values: list[float]) -> float:
    """Nearest rank: below 100 values, the largest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def _same_work(grid: dict, raw: dict[str, int], what: str) -> None:
    """Both sides read the same prompt and wrote ``MAX_TOKENS`` in one call, or nothing compares."""
    if grid["llm_calls"] != 1:
        raise RuntimeError(f"{what}: the grid's summary took {grid['llm_calls']} llama.cpp calls, not 1")
    if (grid["prompt_tokens"], grid["completion_tokens"]) != (raw["prompt_tokens"], raw["completion_tokens"]):
        raise RuntimeError(
            f"{what}: not the same work: grid {grid['prompt_tokens']}/{grid['completion_tokens']} tokens, "
            f"raw {raw['prompt_tokens']}/{raw['completion_tokens']}"
        )
    if raw["completion_tokens"] != MAX_TOKENS:
        raise RuntimeError(f"{what}: the model stopped after {raw['completion_tokens']} tokens")


def side_by_side(raw_work: Callable[[], list], grid_work: Callable[[], list]) -> tuple[list, list]:
    """``raw_work`` (which waits on the raw engine's process) in a thread and ``grid_work`` here,
    at the same time: on a machine shared with other work, both sides then meet the same load
    (one after the other, the load drifted by a fifth between them)."""
    done: dict[str, list] = {}
    failed: list[BaseException] = []

    def raw_side() -> None:
        try:
            done["raw"] = raw_work()
        except BaseException as exc:  # noqa: BLE001  raised again below, in this thread
            failed.append(exc)

    thread = threading.Thread(target=raw_side, name="raw-llama")
    thread.start()
    try:
        grid_done = grid_work()
    finally:
        thread.join()
    if failed:
        raise failed[0]
    return done["raw"], grid_done


# --- the run ----------------------------------------------------------------------------------


def run(workdir: Path, quick: bool) -> list[Goal]:
    import redis

    from app import create_app

    pairs, probes, rounds = (PAIRS[quick], PROBES[quick], ROUNDS[quick])
    path, how = bench_model()
    size_mb = path.stat().st_size / 1e6
    _log(f"model {path.relative_to(ROOT)} ({size_mb:.0f} MB, {how})")

    env = dict(os.environ)
    env.update(
        {
            "GRID_BROKER_URL": env["GRID_BROKER_URL"].rsplit("/", 1)[0] + f"/{BROKER_DB}",
            "GRID_LLM_MODEL": str(path),
            "GRID_LLM_CONTEXT": str(CONTEXT),
            "GRID_LLM_THREADS": str(THREADS),
        }
    )
    broker = redis.Redis.from_url(env["GRID_BROKER_URL"])
    broker.flushdb()
    flask_app = create_app({"TESTING_NO_METRICS": True})
    token = _token(flask_app)
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    grid = Grid(env, log_dir)
    raw: Raw | None = None
    try:
        grid.ledger_worker()
        node = grid.worker("llm-bench-node", "llm", concurrency=1)
        grid_side = GridSide(grid.api(), token, flask_app)
        sequential = texts(pairs)
        # Warm-up: the volunteer's pool process loads the model and reads the common prefix;
        # the raw engine's process the same.
        _log("warming up: one job, one raw call")
        grid_side.timed("Facture", PROBE_WORDS)
        raw = Raw(path)
        raw.summary("Facture", PROBE_WORDS)

        _log(f"{probes} short jobs alone, for the added latency")
        pids = {process.name: process.proc.pid for process in grid.processes}
        cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        probe_jobs = [grid_side.timed("Facture", PROBE_WORDS) for _ in range(probes)]
        # What the volunteer said of its tasks meanwhile: a hand-back or a refused input fetch
        # is a pause of seconds before the broker gives the task out again.
        hitches = [
            line.strip()[-200:]
            for line in node.output().splitlines()
            if any(word in line for word in ("handed back", "could not be reached", "passed on", "not ours"))
        ]
        # The coordinator's CPU per job (the API's includes the bench's polls, one a second): what
        # it adds to a job even on an idle machine, where nothing waits for a core.
        coordinator_cpu = {
            name: (_cpu_seconds(pid) - cpu_before[name]) / probes * 1000
            for name, pid in pids.items()
            if name in ("api", "ledger")
        }

        _log(f"{pairs} pairs of {MAX_TOKENS}-token summaries, raw and grid at the same time")
        raw_times: list[float] = []
        raw_cpu: list[float] = []
        grid_jobs: list[dict] = []
        for index, text in enumerate(sequential):
            usages, job = side_by_side(
                lambda text=text: [raw.summary(text)], lambda text=text: [grid_side.timed(text)]
            )
            (seconds, usage, cpu), job = usages[0], job[0]
            raw_times.append(seconds)
            raw_cpu.append(cpu)
            grid_jobs.append(job)
            _same_work(job, usage, f"pair {index + 1}")
            _log(
                f"  pair {index + 1}: raw {seconds:.2f} s (cpu {cpu:.2f} s), grid {job['end_to_end']:.2f} s "
                f"(engine {job['engine']:.2f} s, step's cpu {job['cpu']:.2f} s)"
            )

        _log(
            f"{rounds} round(s) of {CONCURRENT} concurrent {MAX_TOKENS}-token summaries, raw and grid at once"
        )
        grid_concurrent: list[float] = []
        raw_concurrent: list[float] = []
        #: Per round: the last job's end minus the first POST, less the engine seconds of all.
        concurrent_added: list[float] = []

        def grid_round(batch: list[str]) -> list[dict]:
            with ThreadPoolExecutor(CONCURRENT) as pool:
                posted = list(pool.map(grid_side.submit, batch))
                jobs = list(pool.map(lambda sent: grid_side.measure(*sent), posted))
            began = min(started for started, _ in posted)
            ended = max(started + job["end_to_end"] for (started, _), job in zip(posted, jobs, strict=True))
            concurrent_added.append(ended - began - sum(job["engine"] for job in jobs))
            return jobs

        def raw_round(batch: list[str]) -> list[tuple[float, dict[str, int], float]]:
            began, answers = time.perf_counter(), []
            for text in batch:
                answers.append(raw.summary(text))
                raw_concurrent.append(time.perf_counter() - began)
            return answers

        for round_index in range(rounds):
            batch = texts(pairs + (round_index + 1) * CONCURRENT)[-CONCURRENT:]
            answers, jobs = side_by_side(
                lambda batch=batch: raw_round(batch), lambda batch=batch: grid_round(batch)
            )
            grid_concurrent += [job["end_to_end"] for job in jobs]
            for job, (_, usage, _) in zip(jobs, answers, strict=True):
                _same_work(job, usage, f"round {round_index + 1}")
            grid_seconds = ", ".join(f"{job['end_to_end']:.1f}" for job in jobs)
            raw_seconds = ", ".join(f"{seconds:.1f}" for seconds in raw_concurrent[-CONCURRENT:])
            _log(f"  round {round_index + 1}: grid {grid_seconds} s; raw {raw_seconds} s")
    except Exception:
        print(grid.logs(), file=sys.stderr)
        raise
    finally:
        grid.stop()
        if raw is not None:
            raw.close()
        broker.flushdb()
        broker.close()

    grid_median = statistics.median(job["end_to_end"] for job in grid_jobs)
    raw_median = statistics.median(raw_times)
    engine_median = statistics.median(job["engine"] for job in grid_jobs)
    # Sampled on the jobs run alone: beside the raw engine, the grid's own processes wait for a core.
    sampled = probe_jobs
    added = [job["added"] * 1000 for job in sampled]
    # Where the added time goes, per job: the POST; the volunteer's task around the engine (its
    # input fetched from the coordinator, its result kept, its record signed and sent); the rest
    # (the broker's dispatch to the volunteer, the ledger worker entering the record).
    posts = [job["post"] * 1000 for job in sampled]
    volunteer = [(job["wall"] - job["engine"]) * 1000 for job in sampled]
    rest = [
        job["added"] * 1000 - post - around
        for job, post, around in zip(sampled, posts, volunteer, strict=True)
    ]
    grid_p99, raw_p99 = p99(grid_concurrent), p99(raw_concurrent)
    model = f"{SIZE} model: 273 M random weights, Q4_0, {size_mb:.0f} MB, context {CONTEXT}, {THREADS} thread"
    concurrent_line = (
        f"p99 of a {MAX_TOKENS}-token summary under {CONCURRENT} concurrent jobs (one volunteer, "
        f"concurrency 1, {len(grid_concurrent)} jobs): grid {grid_p99:.1f} s, raw {raw_p99:.1f} s (the raw "
        f"engine serving them in turn, at the same time as the grid), ratio {grid_p99 / raw_p99:.3f}; a "
        f"round's last end minus its first "
        f"POST, less its {CONCURRENT} jobs' engine seconds: "
        f"{', '.join(f'{seconds * 1000:.0f}' for seconds in concurrent_added)} ms; the seed's target is "
        f"p99 < {SEED_P99_SECONDS:g} s on its target hardware (context, not a goal here)"
    )
    print(f"LLM overhead ({model}): {concurrent_line}")
    return [
        Goal.ratio(
            f"LLM tokens/s, grid over raw llama-cpp-python ({MAX_TOKENS}-token summaries, realistic model)",
            MAX_TOKENS / grid_median,
            MAX_TOKENS / raw_median,
            RATIO_TARGET,
            f"{MAX_TOKENS / grid_median:.1f} vs {MAX_TOKENS / raw_median:.1f} tokens/s: medians of {pairs} "
            f"pairs run at the same time, grid {grid_median:.2f} s end to end (its engine "
            f"{engine_median:.2f} s in the volunteer; the step's cpu "
            f"{statistics.median(job['cpu'] for job in grid_jobs):.2f} s) vs raw "
            f"{raw_median:.2f} s (cpu {statistics.median(raw_cpu):.2f} s); {grid_jobs[0]['prompt_tokens']} "
            f"prompt tokens; {model}",
        ),
        Goal.at_most(
            "LLM grid's added latency per job (end to end minus the engine's own time), p99",
            p99(added),
            ADDED_MS_TARGET,
            "ms",
            f"median {statistics.median(added):.0f} ms over {len(added)} jobs of {2 * PROBE_WORDS} tokens "
            f"run alone; medians of its parts: submission POST "
            f"{statistics.median(posts):.0f} ms, the volunteer's task around the engine (input fetch, "
            f"result, record sent) {statistics.median(volunteer):.0f} ms, the rest (broker to volunteer, "
            f"ledger entry) {statistics.median(rest):.0f} ms; CPU per job: API "
            f"{coordinator_cpu['api']:.0f} ms, ledger worker {coordinator_cpu['ledger']:.0f} ms; "
            f"slowest job: {_timeline(max(sampled, key=lambda job: job['added']))}; the volunteer's "
            f"hand-backs and refusals up to then: {' | '.join(hitches) or 'none'}",
        ),
    ]


def _timeline(job: dict) -> str:
    """One job's added time in its parts, from the coordinator's stamps (ms)."""

    def ms(seconds: float | None) -> str:
        return "?" if seconds is None else f"{seconds * 1000:.0f}"

    return (
        f"added {ms(job['added'])} (POST {ms(job['post'])}; POST to its input fetched "
        f"{ms(job['to_start'])}; input fetched to step ended {ms(job['start_to_step_end'])}, of which "
        f"engine {ms(job['engine'])} and the volunteer's wall {ms(job['wall'])}; end to end "
        f"{ms(job['end_to_end'])})"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--raw-engine"]:
        serve_raw_engine(sys.argv[2])
        sys.exit(0)
    sys.argv[1:] = ["llm", *sys.argv[1:]]
    from bench.__main__ import main

    sys.exit(main())
