"""Control plane: workspaces, members, API tokens, quotas, resources, jobs, audit (append-only), signing key.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from qmachina_assets.core.registry.database import install_append_only_triggers

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table("workspaces", sa.Column("name", sa.String(64), primary_key=True), _ts("created_at"),
                    sa.Column("created_by", sa.String(128), nullable=False))
    op.create_table(
        "workspace_members",
        sa.Column("workspace", sa.String(64), sa.ForeignKey("workspaces.name"), primary_key=True),
        sa.Column("user", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        _ts("added_at"), sa.Column("added_by", sa.String(128), nullable=False),
        sa.CheckConstraint("role IN ('viewer', 'editor', 'admin', 'owner')", name="ck_workspace_members_role"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.String(32), primary_key=True),
        sa.Column("workspace", sa.String(64), sa.ForeignKey("workspaces.name"), nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.Text, nullable=False),
        _ts("created_at"), sa.Column("created_by", sa.String(128), nullable=False),
        _ts("expires_at", True), _ts("revoked_at", True), sa.Column("revoked_by", sa.String(128), nullable=True),
    )
    op.create_index("ix_api_tokens_workspace_user", "api_tokens", ["workspace", "user"])
    op.create_table(
        "workspace_quotas",
        sa.Column("workspace", sa.String(64), sa.ForeignKey("workspaces.name"), primary_key=True),
        sa.Column("max_concurrent_jobs", sa.Integer, nullable=False),
        sa.Column("max_param_sets_per_day", sa.Integer, nullable=False),
        sa.Column("max_cpu_seconds_per_day", sa.Float, nullable=False),
        sa.Column("max_concurrent_streams", sa.Integer, nullable=False),
        _ts("updated_at"), sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "workspace_resources",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("workspace", sa.String(64), sa.ForeignKey("workspaces.name"), primary_key=True),
        _ts("created_at"), sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("workspace", sa.String(64), sa.ForeignKey("workspaces.name"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("param_sets", sa.Integer, nullable=False),
        sa.Column("estimated_cpu_seconds", sa.Float, nullable=False),
        sa.Column("cpu_seconds", sa.Float, nullable=True),
        _ts("created_at"), _ts("updated_at"), _ts("finished_at", True),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_jobs_workspace_created", "jobs", ["workspace", "created_at"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workspace", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        _ts("at"),
    )
    op.create_index("ix_audit_events_workspace_id", "audit_events", ["workspace", "id"])
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_table("signing_keys", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("secret", sa.String(128), nullable=False), _ts("created_at"))
    install_append_only_triggers(op, ("audit_events",), "qmachina_control_append_only", "qmachina control plane")


def downgrade() -> None:
    raise RuntimeError("the control plane's audit is append-only: it is never dropped by a migration")
