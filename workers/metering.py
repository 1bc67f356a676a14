"""Meter every execution with Celery task signals and report it to the coordinator's ledger.

``task_prerun`` notes the start (wall clock, CPU of this process and of its engine children);
the coordinator sees the start itself when the task fetches its input (``workers.inputs``).
``task_postrun`` measures the execution and sends one completion record to the ``ledger``
queue, whatever the outcome: success (with the result), failure (with the error code), or
retry. Two outcomes never reach ``task_postrun`` because the task's process is gone: the hard
time limit and a lost worker process; ``GridRequest`` reports those from the main process.

Everything sent here is a claim: the coordinator decides what is granted.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from billiard.exceptions import WorkerLostError
from celery import signals
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.worker.request import Request
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

import celeryconfig
from workers import protocol, spool
from workers.protocol import errors, signing
from workers.protocol.errors import GridError

log = logging.getLogger(__name__)

NODE_ID_ENV = "GRID_NODE_ID"
NODE_SECRET_ENV = "GRID_NODE_SECRET"


def worker_name(hostname: str | None = None) -> str:
    """The Celery worker's name (informational: the ledger knows the node by its id)."""
    return hostname or f"celery@{socket.gethostname()}"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _cpu_seconds() -> float:
    """CPU of this process plus its waited-for children (tesseract, pdftoppm)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Execution:
    task_id: str
    task_name: str
    capability: str
    node: str
    attempt: int
    started_at: str
    wall0: float = field(default_factory=time.monotonic)
    cpu0: float = field(default_factory=_cpu_seconds)
    units: dict[str, int] = field(default_factory=dict)
    #: The task's result, kept here by the task (``GridTask.__call__``) for the completion record:
    #: what the task returns to Celery is its metadata only.
    result: object = None
    has_result: bool = False


_running: dict[str, Execution] = {}


def keep_result(task_id: str, result: object) -> None:
    """The result of the running execution ``task_id``, for its completion record."""
    execution = _running.get(task_id)
    if execution is not None:
        execution.result, execution.has_result = result, True


def count(task_id: str, **units: int) -> None:
    """Set the work units of a running execution (pages, prompt_tokens, completion_tokens)."""
    execution = _running.get(task_id)
    if execution is not None:
        execution.units.update(units)


def _error_of(exc: BaseException | None) -> dict[str, str]:
    if isinstance(exc, GridError):
        return exc.as_dict()
    if isinstance(exc, SoftTimeLimitExceeded):
        return {
            "code": errors.TIME_LIMIT,
            "message": f"The work took longer than {celeryconfig.task_soft_time_limit} s.",
        }
    return {"code": errors.INTERNAL_ERROR, "message": f"{type(exc).__name__}: {exc}"}


def signed(kind: str, **fields) -> dict:
    """A ``kind`` record (``workers.protocol``) signed with this node's secret."""
    return signing.sign(
        {**protocol.body(kind, **fields), "node_id": os.environ.get(NODE_ID_ENV, "")},
        os.environ.get(NODE_SECRET_ENV, ""),
    )


#: Where records go: declared by the coordinator, never by a node (workers.celery).
_LEDGER = celeryconfig.queue(celeryconfig.LEDGER_QUEUE, declare=False)


#: Errors with which the broker says it is away (kombu's, redis-py's, the socket's).
BROKER_AWAY = (KombuOperationalError, RedisError, OSError)
#: A send waits about a second for the broker before the record is kept on disk instead.
_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.1, "interval_step": 0.3, "interval_max": 0.5}


def send(task_app, kind: str, **fields) -> None:
    """Sign a ``kind`` record and send it to the coordinator's ledger queue; kept on the node's
    disk if the broker is away (``workers.spool``), and sent once it is back."""
    record = signed(kind, **fields)
    try:
        publish(task_app, kind, record)
    except BROKER_AWAY as exc:
        spool.keep(kind, record)
        log.warning("the broker is away (%s): the %s record is kept and sent later", exc, kind)


def publish(task_app, kind: str, record: dict) -> None:
    """Put one signed record on the ledger queue (raises while the broker is away)."""
    task_app.send_task(
        protocol.TASK_OF_KIND[kind],
        args=[record],
        queue=_LEDGER,
        routing_key=celeryconfig.LEDGER_QUEUE,
        ignore_result=True,
        retry=True,
        retry_policy=_RETRY_POLICY,
        # Celery otherwise puts a repr of the record (its first KB: the start of a result's
        # text) in the message's headers, at ~a tenth of a no-op task's CPU; the ledger reads
        # the body only.
        argsrepr=f"({kind} record)",
        kwargsrepr="{}",
    )


@signals.task_prerun.connect
def _on_prerun(task_id: str, task, **_) -> None:
    capability = celeryconfig.CAPABILITY_OF_TASK.get(task.name)
    if capability is None:
        return
    execution = Execution(
        task_id=task_id,
        task_name=task.name,
        capability=capability,
        node=worker_name(task.request.hostname),
        attempt=task.request.retries,
        started_at=_now(),
    )
    _running[task_id] = execution  # the coordinator sees the start when the input is fetched


_OUTCOMES = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried"}


@signals.task_postrun.connect
def _on_postrun(task_id: str, task, retval=None, state: str | None = None, **_) -> None:
    execution = _running.pop(task_id, None)
    if execution is None:
        return
    if state is None:
        # Celery leaves the state unset when the task body raised a BaseException: SystemExit
        # from billiard's SIGTERM handler, as this pool process is terminated (a cancelled
        # job's revoke, or SIGTERM to the whole process group as systemd stops a node). The
        # work had no outcome: the main process reports a dead process as lost
        # (GridRequest), and a revoked execution is not reported at all.
        return
    outcome = _OUTCOMES.get(state)
    if outcome is None:  # IGNORED, REJECTED: the input was not ours to fetch; nothing ran
        return
    record = _record(execution, outcome)
    if outcome == "succeeded":
        record["result"] = execution.result if execution.has_result else retval
    elif outcome == "retried":
        record["error"] = _error_of(getattr(retval, "exc", None))
    else:
        record["error"] = _error_of(retval if isinstance(retval, BaseException) else None)
    send(task.app, "completed", **record)


def _record(execution: Execution, outcome: str, wall: float | None = None) -> dict:
    return {
        "task_id": execution.task_id,
        "task_name": execution.task_name,
        "capability": execution.capability,
        "node": execution.node,
        "attempt": execution.attempt,
        "outcome": outcome,
        "final": outcome in ("succeeded", "failed"),
        "started_at": execution.started_at,
        "finished_at": _now(),
        "wall_seconds": round(wall if wall is not None else time.monotonic() - execution.wall0, 3),
        "cpu_seconds": round(max(0.0, _cpu_seconds() - execution.cpu0), 3),
        "units": execution.units,
        "result": None,
        "error": None,
    }


class GridRequest(Request):
    """Reports, from the worker's main process, the executions whose pool process died."""

    def _report_death(self, outcome: str, error: dict[str, str]) -> None:
        capability = celeryconfig.CAPABILITY_OF_TASK.get(self.task.name)
        if capability is None:
            return
        # time_start is wall-clock time here (Celery converts it when the pool accepts).
        started = self.time_start or time.time()
        execution = Execution(
            task_id=self.id,
            task_name=self.task.name,
            capability=capability,
            node=worker_name(self.hostname),
            attempt=self._context.retries or 0,
            started_at=datetime.fromtimestamp(started, UTC).isoformat(),
        )
        record = _record(execution, outcome, wall=max(0.0, time.time() - started))
        record["cpu_seconds"] = 0.0  # the process that did the work is gone, and its CPU count
        record["error"] = error
        send(self.task.app, "completed", **record)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if not soft:
            self._report_death(
                "failed",
                {
                    "code": errors.TIME_LIMIT,
                    "message": f"The work was stopped after {timeout:.0f} s (hard time limit).",
                },
            )

    def on_failure(self, exc_info, send_failed_event: bool = True, return_ok: bool = False) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # ExceptionWithTraceback
        died = isinstance(exc, (WorkerLostError, SystemExit, KeyboardInterrupt))
        died = died and not (self._already_revoked or self._already_cancelled)
        max_retries = self.task.max_retries
        exhausted = max_retries is not None and (self._context.retries or 0) >= max_retries
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        if died and not isinstance(exc, TimeLimitExceeded):
            self._report_death(
                "failed" if exhausted else "lost",
                {
                    "code": errors.WORKER_LOST,
                    "message": (
                        f"The worker process died during the work {max_retries + 1} times."
                        if exhausted
                        else "The worker process died during the work; it runs again."
                    ),
                },
            )
