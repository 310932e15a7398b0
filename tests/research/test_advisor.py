"""The advisor on synthetic days with a planted, known-optimal threshold (tests/support/planted.py): the edge,
peak and overfit flags fire where the planted structure says they must and stay silent where it says they must
not; suggestions are valid experiments; the deflated Sharpe ratio falls as more sets are tried."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pytest
import yaml

from qmachina_assets.core.research import advisor
from qmachina_assets.core.research.advisor import Results, Thresholds, TradeSample
from qmachina_assets.core.research.specs import ExperimentSpec, param_hash, resolve_serving, validate_experiment
from tests.support.planted import BROAD, FINE_BROAD, FINE_LEVELS, NARROW, NOISE, fold_rows, planted_day

D1, D2, D3 = dt.date(2024, 3, 13), dt.date(2024, 3, 14), dt.date(2024, 3, 15)
THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def experiment(thresholds=THRESHOLDS, cooldowns=(10, 20)) -> ExperimentSpec:
    return ExperimentSpec.model_validate({
        "name": "planted", "serving": "vp_flow_score",
        "eval": {"tp_ticks": [4], "sl_ticks": [4], "max_hold_bins": 30, "warmup_bins": 0,
                 "cooldown_bins": list(cooldowns), "min_signals": 5, "entry_mode": "mid"},
        "sweep": {"thresholds": list(thresholds)},
        "walk_forward": {"train_days": 1},
        "promotion": {"min_oos_trades": 1, "min_hit_rate": 0.0, "min_profit_factor": 0.0, "max_drawdown_ticks": 1e6},
        "tracking": {"backend": "none"}})


@pytest.fixture(scope="module")
def chain():
    return resolve_serving("vp_flow_score")


def results(chain, shape_is, shape_oos, thresholds=THRESHOLDS, cooldowns=(10, 20),
            exact=True) -> tuple[Results, ExperimentSpec]:
    """Two walk-forward folds: (D1 -> D2) and (D2 -> D3); training days have `shape_is`, test days `shape_oos`
    (a day that is both test and training takes the test shape only as a test day)."""
    serving, _ = chain
    exp = experiment(thresholds, cooldowns)
    days_is = {d: planted_day(d, shape_is, 4, 4, seed=i, exact=exact) for i, d in enumerate((D1, D2))}
    days_oos = {d: planted_day(d, shape_oos, 4, 4, seed=10 + i, exact=exact) for i, d in enumerate((D2, D3))}
    rows = fold_rows(exp, serving, days_is[D1], days_oos[D2], D2) + fold_rows(exp, serving, days_is[D2],
                                                                               days_oos[D3], D3)
    return Results(rows), exp


def flag(rob, name, axis=None):
    return next(f for f in rob.flags if f.name == name and (axis is None or f.axis == axis))


def test_planted_optimum_inside_the_grid_is_not_flagged(chain):
    res, _ = results(chain, BROAD, BROAD)
    cand = res.candidate()
    assert res.params[id(cand)]["threshold"] == pytest.approx(0.5)  # the planted optimum is found
    rob = advisor.robustness(res)
    assert flag(rob, "edge", "threshold").fired is False
    assert flag(rob, "narrow_peak").fired is False
    assert flag(rob, "narrow_peak").figure > 0.5
    assert flag(rob, "is_vs_oos").fired is False
    assert flag(rob, "is_vs_oos").figure == pytest.approx(1.0, abs=0.05)
    assert flag(rob, "fold_concentration").fired is False
    few = flag(rob, "few_trades")
    assert few.fired is False and few.figure >= 30
    lo, hi = few.details["hit_rate_ci"]
    assert lo < 0.75 < hi < 0.85  # threshold 0.5 fires on the levels above it only, each won 75% of the time
    assert flag(rob, "edge", "cooldown_bins").fired is None  # two values: not assessable, said so
    dsr = flag(rob, "deflated_sharpe")
    assert dsr.fired is False and dsr.details["sets_tried"] == 18  # a real edge survives the 18 sets tried


def test_optimum_beyond_the_grid_fires_edge_and_suggests_extending(chain):
    serving, pipeline = chain
    res, exp = results(chain, BROAD, BROAD, thresholds=[0.1, 0.2, 0.3, 0.4])
    rob = advisor.robustness(res)
    edge = flag(rob, "edge", "threshold")
    assert edge.fired is True and edge.figure == pytest.approx(0.4) and "highest" in edge.message
    sugg = advisor.suggest(res, exp, serving, pipeline, flags=rob)
    ext = next(s for s in sugg if s.kind == "extend_edge")
    assert ext.axis == "threshold" and max(ext.values) > 0.4 and 0.5 in ext.values
    spec = ExperimentSpec.model_validate(yaml.safe_load(ext.yaml))  # the YAML is a loadable experiment
    validate_experiment(spec, serving, pipeline)
    assert spec.sweep.thresholds == ext.values and spec.name != exp.name
    assert spec.tracking.experiment_name == f"qmachina/{spec.name}"
    assert spec.n_sets(serving) == ext.n_sets == len(ext.values) * 2


def test_narrow_peak_fires_only_for_the_narrow_plant(chain):
    res, _ = results(chain, NARROW, NARROW)
    assert res.params[id(res.candidate())]["threshold"] == pytest.approx(0.5)
    peak = flag(advisor.robustness(res), "narrow_peak")
    assert peak.fired is True and peak.figure < 0.5
    assert flag(advisor.robustness(results(chain, BROAD, BROAD)[0]), "narrow_peak").fired is False


def test_in_sample_far_above_out_of_sample_fires(chain):
    res, _ = results(chain, BROAD, NOISE)
    f = flag(advisor.robustness(res), "is_vs_oos")
    assert f.fired is True and f.figure < 0.5
    assert "OOS/IS" in f.message and f.threshold == 0.5


def test_flat_axis_is_dropped_and_peak_refined(chain):
    serving, pipeline = chain
    res, exp = results(chain, BROAD, BROAD)
    sens = advisor.sensitivity(res, "cooldown_bins")
    assert sens.flat is True and sens.profile_range == 0
    thr = advisor.sensitivity(res, "threshold")
    assert thr.flat is False and thr.selected_value == pytest.approx(0.5)
    best = max(thr.points, key=lambda p: p.profile)
    assert best.value == pytest.approx(0.5)
    assert set(thr.points[0].fold_medians) == {D2.isoformat(), D3.isoformat()}
    kinds = {(s.kind, s.axis): s for s in advisor.suggest(res, exp, serving, pipeline)}
    drop = kinds[("drop_flat_axis", "cooldown_bins")]
    assert len(drop.values) == 1 and drop.n_sets == len(THRESHOLDS)
    refine = kinds[("refine_peak", "threshold")]
    assert refine.values == [0.4, 0.45, 0.5, 0.55, 0.6]
    for s in kinds.values():
        validate_experiment(ExperimentSpec.model_validate(s.spec), serving, pipeline)


def test_heatmap_cells(chain):
    res, _ = results(chain, BROAD, BROAD)
    h = advisor.heatmap(res, "threshold", "cooldown_bins")
    assert len(h.median) == 2 and len(h.median[0]) == len(THRESHOLDS)
    assert all(n == 2 for row in h.n_rows for n in row)  # one row per fold in each cell
    assert h.median[0] == h.median[1]  # cooldown does not matter here
    with pytest.raises(KeyError, match="not a swept axis"):
        advisor.heatmap(res, "threshold", "tp_ticks")


def test_concentration_and_trade_intervals():
    fold = advisor.concentration("fold_concentration", "fold", {"2024-03-14": 50.0, "2024-03-15": -10.0})
    assert fold.fired is True and fold.figure == -10.0
    even = advisor.concentration("fold_concentration", "fold", {"a": 20.0, "b": 15.0})
    assert even.fired is False
    lo, hi = advisor.wilson(8, 10, 0.95)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)


def test_hour_concentration_from_replayed_trades(chain):
    res, _ = results(chain, BROAD, BROAD)
    ts = lambda d, h: int(dt.datetime.combine(d, dt.time(h, 10), tzinfo=dt.UTC).timestamp() * 1e9)  # noqa: E731
    trades = {D2.isoformat(): TradeSample(np.array([30.0, 20.0]), np.array([ts(D2, 14), ts(D2, 16)])),
              D3.isoformat(): TradeSample(np.array([25.0, -6.0]), np.array([ts(D3, 14), ts(D3, 17)]))}
    rob = advisor.robustness(res, oos_trades=trades)
    hour = flag(rob, "hour_concentration")
    assert hour.fired is False and hour.details["pnl_by_hour"] == {"10": 55.0, "12": 20.0, "13": -6.0}
    concentrated = {D2.isoformat(): TradeSample(np.array([30.0, -25.0]), np.array([ts(D2, 14), ts(D2, 16)])),
                    D3.isoformat(): TradeSample(np.array([20.0, -1.0]), np.array([ts(D3, 14), ts(D3, 17)]))}
    assert flag(advisor.robustness(res, oos_trades=concentrated), "hour_concentration").fired is True
    few = flag(rob, "few_trades")
    assert few.details["expectancy_source"] == "replayed trades"


def test_deflated_sharpe_falls_as_more_sets_are_tried():
    values = [advisor.deflated_sharpe(0.3, 200, n, 0.01) for n in (1, 2, 10, 100, 1000, 10000)]
    assert all(a > b for a, b in itertools.pairwise(values))
    assert values[0] == pytest.approx(advisor.deflated_sharpe(0.3, 200, 1, 0.0))  # one trial: the plain PSR
    assert advisor.expected_max_sharpe(1, 0.01) == 0.0
    # fatter tails make a Sharpe ratio above the benchmark less certain
    assert advisor.deflated_sharpe(0.4, 200, 10, 0.01, kurtosis=10) < advisor.deflated_sharpe(0.4, 200, 10, 0.01)


def test_deflated_flag_counts_every_sweep(chain):
    serving, _ = chain
    res, _ = results(chain, NOISE, NOISE, exact=False)
    rob = advisor.robustness(res)
    dsr = flag(rob, "deflated_sharpe")
    assert dsr.details["sets_tried"] == len(THRESHOLDS) * 2
    # an earlier sweep of other sets on the same test day counts as tried, though it is no longer current
    other = experiment([0.15, 0.25, 0.35], (30,))
    old = fold_rows(other, serving, planted_day(D2, NOISE, 4, 4, seed=1, exact=False),
                    planted_day(D3, NOISE, 4, 4, seed=11, exact=False), D3, created_at="2000-01-01T00:00:00+00:00")
    res2 = Results(res.rows + old)
    assert res2.tried(D3.isoformat()) == len(THRESHOLDS) * 2 + 3
    assert len(res2.current) == len(res.current)
    dsr2 = flag(advisor.robustness(res2), "deflated_sharpe")
    assert dsr2.details["sets_tried"] == len(THRESHOLDS) * 2 + 3
    assert dsr2.figure < dsr.figure
    assert dsr.fired is True  # no planted edge: the best of 18 noise sets is not significant


def test_thresholds_are_reported():
    th = Thresholds(min_trades=100)
    assert th.min_trades == 100 and Thresholds().peak_keep == 0.5


def test_sensitivity_png_is_a_png(chain):
    res, _ = results(chain, BROAD, BROAD)
    sens = [advisor.sensitivity(res, a) for a in res.axes]
    png = advisor.sensitivity_png(sens, advisor.heatmap(res, *advisor.most_sensitive_pair(sens)))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def sampled(chain, lo: float, hi: float, n: int = 40) -> tuple[Results, ExperimentSpec]:
    """Two folds of `n` thresholds drawn in [lo, hi] (as a TPE search would: off any grid) on the fine plant."""
    serving, _ = chain
    exp = ExperimentSpec.model_validate({**experiment().model_dump(mode="json"),
                                         "eval": {**experiment().eval.model_dump(), "cooldown_bins": [10]},
                                         "sweep": {"thresholds": [lo, hi],
                                                   "search": {"method": "tpe", "n_samples": n, "seed": 0}}})
    rng = np.random.default_rng(5)
    sets = []
    for thr in np.round(rng.uniform(lo, hi, n), 4):
        values = {"cooldown_bins": 10, "sl_ticks": 4, "threshold": float(thr), "tp_ticks": 4}
        sets.append({**values, "param_hash": param_hash("flow_score", values)})
    days = {d: planted_day(d, FINE_BROAD, 4, 4, per_level=4, seed=i, levels=FINE_LEVELS)
            for i, d in enumerate((D1, D2, D3))}
    rows = fold_rows(exp, serving, days[D1], days[D2], D2, sets) + fold_rows(exp, serving, days[D2], days[D3], D3,
                                                                               sets)
    return Results(rows), exp


def test_sampled_axis_edge_and_range_suggestions(chain):
    serving, pipeline = chain
    res, exp = sampled(chain, 0.1, 0.45)
    sens = advisor.sensitivity(res, "threshold")
    assert sens.binned and len(sens.points) == advisor.MAX_POINTS
    edge = flag(advisor.robustness(res), "edge", "threshold")
    assert edge.fired is True and edge.details["binned"] and "bins" in edge.message
    ext = next(s for s in advisor.suggest(res, exp, serving, pipeline) if s.kind == "extend_edge")
    assert ext.values == [0.1, 0.8]  # the range pushed past its top by its own width
    validate_experiment(ExperimentSpec.model_validate(ext.spec), serving, pipeline)

    res, exp = sampled(chain, 0.1, 0.9)
    v = res.params[id(res.candidate())]["threshold"]
    assert 0.45 < v <= 0.55  # the planted optimum, found on a sampled axis
    assert flag(advisor.robustness(res), "edge", "threshold").fired is False
    refine = next(s for s in advisor.suggest(res, exp, serving, pipeline) if s.kind == "refine_peak")
    assert refine.values[0] == pytest.approx(v - 0.1) and refine.values[1] == pytest.approx(v + 0.1)
    assert refine.n_sets == 40


def test_test_days_swept_with_different_specs(chain):
    """A later test day swept with an extra axis: the advice covers what each day has and says so."""
    serving, _ = chain
    exp = experiment()
    wider = ExperimentSpec.model_validate({**exp.model_dump(mode="json"),
                                           "sweep": {"thresholds": THRESHOLDS, "scoring": {"tanh_scale": [2.0, 3.0]}}})
    days = {d: planted_day(d, BROAD, 4, 4, seed=i) for i, d in enumerate((D1, D2, D3))}
    rows = [{**r, "experiment_hash": "a"} for r in fold_rows(exp, serving, days[D1], days[D2], D2)]
    rows += [{**r, "experiment_hash": "b"} for r in fold_rows(wider, serving, days[D2], days[D3], D3)]
    res = Results(rows)
    assert "scoring.tanh_scale" in res.axes
    sens = advisor.sensitivity(res, "scoring.tanh_scale")
    assert sum(p.n_rows for p in sens.points) == len(THRESHOLDS) * 2 * 2  # the D3 rows only
    rob = advisor.robustness(res)
    assert rob.spec_versions == 2
    assert advisor.heatmap(res, "threshold", "scoring.tanh_scale").n_rows[0][0] == 2
