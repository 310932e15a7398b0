"""Alembic environment of the control plane, driven from code (`ControlPlane` upgrades on open); see
`registry.database.run_alembic_env`."""

from __future__ import annotations

from alembic import context

from qmachina_assets.core.control.models import ALEMBIC_VERSION_TABLE, metadata
from qmachina_assets.core.registry.database import run_alembic_env

run_alembic_env(context, metadata, ALEMBIC_VERSION_TABLE)
