"""live_sessions: one row per `qmachina live` run (status, checkpoint = last sequence and ts_event).

Revision ID: 0001_live_sessions
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_live_sessions"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_sessions",
        sa.Column("run_id", sa.String(40), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dataset", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("gateway", sa.String(256), nullable=True),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checkpoint_sequence", sa.BigInteger, nullable=True),
        sa.Column("checkpoint_ts_event", sa.BigInteger, nullable=True),
        sa.Column("records", sa.BigInteger, nullable=False),
        sa.Column("bins", sa.BigInteger, nullable=False),
        sa.Column("reconnects", sa.Integer, nullable=False),
        sa.Column("gaps", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
    )
    op.create_index("ix_live_sessions_started_at", "live_sessions", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_live_sessions_started_at", "live_sessions")
    op.drop_table("live_sessions")
