"""Declarative automation end to end on a real instance: a landed file flows, with no request, through
bronze → silver → gold → datasets → sweeps → candidate (gate check) → serving alias; a failing gate is a failed
blocking check and publishes nothing; an experiment can opt out. The daemon's part (evaluating the conditions
each tick and launching what they request) is done here tick by tick: `evaluate_automation_conditions` is what
the `qmachina_automation` sensor evaluates, and each requested partition runs in process."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest

from qmachina_assets.core.registry import Registry
from qmachina_assets.defs.automation import automation_sensor
from qmachina_assets.defs.bronze.assets import bronze_mbo
from qmachina_assets.defs.bronze.jobs import bronze_job
from qmachina_assets.defs.bronze.sensors import raw_file_sensor
from qmachina_assets.defs.datasets.assets import dataset_assets
from qmachina_assets.defs.gold.assets import gold_assets
from qmachina_assets.defs.promotion.assets import alias_assets, candidate_assets
from qmachina_assets.defs.resources import LakeResource
from qmachina_assets.defs.silver.assets import silver_grid
from qmachina_assets.defs.sweeps.assets import sweep_assets
from tests.research.test_sweeps import EXPERIMENT
from tests.support.synth_days import build_synth_days, pinned_code

SILVER_POLICY = """full_span_max_minutes: 180
window: {start_et: "09:30", end_et: "09:35"}
sessions: {}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build_synth_days(tmp_path_factory.mktemp("automation"))
    for kind in ("pipelines", "experiments"):  # only the synthetic pipeline and two experiments on it
        shutil.rmtree(w.configs / kind)
        (w.configs / kind).mkdir()
    (w.configs / "pipelines" / "synth_two_days.yaml").write_text(
        "name: synth_two_days\ncapture: {symbol: ESH4, dates: [2024-03-14, 2024-03-15], "
        "start_et: \"09:30\", end_et: \"09:45\"}\n")
    exp = EXPERIMENT.replace("tracking: {backend: mlflow}", "tracking: {backend: none}")
    (w.configs / "experiments" / "synth_sweep.yaml").write_text(exp)
    (w.configs / "experiments" / "synth_strict.yaml").write_text(
        exp.replace("name: synth_sweep", "name: synth_strict").replace("min_oos_trades: 1,",
                                                                              "min_oos_trades: 1000000,"))
    (w.configs / "experiments" / "synth_manual.yaml").write_text(
        exp.replace("name: synth_sweep", "name: synth_manual") + "automation: false\n")
    (w.configs / "silver.yaml").write_text(SILVER_POLICY)
    return w


def _defs(w) -> dg.Definitions:
    gold = [a for a in gold_assets() if a.key.path[0] == "gold_builtin"]
    exps = w.configs / "experiments"
    return dg.Definitions(
        assets=[bronze_mbo, silver_grid, *gold, *dataset_assets(w.configs / "pipelines"), *sweep_assets(exps),
                *candidate_assets(exps), *alias_assets(exps)],
        jobs=[bronze_job], sensors=[raw_file_sensor, automation_sensor],
        resources={"lake_res": LakeResource(root=str(w.lake))})


def _run(defs: dg.Definitions, instance, keys: set[dg.AssetKey], partition: str | None) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=keys)
    return job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False,
                                  tags={"qmachina/trigger": "automation"})


def test_landed_file_flows_to_a_gate_verdict_without_a_request(world, monkeypatch):
    monkeypatch.setenv("QMACHINA_CONFIGS_DIR", str(world.configs))
    defs = _defs(world)
    dg.Definitions.validate_loadable(defs)
    requested: list[tuple[str, str | None]] = []
    with dg.instance_for_test() as instance, pinned_code():
        # the automation sensor ticks before anything landed (its first evaluation only sets its cursor)
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0
        cursor = first.cursor
        # the raw-file sensor: session partitions and bronze runs for the landed files
        tick = raw_file_sensor(dg.build_sensor_context(instance=instance, resources={
            "lake_res": LakeResource(root=str(world.lake))}))
        instance.add_dynamic_partitions("sessions", list(tick.dynamic_partitions_requests[0].partition_keys))
        for req in tick.run_requests:
            assert _run(defs, instance, {bronze_mbo.key}, req.partition_key).success
        # the daemon: evaluate the conditions, launch what they request, until nothing is requested
        for _ in range(12):
            res = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            cursor = res.cursor
            if not res.total_requested:
                break
            graph = defs.resolve_asset_graph()
            runs: dict[tuple, set[dg.AssetKey]] = {}  # one run per partitions definition and key, like the daemon
            for key in graph.materializable_asset_keys:
                for part in res.get_requested_partitions(key):
                    runs.setdefault((id(graph.get(key).partitions_def), part), set()).add(key)
            for (_, part), keys in runs.items():
                requested += [(k.to_user_string(), part) for k in keys]
                _run(defs, instance, keys, part)
        else:
            pytest.fail("the automation kept requesting")

        def done(key: str, part: str | None = None) -> bool:
            return instance.get_latest_materialization_event(dg.AssetKey(key)) is not None and (
                part is None or part in instance.get_materialized_partitions(dg.AssetKey(key)))

        for day in ("2024-03-14|ESH4", "2024-03-15|ESH4"):
            assert done("silver_grid", day) and done("gold_builtin", day) and done("dataset_synth_two_days", day)
        assert done("sweep_synth_sweep", "2024-03-15|ESH4") and done("sweep_synth_strict", "2024-03-15|ESH4")
        # the gate is a blocking check on the candidate: passed for one experiment, failed for the strict one
        checks = {k.asset_key.path[0]: instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [k])[k] for k in [dg.AssetCheckKey(dg.AssetKey(f"promotion_candidates_{e}"), "promotion_gate")
                              for e in ("synth_sweep", "synth_strict")]}
        ok = checks["promotion_candidates_synth_sweep"].evaluation
        bad = checks["promotion_candidates_synth_strict"].evaluation
        assert ok.passed and not bad.passed and bad.severity == dg.AssetCheckSeverity.ERROR
        assert "oos_n_trades" in bad.metadata["problems"].value
        # sweep checks ran with the sweep
        sweep_checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("sweep_synth_sweep"), n)
             for n in ("all_sets_evaluated", "metrics_finite", "selection_made")])
        assert all(c.evaluation.passed for c in sweep_checks.values())
        # published through the alias asset when the gate passed; never for the failing gate or the opt-out
        assert done("serving_alias_synth_sweep")
        assert not done("serving_alias_synth_strict")
        assert not any(k.endswith("synth_manual") for k, _ in requested)
    with Registry(lake=world.lake) as reg:
        assert {a.name for a in reg.list_aliases()} == {"synth_sweep"}
    assert ("dataset_synth_two_days", "2024-03-14|ESH4") in requested  # nothing was asked by hand
