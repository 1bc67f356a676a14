"""a grant decision carries its entry's capability, rate and granted ms, set by PostgreSQL

Revision ID: d5b8e1f3a7c2
Revises: a9d3e6f2c814
Create Date: 2026-12-03 10:30:00

``GET /api/v1/stats`` counts the held grants released in its span's ragged ends (the partial
days the daily roll-ups cannot answer) by capability and rate. It joined each such decision to
its entry: one probe into the ledger's heap per decision, scattered over the whole table (at ten
million entries, a day's ~2,500 releases cost ~30 ms of a stats answer). The decision now
carries the three columns it summed, copied from its entry by a BEFORE INSERT trigger (whatever
the inserting code gives: entries and decisions are append-only, so the copy never differs), and
a partial index on the released ones' ``decided_at`` carries them: the span's releases are read
from the index alone.
"""

from alembic import op
import sqlalchemy as sa

revision = "d5b8e1f3a7c2"
down_revision = "a9d3e6f2c814"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE FUNCTION grant_decisions_copy_grant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT e.capability, e.rate_eur_per_hour, e.granted_ms
    INTO NEW.capability, NEW.rate_eur_per_hour, NEW.granted_ms
    FROM ledger_entries AS e WHERE e.id = NEW.entry_id;
    RETURN NEW;
END $$;
"""

#: The decisions already there get their copies: the one UPDATE they ever take, with their
#: append-only guard (b7d1e4a9c2f3) lifted for it, within this migration's transaction.
BACKFILL = """
ALTER TABLE grant_decisions DISABLE TRIGGER grant_decisions_no_update_delete;
UPDATE grant_decisions AS d SET capability = e.capability, rate_eur_per_hour = e.rate_eur_per_hour,
    granted_ms = e.granted_ms FROM ledger_entries AS e WHERE e.id = d.entry_id;
ALTER TABLE grant_decisions ENABLE TRIGGER grant_decisions_no_update_delete;
"""


def upgrade():
    op.add_column("grant_decisions", sa.Column("capability", sa.String(length=16), nullable=True))
    op.add_column("grant_decisions", sa.Column("rate_eur_per_hour", sa.Numeric(12, 6), nullable=True))
    op.add_column("grant_decisions", sa.Column("granted_ms", sa.BigInteger(), nullable=True))
    op.execute(BACKFILL)
    op.execute(FUNCTION)
    op.execute(
        "CREATE TRIGGER grant_decisions_copy_grant BEFORE INSERT ON grant_decisions "
        "FOR EACH ROW EXECUTE FUNCTION grant_decisions_copy_grant()"
    )
    op.execute(
        "CREATE INDEX ix_grant_decisions_released_stats ON grant_decisions (decided_at) "
        "INCLUDE (capability, rate_eur_per_hour, granted_ms) WHERE decision = 'released'"
    )


def downgrade():
    op.execute("DROP INDEX ix_grant_decisions_released_stats")
    op.execute("DROP TRIGGER grant_decisions_copy_grant ON grant_decisions")
    op.execute("DROP FUNCTION grant_decisions_copy_grant()")
    for column in ("granted_ms", "rate_eur_per_hour", "capability"):
        op.drop_column("grant_decisions", column)
