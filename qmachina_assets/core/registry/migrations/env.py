"""Alembic environment of the serving registry.

Driven from code: `Registry` passes an open connection in `config.attributes["connection"]` (inside its
own transaction and lock). A bare `sqlalchemy.url` main option works too (e.g. for `alembic` by hand
with `-x`-less configs), as does offline SQL generation.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from qmachina_assets.core.registry.models import ALEMBIC_VERSION_TABLE, metadata

config = context.config


def _configure(**kwargs) -> None:
    context.configure(target_metadata=metadata, version_table=ALEMBIC_VERSION_TABLE, render_as_batch=True,
                      compare_type=True, **kwargs)


def _run(connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (conn := config.attributes.get("connection")) is not None:
    _run(conn)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()
