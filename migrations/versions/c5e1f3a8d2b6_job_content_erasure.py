"""jobs: when their content was erased (retention or a request, app.gdpr)

Revision ID: c5e1f3a8d2b6
Revises: a9e3f5c1d7b4
Create Date: 2026-12-02 13:30:00

A partial index finds the ended jobs whose content is still kept, oldest end first: the hourly
retention run reads a batch of them without scanning every job ever run.
"""

import sqlalchemy as sa
from alembic import op

revision = "c5e1f3a8d2b6"
down_revision = "a9e3f5c1d7b4"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("jobs", sa.Column("content_erased_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_jobs_content_kept_finished_at",
        "jobs",
        ["finished_at"],
        postgresql_where=sa.text("content_erased_at IS NULL AND finished_at IS NOT NULL"),
    )


def downgrade():
    op.drop_index("ix_jobs_content_kept_finished_at", table_name="jobs")
    op.drop_column("jobs", "content_erased_at")
