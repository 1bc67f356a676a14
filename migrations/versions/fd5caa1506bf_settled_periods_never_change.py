"""settled periods never change

Revision ID: fd5caa1506bf
Revises: 984bf02dfaed
Create Date: 2026-11-21 10:53:59.242548

"""
import sqlalchemy as sa
from alembic import op

#: PostgreSQL itself keeps a settled period as it was settled: no entry is added to it, its
#: rewards are never deleted and change only to be marked paid once, and the period row is
#: never reopened or deleted. (The code already assigns late entries to the next open period.)
PG_SETTLED = """
CREATE FUNCTION ledger_entries_open_period_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger_periods WHERE period = NEW.period AND closed_at IS NOT NULL) THEN
        RAISE EXCEPTION 'period % is settled: no entry can be added to it', NEW.period
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER ledger_entries_open_period_only BEFORE INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_open_period_only();

CREATE FUNCTION rewards_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.paid_at IS NULL AND NEW.paid_at IS NOT NULL
       AND (NEW.id, NEW.period, NEW.node_id, NEW.period_start, NEW.period_end, NEW.exact_eur, NEW.amount_eur)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.period, OLD.node_id, OLD.period_start, OLD.period_end, OLD.exact_eur, OLD.amount_eur)
    THEN
        RETURN NEW;  -- marking an unpaid reward paid, with its payout reference
    END IF;
    RAISE EXCEPTION '% of a settled reward refused: settled periods never change', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE FUNCTION reward_lines_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% of a settled reward line refused: settled periods never change', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE FUNCTION ledger_periods_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.closed_at IS NULL THEN  -- an open period may be closed (or dropped)
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION '% of a settled period refused: settled periods never change', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER rewards_final BEFORE UPDATE OR DELETE ON rewards
    FOR EACH ROW EXECUTE FUNCTION rewards_final();
CREATE TRIGGER reward_lines_final BEFORE UPDATE OR DELETE ON reward_lines
    FOR EACH ROW EXECUTE FUNCTION reward_lines_final();
CREATE TRIGGER ledger_periods_final BEFORE UPDATE OR DELETE ON ledger_periods
    FOR EACH ROW EXECUTE FUNCTION ledger_periods_final();
"""
SQLITE_APPEND_ONLY = [
    f"""CREATE TRIGGER IF NOT EXISTS ledger_entries_no_{op.lower()} BEFORE {op} ON ledger_entries
    BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only: {op} refused'); END"""
    for op in ("UPDATE", "DELETE")
]
PG_DROP = """
DROP TRIGGER ledger_periods_final ON ledger_periods;
DROP TRIGGER reward_lines_final ON reward_lines;
DROP TRIGGER rewards_final ON rewards;
DROP FUNCTION ledger_periods_final();
DROP FUNCTION reward_lines_final();
DROP FUNCTION rewards_final();
DROP TRIGGER ledger_entries_open_period_only ON ledger_entries;
DROP FUNCTION ledger_entries_open_period_only();
"""


# revision identifiers, used by Alembic.
revision = 'fd5caa1506bf'
down_revision = '984bf02dfaed'
branch_labels = None
depends_on = None


def upgrade():
    # An execution whose start and end reached the ledger together was not observed: NULL.
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("ledger_entries") as batch_op:
        batch_op.alter_column("observed_ms", existing_type=sa.BigInteger(), nullable=True, server_default=None)
    if dialect == "postgresql":
        op.execute(PG_SETTLED)
    elif dialect == "sqlite":  # SQLite's batch mode rebuilt the table: its triggers went with it
        for statement in SQLITE_APPEND_ONLY:
            op.execute(statement)


def downgrade():
    # observed_ms stays nullable: the append-only ledger cannot be rewritten to fill it in.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PG_DROP)
