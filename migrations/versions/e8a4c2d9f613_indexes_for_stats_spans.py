"""indexes for the stats of a span: ledger entries by time with what the stats sum, steps done

Revision ID: e8a4c2d9f613
Revises: d3f9a1c7e5b2
Create Date: 2026-12-02 09:45:00

``GET /api/v1/stats`` sums a span's entries in one grouped query (app/stats.py). With the
columns it reads carried in the index on ``received_at``, PostgreSQL answers from the index
alone (an index-only scan: the ledger is append-only, so autovacuum marks its pages all-visible)
instead of visiting every row of the span. The old single-column index is its prefix, so it
goes. Steps that succeeded, replicas apart, are counted by a partial index on ``finished_at``.
"""

from alembic import op

revision = "e8a4c2d9f613"
down_revision = "d3f9a1c7e5b2"
branch_labels = None
depends_on = None

#: What app.stats reads of each entry in a span.
INCLUDED = (
    "node_id",
    "capability",
    "outcome",
    "held",
    "rate_eur_per_hour",
    "units",
    "granted_ms",
    "claimed_ms",
    "observed_ms",
)


def upgrade():
    op.execute(
        "CREATE INDEX ix_ledger_entries_received_at_stats ON ledger_entries (received_at) "
        f"INCLUDE ({', '.join(INCLUDED)})"
    )
    op.drop_index("ix_ledger_entries_received_at", table_name="ledger_entries")
    op.execute(
        "CREATE INDEX ix_job_steps_succeeded_at ON job_steps (finished_at) "
        "WHERE replica_of_id IS NULL AND state = 'succeeded'"
    )


def downgrade():
    op.drop_index("ix_job_steps_succeeded_at", table_name="job_steps")
    op.create_index("ix_ledger_entries_received_at", "ledger_entries", ["received_at"])
    op.drop_index("ix_ledger_entries_received_at_stats", table_name="ledger_entries")
