"""nodes: approval by an operator, the last notice's time and nonce (replays refused)

Revision ID: a7c3e9d41b20
Revises: 32aa31bb7e41
Create Date: 2026-12-01 23:05:00

"""
from alembic import op
import sqlalchemy as sa


revision = "a7c3e9d41b20"
down_revision = "32aa31bb7e41"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_notice_at", sa.Float(precision=53), nullable=True))
        batch_op.add_column(sa.Column("last_notice_nonce", sa.String(length=32), nullable=True))
    # Nodes enrolled before approval existed were enrolled by operators: approved then.
    op.execute("UPDATE nodes SET approved_at = created_at")


def downgrade():
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("last_notice_nonce")
        batch_op.drop_column("last_notice_at")
        batch_op.drop_column("approved_at")
