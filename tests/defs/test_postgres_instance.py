"""One environment variable moves Dagster storage to the real Postgres on 127.0.0.1:5432."""

import uuid

import dagster as dg
import psycopg2
import pytest
from dagster_postgres import DagsterPostgresStorage

from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.defs.bronze.assets import bronze_mbo
from qmachina_assets.defs.partitions import register_sessions, session_key
from qmachina_assets.defs.resources import LakeResource
from qmachina_assets.instance_storage import PG_URL_ENV
from tests.conftest import ESM4_0508, sample

pytestmark = pytest.mark.services


@pytest.fixture
def scratch_database(postgres_url):
    """A throwaway database, so the test sees only its own runs and events."""
    name = f"qm_dagster_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    base = postgres_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def test_bronze_materialization_lands_in_postgres(lake, instrument, dagster_home, scratch_database, monkeypatch):
    monkeypatch.setenv(PG_URL_ENV, scratch_database)
    lakemod.land_raw_file(sample(ESM4_0508), lake, instrument)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert isinstance(instance.get_ref().storage, DagsterPostgresStorage)
        register_sessions(instance, [session_key("2024-05-08", "ESM4")])
        res = dg.materialize([bronze_mbo], partition_key=session_key("2024-05-08", "ESM4"), instance=instance,
                             resources={"lake_res": LakeResource(root=str(lake))})
        assert res.success
        run_id = res.run_id
    # read it back from a *new* instance on the same database
    with dg.DagsterInstance.from_config(str(dagster_home)) as again:
        event = again.get_latest_materialization_event(dg.AssetKey("bronze_mbo"))
        assert event is not None and event.run_id == run_id
        assert event.asset_materialization.partition == "2024-05-08|ESM4"
        assert event.asset_materialization.metadata["records"].value == 13_796
        assert again.get_run_by_id(run_id).is_success
    # and it really is in Postgres
    with psycopg2.connect(scratch_database) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = "
                    "'ASSET_MATERIALIZATION'", (run_id,))
        assert cur.fetchone()[0] == 1
    # without the variable the same dagster.yaml is SQLite under $DAGSTER_HOME/storage
    monkeypatch.delenv(PG_URL_ENV)
    with dg.DagsterInstance.from_config(str(dagster_home)) as local:
        assert local.get_latest_materialization_event(dg.AssetKey("bronze_mbo")) is None
    assert (dagster_home / "storage").is_dir()
