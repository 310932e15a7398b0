"""Tables of the serving registry (SQLAlchemy 2.x Core). The schema itself is created by the Alembic
migrations in `migrations/versions`; `tests/registry/test_registry.py` checks that the two agree.

- `serving_versions`: one immutable row per published version. `version_id` is content-derived
  (`sv_` + 16 hex of sha256 over the canonical JSON of the serving spec, the runtime snapshot and the
  lineage without timestamps); `payload` is that canonical JSON text plus the timestamps, stored as text
  so the id can be re-derived from the stored bytes on every read. Never updated or deleted: there is no
  such code path, the engine refuses such statements, and database triggers refuse them.
- `serving_aliases`: alias name -> version; `revision` counts the repoints; `owner_experiment` the
  experiment whose gate guards it (an owned alias accepts only that experiment's gated versions).
- `serving_alias_events`: the append-only audit of every repoint (who, when, from, to, why, how, and
  whether runs made from uncommitted code were explicitly allowed).

Departure from the design note: the alias tables are prefixed `serving_` so the registry can share a
Postgres database with the control plane or Dagster storage without a name clash.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData()

VERSION_ID_LEN = 19  # "sv_" + 16 hex

serving_versions = Table(
    "serving_versions",
    metadata,
    Column("version_id", String(32), primary_key=True),
    Column("serving_name", String(128), nullable=False),
    Column("lineage_kind", String(16), nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(128), nullable=False),
    Index("ix_serving_versions_serving_name", "serving_name"),
)

serving_aliases = Table(
    "serving_aliases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("version_id", String(32), ForeignKey("serving_versions.version_id"), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("updated_by", String(128), nullable=False),
    Column("owner_experiment", String(128), nullable=True),  # 0002: the experiment whose gate guards the alias
)

serving_alias_events = Table(
    "serving_alias_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alias", String(64), nullable=False),
    Column("action", String(16), nullable=False),  # promote | register | activate | rollback
    Column("from_version", String(32), ForeignKey("serving_versions.version_id"), nullable=True),
    Column("to_version", String(32), ForeignKey("serving_versions.version_id"), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("dirty_allowed", Boolean, nullable=False, server_default=false()),  # 0002
    Index("ix_serving_alias_events_alias", "alias", "id"),
)

#: Tables whose rows are never updated or deleted (code guard + database triggers).
APPEND_ONLY_TABLES: tuple[str, ...] = ("serving_versions", "serving_alias_events")
#: Alembic's version table of the registry (its own name, so the database can be shared).
ALEMBIC_VERSION_TABLE = "qmachina_registry_alembic_version"
