"""ledger indexes for members' statements and settlement: by period and node, and held entries

Revision ID: b8d4f1a6c3e9
Revises: f7a2c9e4b1d3
Create Date: 2026-12-02 16:40:00

Measured with EXPLAIN ANALYZE on ten million entries over a year (1,000 nodes, a tenth held):

- A member's statement of a month (two nodes, 1,644 lines): 812 ms. The entries of the period
  or released in it were found through ``ix_ledger_entries_node_id`` (10,000 entries a node,
  all periods, a random heap page each) filtered by ``period = … OR id IN (every release of the
  period on the grid: 82,000)``, which no index answers. The statement now asks for the two
  sets apart (app/ledger/settlement.py), and the index on ``period`` becomes one on
  ``(period, node_id, …)``: the period's entries of these nodes are one index range each.
- Settling a month: the unheld grants by node, capability and rate (830,000 entries) were read
  through ``ix_ledger_entries_period`` from the heap and sorted on disk (2.15 s). The same index
  carries the grouping columns in order and the held flag and grant: an index-only scan in group
  order, no sort. The released grants (82,000 decisions of the period) were joined to their
  entries by primary key, a heap page each (1.2 s); ``ix_ledger_entries_held`` (the held
  entries' ids, a tenth of the ledger: b7d1e4a9c2f3) now carries the columns summed too, so the
  join reads that small index alone.

The old index on ``period`` alone is the new one's prefix: dropped.
"""

import sqlalchemy as sa
from alembic import op

revision = "b8d4f1a6c3e9"
down_revision = "f7a2c9e4b1d3"
branch_labels = None
depends_on = None


def upgrade():
    op.execute(
        "CREATE INDEX ix_ledger_entries_period_node ON ledger_entries "
        "(period, node_id, capability, rate_eur_per_hour) INCLUDE (held, granted_ms)"
    )
    op.drop_index("ix_ledger_entries_period", table_name="ledger_entries")
    op.drop_index("ix_ledger_entries_held", table_name="ledger_entries")
    op.execute(
        "CREATE INDEX ix_ledger_entries_held ON ledger_entries (id) "
        "INCLUDE (node_id, capability, rate_eur_per_hour, granted_ms) WHERE held"
    )


def downgrade():
    op.drop_index("ix_ledger_entries_held", table_name="ledger_entries")
    op.create_index("ix_ledger_entries_held", "ledger_entries", ["id"], postgresql_where=sa.text("held"))
    op.create_index("ix_ledger_entries_period", "ledger_entries", ["period"])
    op.drop_index("ix_ledger_entries_period_node", table_name="ledger_entries")
