"""The CO₂ of executions the ledger entered: their metered time summed per node in SQL, each
node's share counted at its hardware class (``app.carbon``'s model, with the coordinator's
settings). Used for a job's own ``co2_grams`` and by ``app.stats``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from flask import current_app
from sqlalchemy import ColumnElement, func, select

from app import carbon
from app.extensions import db
from app.models import LedgerEntry, Node


def metered_ms() -> ColumnElement[int]:
    """An execution's seconds for its energy (ms): its node's claimed wall time, bounded by
    the time the coordinator saw it take; nothing when the coordinator saw no start."""
    return func.least(LedgerEntry.claimed_ms, func.coalesce(LedgerEntry.observed_ms, 0))


def assumptions() -> carbon.Assumptions:
    return carbon.assumptions(current_app.config)


def footprint(*where: ColumnElement[bool], model: carbon.Assumptions | None = None) -> carbon.Footprint:
    """The CO₂ of the executions ``where`` selects: their metered time summed per node in SQL,
    then counted at each node's hardware class (one row per node, not per entry)."""
    per_node = db.session.execute(
        select(LedgerEntry.node_id, func.coalesce(func.sum(metered_ms()), 0))
        .where(*where)
        .group_by(LedgerEntry.node_id)
    ).all()
    return of_nodes(dict(per_node), model)


def of_nodes(
    ms_by_node: Mapping[str | None, int], model: carbon.Assumptions | None = None
) -> carbon.Footprint:
    """The CO₂ of metered milliseconds by node (None: the coordinator's own entries), each
    node's counted at the class its registered machine supports."""
    model = model or assumptions()
    ids = [node_id for node_id in ms_by_node if node_id is not None]
    machines = dict(
        db.session.execute(select(Node.id, Node.probe["machine"]).where(Node.id.in_(ids))).all()
        if ids
        else []
    )
    ms_by_class: Counter[str] = Counter()
    for node_id, ms in ms_by_node.items():
        machine = machines.get(node_id)
        probe = {"machine": machine} if isinstance(machine, dict) else None
        ms_by_class[carbon.hardware_class(probe, model.watts_by_class)] += int(ms)
    return carbon.footprint(ms_by_class, model)


def job_co2_grams(job_id: str, entered: bool = True) -> float:
    """A job's own CO₂: every execution of its steps and of their replicas (``entered`` False:
    a job just recorded, none entered yet)."""
    if not entered:
        return carbon.shown(of_nodes({}).grams)
    return carbon.shown(footprint(LedgerEntry.job_id == job_id).grams)
