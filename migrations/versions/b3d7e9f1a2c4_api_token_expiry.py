"""api_tokens: an optional expiry (expires_at)

Revision ID: b3d7e9f1a2c4
Revises: c5e1f3a8d2b6
Create Date: 2026-12-02 13:25:00

A token without one works until it is revoked, as every token made before did.
"""

import sqlalchemy as sa
from alembic import op

revision = "b3d7e9f1a2c4"
down_revision = "c5e1f3a8d2b6"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("api_tokens", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade():
    op.drop_column("api_tokens", "expires_at")
