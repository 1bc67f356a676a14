"""Enter a batch of records in one transaction: each checked against its schema, handed to the
module of its kind, committed once, and what waits for the commit done after it.

The ledger worker (``app.ledger.intake``) hands over up to a thousand ``(kind, record)``
messages at a time. A record that fits no schema is refused with its reason; a completion is
entered by ``app.ledger.executions``; a register, heartbeat or stopping notice by
``app.registry``; a start arriving as a message is refused (a start is the input fetch,
``app.api.work``). Each of them reads what it needs from the batch's ``Context``.

No record, however made, stops the ledger: a conflict with another ledger worker is resolved by
entering the batch again one record at a time, and a record that makes a batch fail for any
reason but the database being away is stored as refused (``internal_error``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import IntegrityError

from app import registry
from app.errors import database_away
from app.extensions import db
from app.ledger.context import Context
from app.ledger.executions import on_completed
from app.ledger.verification import Refused, as_evidence, checked, reject
from workers import protocol

log = logging.getLogger(__name__)


def apply(messages: Sequence[tuple[str, Any]]) -> None:
    """Apply ``(kind, record)`` messages in order in one transaction, and commit.

    A conflict with a concurrent ledger worker (it entered one of these executions first) is
    resolved by applying the messages again, one per transaction: each then sees the other
    worker's row and refuses the duplicate.
    """
    try:
        ctx = _apply(messages)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        if len(messages) > 1:
            for message in messages:
                apply([message])
            return
        ctx = _apply(messages)  # once more, now seeing the row that won
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    run_after_commit(ctx)


def run_after_commit(ctx: Context) -> None:
    """What waited for the commit (sending steps on, commands to nodes): best effort, the state
    is saved."""
    for action in ctx.after_commit:
        try:
            action()
        except Exception:  # noqa: BLE001
            log.exception("a command after a ledger commit failed")


def apply_safely(messages: Sequence[tuple[str, Any]]) -> None:
    """``apply``, but a record that makes it fail for another reason than the database being
    away (a bug meeting an unforeseen record) is stored as refused, so one bad record cannot
    stop the ledger; the rest of its batch is entered one by one."""
    try:
        apply(messages)
        return
    except Exception as exc:  # noqa: BLE001
        if database_away(exc):
            raise  # the caller keeps the batch and retries
        log.exception("a ledger batch failed; entering its records one by one")
    for kind, record in messages:
        try:
            apply([(kind, record)])
        except Exception as exc:  # noqa: BLE001  kept as evidence, with the reason
            if database_away(exc):
                raise
            db.session.rollback()
            try:
                reject(kind, record, Refused("internal_error", f"{type(exc).__name__}: {exc}"))
                db.session.commit()
            except Exception as failed:  # noqa: BLE001  the last resort must not stop the ledger
                if database_away(failed):
                    raise
                db.session.rollback()
                # Without its result: no log line holds a document's text (docs/decisions/0016).
                shown = as_evidence(record) if isinstance(record, dict) else type(record).__name__
                log.critical("a ledger record could be neither entered nor refused: %r", shown)


def _apply(messages: Sequence[tuple[str, Any]]) -> Context:
    verdicts = [(kind, checked(kind, record)) for kind, record in messages]
    notices_only = all(kind in registry.KINDS for kind, _ in messages)  # no entry among them
    ctx = Context.load(
        (record for _, record in verdicts if not isinstance(record, Refused)), entries=not notices_only
    )
    with db.session.no_autoflush:  # everything is read up front; write once, at the end
        for (kind, record), (_, verdict) in zip(messages, verdicts, strict=True):
            if isinstance(verdict, Refused):
                evidence = {"raw": record.evidence} if isinstance(record, protocol.Invalid) else record
                reject(kind, evidence, verdict)
            elif kind == "started":  # a start is the input fetch (app.api.work), never a message
                reject(kind, record, Refused("wrong_channel", "an execution starts by fetching its input"))
            elif kind == "completed":
                on_completed(record, ctx)
            else:
                registry.apply(kind, record, ctx)
    registry.enter_heartbeats(ctx)
    return ctx
