"""Tables of the control plane (SQLAlchemy 2.x Core); the schema is created by the Alembic migrations in
`migrations/versions` (`tests/control/test_control.py` checks that the two agree).

- `workspaces`: the unit of isolation. Its key is its name (a lowercase slug), which the registry and the
  lake-side registrations store as an opaque string.
- `workspace_members`: (workspace, user) -> role (owner | admin | editor | viewer).
- `api_tokens`: one row per token; only an argon2id hash of the secret is stored. `token_id` is the public
  part of the token (`qm_<token_id>_<secret>`), shown in lists; expiry and revocation are columns.
- `workspace_quotas`: per-workspace limits (jobs, parameter sets and CPU-seconds per UTC day, streams).
- `workspace_resources`: which workspace an experiment or a dataset registration belongs to.
- `jobs`: one row per launched job (a Dagster run): what the quotas count and the jobs API lists.
- `studio_sessions`, `studio_decisions`: Model Studio sessions (gated steps, owned by a workspace) and the
  decision log of every step commit.
- `audit_events`: append-only (no update/delete path; the engine and database triggers refuse them).
- `signing_keys`: the HMAC key of browser session cookies and stream tickets (created on first use).
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from qmachina_assets.core.registry.models import DEFAULT_WORKSPACE

__all__ = ["DEFAULT_WORKSPACE"]  # re-exported: the registry defines it (the lower stage)

metadata = MetaData()

ROLES: tuple[str, ...] = ("viewer", "editor", "admin", "owner")  # ascending power

workspaces = Table(
    "workspaces",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
)

workspace_members = Table(
    "workspace_members",
    metadata,
    Column("workspace", String(64), ForeignKey("workspaces.name"), primary_key=True),
    Column("user", String(128), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("added_by", String(128), nullable=False),
    CheckConstraint("role IN ('viewer', 'editor', 'admin', 'owner')", name="ck_workspace_members_role"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("workspace", String(64), ForeignKey("workspaces.name"), nullable=False),
    Column("user", String(128), nullable=False),
    Column("label", String(128), nullable=False),
    Column("secret_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoked_by", String(128), nullable=True),
    Index("ix_api_tokens_workspace_user", "workspace", "user"),
)

workspace_quotas = Table(
    "workspace_quotas",
    metadata,
    Column("workspace", String(64), ForeignKey("workspaces.name"), primary_key=True),
    Column("max_concurrent_jobs", Integer, nullable=False),
    Column("max_param_sets_per_day", Integer, nullable=False),
    Column("max_cpu_seconds_per_day", Float, nullable=False),
    Column("max_concurrent_streams", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(128), nullable=False),
)

workspace_resources = Table(
    "workspace_resources",
    metadata,
    Column("kind", String(16), primary_key=True),  # experiment | dataset
    Column("name", String(200), primary_key=True),
    Column("workspace", String(64), ForeignKey("workspaces.name"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("workspace", String(64), ForeignKey("workspaces.name"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("target", String(200), nullable=False),
    Column("session_id", String(64), nullable=True),
    Column("created_by", String(128), nullable=False),
    Column("status", String(16), nullable=False),  # queued | started | success | failure | canceled
    Column("param_sets", Integer, nullable=False),
    Column("estimated_cpu_seconds", Float, nullable=False),
    Column("cpu_seconds", Float, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("detail", Text, nullable=False),  # JSON: what the job runs (tags, run config summary), error
    Index("ix_jobs_workspace_created", "workspace", "created_at"),
)

studio_sessions = Table(
    "studio_sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("workspace", String(64), ForeignKey("workspaces.name"), nullable=False),
    Column("title", String(200), nullable=False),
    Column("status", String(16), nullable=False),  # draft | in_progress | promoted
    Column("steps", Text, nullable=False),  # JSON: step -> {payload, committed_at, committed_by}
    Column("created_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_studio_sessions_workspace", "workspace", "created_at"),
)

studio_decisions = Table(
    "studio_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(64), ForeignKey("studio_sessions.session_id"), nullable=False),
    Column("step", String(32), nullable=False),
    Column("payload", Text, nullable=False),  # JSON: what was committed
    Column("actor", String(128), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_studio_decisions_session", "session_id", "id"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workspace", String(64), nullable=True),  # None: deployment-level (workspace.create)
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(256), nullable=False),
    Column("payload_sha256", String(64), nullable=False),
    Column("detail", Text, nullable=False),  # JSON summary without secrets
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_audit_events_workspace_id", "workspace", "id"),
    Index("ix_audit_events_at", "at"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("secret", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: Tables whose rows are never updated or deleted (code guard + database triggers).
APPEND_ONLY_TABLES: tuple[str, ...] = ("audit_events",)
#: Alembic's version table of the control plane (its own name: it shares a database with the registry).
ALEMBIC_VERSION_TABLE = "qmachina_control_alembic_version"
