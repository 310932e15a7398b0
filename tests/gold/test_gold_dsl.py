"""Gold DSL: validation (one case per error kind), expression safety, kernels against pandas / numpy,
series semantics, causality, builtin_spec == gold.compute_gold on a real day, the config round trip and
its refusals, preview, and the shipped YAML specs."""

from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qmachina_assets.core.engine import engine as eng
from qmachina_assets.core.gold import dsl, dsl_runtime
from qmachina_assets.core.gold.features import GOLD_INPUTS, GoldFeatureConfig, compute_gold
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from tests.conftest import ESH4_1225, sample

TICK = 250_000_000
GOLD_DIR = PROJECT_ROOT / "configs" / "gold"


# ---- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def day() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The real sample day ESH4 2023-12-25 as silver numpy column dicts (~72k bins, ~7.3M grid rows)."""
    bins_t, grid_t = eng.run_file(sample(ESH4_1225), locked_instrument())
    return ({c: bins_t[c].to_numpy() for c in bins_t.column_names},
            {c: grid_t[c].to_numpy() for c in grid_t.column_names})


def _slice(day, b0: int, b1: int, radius: int = 50):
    bins, grid = day
    w = 2 * radius + 1
    return ({c: v[b0:b1].copy() for c, v in bins.items()}, {c: v[b0 * w:b1 * w].copy() for c, v in grid.items()})


def _cfg(**kw) -> GoldFeatureConfig:
    base = dict(cell_width_ms=100, c1=1.1, c2=0.45, c3=0.35, c4=0.9, c5=1.7, c6=0.55, c7=0.25,
                flow_windows=(3, 7, 11), flow_rollup_weights=(1.0, 2.0, 3.0), flow_derivative_weights=(0.2, 0.3, 0.7),
                flow_tanh_scale=2.5, flow_neutral_threshold=0.2, flow_zscore_window_bins=50,
                flow_zscore_min_periods=10)
    return GoldFeatureConfig(**{**base, **kw})


def _shipped_cfg() -> GoldFeatureConfig:
    return GoldFeatureConfig.from_instrument(locked_instrument())


def _synthetic(n_bins: int, radius: int, spot_ticks, fields: dict[str, np.ndarray], valid=None, seqs=None):
    """Hand-built silver: `fields` are (n_bins, 2R+1) arrays by grid column name."""
    bins = {
        "bin_seq": np.arange(n_bins, dtype=np.int64) if seqs is None else np.asarray(seqs, np.int64),
        "spot_ref_price_int": np.asarray(spot_ticks, np.int64) * TICK,
        "book_valid": np.ones(n_bins, bool) if valid is None else np.asarray(valid, bool),
    }
    grid = {"k": np.tile(np.arange(-radius, radius + 1, dtype=np.int32), n_bins)}
    grid.update({name: np.asarray(a, np.float64).reshape(-1) for name, a in fields.items()})
    return bins, grid


def _spec(nodes: dict, name: str = "t") -> dsl.GoldDslSpec:
    return dsl.GoldDslSpec(version=1, name=name, nodes=nodes)


def _base() -> dict:
    return {"version": 1, "name": "t", "nodes": {
        "x": {"type": "silver_ref", "field": "v_add"},
        "m": {"type": "temporal_window", "source": "x", "agg": "mean", "window_bins": 5},
        "out": {"type": "output", "source": "m", "name": "m_out"},
    }}


def _compare_all(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> None:
    assert list(out) == list(ref)
    for col, r in ref.items():
        a = out[col]
        assert a.dtype == r.dtype, col
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, r, rtol=1e-9, atol=1e-9, err_msg=col)
        else:
            np.testing.assert_array_equal(a, r, err_msg=col)


# ---- validation: one case per error kind -----------------------------------------------------------


def _mut_dangling(d):
    d["nodes"]["m"]["source"] = "nope"


def _mut_cycle(d):
    d["nodes"]["a"] = {"type": "expr", "inputs": {"u": "b"}, "expr": "u + 1"}
    d["nodes"]["b"] = {"type": "expr", "inputs": {"u": "a"}, "expr": "u * 2"}


def _mut_unknown_field(d):
    d["nodes"]["x"]["field"] = "mid_price"  # a bins column, not on the grid allow-list


def _mut_ewm_alpha(d):
    d["nodes"]["m"] = {"type": "temporal_window", "source": "x", "agg": "ewm"}


def _mut_weighted(d):
    d["nodes"]["m"] = {"type": "spatial_neighborhood", "source": "x", "radius_ticks": 2, "agg": "weighted",
                       "weights": [0.2, 0.6, 0.2]}


def _mut_robust_window(d):
    d["nodes"]["m"] = {"type": "norm", "source": "x", "method": "robust_zscore", "min_periods": 3}


def _mut_center(d):
    d["nodes"]["m"]["center"] = True


def _mut_negative_lag(d):
    d["nodes"]["m"] = {"type": "temporal_window", "source": "x", "agg": "lag", "lag_bins": -2}


def _mut_offset(d):
    d["nodes"]["m"] = {"type": "norm", "source": "x", "method": "zscore", "window_bins": 5, "offset": 3}


def _mut_int8_from_float(d):
    d["nodes"]["out"]["dtype"] = "int8"


def _mut_spatial_on_bin(d):
    d["nodes"]["tot"] = {"type": "spatial_neighborhood", "source": "x", "radius_ticks": "all", "agg": "sum"}
    d["nodes"]["m"] = {"type": "spatial_neighborhood", "source": "tot", "radius_ticks": 1, "agg": "mean"}


def _mut_temporal_on_const(d):
    d["nodes"]["c"] = {"type": "const", "value": 2.0}
    d["nodes"]["m"]["source"] = "c"


def _mut_output_feeds(d):
    d["nodes"]["after"] = {"type": "expr", "inputs": {"o": "out"}, "expr": "o * 2"}


def _mut_no_output(d):
    del d["nodes"]["out"]


def _mut_dup_output(d):
    d["nodes"]["out2"] = {"type": "output", "source": "x", "name": "m_out"}


def _mut_reserved_output(d):
    d["nodes"]["out"]["name"] = "gold_valid"


def _mut_expr_name(d):
    d["nodes"]["e"] = {"type": "expr", "inputs": {"a": "x"}, "expr": "a + bogus"}
    d["nodes"]["out"]["source"] = "e"


def _mut_parse(d):
    d["nodes"]["m"]["window_bins"] = 0


def _mut_bad_param(d):
    d["nodes"]["m"]["alpha"] = 0.5  # alpha only applies to ewm


@pytest.mark.parametrize(("mutate", "kind", "nodes"), [
    (_mut_dangling, "dangling_ref", ["m"]),
    (_mut_cycle, "cycle", ["a", "b"]),
    (_mut_unknown_field, "unknown_field", ["x"]),
    (_mut_ewm_alpha, "missing_param", ["m"]),
    (_mut_weighted, "missing_param", ["m"]),
    (_mut_robust_window, "missing_param", ["m"]),
    (_mut_center, "lookahead", ["m"]),
    (_mut_negative_lag, "lookahead", ["m"]),
    (_mut_offset, "lookahead", ["m"]),
    (_mut_int8_from_float, "type", ["out"]),
    (_mut_spatial_on_bin, "shape", ["m"]),
    (_mut_temporal_on_const, "shape", ["m"]),
    (_mut_output_feeds, "output", ["after"]),
    (_mut_no_output, "output", [None]),
    (_mut_dup_output, "output", ["out2"]),
    (_mut_reserved_output, "output", ["out"]),
    (_mut_expr_name, "expr_name", ["e"]),
    (_mut_parse, "parse", ["m"]),
    (_mut_bad_param, "bad_param", ["m"]),
], ids=lambda v: v.__name__.removeprefix("_mut_") if callable(v) else None)
def test_validation_error_kinds(mutate, kind: str, nodes: list[str | None]) -> None:
    assert dsl.validate(_base()) == []
    d = copy.deepcopy(_base())
    mutate(d)
    errors = dsl.validate(d)
    assert [e.kind for e in errors] == [kind] * len(nodes), errors
    assert [e.node for e in errors] == nodes
    for e in errors:
        assert (f"node '{e.node}'" if e.node else "spec:") in e.message
    with pytest.raises(dsl.DslValidationError):
        dsl.validate_or_raise(d)


def test_validation_errors_name_field_and_reasons() -> None:
    d = _base()
    d["nodes"]["m"]["window_bins"] = 0
    (err,) = dsl.validate(d)
    assert "node 'm'" in err.message and "window_bins" in err.message
    d = _base()
    _mut_weighted(d)
    assert "length 2*radius_ticks+1 = 5 (got 3)" in dsl.validate(d)[0].message
    d = _base()
    _mut_cycle(d)
    assert "a, b" in dsl.validate(d)[0].message  # the nodes left by Kahn's algorithm


# ---- expressions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("expr", [
    "__import__('os')", "__import__('os').system('true')", "a.__class__", "(lambda: 1)()", "a[0]", "'text'",
    "a ** 2", "[a]", "a if a else 1", "a and 1", "f'{a}'", "open('x')", "eval('1')", "a % 2", "max",
    "a is a", "a in a", "abs(x=a)", "clip(a, 1)", "True", "a; a", "import os", "-" * 300 + "a", "a + 1e400",
    "a + " + "9" * 400, "a(1)", "abs",
], ids=lambda e: e[:24])
def test_unsafe_or_invalid_expressions_are_rejected(expr: str) -> None:
    d = _base()
    d["nodes"]["e"] = {"type": "expr", "inputs": {"a": "x"}, "expr": expr}
    d["nodes"]["out"]["source"] = "e"
    errors = dsl.validate(d)
    assert errors and all(e.node == "e" and e.kind in ("expr_syntax", "expr_name") for e in errors), errors


def libm(fn, x: np.ndarray) -> np.ndarray:
    """fn element by element (NaN kept): the C library's result, which numba's kernels call too."""
    return np.vectorize(lambda v: v if math.isnan(v) else fn(v), otypes=[np.float64])(x)


def test_expression_semantics() -> None:
    rng = np.random.default_rng(0)
    n_bins, radius = 30, 2
    a = rng.normal(size=(n_bins, 5))
    b = rng.normal(size=(n_bins, 5))
    a[3, 1] = np.nan
    bins, grid = _synthetic(n_bins, radius, np.full(n_bins, 400), {"v_add": a, "v_pull": b})
    cases = {
        "lr": ("1.5 * a + 2.5 * b + 0.5 * a", 1.5 * a + 2.5 * b + 0.5 * a),
        "div": ("a / (abs(b) + 1) - -b", a / (np.abs(b) + 1) - -b),
        "cmp": ("(a > b) + 2 * (a <= 0) + 4 * (0 < a < 1)",
                (a > b) + 2.0 * (a <= 0) + 4.0 * ((a > 0) & (a < 1))),
        "fns": ("sign(a) + tanh(b) + exp(b) + log1p(abs(a)) + sqrt(abs(b))",  # libm, as CPython's math
                np.sign(a) + libm(math.tanh, b) + libm(math.exp, b) + libm(math.log1p, np.abs(a))
                + np.sqrt(np.abs(b))),
        "mm": ("min(a, b, 0.25) + max(a, b) + clip(a, -0.5, 0.5)",
               np.minimum(np.minimum(a, b), 0.25) + np.maximum(a, b) + np.clip(a, -0.5, 0.5)),
        "wh": ("where(a > 0, a, b) + nan_to_zero(a) * dt_s", np.where(a > 0, a, b) + np.nan_to_num(a) * 0.25),
    }
    nodes: dict = {"a": {"type": "silver_ref", "field": "v_add"}, "b": {"type": "silver_ref", "field": "v_pull"}}
    for key, (text, _) in cases.items():
        nodes[f"e_{key}"] = {"type": "expr", "inputs": {"a": "a", "b": "b"}, "expr": text}
        nodes[f"o_{key}"] = {"type": "output", "source": f"e_{key}", "name": key, "dtype": "float64"}
    nodes["code"] = {"type": "expr", "inputs": {"a": "a"}, "expr": "a * 3", "dtype": "int8"}
    nodes["o_code"] = {"type": "output", "source": "code", "name": "code", "dtype": "int8"}
    out = dsl_runtime.execute(dsl.validate_or_raise({"version": 1, "name": "e", "nodes": nodes}), bins, grid,
                              radius, 1, 250)
    for key, (_, want) in cases.items():
        np.testing.assert_array_equal(out[key], want.reshape(-1), err_msg=key)
    want_code = np.trunc(np.nan_to_num(a * 3)).astype(np.int8).reshape(-1)
    np.testing.assert_array_equal(out["code"], want_code)


# ---- kernels and series ----------------------------------------------------------------------------


def _rolling_ref(s: pd.Series, node: dict) -> pd.Series:
    if node["type"] == "temporal_window":
        agg, w, mp = node["agg"], node.get("window_bins"), node.get("min_periods", 1)
        if agg == "ewm":
            return s.ewm(alpha=node["alpha"], adjust=False, ignore_na=True, min_periods=mp).mean()
        if agg == "diff":
            return s - s.shift(node.get("lag_bins", 1))
        if agg == "lag":
            return s.shift(node.get("lag_bins", 1))
        return getattr(s.rolling(w, min_periods=mp), agg)()
    w, mp, method = node["window_bins"], node.get("min_periods", 1), node["method"]
    vals = s.to_numpy()
    out = np.full(len(vals), np.nan)
    for t, x in enumerate(vals):
        win = vals[max(0, t - w + 1):t + 1]
        win = win[~np.isnan(win)]
        if np.isnan(x):
            continue
        if method == "rank":
            out[t] = np.nan if win.size < mp else (win <= x).mean()
        elif method == "zscore":
            sd = win.std(ddof=1) if win.size >= max(mp, 2) else np.nan
            out[t] = (x - win.mean()) / sd if sd > 1e-12 else 0.0
        else:
            med = np.median(win) if win.size else np.nan
            s_ = 1.4826 * np.median(np.abs(win - med)) if win.size >= mp else 0.0
            out[t] = (x - med) / s_ if s_ > 1e-12 else 0.0
    return pd.Series(out)


ROLLING_NODES = {
    "mean": {"type": "temporal_window", "agg": "mean", "window_bins": 4},
    "sum": {"type": "temporal_window", "agg": "sum", "window_bins": 3, "min_periods": 2},
    "std": {"type": "temporal_window", "agg": "std", "window_bins": 5, "min_periods": 3},
    "min": {"type": "temporal_window", "agg": "min", "window_bins": 4},
    "max": {"type": "temporal_window", "agg": "max", "window_bins": 4},
    "median": {"type": "temporal_window", "agg": "median", "window_bins": 6, "min_periods": 2},
    "ewm": {"type": "temporal_window", "agg": "ewm", "alpha": 0.3, "min_periods": 2},
    "diff": {"type": "temporal_window", "agg": "diff", "lag_bins": 2},
    "lag": {"type": "temporal_window", "agg": "lag", "lag_bins": 1},
    "zscore": {"type": "norm", "method": "zscore", "window_bins": 5, "min_periods": 3},
    "rank": {"type": "norm", "method": "rank", "window_bins": 5, "min_periods": 2},
    "robust": {"type": "norm", "method": "robust_zscore", "window_bins": 7, "min_periods": 3},
}


def _ops_spec(source_field: str = "v_add") -> dict:
    nodes: dict = {"x": {"type": "silver_ref", "field": source_field}}
    for key, node in ROLLING_NODES.items():
        nodes[f"n_{key}"] = {**node, "source": "x"}
        nodes[f"o_{key}"] = {"type": "output", "source": f"n_{key}", "name": key, "dtype": "float64"}
    return {"version": 1, "name": "ops", "nodes": nodes}


def test_rolling_kernels_match_pandas_per_series() -> None:
    """Constant spot: each k is one series, broken by the invalid bin 25 and the bin_seq gap at 40."""
    rng = np.random.default_rng(1)
    n_bins, radius = 70, 2
    x = np.round(rng.normal(size=(n_bins, 5)), 1)  # duplicates exercise the sorted windows
    x[rng.random(x.shape) < 0.15] = np.nan
    valid = np.ones(n_bins, bool)
    valid[25] = False
    seqs = np.arange(n_bins) + np.where(np.arange(n_bins) >= 40, 3, 0)
    bins, grid = _synthetic(n_bins, radius, np.full(n_bins, 400), {"v_add": x}, valid=valid, seqs=seqs)
    out = dsl_runtime.execute(dsl.validate_or_raise(_ops_spec()), bins, grid, radius, 1, 100)
    for key, node in ROLLING_NODES.items():
        got = out[key].reshape(n_bins, 5)
        assert (got[25] == 0).all(), key  # invalid bin: no series, output 0
        for j in range(5):
            for lo, hi in ((0, 25), (26, 40), (40, n_bins)):
                want = _rolling_ref(pd.Series(x[lo:hi, j]), node).to_numpy()
                np.testing.assert_allclose(got[lo:hi, j], want, rtol=1e-9, atol=1e-12, equal_nan=True,
                                           err_msg=f"{key} k={j - radius} bins {lo}:{hi}")


def test_series_follow_absolute_ticks_across_spot_moves() -> None:
    """A lag follows the price level: after the spot moves up one tick, row k reads the previous bin's k+1;
    the level entering the window at the top starts a new series (NaN)."""
    n_bins, radius = 6, 2
    x = np.arange(n_bins * 5, dtype=np.float64).reshape(n_bins, 5)
    spot = np.array([100, 100, 101, 101, 99, 99])
    bins, grid = _synthetic(n_bins, radius, spot, {"v_add": x})
    nodes = {"x": {"type": "silver_ref", "field": "v_add"},
             "l": {"type": "temporal_window", "source": "x", "agg": "lag"},
             "o": {"type": "output", "source": "l", "name": "lag1", "dtype": "float64"}}
    got = dsl_runtime.execute(_spec(nodes), bins, grid, radius, TICK, 100)["lag1"].reshape(n_bins, 5)
    np.testing.assert_array_equal(got[1], x[0])
    np.testing.assert_array_equal(got[2, :4], x[1, 1:])
    assert np.isnan(got[2, 4])
    np.testing.assert_array_equal(got[4, 2:], x[3, :3])  # spot -2: k reads k-2 of the previous bin
    assert np.isnan(got[4, :2]).all()


def test_spatial_kernels_and_bin_shape() -> None:
    rng = np.random.default_rng(2)
    n_bins, radius = 12, 3
    x = rng.normal(size=(n_bins, 7))
    x[2, 3] = np.nan
    valid = np.ones(n_bins, bool)
    valid[6] = False
    bins, grid = _synthetic(n_bins, radius, np.full(n_bins, 50), {"v_add": x}, valid=valid)
    wts = [0.1, 0.2, 0.4, 0.2, 0.1]
    nodes: dict = {"x": {"type": "silver_ref", "field": "v_add"}}
    for agg in ("mean", "sum", "max", "min", "std"):
        nodes[f"s_{agg}"] = {"type": "spatial_neighborhood", "source": "x", "radius_ticks": 1, "agg": agg}
        nodes[f"o_{agg}"] = {"type": "output", "source": f"s_{agg}", "name": agg, "dtype": "float64"}
    nodes["s_w"] = {"type": "spatial_neighborhood", "source": "x", "radius_ticks": 2, "agg": "weighted",
                    "weights": wts}
    nodes["o_w"] = {"type": "output", "source": "s_w", "name": "weighted", "dtype": "float64"}
    nodes["tot"] = {"type": "spatial_neighborhood", "source": "x", "radius_ticks": "all", "agg": "sum"}
    nodes["tot_ewm"] = {"type": "temporal_window", "source": "tot", "agg": "ewm", "alpha": 0.5}
    nodes["share"] = {"type": "expr", "inputs": {"x": "x", "t": "tot"}, "expr": "x / t"}
    nodes["o_tot"] = {"type": "output", "source": "tot_ewm", "name": "tot_ewm", "dtype": "float64"}
    nodes["o_share"] = {"type": "output", "source": "share", "name": "share", "dtype": "float64"}
    out = dsl_runtime.execute(dsl.validate_or_raise({"version": 1, "name": "s", "nodes": nodes}), bins, grid,
                              radius, 1, 100)
    ok = valid
    for agg in ("mean", "sum", "max", "min", "std"):
        want = np.full((n_bins, 7), np.nan)
        for j in range(7):
            win = x[:, max(0, j - 1):j + 2]
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                want[:, j] = {"mean": np.nanmean, "sum": np.nansum, "max": np.nanmax, "min": np.nanmin,
                              "std": lambda a, axis: np.nanstd(a, axis=axis, ddof=1)}[agg](win, axis=1)
        np.testing.assert_allclose(out[agg].reshape(n_bins, 7)[ok], want[ok], rtol=1e-12, err_msg=agg)
    want_w = np.zeros((n_bins, 7))
    for j in range(7):
        for o in range(-2, 3):
            if 0 <= j + o < 7:
                want_w[:, j] += wts[o + 2] * x[:, j + o]
    np.testing.assert_allclose(out["weighted"].reshape(n_bins, 7)[ok], want_w[ok], rtol=1e-12)
    tot = np.nansum(x, axis=1)
    np.testing.assert_allclose(out["share"].reshape(n_bins, 7)[ok], (x / tot[:, None])[ok], rtol=1e-12)
    got_ewm = out["tot_ewm"].reshape(n_bins, 7)
    assert (got_ewm == got_ewm[:, :1]).all()  # a bin-shaped value broadcast over k
    for lo, hi in ((0, 6), (7, n_bins)):  # the bin series breaks at the invalid bin
        want = pd.Series(tot[lo:hi]).ewm(alpha=0.5, adjust=False).mean().to_numpy()
        np.testing.assert_allclose(got_ewm[lo:hi, 0], want, rtol=1e-12)


# ---- the built-in set ------------------------------------------------------------------------------


def test_builtin_spec_equals_compute_gold_on_the_real_day(day) -> None:
    """The whole built-in set from the DSL graph equals gold.compute_gold on the full sample day."""
    inst = locked_instrument()
    bins, grid = day
    cfg = _shipped_cfg()
    spec = dsl.builtin_spec(cfg)
    assert dsl.validate(spec) == []
    dsl_runtime.execute(spec, *_slice(day, 0, 50), inst.grid_radius_ticks, inst.tick_int, inst.cell_width_ms)  # compile
    t0 = time.perf_counter()
    out = dsl_runtime.execute(spec, bins, grid, inst.grid_radius_ticks, inst.tick_int, inst.cell_width_ms)
    elapsed = time.perf_counter() - t0
    ref = compute_gold(bins, grid, cfg, inst.grid_radius_ticks, inst.tick_int)
    print(f"\nbuiltin_spec: {len(out['k'])} rows in {elapsed:.2f} s = {len(out['k']) / elapsed:,.0f} rows/s")
    _compare_all(out, ref)
    assert np.abs(out["composite_d3"]).max() > 0 and (out["flow_state_code"] != 0).any()


def test_builtin_spec_with_invalid_bins_gaps_and_custom_config(day) -> None:
    inst = locked_instrument()
    bins, grid = _slice(day, 40_000, 43_000)
    bins["book_valid"][100:110] = False
    bins["spot_ref_price_int"][500] = 0
    bins["bin_seq"][1000:] += 5
    cfg = _cfg()
    out = dsl_runtime.execute(dsl.builtin_spec(cfg), bins, grid, inst.grid_radius_ticks, inst.tick_int,
                              cfg.cell_width_ms)
    ref = compute_gold(bins, grid, cfg, inst.grid_radius_ticks, inst.tick_int)
    _compare_all(out, ref)
    w = 2 * inst.grid_radius_ticks + 1
    assert not out["gold_valid"][100 * w:110 * w].any()
    assert (out["composite"][100 * w:110 * w] == 0).all() and (out["composite"][500 * w:501 * w] == 0).all()
    bins["book_valid"][:] = False
    out = dsl_runtime.execute(dsl.builtin_spec(cfg), bins, grid, inst.grid_radius_ticks, inst.tick_int, 100)
    assert all((v == 0).all() for c, v in out.items() if c not in ("bin_seq", "k"))


def test_causality_changes_after_t_leave_outputs_up_to_t_unchanged(day) -> None:
    inst = locked_instrument()
    radius, w, t = inst.grid_radius_ticks, 2 * inst.grid_radius_ticks + 1, 900
    bins, grid = _slice(day, 40_000, 41_500)
    specs = [dsl.builtin_spec(_cfg()), dsl.load_spec(GOLD_DIR / "depth_imbalance.yaml"),
             dsl.validate_or_raise(_ops_spec("v_fill"))]
    before = [dsl_runtime.execute(s, bins, grid, radius, inst.tick_int, 100) for s in specs]
    rng = np.random.default_rng(5)
    for v in grid.values():
        if v.dtype.kind == "f":
            v[(t + 1) * w:] = rng.normal(size=v.size - (t + 1) * w) * 1e3
    bins["spot_ref_price_int"][t + 1:] += 3 * inst.tick_int
    bins["book_valid"][t + 20:t + 30] = False
    bins["ask_reprice_sign"][t + 1:] = 1
    grid["ask_reprice_sign"][(t + 1) * w:] = 1
    for s, b in zip(specs, before, strict=True):
        after = dsl_runtime.execute(s, bins, grid, radius, inst.tick_int, 100)
        changed = False
        for col in b:
            np.testing.assert_array_equal(after[col][:(t + 1) * w], b[col][:(t + 1) * w], err_msg=f"{s.name}.{col}")
            changed |= not np.array_equal(after[col], b[col], equal_nan=True)
        assert changed, s.name  # the perturbation did reach the later rows


def test_config_round_trip() -> None:
    for cfg in (_shipped_cfg(), _cfg(), _cfg(flow_windows=(5,), flow_rollup_weights=(2.0,), composite_eps=1e-9,
                                          scale_eps=1e-8, cell_width_ms=250)):
        spec = dsl.builtin_spec(cfg)
        assert dsl.config_from_spec(spec, cfg.cell_width_ms) == cfg
        again = dsl.validate_or_raise(dsl.yaml.safe_load(dsl.dump_spec(spec)))
        assert again == spec and again.spec_hash == spec.spec_hash
        assert dsl.config_from_spec(again, cfg.cell_width_ms).config_hash == cfg.config_hash
    spec = dsl.builtin_spec(_cfg())
    assert spec.nodes["c3"].value == 0.35 and spec.nodes["c7"].value == 0.25  # c1..c7 are applied
    nodes = dict(spec.nodes)
    nodes["c3"] = dsl.Const(type="const", value=0.9)  # a legitimate config change maps back
    assert dsl.config_from_spec(_spec(nodes), 100) == _cfg(c3=0.9)


@pytest.mark.parametrize(("edit", "node"), [
    (lambda n: n.update(flow_z_d2=n["flow_z_d2"].model_copy(update={"window_bins": 60})), "flow_z_d2"),
    (lambda n: n.update(pressure_variant=n["pressure_variant"].model_copy(
        update={"expr": "c1 * v_add + c3 * max(v_rest_depth, 0) + c3 * max(a_add, 0)"})), "pressure_variant"),
    (lambda n: n.update(rollup_weight_sum=dsl.Const(type="const", value=1.0)), "rollup_weight_sum"),
    (lambda n: n.update(output_extra=dsl.Output(type="output", source="composite", name="extra")), "output_extra"),
    (lambda n: n.pop("c4"), "c4"),
    (lambda n: n.update(output_composite=n["output_composite"].model_copy(update={"dtype": "float32"})),
     "output_composite"),
])
def test_config_from_spec_refuses_a_modified_spec(edit, node: str) -> None:
    nodes = dict(dsl.builtin_spec(_cfg()).nodes)
    edit(nodes)
    with pytest.raises(dsl.DslMappingError, match=f"node '{node}'"):
        dsl.config_from_spec(_spec(nodes), 100)


def test_spec_hash() -> None:
    spec = dsl.builtin_spec(_cfg())
    h = spec.spec_hash
    assert len(h) == 16 and int(h, 16) >= 0
    shuffled = dict(reversed(list(spec.nodes.items())))
    assert _spec(shuffled, name="other").spec_hash == h  # order, name and description do not count
    assert dsl.builtin_spec(_cfg(c5=1.71)).spec_hash != h
    d = _base()
    d2 = copy.deepcopy(d)
    d2["nodes"]["m"]["min_periods"] = 1  # an explicit default is the same computation
    assert dsl.validate_or_raise(d).spec_hash == dsl.validate_or_raise(d2).spec_hash


# ---- preview ---------------------------------------------------------------------------------------


def test_preview(day) -> None:
    inst = locked_instrument()
    bins, grid = day
    spec = dsl.builtin_spec(_shipped_cfg())
    res = dsl_runtime.preview(spec, bins, grid, inst.grid_radius_ticks, inst.tick_int, inst.cell_width_ms,
                              sample_bins=1500, start_bin=40_000)
    assert res.spec_hash == spec.spec_hash and res.n_bins_sampled == 1500
    assert res.n_rows == 1500 * (2 * inst.grid_radius_ticks + 1) and res.execution_time_ms > 0
    by_name = {o.name: o for o in res.outputs}
    assert list(by_name) == [spec.nodes[o].name for o in spec.outputs]
    for name in ("pressure_variant", "composite", "composite_d1", "flow_score"):
        o = by_name[name]
        assert o.max_abs_corr == pytest.approx(1.0) and name in o.redundant_with
        assert o.p01 <= o.p25 <= o.p50 <= o.p75 <= o.p99 and o.n == res.n_rows
    assert by_name["composite_d3"].nan_share > 0  # warm-up NaN before the fill
    di = dsl_runtime.preview(dsl.load_spec(GOLD_DIR / "depth_imbalance.yaml"), bins, grid, inst.grid_radius_ticks,
                             inst.tick_int, inst.cell_width_ms, sample_bins=1500, start_bin=40_000)
    imb = {o.name: o for o in di.outputs}["local_depth_imbalance"]
    assert -1.0 <= imb.p01 <= imb.p99 <= 1.0 and imb.std > 0
    assert all(c < dsl_runtime.REDUNDANT_CORR for c in imb.corr_with_builtin.values() if c is not None)


# ---- YAML ------------------------------------------------------------------------------------------


def test_every_shipped_yaml_spec_validates() -> None:
    paths = sorted(GOLD_DIR.glob("*.yaml"))
    assert {p.name for p in paths} >= {"builtin.yaml", "depth_imbalance.yaml"}
    for p in paths:
        assert dsl.validate(dsl.yaml.safe_load(p.read_text())) == [], p


def test_builtin_yaml_is_the_shipped_config() -> None:
    spec = dsl.load_spec(GOLD_DIR / "builtin.yaml")
    assert spec == dsl.builtin_spec(_shipped_cfg())
    assert dsl.config_from_spec(spec, locked_instrument().cell_width_ms) == _shipped_cfg()


def test_write_builtin_yaml_reproduces_the_file(tmp_path: Path) -> None:
    out = dsl.write_builtin_yaml(tmp_path / "builtin.yaml")
    assert out.read_text() == (GOLD_DIR / "builtin.yaml").read_text()


def test_load_spec_errors_name_file_node_and_field(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("version: 1\nname: bad\nnodes:\n  x: {type: silver_ref, field: v_add}\n"
                 "  e: {type: temporal_window, source: x, agg: ewm, alpha: 1.5}\n"
                 "  o: {type: output, source: e, name: e}\n")
    with pytest.raises(dsl.DslValidationError, match=r"bad\.yaml: node 'e': field 'alpha'"):
        dsl.load_spec(p)
    p.write_text("version: 2\nname: bad\nnodes: {}\n")
    with pytest.raises(dsl.DslValidationError, match=r"bad\.yaml: spec: field 'version'"):
        dsl.load_spec(p)
    p.write_text("nodes: [\n")
    with pytest.raises(dsl.DslValidationError, match=r"bad\.yaml: .*not valid YAML"):
        dsl.load_spec(p)
    assert GOLD_INPUTS  # the built-in inputs are silver_ref nodes of builtin.yaml
    assert all(dsl.load_spec(GOLD_DIR / "builtin.yaml").nodes[f].type == "silver_ref" for f in GOLD_INPUTS)
