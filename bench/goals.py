"""The performance goals ``make bench`` checks, one line each: measured, target, met or not.

A goal is a figure measured in this run, most often a ratio against a baseline measured in the
same run a few seconds apart (grid vs bare Celery, grid vs raw llama-cpp-python, grid vs the
Tesseract CLI, two coordinators vs one); absolute seconds are printed beside it for context only.

Each part is a module of ``bench`` with ``run(workdir: Path, quick: bool) -> list[Goal]``, run by
``python -m bench <part>`` alone or by ``make bench`` with the others; ``--quick`` shrinks the
largest data sets (the figures are then said to be from the quick run).
"""

from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: Goal parts, in the order ``make bench`` runs them: the part's name on the command line, and
#: its module (``run(workdir, quick) -> list[Goal]``).
PARTS: dict[str, str] = {
    "history": "bench.history",
    "latency": "bench.latency",
    "coordinators": "bench.coordinators",
    "nodes": "bench.nodes",
    "llm": "bench.llm",
    "throughput": "bench.throughput",
}


@dataclass(frozen=True)
class Goal:
    """One goal: ``measured`` compared with ``target`` by ``at_least`` (≥) or not (≤).

    ``unit`` is printed after both numbers: ``"×"`` for a ratio, ``"ms"``, ``"s"``, ``"%"``…
    ``context`` gives what the ratio was computed from (absolute figures, sample sizes)."""

    name: str
    measured: float
    target: float
    unit: str
    at_least: bool
    context: str = ""

    @classmethod
    def ratio(cls, name: str, grid: float, baseline: float, target: float, context: str = "") -> Goal:
        """``grid / baseline`` (rates: higher is better), to be at least ``target``."""
        measured = grid / baseline if baseline > 0 else 0.0
        return cls(name, measured, target, "×", True, context)

    @classmethod
    def at_most(cls, name: str, measured: float, target: float, unit: str, context: str = "") -> Goal:
        return cls(name, measured, target, unit, False, context)

    @property
    def met(self) -> bool:
        return self.measured >= self.target if self.at_least else self.measured <= self.target

    def line(self) -> str:
        sign = "≥" if self.at_least else "≤"
        space = "" if self.unit == "×" else " "
        text = (
            f"{'met    ' if self.met else 'NOT met'}  {self.name}: {self.measured:.3g}{space}{self.unit} "
            f"(goal {sign} {self.target:g}{space}{self.unit})"
        )
        return f"{text}\n           {self.context}" if self.context else text


def failed(name: str, error: BaseException) -> Goal:
    """A part that could not measure: its goal is printed as not met, with the reason."""
    return Goal(name, float("nan"), 0.0, "", True, f"could not be measured: {type(error).__name__}: {error}")


def run(parts: list[str], workdir: Path, quick: bool) -> list[Goal]:
    """Run the named goal parts one after the other; a part that breaks is reported, not fatal."""
    goals: list[Goal] = []
    for part in parts:
        began = time.monotonic()
        left = end_leftover_jobs()
        print(
            f"goal part {part!r}{' (quick)' if quick else ''}…"
            + (f" (first cancelled {left} jobs left unfinished before it)" if left else ""),
            file=sys.stderr,
            flush=True,
        )
        try:
            module = importlib.import_module(PARTS[part])
            (workdir / part).mkdir(parents=True, exist_ok=True)
            goals += module.run(workdir / part, quick)
        except Exception as exc:  # noqa: BLE001  one part's failure is a line of the table
            import traceback

            traceback.print_exc()
            goals.append(failed(part, exc))
        print(f"goal part {part!r} took {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    return goals


def end_leftover_jobs() -> int:
    """Cancels every job left queued or running in the shared database (jobs that no volunteer
    took: the latency parts' thousands of submissions, the inputs part's, the nodes part's
    simulated steps), as their submitter would: a later part's coordinator would otherwise take
    their steps for lost (app.watchdog), send them again on its own broker, and its volunteer
    would run them before the part's own jobs (the LLM part's warm-up took 2 minutes so, and a
    probe job 7.6 s). Returns how many were cancelled."""
    from sqlalchemy import select

    from app import create_app, lifecycle
    from app.extensions import db
    from app.models import Job, JobState

    flask_app = create_app({"TESTING_NO_METRICS": True})
    cancelled = 0
    with flask_app.app_context():
        while True:
            batch = db.session.scalars(
                select(Job)
                .where(Job.state.not_in(JobState.FINAL))
                .limit(500)
                .with_for_update(skip_locked=True)
            ).all()
            if not batch:
                break
            for job in batch:
                lifecycle.cancel_job(job)  # no part's grid runs now: no task to revoke
            db.session.commit()
            cancelled += len(batch)
        db.engine.dispose()
    return cancelled


def table(goals: list[Goal], quick: bool) -> str:
    met = sum(goal.met for goal in goals)
    head = f"Goals (issue 14){' — quick run' if quick else ''}: {met} of {len(goals)} met"
    return "\n".join([head, *(goal.line() for goal in goals)])
