"""each node's grants that count, by capability, kept by triggers

Revision ID: a9d3e6f2c814
Revises: c4e7a1d9b2f6
Create Date: 2026-12-03 06:30:00

``GET /api/v1/nodes`` and the member's dashboard show each node's compute hours of all time by
capability: the grants that count (``app.ledger.settlement.counted``: entered unheld, or held
and since released). They summed every entry of the listed nodes at each call, testing each held
one for a release: a page of 100 nodes with 1,000 entries each took ~240 ms, and a node gathers
entries for as long as it serves (~2 million a year at one job every 15 s). ``node_grants``
holds the same sums, written by PostgreSQL as entries and decisions are inserted:

- an entry entered unheld adds its granted ms to its node and capability;
- a ``released`` decision adds its held entry's granted ms (one decision per entry: the
  ``grant_decisions.entry_id`` unique key; a decision on an unheld entry, which the ledger never
  takes, adds nothing, as ``counted`` counts such an entry once), a ``refused`` one nothing.

Delta rows, never updated, folded by ``compact_tallies()`` (into one row per node and
capability) as the daily roll-ups of f7a2c9e4b1d3 are, and for the same reasons: two ledger
workers entering at once take no lock on a shared row. The ledger is append-only, so inserts are
all there is to follow (tests/test_ledger_rollups.py checks the sums equal the entries').
"""

from alembic import op
import sqlalchemy as sa

revision = "a9d3e6f2c814"
down_revision = "c4e7a1d9b2f6"
branch_labels = None
depends_on = None

FUNCTIONS = """
CREATE FUNCTION ledger_entries_node_grants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO node_grants (node_id, capability, granted_ms)
    SELECT node_id, capability, coalesce(sum(granted_ms), 0)
    FROM added WHERE NOT held AND node_id IS NOT NULL GROUP BY 1, 2;
    RETURN NULL;
END $$;

CREATE FUNCTION grant_decisions_node_grants() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO node_grants (node_id, capability, granted_ms)
    SELECT e.node_id, e.capability, coalesce(sum(e.granted_ms), 0)
    FROM added AS d JOIN ledger_entries AS e ON e.id = d.entry_id
    WHERE d.decision = 'released' AND e.held AND e.node_id IS NOT NULL GROUP BY 1, 2;
    RETURN NULL;
END $$;

CREATE FUNCTION compact_node_grants() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (DELETE FROM node_grants RETURNING *)
    INSERT INTO node_grants (node_id, capability, granted_ms)
    SELECT node_id, capability, sum(granted_ms) FROM gone GROUP BY node_id, capability;
END $$;
"""

#: compact_tallies() as f7a2c9e4b1d3 left it, then the nodes' grants folded too (``%s``).
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
    PERFORM compact_ledger_days();%s
END $$;
"""

# Created before the table is filled from what exists: CREATE TRIGGER locks each table against
# writers until this migration commits, so no grant is counted twice or missed.
TRIGGERS = """
CREATE TRIGGER ledger_entries_node_grants AFTER INSERT ON ledger_entries
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION ledger_entries_node_grants();
CREATE TRIGGER grant_decisions_node_grants AFTER INSERT ON grant_decisions
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION grant_decisions_node_grants();
"""

BACKFILL = """
INSERT INTO node_grants (node_id, capability, granted_ms)
SELECT node_id, capability, sum(granted_ms) FROM (
    SELECT node_id, capability, granted_ms FROM ledger_entries WHERE NOT held AND node_id IS NOT NULL
    UNION ALL
    SELECT e.node_id, e.capability, e.granted_ms
    FROM grant_decisions AS d JOIN ledger_entries AS e ON e.id = d.entry_id
    WHERE d.decision = 'released' AND e.held AND e.node_id IS NOT NULL
) AS counted
GROUP BY 1, 2 HAVING sum(granted_ms) IS NOT NULL;
"""


def upgrade():
    op.create_table(
        "node_grants",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("node_id", sa.String(length=36), nullable=False),
        sa.Column("capability", sa.String(length=16), nullable=False),
        sa.Column("granted_ms", sa.BigInteger(), nullable=False),
    )
    # A page of nodes read from the index alone.
    op.execute("CREATE INDEX ix_node_grants_node_id ON node_grants (node_id) INCLUDE (capability, granted_ms)")
    # Compaction deletes every row each round: vacuum after a few thousand dead rows.
    op.execute(
        "ALTER TABLE node_grants SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,"
        " autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000)"
    )
    op.execute(FUNCTIONS)
    op.execute(COMPACT_TALLIES % "\n    PERFORM compact_node_grants();")
    op.execute(TRIGGERS)
    op.execute(BACKFILL)


def downgrade():
    op.execute("DROP TRIGGER grant_decisions_node_grants ON grant_decisions")
    op.execute("DROP TRIGGER ledger_entries_node_grants ON ledger_entries")
    op.execute(COMPACT_TALLIES % "")
    for function in ("compact_node_grants()", "grant_decisions_node_grants()", "ledger_entries_node_grants()"):
        op.execute(f"DROP FUNCTION {function}")
    op.drop_table("node_grants")
