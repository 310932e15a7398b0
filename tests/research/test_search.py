"""The seeded TPE sampler: same seed and results give the same sets, the budget and ranges hold, it finds a
planted optimum; through `run_fold` on two synthetic days its rows land in the results store like a grid's."""

from __future__ import annotations

import json

import pytest

from qmachina_assets.core.research import advisor, search, sweeps
from qmachina_assets.core.research.datasets import build_dataset_day
from qmachina_assets.core.research.specs import ConfigError, ExperimentSpec, resolve_experiment, resolve_serving
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
