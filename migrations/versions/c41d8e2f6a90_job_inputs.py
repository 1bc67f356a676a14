"""job inputs kept by the coordinator, served by reference

Revision ID: c41d8e2f6a90
Revises: a7c3e9d41b20
Create Date: 2026-12-01 23:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = "c41d8e2f6a90"
down_revision = "a7c3e9d41b20"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "job_inputs",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_inputs_job_id_jobs")),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_inputs")),
    )


def downgrade():
    op.drop_table("job_inputs")
