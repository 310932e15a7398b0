"""Serving registry: versions, aliases, alias audit; append-only guards.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("serving_versions", "serving_alias_events")
PG_FUNCTION = "qmachina_registry_append_only"


def upgrade() -> None:
    op.create_table(
        "serving_versions",
        sa.Column("version_id", sa.String(32), primary_key=True),
        sa.Column("serving_name", sa.String(128), nullable=False),
        sa.Column("lineage_kind", sa.String(16), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_index("ix_serving_versions_serving_name", "serving_versions", ["serving_name"])
    op.create_table(
        "serving_aliases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version_id", sa.String(32), sa.ForeignKey("serving_versions.version_id"), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "serving_alias_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_version", sa.String(32), sa.ForeignKey("serving_versions.version_id"), nullable=True),
        sa.Column("to_version", sa.String(32), sa.ForeignKey("serving_versions.version_id"), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_serving_alias_events_alias", "serving_alias_events", ["alias", "id"])

    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(f"""
            CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'qmachina registry: % on % refused: rows are immutable (append-only)',
                    TG_OP, TG_TABLE_NAME;
            END
            $$""")
        for table in APPEND_ONLY:
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()")
    elif dialect == "sqlite":
        for table in APPEND_ONLY:
            for verb in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} BEGIN "
                           f"SELECT RAISE(ABORT, 'qmachina registry: {verb} on {table} refused: rows are "
                           f"immutable (append-only)'); END")
    else:
        raise NotImplementedError(f"serving registry: no append-only guard for the {dialect} dialect "
                                  "(supported: sqlite, postgresql)")


def downgrade() -> None:
    raise RuntimeError("the serving registry is append-only: published versions and the alias audit are never "
                       "dropped by a migration")
