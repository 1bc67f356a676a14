"""heartbeats counted by runs of slots, kept by triggers, for uptime over long windows

Revision ID: c4e7a1d9b2f6
Revises: b8d4f1a6c3e9
Create Date: 2026-12-03 00:05:00

A node's uptime over 30 days counted its ``node_heartbeats`` rows: 43,200 a node at the default
60-second interval (259,200 at 10 s). The member's dashboard (two nodes, 30 days at 10 s) took
about 300 ms, and ``GET /api/v1/nodes`` counted 4.3 million rows for a page of 100 nodes.
``node_heartbeat_counts`` holds, per node and run of ``SLOTS_PER_RUN`` consecutive slots
(``app.registry.SLOTS_PER_RUN``: 60, an hour at 60 s; the run is ``slot / 60``, whatever the
interval), how many of the run's slots the node was seen in. Uptime reads the whole runs of a
window here and only its two ragged ends (at most 59 slots each) from ``node_heartbeats``
(``app.registry.seen_counts``).

Written by PostgreSQL as heartbeats are inserted or deleted (statement triggers over the
transition tables: a heartbeat already seen, skipped by ``ON CONFLICT DO NOTHING``, is not in
them), so every writer keeps it right, the ledger's batches as well as an operator's SQL. An
upsert, one row per node and run a statement, in (node, run) order: two ledger workers entering
heartbeats of the same nodes wait for each other on those rows, never in a cycle; they already
lock the same nodes' rows for ``last_seen_at``.
"""

import sqlalchemy as sa
from alembic import op

revision = "c4e7a1d9b2f6"
down_revision = "b8d4f1a6c3e9"
branch_labels = None
depends_on = None

#: app.registry.SLOTS_PER_RUN (tests/test_registry_listing.py checks they agree).
SLOTS_PER_RUN = 60

FUNCTIONS = f"""
CREATE FUNCTION node_heartbeats_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO node_heartbeat_counts (node_id, run, seen)
    SELECT node_id, slot / {SLOTS_PER_RUN}, count(*) FROM added GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (node_id, run) DO UPDATE SET seen = node_heartbeat_counts.seen + EXCLUDED.seen;
    RETURN NULL;
END $$;

CREATE FUNCTION node_heartbeats_uncounted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE node_heartbeat_counts AS c SET seen = c.seen - gone.seen
    FROM (SELECT node_id, slot / {SLOTS_PER_RUN} AS run, count(*) AS seen FROM removed GROUP BY 1, 2) AS gone
    WHERE c.node_id = gone.node_id AND c.run = gone.run;
    RETURN NULL;
END $$;
"""

# Created before the table is filled from what exists: CREATE TRIGGER locks node_heartbeats
# against writers until this migration commits, so no heartbeat is counted twice or missed.
TRIGGERS = """
CREATE TRIGGER node_heartbeats_counted AFTER INSERT ON node_heartbeats
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION node_heartbeats_counted();
CREATE TRIGGER node_heartbeats_uncounted AFTER DELETE ON node_heartbeats
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION node_heartbeats_uncounted();
"""

BACKFILL = f"""
INSERT INTO node_heartbeat_counts (node_id, run, seen)
SELECT node_id, slot / {SLOTS_PER_RUN}, count(*) FROM node_heartbeats GROUP BY 1, 2;
"""


def upgrade():
    op.create_table(
        "node_heartbeat_counts",
        sa.Column("node_id", sa.String(length=36), nullable=False),
        sa.Column("run", sa.BigInteger(), nullable=False),
        sa.Column("seen", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", "run", name="pk_node_heartbeat_counts"),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_node_heartbeat_counts_node_id_nodes"),
    )
    op.execute(FUNCTIONS)
    op.execute(TRIGGERS)
    op.execute(BACKFILL)


def downgrade():
    op.execute("DROP TRIGGER node_heartbeats_uncounted ON node_heartbeats")
    op.execute("DROP TRIGGER node_heartbeats_counted ON node_heartbeats")
    op.execute("DROP FUNCTION node_heartbeats_uncounted()")
    op.execute("DROP FUNCTION node_heartbeats_counted()")
    op.drop_table("node_heartbeat_counts")
