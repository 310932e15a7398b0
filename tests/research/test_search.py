"""The seeded TPE sampler: same seed and results give the same sets, the budget and ranges hold, it finds a
planted optimum; through `run_fold` on two synthetic days its rows land in the results store like a grid's."""

from __future__ import annotations

import json
import shutil

import pytest

from qmachina_assets.cli import main
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.research import advisor, search, sweeps
from qmachina_assets.core.research.datasets import build_dataset_day
from qmachina_assets.core.research.signals.catalog import make_signal
from qmachina_assets.core.research.specs import (
    ConfigError,
    ExperimentSpec,
    resolve_experiment,
    resolve_serving,
    validate_configs,
)
from tests.support.synth_days import DAYS, build_synth_days


def tpe_experiment(n: int = 30, seed: int = 7, thresholds=(0.05, 0.95), cooldowns=(5, 50)) -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "name": "tpe_demo", "serving": "vp_flow_score",
        "eval": {"tp_ticks": [4], "sl_ticks": [4, 8], "cooldown_bins": list(cooldowns), "min_signals": 1},
        "sweep": {"thresholds": list(thresholds), "scoring": {"derivative_weights": [[1, 0, 0], [0.5, 0.3, 0.2]]},
                  "search": {"method": "tpe", "n_samples": n, "seed": seed}},
        "promotion": {"min_oos_trades": 1, "min_hit_rate": 0.0, "min_profit_factor": 0.0, "max_drawdown_ticks": 1e6},
        "tracking": {"backend": "none"}})


def drive(sampler: search.TpeSampler, objective) -> list[dict]:
    """The sampler's loop as run_fold drives it, with a made-up in-sample result per set."""
    sets = []
    while batch := sampler.ask():
        sets += batch
        sampler.tell([{"param_hash": s["param_hash"], "is_n_trades": 10, "is_total_pnl_ticks": objective(s)}
                      for s in batch])
    return sets


def planted(s: dict) -> float:
    return -((s["threshold"] - 0.62) ** 2) * 100 - abs(s["cooldown_bins"] - 20) / 10


@pytest.fixture(scope="module")
def serving():
    return resolve_serving("vp_flow_score")[0]


def test_same_seed_same_sets(serving):
    exp = tpe_experiment()
    a = drive(search.TpeSampler(exp, serving), planted)
    b = drive(search.TpeSampler(exp, serving), planted)
    assert [s["param_hash"] for s in a] == [s["param_hash"] for s in b]
    c = drive(search.TpeSampler(tpe_experiment(seed=8), serving), planted)
    assert [s["param_hash"] for s in c] != [s["param_hash"] for s in a]


def test_budget_ranges_and_types(serving):
    sets = drive(search.TpeSampler(tpe_experiment(n=25), serving), planted)
    assert len(sets) == 25 and len({s["param_hash"] for s in sets}) == 25
    for s in sets:
        assert 0.05 <= s["threshold"] <= 0.95 and isinstance(s["threshold"], float)
        assert 5 <= s["cooldown_bins"] <= 50 and isinstance(s["cooldown_bins"], int)
        assert 4 <= s["sl_ticks"] <= 8 and s["tp_ticks"] == 4
        assert s["scoring.derivative_weights"] in ([1, 0, 0], [0.5, 0.3, 0.2])
    fixed, dims = search.search_space(tpe_experiment(), serving)
    assert fixed == {"tp_ticks": 4}
    by_key = {d.key: d for d in dims}
    assert by_key["cooldown_bins"].log and by_key["threshold"].log  # 10x spans: log scale
    assert by_key["scoring.derivative_weights"].kind == "categorical" and by_key["sl_ticks"].kind == "int"


def test_tpe_finds_the_planted_optimum(serving):
    sets = drive(search.TpeSampler(tpe_experiment(n=60, seed=1), serving), planted)
    best = max(sets, key=planted)
    assert abs(best["threshold"] - 0.62) < 0.05
    first, last = sets[:10], sets[-20:]  # the random start vs what TPE chose later
    assert sum(planted(s) for s in last) / 20 > sum(planted(s) for s in first) / 10


def test_small_discrete_space_is_exhausted_not_looped(serving):
    exp = ExperimentSpec.model_validate({
        **tpe_experiment().model_dump(mode="json"),
        "sweep": {"thresholds": [0.1, 0.2], "search": {"method": "tpe", "n_samples": 50, "seed": 0}},
        "eval": {"tp_ticks": [4], "sl_ticks": [4], "cooldown_bins": [10, 11], "min_signals": 1}})
    sets = drive(search.TpeSampler(exp, serving), planted)
    assert 1 <= len(sets) <= 50 and len({s["param_hash"] for s in sets}) == len(sets)
    assert {s["cooldown_bins"] for s in sets} <= {10, 11}


def test_tpe_has_no_fixed_list(serving):
    with pytest.raises(ConfigError, match="TPE"):
        tpe_experiment().expand(serving)
    assert tpe_experiment(n=33).n_sets(serving) == 33


EXPERIMENT = """name: synth_tpe
description: TPE over the flow score's threshold and cooldown
serving: synth_flow
eval: {tp_ticks: [4], sl_ticks: [4], max_hold_bins: 600, warmup_bins: 100, cooldown_bins: [5, 40], min_signals: 1}
sweep:
  thresholds: [0.05, 0.5]
  search: {method: tpe, n_samples: 12, seed: 3}
walk_forward: {train_days: 1, test_days: 1}
promotion: {min_oos_trades: 1, min_hit_rate: 0.0, min_profit_factor: 0.0, max_drawdown_ticks: 1000}
tracking: {backend: none}
"""


@pytest.mark.slow
def test_tpe_sweep_through_run_fold(tmp_path_factory):
    w = build_synth_days(tmp_path_factory.mktemp("tpe"))
    path = w.configs / "experiments" / "synth_tpe.yaml"
    path.write_text(EXPERIMENT)
    exp, srv, pipe = resolve_experiment(path)
    for day in DAYS:
        build_dataset_day(w.lake, pipe, day)
    fold = sweeps.folds(pipe, exp)[0]
    seen = []
    a = sweeps.run_fold(w.lake, exp, srv, pipe, fold, progress=lambda d, t: seen.append((d, t)))
    b = sweeps.run_fold(w.lake, exp, srv, pipe, fold)
    rows_a, rows_b = a.to_pylist(), b.to_pylist()
    assert len(rows_a) == 12 and [r["param_hash"] for r in rows_a] == [r["param_hash"] for r in rows_b]
    assert len({r["sweep_id"] for r in rows_a}) == 1 and sum(r["selected"] for r in rows_a) == 1
    assert seen[-1] == (12, 12)
    assert len({r["threshold"] for r in rows_a}) > 2  # off the listed values: a range, not a grid
    # a replay of one sampled set through param_sets reproduces its row
    one = rows_a[3]
    params = {**json.loads(one["params_json"]), "param_hash": one["param_hash"]}
    again = sweeps.run_fold(w.lake, exp, srv, pipe, fold, param_sets=[params]).to_pylist()[0]
    assert again["oos_total_pnl_ticks"] == one["oos_total_pnl_ticks"]
    sweeps.append_results(w.lake, a)
    import mlflow

    parent = sweeps.log_to_mlflow(w.lake, exp, a)  # MLflow as for a grid: one parent, one child per set
    mlflow.set_tracking_uri(sweeps.tracking_uri(w.lake))
    found = mlflow.get_experiment_by_name("qmachina/synth_tpe")
    children = mlflow.MlflowClient().search_runs([found.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 12
    res = advisor.load_results(w.lake, "synth_tpe")
    sens = advisor.sensitivity(res, "threshold")
    assert sum(p.n_rows for p in sens.points) == 12
    # the selected run replays to its stored trades: trade-level flags are assessed from real trades
    rep = advisor.replay_trades(w.lake, res, w.configs)
    assert rep.note is None and rep.is_candidate is not None
    sel = res.candidate()
    assert rep.oos[sel["test_date"]].pnl_ticks.size == sel["oos_n_trades"]
    rob = advisor.robustness(res, oos_trades=rep.oos, is_trades=rep.is_candidate)
    assert rob.trades_replayed and next(f for f in rob.flags if f.name == "deflated_sharpe").details["source"] \
        == "replayed in-sample trades"


def test_sets_the_specs_refuse_are_never_evaluated(serving):
    exp = ExperimentSpec.model_validate({
        **tpe_experiment().model_dump(mode="json"), "serving": "vp_derivative",
        "sweep": {"thresholds": [0.05, 0.5], "per_signal": {"derivative": {"zscore_window_bins": [10, 400]}},
                  "search": {"method": "tpe", "n_samples": 20, "seed": 2}}})
    deriv = resolve_serving("vp_derivative")[0]
    sampler = search.TpeSampler(exp, deriv)
    sets = drive(sampler, lambda s: -abs(s["signal.params.zscore_window_bins"] - 200))
    assert len(sets) == 20 and sampler.invalid > 0  # windows below zscore_min_periods (60) were drawn ...
    assert all(s["signal.params.zscore_window_bins"] >= 60 for s in sets)  # ... and never handed out


def test_templates_expand_to_valid_experiments(tmp_path):
    shutil.copytree(PROJECT_ROOT / "configs", tmp_path / "configs")
    like, serving, pipeline = resolve_experiment("flow_score_sweep")
    written = []
    for t in search.TEMPLATES.values():
        out = search.expand_template(t, like, serving, pipeline)
        fams = {"statistical": "statistical", "ml": "ml"}
        assert out and all(t.family == "all" or make_signal(e.signal).kind == fams[t.family] for e in out)
        for e in out:
            assert e.experiment["promotion"] == like.promotion.model_dump(mode="json")  # gated like `like`
            if t.method == "tpe":
                assert e.n_sets == t.n_samples and e.experiment["sweep"]["search"]["seed"] == t.seed
        written += search.write_specs(tmp_path / "configs", [
            (kind, e.experiment["name"], text) for e in out
            for kind, text in (("serving", e.serving_yaml), ("experiments", e.experiment_yaml))])
    assert len(written) == 2 * (10 + 10 + 6 + 16)
    assert validate_configs(tmp_path) == []  # every written file passes the CI check, references included
    exp, srv, _ = resolve_experiment("statistical_default_ads", configs_dir=tmp_path / "configs")
    assert srv.signal.name == "ads" and exp.sweep.per_signal["ads"]["zscore_window"] == [100, 400]
    assert exp.n_sets(srv) == 200
    grid = resolve_experiment("thresholds_grid_erd", configs_dir=tmp_path / "configs")[0]
    assert grid.sweep.thresholds == sorted(make_signal("erd").default_thresholds)
    again = search.expand_template(search.TEMPLATES["thresholds_grid"], like, serving, pipeline)
    assert search.write_specs(tmp_path / "configs", [("experiments", again[0].experiment["name"],
                                                      again[0].experiment_yaml)])  # same content: a no-op
    with pytest.raises(FileExistsError, match="other content"):
        search.write_specs(tmp_path / "configs", [("experiments", "thresholds_grid_erd", "name: other\n")])


def test_automl_cli(tmp_path, capsys):
    shutil.copytree(PROJECT_ROOT / "configs", tmp_path / "configs")
    assert main(["automl", "list"]) == 0 and "statistical_default" in capsys.readouterr().out
    assert main(["automl", "expand", "ml_default", "--like", "flow_score_sweep", "--configs-dir",
                 str(tmp_path / "configs"), "--write"]) == 0
    assert (tmp_path / "configs" / "experiments" / "ml_default_gbm_mf.yaml").is_file()
    assert main(["automl", "expand", "nope", "--like", "flow_score_sweep"]) == 2
