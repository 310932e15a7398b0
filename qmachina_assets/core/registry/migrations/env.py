"""Alembic environment of the serving registry, driven from code (`database.upgrade_schema` passes an open
connection inside its own transaction and lock); see `database.run_alembic_env`."""

from __future__ import annotations

from alembic import context

from qmachina_assets.core.registry.database import run_alembic_env
from qmachina_assets.core.registry.models import ALEMBIC_VERSION_TABLE, metadata

run_alembic_env(context, metadata, ALEMBIC_VERSION_TABLE)
