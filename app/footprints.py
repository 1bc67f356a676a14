"""The CO₂ of executions the ledger entered: their metered time summed per node in SQL, each
node's share counted at its hardware class (``app.carbon``'s model, with the coordinator's
settings). Used for a job's own ``co2_grams`` and by ``app.stats``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from flask import current_app
from sqlalchemy import BigInteger, ColumnElement, column, func, select, text
from sqlalchemy.dialects.postgresql import JSONB

from app import carbon
from app.extensions import db
from app.models import LedgerEntry


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
    ms_by_class: Counter[str] = Counter()
    known = [(node_id, int(ms)) for node_id, ms in ms_by_node.items() if node_id is not None]
    if None in ms_by_node:
        ms_by_class[carbon.UNKNOWN] += int(ms_by_node[None])
    if known:
        # Summed in SQL by what ``carbon.hardware_class`` reads of a machine: a row per kind of
        # machine, not per node (a thousand nodes' ids sent as one array, not as parameters).
        ids, ms = (list(values) for values in zip(*known, strict=True))
        for *read, total in db.session.execute(_BY_MACHINE, {"ids": ids, "ms": ms}):
            machine = dict(zip(carbon.MACHINE_FIELDS, read, strict=True))
            ms_by_class[carbon.hardware_class({"machine": machine}, model.watts_by_class)] += int(total)
    return carbon.footprint(ms_by_class, model)


#: Metered ms by what a node's registered machine (``Node.probe["machine"]``) says of the fields
#: ``carbon.hardware_class`` reads, as JSON values (a number stays a number, a string a string);
#: a node the table does not have, or a machine that is not an object, reads as nulls.
_BY_MACHINE = text(
    "SELECT "
    + "".join(f"m -> '{field}', " for field in carbon.MACHINE_FIELDS)
    + "sum(spent.ms) FROM unnest(CAST(:ids AS varchar[]), CAST(:ms AS bigint[])) AS spent (node_id, ms) "
    "LEFT JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(CAST(n.probe AS jsonb) -> 'machine') = 'object' "
    "THEN CAST(n.probe AS jsonb) -> 'machine' END AS m "
    "FROM nodes AS n WHERE n.id = spent.node_id) AS machine ON true "
    "GROUP BY " + ", ".join(str(i + 1) for i in range(len(carbon.MACHINE_FIELDS)))
).columns(*(column(field, JSONB) for field in carbon.MACHINE_FIELDS), column("ms", BigInteger))


def of_entries(entries: Sequence[Any], model: carbon.Assumptions | None = None) -> carbon.Footprint:
    """The CO₂ of a few entries already read, each with ``node_id`` and ``metered_ms``
    (``settlement.job_entries`` rows): summed by node here, each node counted as ``of_nodes`` does."""
    ms_by_node: Counter[str | None] = Counter()
    for entry in entries:
        ms_by_node[entry.node_id] += int(entry.metered_ms)
    return of_nodes(ms_by_node, model)


def job_co2_grams(job_id: str) -> float:
    """A job's own CO₂: every execution of its steps and of their replicas."""
    return carbon.shown(footprint(LedgerEntry.job_id == job_id).grams)
