"""Alembic environment of the live-session table (its own version table in the registry's database), driven
from code (`state.LiveSessions` upgrades on open); see `registry.database.run_alembic_env`."""

from __future__ import annotations

from alembic import context

from qmachina_assets.core.registry.database import run_alembic_env
from qmachina_serving.live.state import ALEMBIC_VERSION_TABLE, metadata

run_alembic_env(context, metadata, ALEMBIC_VERSION_TABLE)
