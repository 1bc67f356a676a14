"""webhooks: a job's callback_url, a token's webhook secret generation, the delivery log

Revision ID: d8f1b6c3e2a7
Revises: b3d7e9f1a2c4
Create Date: 2026-12-02 13:45:00

The webhook secret itself is derived from the coordinator's key (app.webhooks.secret): only its
generation is stored, counted on when it is rotated.
"""

import sqlalchemy as sa
from alembic import op

revision = "d8f1b6c3e2a7"
down_revision = "b3d7e9f1a2c4"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("jobs", sa.Column("callback_url", sa.String(length=2000), nullable=True))
    op.add_column(
        "api_tokens",
        sa.Column("webhook_secret_generation", sa.Integer(), nullable=False, server_default="1"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column(
            "job_id", sa.String(length=36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("delivery_id", sa.String(length=36), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"])


def downgrade():
    op.drop_index("ix_webhook_deliveries_job_id", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_column("api_tokens", "webhook_secret_generation")
    op.drop_column("jobs", "callback_url")
