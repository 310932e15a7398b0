"""Serving registry: versions and aliases belong to workspaces.

- `serving_version_workspaces` (append-only): the workspaces a version was published into; every existing
  version is published into `default`.
- `serving_aliases`: primary key (workspace, name); existing aliases are `default`'s.
- `serving_alias_events.workspace` (existing rows: `default`) and its index by (workspace, alias, id).

Revision ID: 0003_workspaces
Revises: 0002_alias_guards
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from qmachina_assets.core.registry.database import install_append_only_triggers

revision = "0003_workspaces"
down_revision = "0002_alias_guards"
branch_labels = None
depends_on = None

DEFAULT = "default"


def upgrade() -> None:
    op.create_table(
        "serving_version_workspaces",
        sa.Column("version_id", sa.String(32), sa.ForeignKey("serving_versions.version_id"), primary_key=True),
        sa.Column("workspace", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.execute(f"INSERT INTO serving_version_workspaces (version_id, workspace, created_at, created_by) "
               f"SELECT version_id, '{DEFAULT}', created_at, created_by FROM serving_versions")
    install_append_only_triggers(op, ("serving_version_workspaces",), "qmachina_registry_links_append_only",
                                 "qmachina registry")

    # aliases: (workspace, name) primary key (no triggers on this table).
    if op.get_bind().dialect.name == "postgresql":
        op.add_column("serving_aliases", sa.Column("workspace", sa.String(64), nullable=False, server_default=DEFAULT))
        op.alter_column("serving_aliases", "workspace", server_default=None)
        op.drop_constraint("serving_aliases_pkey", "serving_aliases", type_="primary")
        op.create_primary_key("serving_aliases_pkey", "serving_aliases", ["workspace", "name"])
    else:  # SQLite cannot change a primary key in place: rebuild the table, keeping later migrations' columns
        cols = ["name", "version_id", "revision", "updated_at", "updated_by"]
        op.rename_table("serving_aliases", "serving_aliases_0003")
        old = sa.Table("serving_aliases_0003", sa.MetaData(), autoload_with=op.get_bind())
        extra = [c for c in old.c if c.name not in cols]
        op.create_table(
            "serving_aliases",
            sa.Column("workspace", sa.String(64), primary_key=True),
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("version_id", sa.String(32), sa.ForeignKey("serving_versions.version_id"), nullable=False),
            sa.Column("revision", sa.Integer, nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_by", sa.String(128), nullable=False),
            *[sa.Column(c.name, c.type, nullable=c.nullable, server_default=c.server_default) for c in extra],
        )
        names = ", ".join([*cols, *(c.name for c in extra)])
        op.execute(f"INSERT INTO serving_aliases (workspace, {names}) SELECT '{DEFAULT}', {names} "
                   "FROM serving_aliases_0003")
        op.drop_table("serving_aliases_0003")

    op.add_column("serving_alias_events", sa.Column("workspace", sa.String(64), nullable=False,
                                                    server_default=DEFAULT))
    op.drop_index("ix_serving_alias_events_alias", table_name="serving_alias_events")
    op.create_index("ix_serving_alias_events_workspace_alias", "serving_alias_events", ["workspace", "alias", "id"])


def downgrade() -> None:
    raise RuntimeError("the serving registry is append-only: workspace links and the alias audit are never dropped "
                       "by a migration")
