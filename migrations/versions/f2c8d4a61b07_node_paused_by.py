"""who paused a node: its owner or an operator

Revision ID: f2c8d4a61b07
Revises: e5b2a7c19d43
Create Date: 2026-12-02 05:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = "f2c8d4a61b07"
down_revision = "e5b2a7c19d43"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("nodes", sa.Column("paused_by", sa.String(length=16), nullable=True))


def downgrade():
    op.drop_column("nodes", "paused_by")
