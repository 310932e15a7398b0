"""Control plane: Model Studio sessions (one per model being built, owned by a workspace) and their decision log.

Revision ID: 0002_studio_sessions
Revises: 0001_initial
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_studio_sessions"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studio_sessions",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("workspace", sa.String(64), sa.ForeignKey("workspaces.name"), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("steps", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_studio_sessions_workspace", "studio_sessions", ["workspace", "created_at"])
    op.create_table(
        "studio_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(64), sa.ForeignKey("studio_sessions.session_id"), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_studio_decisions_session", "studio_decisions", ["session_id", "id"])


def downgrade() -> None:
    op.drop_table("studio_decisions")
    op.drop_table("studio_sessions")
