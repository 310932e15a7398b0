"""The Dagster layer: definitions load, bronze materializes in-process, checks gate, sensor registers."""

import datetime as dt
import json
import subprocess

import dagster as dg
import numpy as np

from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.defs.bronze.assets import bronze_mbo
from qmachina_assets.defs.bronze.sensors import raw_file_sensor
from qmachina_assets.defs.partitions import register_sessions, session_key
from qmachina_assets.defs.resources import LakeResource
from tests.conftest import ESH1_V3, ESH4_1225, ESM4_0508, sample


def _materialize(instance, lake, date, symbol, raise_on_error=True):
    register_sessions(instance, [session_key(date, symbol)])
    return dg.materialize([bronze_mbo], partition_key=session_key(date, symbol), instance=instance,
                          resources={"lake_res": LakeResource(root=str(lake))}, raise_on_error=raise_on_error)


def test_definitions_load():
    from qmachina_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("bronze_job")
    assert defs.resolve_sensor_def("raw_file_sensor")
    spec = defs.resolve_assets_def("bronze_mbo")
    assert {c.name for c in spec.check_specs} >= {"schema_is_mbo", "ts_recv_non_decreasing", "unknown_order_ids"}


def test_dagster_cli_validates_the_code_location(dagster_home):
    proc = subprocess.run(
        [str(PROJECT_ROOT / ".venv/bin/dagster") if (PROJECT_ROOT / ".venv/bin/dagster").exists() else "dagster",
         "definitions", "validate", "-w", str(PROJECT_ROOT / "workspace.yaml")],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Validation successful for code location qmachina" in proc.stderr + proc.stdout


def test_materialize_real_partition_with_checks(lake, instrument):
    lakemod.land_raw_file(sample(ESH4_1225), lake, instrument)
    with dg.instance_for_test() as instance:
        res = _materialize(instance, lake, "2023-12-25", "ESH4")
        assert res.success
        mat = res.asset_materializations_for_node("bronze_mbo")[0]
        assert mat.metadata["records"].value == 68_792
        assert mat.metadata["sha256_source"].value.startswith("04597c54")
        assert "| T | 2,973 |" in mat.metadata["action_counts"].value
        checks = {c.check_name: c for c in res.get_asset_check_evaluations()}
        assert checks["schema_is_mbo"].passed and checks["ts_recv_non_decreasing"].passed
        assert checks["f_last_present"].passed and checks["snapshot_at_start"].passed
        # the materialization is recorded on the instance, for the partition
        event = instance.get_latest_materialization_event(dg.AssetKey("bronze_mbo"))
        assert event.asset_materialization.partition == "2023-12-25|ESH4"


def test_warn_checks_do_not_fail_the_run(lake, instrument):
    lakemod.land_raw_file(sample(ESH1_V3), lake, instrument)
    with dg.instance_for_test() as instance:
        res = _materialize(instance, lake, "2020-12-28", "ESH1")
        assert res.success
        checks = {c.check_name: c for c in res.get_asset_check_evaluations()}
        assert not checks["unknown_order_ids"].passed
        assert checks["unknown_order_ids"].severity == dg.AssetCheckSeverity.WARN
        assert not checks["snapshot_at_start"].passed


def test_blocking_check_fails_the_run(lake, instrument, tmp_path):
    _, arr = dbn.load_mbo(sample(ESM4_0508))
    arr = np.array(arr)
    arr["ts_recv"][-5] = arr["ts_recv"][0] - 1  # ts_recv goes backwards once
    src = dbn.write_mbo(tmp_path / "esm4-backwards.dbn", arr, dataset="GLBX.MDP3", symbols=["ESM4"],
                        start_ns=1715126400000000000, end_ns=1715212800000000000,
                        mappings={"ESM4": [(dt.date(2024, 5, 8), dt.date(2024, 5, 9), 5602)]})
    lakemod.land_raw_file(src, lake, instrument)
    with dg.instance_for_test() as instance:
        res = _materialize(instance, lake, "2024-05-08", "ESM4", raise_on_error=False)
        checks = {c.check_name: c for c in res.get_asset_check_evaluations()}
        assert not checks["ts_recv_non_decreasing"].passed
        assert checks["ts_recv_non_decreasing"].severity == dg.AssetCheckSeverity.ERROR
        assert checks["ts_recv_non_decreasing"].metadata["backwards_steps"].value == 1
        assert not res.success  # a failed blocking check fails the step


def test_raw_file_sensor_adds_partitions_and_requests_runs(lake, instrument):
    lakemod.land_raw_file(sample(ESH4_1225), lake, instrument)
    lakemod.land_raw_file(sample(ESM4_0508), lake, instrument)
    junk = lake / "raw/databento/future_mbo/ES/2024-05-09/junk.dbn"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"junk")
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources={"lake_res": LakeResource(root=str(lake))})
        result = raw_file_sensor(ctx)
        keys = sorted(str(r.partition_key) for r in result.run_requests)
        assert keys == ["2023-12-25|ESH4", "2024-05-08|ESM4"]
        added = result.dynamic_partitions_requests[0]
        assert sorted(added.partition_keys) == ["2023-12-25|ESH4", "2024-05-08|ESM4"]  # sessions, not symbols
        # next tick with the cursor: nothing new
        instance.add_dynamic_partitions("sessions", list(added.partition_keys))
        ctx2 = dg.build_sensor_context(instance=instance, cursor=result.cursor,
                                       resources={"lake_res": LakeResource(root=str(lake))})
        again = raw_file_sensor(ctx2)
        assert not again.run_requests and again.skip_reason
        assert "1 unusable" in again.skip_reason.skip_message
        # a new file appears
        lakemod.land_raw_file(sample(ESH1_V3), lake, instrument)
        ctx3 = dg.build_sensor_context(instance=instance, cursor=again.cursor,
                                       resources={"lake_res": LakeResource(root=str(lake))})
        third = raw_file_sensor(ctx3)
        assert [str(r.partition_key) for r in third.run_requests] == ["2020-12-28|ESH1"]
        assert third.dynamic_partitions_requests[0].partition_keys == ["2020-12-28|ESH1"]
        assert len(json.loads(third.cursor)) == 3
