"""Session partitions (`date|symbol`, one per landed file): registered by ingest, one-symbol date-range
backfills, and a fresh Postgres-backed instance materializing from the command line."""

import os
import re
import subprocess
import uuid

import dagster as dg
import psycopg2
import pytest

from qmachina_assets.cli import main
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.defs.partitions import SESSIONS, parse_session_key, register_sessions, sessions_of
from qmachina_assets.instance_storage import PG_URL_ENV
from tests.conftest import ESH4_1224, ESH4_1225, ESM4_0508, sample


def test_session_keys_parse_and_fail_clearly():
    assert str(parse_session_key("2024-03-15|ESH4")[0]) == "2024-03-15"
    with pytest.raises(ValueError, match=re.escape("'2024-03-15': expected 'YYYY-MM-DD|SYMBOL'")):
        parse_session_key("2024-03-15")


def test_ingest_registers_sessions_and_backfill_touches_one_symbol(lake, dagster_home, capsys):
    assert main(["ingest", str(sample(ESH4_1224)), str(sample(ESH4_1225)), str(sample(ESM4_0508)),
                 "--lake", str(lake)]) == 0
    assert "3 new session partition(s)" in capsys.readouterr().out
    with dg.DagsterInstance.get() as instance:
        assert sessions_of(instance) == ["2023-12-24|ESH4", "2023-12-25|ESH4", "2024-05-08|ESM4"]
        assert register_sessions(instance, ["2023-12-25|ESH4"]) == []  # idempotent
    # ESM4's session lies inside the range too: only ESH4's are backfilled
    assert main(["backfill", "--assets", "bronze_mbo,silver_grid", "--symbol", "ESH4", "--from", "2023-12-01",
                 "--to", "2024-06-01"]) == 0
    out = capsys.readouterr().out
    assert "over 2 session(s): 2023-12-24|ESH4, 2023-12-25|ESH4" in out
    with dg.DagsterInstance.get() as instance:
        [backfill] = instance.get_backfills()
        targets = backfill.asset_backfill_data.target_subset
        for key in ("bronze_mbo", "silver_grid"):
            parts = targets.get_partitions_subset(dg.AssetKey(key)).get_partition_keys()
            assert sorted(parts) == ["2023-12-24|ESH4", "2023-12-25|ESH4"]
    assert main(["backfill", "--symbol", "ESZ4", "--from", "2023-12-01", "--to", "2024-06-01"]) == 2
    assert "no landed session of ESZ4" in capsys.readouterr().err


@pytest.mark.services
def test_fresh_postgres_instance_materializes_from_the_cli(lake, dagster_home, postgres_url, monkeypatch):
    name = f"qm_dagster_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(postgres_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "QMACHINA_LAKE_DIR": str(lake),
           PG_URL_ENV: f"{postgres_url.rsplit('/', 1)[0]}/{name}"}
    bin_ = PROJECT_ROOT / ".venv/bin"
    try:
        monkeypatch.setenv(PG_URL_ENV, env[PG_URL_ENV])
        assert main(["ingest", str(sample(ESM4_0508))]) == 0  # lands the file, registers its session
        run = subprocess.run([str(bin_ / "dagster"), "asset", "materialize", "-m", "qmachina_assets.definitions",
                              "--select", "bronze_mbo", "--partition", "2024-05-08|ESM4"],
                             env=env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
        assert run.returncode == 0, run.stderr[-3000:]
        with psycopg2.connect(env[PG_URL_ENV]) as conn, conn.cursor() as cur:
            cur.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s", (SESSIONS,))
            assert [r[0] for r in cur.fetchall()] == ["2024-05-08|ESM4"]
            cur.execute("SELECT asset_key, partition FROM event_logs WHERE dagster_event_type = "
                        "'ASSET_MATERIALIZATION' ORDER BY id")
            assert [(k.strip('[]"'), p) for k, p in cur.fetchall()] == [("bronze_mbo", "2024-05-08|ESM4")]
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
