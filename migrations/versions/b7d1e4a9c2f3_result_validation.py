"""result validation: replicas of steps, node trust, held grants and their decisions

Revision ID: b7d1e4a9c2f3
Revises: f2c8d4a61b07
Create Date: 2026-12-02 06:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = "b7d1e4a9c2f3"
down_revision = "f2c8d4a61b07"
branch_labels = None
depends_on = None

#: Decisions on held grants are evidence, like the entries they decide: never changed.
APPEND_ONLY = """
CREATE FUNCTION grant_decisions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'grant_decisions is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER grant_decisions_no_update_delete BEFORE UPDATE OR DELETE ON grant_decisions
    FOR EACH ROW EXECUTE FUNCTION grant_decisions_append_only();
CREATE TRIGGER grant_decisions_no_truncate BEFORE TRUNCATE ON grant_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION grant_decisions_append_only();
"""


def upgrade():
    op.add_column("job_steps", sa.Column("node_id", sa.String(length=36), nullable=True))
    op.create_foreign_key("fk_job_steps_node_id_nodes", "job_steps", "nodes", ["node_id"], ["id"])
    op.add_column("job_steps", sa.Column("replica_of_id", sa.Integer(), nullable=True))
    op.create_foreign_key("fk_job_steps_replica_of_id_job_steps", "job_steps", "job_steps", ["replica_of_id"], ["id"])
    op.create_index("ix_job_steps_replica_of_id", "job_steps", ["replica_of_id"])
    op.add_column("job_steps", sa.Column("verdict", sa.String(length=16), nullable=True))
    op.add_column("job_steps", sa.Column("check", sa.JSON(), nullable=True))
    op.add_column("nodes", sa.Column("pause_reason", sa.Text(), nullable=True))
    for column in ("validated_streak", "validated_results", "invalid_results"):
        op.add_column("nodes", sa.Column(column, sa.Integer(), nullable=False, server_default="0"))
    op.add_column("nodes", sa.Column("last_invalid_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "ledger_entries", sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.create_table(
        "grant_decisions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_grant_decisions"),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["ledger_entries.id"], name="fk_grant_decisions_entry_id_ledger_entries"),
        sa.Column("node_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name="fk_grant_decisions_node_id_nodes"),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=True),
        sa.UniqueConstraint("entry_id", name="uq_grant_decisions_entry_id"),
    )
    op.create_index("ix_grant_decisions_node_id", "grant_decisions", ["node_id"])
    op.create_index("ix_grant_decisions_decided_at", "grant_decisions", ["decided_at"])
    op.create_index("ix_grant_decisions_period", "grant_decisions", ["period"])
    # Held entries are few beside the rest: a partial index finds them for settlement.
    op.create_index(
        "ix_ledger_entries_held", "ledger_entries", ["id"], postgresql_where=sa.text("held")
    )
    op.execute(APPEND_ONLY)


def downgrade():
    op.execute("DROP TABLE grant_decisions")
    op.execute("DROP FUNCTION grant_decisions_append_only()")
    op.drop_index("ix_ledger_entries_held", table_name="ledger_entries")
    op.drop_column("ledger_entries", "held")
    for column in ("last_invalid_at", "invalid_results", "validated_results", "validated_streak", "pause_reason"):
        op.drop_column("nodes", column)
    for column in ("check", "verdict"):
        op.drop_column("job_steps", column)
    op.drop_index("ix_job_steps_replica_of_id", table_name="job_steps")
    op.drop_constraint("fk_job_steps_replica_of_id_job_steps", "job_steps", type_="foreignkey")
    op.drop_column("job_steps", "replica_of_id")
    op.drop_constraint("fk_job_steps_node_id_nodes", "job_steps", type_="foreignkey")
    op.drop_column("job_steps", "node_id")
