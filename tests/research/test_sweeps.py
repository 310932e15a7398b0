"""Walk-forward sweeps on two synthetic days: the harness equals a direct signal + TP/SL evaluation,
results are append-only, MLflow gets one parent and one child run per parameter set, Dagster runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.datasets import build_dataset_day, dataset_id_for, load_grid_data
from qmachina_assets.core.research.evaluation import EvalParams, evaluate
from qmachina_assets.core.research.signals.catalog import make_signal
from qmachina_assets.core.research.specs import resolve_experiment
from qmachina_assets.defs.partitions import register_sessions, session_key
from qmachina_assets.defs.resources import LakeResource
from qmachina_assets.defs.sweeps.assets import sweep_assets
from tests.support.synth_days import DAYS, build_synth_days, pinned_code

EXPERIMENT = """name: synth_sweep
description: small walk-forward grid
serving: synth_flow
eval: {tp_ticks: [4], sl_ticks: [4], max_hold_bins: 600, warmup_bins: 100, cooldown_bins: [10, 20], min_signals: 1}
sweep:
  scoring: {tanh_scale: [2.0, 3.0]}
  thresholds: [0.1, 0.2]
walk_forward: {train_days: 1, test_days: 1}
promotion: {min_oos_trades: 1, min_hit_rate: 0.0, min_profit_factor: 0.0, max_drawdown_ticks: 1000}
tracking: {backend: mlflow}
"""

ML_EXPERIMENT = """name: synth_gbm_sweep
description: an ML signal through the same harness
serving: synth_gbm
eval: {tp_ticks: [2, 4], sl_ticks: [2], max_hold_bins: 600, warmup_bins: 100, cooldown_bins: [10], min_signals: 1}
sweep:
  per_signal: {gbm_mf: {max_rounds: [30], min_train_rows: [100]}}
  thresholds: [0.05, 0.1]
walk_forward: {train_days: 1, test_days: 1}
promotion: {min_oos_trades: 1, min_hit_rate: 0.0, min_profit_factor: 0.0, max_drawdown_ticks: 1000}
tracking: {backend: none}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build_synth_days(tmp_path_factory.mktemp("sweeps"))
    lake, configs, serving = w.lake, w.configs, w.serving_text
    (configs / "experiments" / "synth_sweep.yaml").write_text(EXPERIMENT)
    (configs / "serving" / "synth_gbm.yaml").write_text(
        serving.replace("name: synth_flow", "name: synth_gbm").replace("signal:\n  name: flow_score",
                                                                        "signal:\n  name: gbm_mf"))
    (configs / "experiments" / "synth_gbm_sweep.yaml").write_text(ML_EXPERIMENT)
    exp_path = configs / "experiments" / "synth_sweep.yaml"
    exp, srv, pipe = resolve_experiment(exp_path)
    for day in DAYS:
        build_dataset_day(lake, pipe, day)
    return lake, exp_path, exp, srv, pipe


def test_fold_rows_equal_direct_evaluation(world):
    lake, _, exp, srv, pipe = world
    fold = sweeps.folds(pipe, exp)[0]
    assert fold.train == (DAYS[0],) and fold.test == DAYS[1]
    table = sweeps.run_fold(lake, exp, srv, pipe, fold)
    rows = table.to_pylist()
    assert len(rows) == exp.n_combinations(srv) == 8
    assert sum(r["selected"] for r in rows) == 1
    best = max((r for r in rows if r["is_n_trades"] >= 1), key=lambda r: r["is_total_pnl_ticks"])
    assert best["selected"]
    assert sum(r["oos_n_trades"] for r in rows) > 0
    # the default gold config (tanh 3.0): the row equals scoring the stored gold and evaluating directly
    row = next(r for r in rows if json.loads(r["params_json"]) == {"scoring.tanh_scale": 3.0, "threshold": 0.1,
                                                                   "cooldown_bins": 20, "tp_ticks": 4,
                                                                   "sl_ticks": 4})
    test = load_grid_data(lake, [dataset_id_for(lake, pipe, DAYS[1])], ["flow_score"])
    s = make_signal("flow_score").fit(test).score(test)
    # the dataset carries the intrabin mid range (engine-2) and the sweep tests its barriers against it
    ok = test.valid & np.isfinite(test.mid_high)
    assert ok.mean() > 0.9 and np.all(test.mid_low[ok] <= test.mid[ok]) and np.all(test.mid[ok] <= test.mid_high[ok])
    params = EvalParams(threshold=0.1, tp_ticks=4, sl_ticks=4, cooldown_bins=20, max_hold_bins=600,
                        tick_size=0.25, warmup_bins=100, entry_mode="cross")
    res = evaluate(s, test.mid, test.best_bid, test.best_ask, test.ts_ns, test.valid, params, day=test.day,
                   high=test.mid_high, low=test.mid_low)
    assert row["oos_n_trades"] == res.metrics.n_trades
    assert np.isclose(row["oos_total_pnl_ticks"], res.metrics.total_pnl_ticks)
    # the swept gold scoring value is really recomputed: tanh 2.0 changes the flow score and the trades
    other = next(r for r in rows if json.loads(r["params_json"])["scoring.tanh_scale"] == 2.0
                 and r["threshold"] == 0.1 and r["cooldown_bins"] == 20)
    assert other["gold_config_hash"] != row["gold_config_hash"]
    assert (other["oos_n_trades"], other["oos_total_pnl_ticks"]) != (row["oos_n_trades"], row["oos_total_pnl_ticks"])


def test_results_are_append_only_and_logged_to_mlflow(world):
    lake, _, exp, srv, pipe = world
    fold = sweeps.folds(pipe, exp)[0]
    a = sweeps.run_fold(lake, exp, srv, pipe, fold)
    b = sweeps.run_fold(lake, exp, srv, pipe, fold)
    fa, fb = sweeps.append_results(lake, a), sweeps.append_results(lake, b)
    assert fa != fb and fa.is_file() and fb.is_file()
    allrows = sweeps.read_results(lake, exp.name)
    assert allrows.num_rows >= 16 and set(allrows["sweep_id"].to_pylist()) >= {a["sweep_id"][0].as_py(),
                                                                                b["sweep_id"][0].as_py()}
    import mlflow

    parent = sweeps.log_to_mlflow(lake, exp, a)
    mlflow.set_tracking_uri(sweeps.tracking_uri(lake))
    client = mlflow.MlflowClient()
    found = mlflow.get_experiment_by_name(f"qmachina/{exp.name}")
    children = client.search_runs([found.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 8
    assert {c.data.params["test_dataset_id"] for c in children} == {a["test_dataset_id"][0].as_py()}
    assert all("oos_total_pnl_ticks" in c.data.metrics for c in children)
    assert client.get_run(parent).data.params["code_version"] == a["code_version"][0].as_py()


def test_sweep_asset_materializes_a_test_day(world):
    lake, exp_path, _, _, _ = world
    asset = next(a for a in sweep_assets(exp_path.parent) if a.key.to_user_string() == "sweep_synth_sweep")
    with dg.instance_for_test() as instance:
        register_sessions(instance, [session_key("2024-03-15", "ESH4")])
        res = dg.materialize([asset], partition_key=session_key("2024-03-15", "ESH4"), instance=instance,
                             resources={"lake_res": LakeResource(root=str(lake))})
        assert res.success
        meta = res.asset_materializations_for_node("sweep_synth_sweep")[0].metadata
    assert meta["parameter_sets"].value == 8 and meta["train_dates"].value == "2024-03-14"
    assert Path(meta["results_file"].value).is_file() and meta["mlflow_run_id"].value
    assert "| **yes** |" in meta["top_in_sample"].value
    assert "advice_error" not in meta and "data:image/png;base64," in meta["sensitivity"].value  # decision support
    assert "| deflated_sharpe |" in meta["robustness_flags"].value and meta["sets_tried"].value == 8
    # only walk-forward test days are partitions; each depends on every dataset session its fold reads
    assert asset.partitions_def.get_partition_keys() == ["2024-03-15|ESH4"]
    [dep] = asset.specs_by_key[asset.key].deps
    upstream = dep.partition_mapping.get_upstream_mapped_partitions_result_for_partitions(
        asset.partitions_def.subset_with_partition_keys(["2024-03-15|ESH4"]), asset.partitions_def,
        dg.StaticPartitionsDefinition(["2024-03-14|ESH4", "2024-03-15|ESH4"])).partitions_subset
    assert sorted(upstream.get_partition_keys()) == ["2024-03-14|ESH4", "2024-03-15|ESH4"]


def test_ml_signal_is_fitted_per_label_barrier_on_the_training_day(world):
    lake, exp_path, *_ = world
    exp, srv, pipe = resolve_experiment(exp_path.parent / "synth_gbm_sweep.yaml")
    rows = sweeps.run_fold(lake, exp, srv, pipe, sweeps.folds(pipe, exp)[0]).to_pylist()
    assert len(rows) == 4  # 2 thresholds x 2 TP: the model is fitted once per TP (its label barrier)
    assert all(np.isfinite(r["oos_n_trades"]) for r in rows)
    by_tp = {tp: [r for r in rows if r["tp_ticks"] == tp] for tp in (2.0, 4.0)}
    assert {json.loads(r["signal_config_json"])["max_rounds"] for r in rows} == {30}
    assert by_tp[2.0][0]["oos_n_trades"] + by_tp[4.0][0]["oos_n_trades"] > 0


def test_promotion_candidate_gate_check_and_alias(world, monkeypatch):
    """Sweep -> candidates asset (gate = blocking check) -> serving alias asset -> the registry's alias."""
    from qmachina_assets.core.registry import Registry
    from qmachina_assets.defs.promotion.assets import alias_assets, candidate_assets, promote_job

    lake, exp_path, exp, srv, pipe = world
    strict = exp_path.parent / "synth_strict.yaml"
    strict.write_text(EXPERIMENT.replace("name: synth_sweep", "name: synth_strict")
                      .replace("min_oos_trades: 1,", "min_oos_trades: 1000000,"))
    with pinned_code():  # a clean checkout (the registry refuses runs made from uncommitted code)
        sweeps.append_results(lake, sweeps.run_fold(lake, exp, srv, pipe, sweeps.folds(pipe, exp)[0]))
        sweeps.append_results(lake, sweeps.run_fold(lake, *resolve_experiment(strict), sweeps.folds(pipe, exp)[0]))
    pick = ("synth_sweep", "synth_strict")
    cands = {a.key.path[0]: a for a in candidate_assets(exp_path.parent) if a.key.path[0].endswith(pick)}
    aliases = {a.key.path[0]: a for a in alias_assets(exp_path.parent) if a.key.path[0].endswith(pick)}
    res_def = {"lake_res": LakeResource(root=str(lake))}
    with dg.instance_for_test() as instance, pinned_code():
        res = dg.materialize([cands["promotion_candidates_synth_sweep"], aliases["serving_alias_synth_sweep"]],
                             instance=instance, resources=res_def)
        assert res.success
        meta = res.asset_materializations_for_node("promotion_candidates_synth_sweep")[0].metadata
        assert meta["gate_passed"].value and len(meta["run_ids"].value) == 1
        [gate] = res.get_asset_check_evaluations()
        assert gate.check_name == "promotion_gate" and gate.passed
        published = res.asset_materializations_for_node("serving_alias_synth_sweep")[0].metadata
        # a failing gate is a failed blocking check: the run fails and the alias is not materialized
        out = dg.materialize([cands["promotion_candidates_synth_strict"], aliases["serving_alias_synth_strict"]],
                             instance=instance, resources=res_def, raise_on_error=False)
        assert not out.success
        [failed] = out.get_asset_check_evaluations()
        assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
        assert "oos_n_trades" in failed.metadata["problems"].value
        assert not out.asset_materializations_for_node("serving_alias_synth_strict")
        strict_meta = out.asset_materializations_for_node("promotion_candidates_synth_strict")[0].metadata
    with Registry(lake=lake) as reg:
        live = reg.resolve("synth_sweep")
        assert reg.history("synth_sweep")[-1].actor == "dagster"
        assert published["version_id"].value == live.version_id
    assert live.serving_spec().threshold == meta["params"].value["threshold"]  # what was evaluated is served
    # a manual launch with a run that fails the gate goes through the same gate and publishes nothing
    bad = {"ops": {"promote": {"config": {"experiment": str(strict), "run_ids": strict_meta["run_ids"].value,
                                          "alias": "synth_strict"}}}}
    with dg.instance_for_test() as instance:
        out = promote_job.execute_in_process(run_config=bad, instance=instance, resources=res_def,
                                             raise_on_error=False)
        assert not out.success
    with Registry(lake=lake) as reg:
        assert "synth_strict" not in {a.name for a in reg.list_aliases()}


def test_run_equity_endpoint_replays_a_stored_row(world):
    """`GET .../runs/{id}/equity` replays one row: its final out-of-sample equity is the stored total."""
    from tests.support.auth import rest_client

    lake, exp_path, exp, srv, pipe = world
    table = sweeps.run_fold(lake, exp, srv, pipe, sweeps.folds(pipe, exp)[0])
    sweeps.append_results(lake, table)
    rows = sorted(table.to_pylist(), key=lambda r: -r["oos_n_trades"])
    with rest_client(lake, exp_path.parent.parent) as c:
        for row in (rows[0], next(r for r in rows if "2.0" in r["params_json"])):  # stored and recomputed gold
            r = c.get(f"/v1/experiments/{exp.name}/runs/{row['run_id']}/equity")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["reproduced"] is True
            for tag, curve in (("is", body["in_sample"]), ("oos", body["out_of_sample"])):
                assert curve["n_trades"] == row[f"{tag}_n_trades"]
                assert np.isclose(curve["pnl_ticks"][-1], row[f"{tag}_total_pnl_ticks"])
                assert np.isclose(curve["total_pnl_ticks"], row[f"{tag}_total_pnl_ticks"])
                ts = [int(t) for t in curve["ts_ns"]]
                assert ts == sorted(ts) and 2 <= len(ts) <= 2000 and len(ts) == len(curve["pnl_ticks"])
        assert rows[0]["oos_n_trades"] > 0
        assert c.get(f"/v1/experiments/{exp.name}/runs/{row['run_id']}/equity").json() == body  # the cached one
        assert c.get(f"/v1/experiments/{exp.name}/runs/nope-1/equity").status_code == 404
        gone = lake / "research" / "datasets" / rows[1]["test_dataset_id"]
        gone.rename(gone.with_name("moved_away"))
        try:
            r = c.get(f"/v1/experiments/{exp.name}/runs/{rows[1]['run_id']}/equity")
        finally:
            gone.with_name("moved_away").rename(gone)
        assert r.status_code == 409 and "not in the lake" in r.json()["detail"]["message"]
    changed = exp_path.parent.parent.parent / "configs_changed"  # the experiment edited after the sweep
    shutil.copytree(exp_path.parent.parent, changed, dirs_exist_ok=True)
    edited = changed / "experiments" / "synth_sweep.yaml"
    edited.write_text(edited.read_text().replace("max_hold_bins: 600", "max_hold_bins: 700"))
    with rest_client(lake, changed) as c:
        r = c.get(f"/v1/experiments/{exp.name}/runs/{rows[2]['run_id']}/equity")
        assert r.status_code == 409 and "experiment spec" in r.json()["detail"]["message"]


def test_equity_downsample_keeps_the_ends_and_the_extremes():
    from qmachina_assets.core.research.run_equity import downsample

    rng = np.random.default_rng(3)
    eq = np.cumsum(rng.normal(size=50_000))
    eq[31_000] = 1e6  # a spike must survive
    ts = np.arange(eq.shape[0], dtype=np.int64) * 100
    t, e = downsample(ts, eq, 2000)
    assert len(t) <= 2000 and t[0] == 0 and t[-1] == ts[-1] and e[-1] == eq[-1]
    assert np.all(np.diff(t) > 0) and e.max() == 1e6 and e.min() == eq.min()
    steps = np.repeat([0.0, 2.0, 2.0, -1.0], 3)  # a step curve: only the changes and the ends
    t, e = downsample(np.arange(12), steps)
    assert t.tolist() == [0, 3, 9, 11] and e.tolist() == [0.0, 2.0, -1.0, -1.0]


def test_the_planted_order_flow_effect_is_in_the_data(world):
    """The synthetic days' planted effect (synth.py "Planted effect"): the flow score at the bid touch leads the
    mid, and reads the other way at the ask level (k = 0); what the demo experiment finds."""
    lake, _, _, _, pipe = world
    corr = {}
    for day in DAYS:
        d = load_grid_data(lake, [dataset_id_for(lake, pipe, day)], ["flow_score"])
        fwd = np.full(d.n_bins, np.nan)
        fwd[:-50] = d.mid[50:] - d.mid[:-50]  # the next 5 s
        ok = d.valid & np.isfinite(fwd) & np.concatenate([d.valid[50:], np.zeros(50, bool)])
        for k in (-1, 0):
            corr[day, k] = np.corrcoef(d.columns["flow_score"][ok, d.k_index(k)], fwd[ok])[0, 1]
    # these small days (300 k records) hold few episodes: the contrast of the two levels is the robust part
    assert all(corr[day, -1] - corr[day, 0] > 0.05 for day in DAYS), corr
    assert sum(corr[day, -1] for day in DAYS) > 0 > sum(corr[day, 0] for day in DAYS), corr
