"""a node's registered concurrency and the ends of its execution slots

Revision ID: e5b2a7c19d43
Revises: c41d8e2f6a90
Create Date: 2026-12-02 04:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = "e5b2a7c19d43"
down_revision = "c41d8e2f6a90"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("nodes", sa.Column("concurrency", sa.Integer(), nullable=True))
    op.add_column("nodes", sa.Column("busy_until", sa.JSON(), nullable=True))


def downgrade():
    op.drop_column("nodes", "busy_until")
    op.drop_column("nodes", "concurrency")
