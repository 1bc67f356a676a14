"""members' and operators' sign-in: a password, an operator flag and a session generation per
participant; one-time invitations

Revision ID: a9e3f5c1d7b4
Revises: e8a4c2d9f613
Create Date: 2026-12-02 11:00:00

"""

from alembic import op
import sqlalchemy as sa


revision = "a9e3f5c1d7b4"
down_revision = "e8a4c2d9f613"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("participants", sa.Column("password_hash", sa.String(length=255), nullable=True))
    op.add_column(
        "participants", sa.Column("operator", sa.Boolean(), server_default=sa.text("false"), nullable=False)
    )
    op.add_column(
        "participants", sa.Column("session_generation", sa.Integer(), server_default="1", nullable=False)
    )
    op.create_table(
        "invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["participant_id"], ["participants.id"], name="fk_invitations_participant_id_participants"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_invitations"),
        sa.UniqueConstraint("token_hash", name="uq_invitations_token_hash"),
    )
    op.create_index("ix_invitations_participant_id", "invitations", ["participant_id"])


def downgrade():
    op.drop_index("ix_invitations_participant_id", table_name="invitations")
    op.drop_table("invitations")
    op.drop_column("participants", "session_generation")
    op.drop_column("participants", "operator")
    op.drop_column("participants", "password_hash")
