"""Alias guards: the experiment that owns an alias, and whether a publication allowed uncommitted code.

- `serving_aliases.owner_experiment`: set when an experiment's gated promotion first points the alias (or
  when the alias is named after an experiment); an owned alias accepts only versions that passed that
  experiment's gate.
- `serving_alias_events.dirty_allowed`: the repoint published (or activated) runs made from uncommitted
  changes because the caller explicitly allowed it.

Revision ID: 0002_alias_guards
Revises: 0001_initial
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_alias_guards"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("serving_aliases", sa.Column("owner_experiment", sa.String(128), nullable=True))
    op.add_column("serving_alias_events", sa.Column("dirty_allowed", sa.Boolean, nullable=False,
                                                    server_default=sa.false()))


def downgrade() -> None:
    raise RuntimeError("the serving registry is append-only: published versions and the alias audit are never "
                       "dropped by a migration")
