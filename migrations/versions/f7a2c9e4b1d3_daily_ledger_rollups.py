"""daily roll-ups of the ledger for the stats of long spans, kept by triggers

Revision ID: f7a2c9e4b1d3
Revises: d8f1b6c3e2a7
Create Date: 2026-12-02 16:10:00

``GET /api/v1/stats?period=month`` summed a month of entries (830,000 of ten million over a
year) at every call: 1.2 s, though the index on ``received_at`` carries every column it reads
(migration e8a4c2d9f613). EXPLAIN ANALYZE on ten million entries: an index-only scan of
~830,000 rows and a HashAggregate by node, capability, outcome, held and rate. These two tables
hold the same sums by UTC day, written by PostgreSQL as rows are inserted (as the running
tallies of d3f9a1c7e5b2, docs/decisions/0012): the stats read the whole days of a span here
(a month: ~30 × 20 rows, and ~30 × 1,000 for the nodes' metered time) and only its ragged ends
from the entries (app/stats.py).

- ``ledger_days``: entries by day received (``decision`` empty) and decisions on held grants by
  day decided, by capability, outcome, held and rate: count, units, granted ms.
- ``node_days``: entries by day received and node: count, metered ms (``footprints.metered_ms``:
  claimed wall time bounded by the observed one), for the CO₂ by hardware class.

Delta rows, never updated: two ledger workers entering at once take no lock on a shared row (no
waits, no deadlocks; an upsert would serialise them on today's rows); ``compact_tallies()`` now
also folds the rows of today and yesterday. The ledger is append-only (no UPDATE, no DELETE;
erasure does not touch it, docs/decisions/0016): inserts are all there is to follow, so a day's
roll-up equals its entries' sums (tests/test_ledger_rollups.py).
"""

from alembic import op
import sqlalchemy as sa

revision = "f7a2c9e4b1d3"
down_revision = "d8f1b6c3e2a7"
branch_labels = None
depends_on = None

FUNCTIONS = """
CREATE FUNCTION ledger_entries_days() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_days (day, capability, outcome, held, rate_eur_per_hour, decision, entries, units,
        granted_ms)
    SELECT (received_at AT TIME ZONE 'UTC')::date, capability, outcome, held, rate_eur_per_hour, '', count(*),
        coalesce(sum(units), 0), coalesce(sum(granted_ms), 0)
    FROM added GROUP BY 1, 2, 3, 4, 5;
    -- app.footprints.metered_ms, in SQL.
    INSERT INTO node_days (day, node_id, entries, metered_ms)
    SELECT (received_at AT TIME ZONE 'UTC')::date, node_id, count(*),
        coalesce(sum(least(claimed_ms, coalesce(observed_ms, 0))), 0)
    FROM added GROUP BY 1, 2;
    RETURN NULL;
END $$;

CREATE FUNCTION grant_decisions_days() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_days (day, capability, outcome, held, rate_eur_per_hour, decision, entries, units,
        granted_ms)
    SELECT (d.decided_at AT TIME ZONE 'UTC')::date, e.capability, e.outcome, e.held, e.rate_eur_per_hour,
        d.decision, count(*), coalesce(sum(e.units), 0), coalesce(sum(e.granted_ms), 0)
    FROM added AS d JOIN ledger_entries AS e ON e.id = d.entry_id
    GROUP BY 1, 2, 3, 4, 5, 6;
    RETURN NULL;
END $$;

-- Folds the delta rows of today and yesterday (UTC; where the ledger's inserts land: entries are
-- received and decisions taken now) into one row per group, atomically, as compact_tallies()
-- does for the tallies. Rows of older days stay as they are: they are summed all the same.
CREATE FUNCTION compact_ledger_days() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    since date := (now() AT TIME ZONE 'UTC')::date - 1;
BEGIN
    WITH gone AS (DELETE FROM ledger_days WHERE day >= since RETURNING *)
    INSERT INTO ledger_days (day, capability, outcome, held, rate_eur_per_hour, decision, entries, units,
        granted_ms)
    SELECT day, capability, outcome, held, rate_eur_per_hour, decision, sum(entries), sum(units),
        sum(granted_ms)
    FROM gone GROUP BY day, capability, outcome, held, rate_eur_per_hour, decision;
    WITH gone AS (DELETE FROM node_days WHERE day >= since RETURNING *)
    INSERT INTO node_days (day, node_id, entries, metered_ms)
    SELECT day, node_id, sum(entries), sum(metered_ms) FROM gone GROUP BY day, node_id;
END $$;
"""

#: compact_tallies() of d3f9a1c7e5b2, and with the days folded too.
COMPACT_TALLIES = """
CREATE OR REPLACE FUNCTION compact_tallies() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (DELETE FROM ledger_tallies RETURNING *)
    INSERT INTO ledger_tallies (capability, outcome, held, decision, reason, entries, granted_ms)
    SELECT capability, outcome, held, decision, reason, sum(entries), sum(granted_ms)
    FROM gone GROUP BY capability, outcome, held, decision, reason;
    WITH gone AS (DELETE FROM rejection_tallies RETURNING *)
    INSERT INTO rejection_tallies (reason, records)
    SELECT reason, sum(records) FROM gone GROUP BY reason;
    WITH gone AS (DELETE FROM job_latency_tallies RETURNING *)
    INSERT INTO job_latency_tallies (kind, state, le, jobs, seconds)
    SELECT kind, state, le, sum(jobs), sum(seconds) FROM gone GROUP BY kind, state, le;
    %s
END $$;
"""

# Created before the tables are filled from what exists: CREATE TRIGGER locks each table against
# writers until this migration commits, so no row is counted twice or missed.
TRIGGERS = """
CREATE TRIGGER ledger_entries_days AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_days();
CREATE TRIGGER grant_decisions_days AFTER INSERT ON grant_decisions
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION grant_decisions_days();
"""

BACKFILL = """
INSERT INTO ledger_days (day, capability, outcome, held, rate_eur_per_hour, decision, entries, units, granted_ms)
SELECT (received_at AT TIME ZONE 'UTC')::date, capability, outcome, held, rate_eur_per_hour, '', count(*),
    coalesce(sum(units), 0), coalesce(sum(granted_ms), 0)
FROM ledger_entries GROUP BY 1, 2, 3, 4, 5;
INSERT INTO node_days (day, node_id, entries, metered_ms)
SELECT (received_at AT TIME ZONE 'UTC')::date, node_id, count(*),
    coalesce(sum(least(claimed_ms, coalesce(observed_ms, 0))), 0)
FROM ledger_entries GROUP BY 1, 2;
INSERT INTO ledger_days (day, capability, outcome, held, rate_eur_per_hour, decision, entries, units, granted_ms)
SELECT (d.decided_at AT TIME ZONE 'UTC')::date, e.capability, e.outcome, e.held, e.rate_eur_per_hour,
    d.decision, count(*), coalesce(sum(e.units), 0), coalesce(sum(e.granted_ms), 0)
FROM grant_decisions AS d JOIN ledger_entries AS e ON e.id = d.entry_id
GROUP BY 1, 2, 3, 4, 5, 6;
"""


def upgrade():
    op.create_table(
        "ledger_days",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("capability", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("rate_eur_per_hour", sa.Numeric(12, 6), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=False, server_default=""),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("granted_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_ledger_days_day", "ledger_days", ["day"])
    op.create_table(
        "node_days",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("node_id", sa.String(length=36), nullable=True),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("metered_ms", sa.BigInteger(), nullable=False),
    )
    # A span's whole days read from the index alone.
    op.execute("CREATE INDEX ix_node_days_day ON node_days (day) INCLUDE (node_id, metered_ms)")
    # Compaction deletes today's and yesterday's rows every round: vacuum them after a few
    # thousand dead rows, not a fifth of the table.
    for table in ("ledger_days", "node_days"):
        op.execute(
            f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,"
            " autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000)"
        )
    op.execute(FUNCTIONS)
    op.execute(COMPACT_TALLIES % "PERFORM compact_ledger_days();")
    op.execute(TRIGGERS)
    op.execute(BACKFILL)


def downgrade():
    op.execute("DROP TRIGGER grant_decisions_days ON grant_decisions")
    op.execute("DROP TRIGGER ledger_entries_days ON ledger_entries")
    op.execute(COMPACT_TALLIES % "")
    for function in ("compact_ledger_days()", "grant_decisions_days()", "ledger_entries_days()"):
        op.execute(f"DROP FUNCTION {function}")
    op.drop_table("node_days")
    op.drop_table("ledger_days")
