"""Dagster instance storage that is SQLite by default and Postgres when one variable is set.

`dagster_home/dagster.yaml` names this class as its `storage: custom:` entry. With
`QMACHINA_DAGSTER_PG_URL` unset, runs/events/schedules live in SQLite under `$DAGSTER_HOME/storage`;
with it set (e.g. `postgresql://postgres@127.0.0.1:5432/test`), all three go to Postgres through
dagster-postgres. Run workers rebuild the storage from the same config and environment, so every
process of a deployment agrees.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData

PG_URL_ENV = "QMACHINA_DAGSTER_PG_URL"


def postgres_url() -> str | None:
    url = os.environ.get(PG_URL_ENV, "").strip()
    if not url:
        return None
    # SQLAlchemy must use psycopg2 for dagster-postgres (../shared/notes/dependencies.md)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


class SwitchableStorage(DagsterStorage, ConfigurableClass):
    """Factory only, never instantiated: `from_config_value` returns a real Dagster storage object.

    It subclasses DagsterStorage because Dagster type-checks the configured class before calling it.
    """

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {"sqlite_base_dir": dg.Field(dg.StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: dict):
        url = postgres_url()
        if url:
            from dagster_postgres import DagsterPostgresStorage

            return DagsterPostgresStorage(postgres_url=url, inst_data=inst_data)
        base = config_value.get("sqlite_base_dir") or os.path.join(os.environ["DAGSTER_HOME"], "storage")
        return DagsterSqliteStorage.from_local(base_dir=base, inst_data=inst_data)
