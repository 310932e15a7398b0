"""Built-in gold: rolling primitives against numpy, hand-checked formulas, absolute-tick series,
masking, causality, and the stream (incremental) path against the batch path on a real day."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from qmachina_assets.core.engine import engine as eng
from qmachina_assets.core.gold import rolling
from qmachina_assets.core.gold.features import (
    GOLD_INPUTS,
    GoldFeatureConfig,
    GoldRuntime,
    compute_gold,
    state5_code,
)
from qmachina_assets.core.instrument import locked_instrument
from tests.conftest import ESH4_1225, sample

TICK = 250_000_000


def _cfg(**kw) -> GoldFeatureConfig:
    base = dict(cell_width_ms=100, c1=1.0, c2=0.5, c3=0.3, c4=1.0, c5=1.5, c6=0.5, c7=0.3,
                flow_windows=(2, 4), flow_rollup_weights=(1.0, 3.0), flow_derivative_weights=(0.55, 0.30, 0.15),
                flow_tanh_scale=3.0, flow_neutral_threshold=0.15, flow_zscore_window_bins=6,
                flow_zscore_min_periods=3)
    return GoldFeatureConfig(**{**base, **kw})


def _silver(n_bins: int, radius: int, spot_ticks, inputs: dict[str, np.ndarray] | None = None,
            valid=None, ask_sign=None, bid_sign=None):
    """Hand-built silver column dicts: inputs are (n_bins, 2R+1) arrays by name (zeros otherwise)."""
    w = 2 * radius + 1
    bins = {
        "bin_seq": np.arange(n_bins, dtype=np.int64),
        "spot_ref_price_int": np.asarray(spot_ticks, np.int64) * TICK,
        "book_valid": np.ones(n_bins, bool) if valid is None else np.asarray(valid, bool),
        "ask_reprice_sign": np.zeros(n_bins, np.int8) if ask_sign is None else np.asarray(ask_sign, np.int8),
        "bid_reprice_sign": np.zeros(n_bins, np.int8) if bid_sign is None else np.asarray(bid_sign, np.int8),
    }
    grid = {"k": np.tile(np.arange(-radius, radius + 1, dtype=np.int32), n_bins)}
    for name in GOLD_INPUTS:
        arr = (inputs or {}).get(name, np.zeros((n_bins, w)))
        grid[name] = np.asarray(arr, np.float64).reshape(-1)
    return bins, grid


# ---- rolling primitives --------------------------------------------------------------------------


@pytest.mark.parametrize("cap", [7, 64, 301])
def test_rolling_window_matches_numpy_median_mad(cap: int) -> None:
    rng = np.random.default_rng(3)
    xs = np.round(rng.standard_normal(400 + 3 * cap), 1)  # rounding forces duplicates
    xs[100:100 + cap // 2] = 0.5  # a run of ties around the median
    xs[rng.random(xs.size) < 0.15] = np.nan
    fifo = np.zeros(cap)
    srt = np.zeros(cap)
    head = length = n_sorted = 0
    for t, x in enumerate(xs):
        head, length, n_sorted = rolling.window_push(fifo, srt, head, length, n_sorted, x)
        window = xs[max(0, t - cap + 1): t + 1]
        defined = window[~np.isnan(window)]
        assert n_sorted == defined.size
        assert np.array_equal(srt[:n_sorted], np.sort(defined))
        z = rolling.robust_z(x, srt, n_sorted, 3, 1e-12)
        if np.isnan(x):
            assert np.isnan(z)
            continue
        if defined.size < 3:
            assert z == 0.0
            continue
        med = np.median(defined)
        mad = np.median(np.abs(defined - med))
        assert rolling.sorted_mad(srt, n_sorted, rolling.sorted_median(srt, n_sorted)) == mad
        s = rolling.MAD_SCALE * mad
        assert z == ((x - med) / s if s > 1e-12 else 0.0)


def test_window_mean_sums_the_last_samples() -> None:
    ring = np.array([5.0, 6.0, 7.0, 1.0, 2.0, 3.0, 4.0])  # newest at index 2 (wrapped)
    assert rolling.window_mean(ring, 2, 100, 4) == (4.0 + 5.0 + 6.0 + 7.0) / 4
    assert rolling.window_mean(ring, 2, 2, 4) == (6.0 + 7.0) / 2


# ---- formulas ------------------------------------------------------------------------------------


def test_force_block_and_composite_by_hand() -> None:
    cfg = _cfg()
    n, r = 3, 1
    v_add = np.array([[0, 2.0, 0], [0, 4.0, 0], [0, 1.0, 0]])
    v_pull = np.array([[0, 1.0, 0], [0, 0.0, 0], [0, 3.0, 0]])
    v_rest = np.array([[0, -2.0, 0], [0, 1.0, 0], [0, 0.0, 0]])
    bins, grid = _silver(n, r, [100] * n, {"v_add": v_add, "v_pull": v_pull, "v_rest_depth": v_rest})
    out = compute_gold(bins, grid, cfg, r, TICK)
    p = 1.0 * v_add + 0.5 * np.maximum(v_rest, 0)
    v = 1.0 * v_pull + 0.5 * np.maximum(-v_rest, 0)
    raw = (p - v) / (np.abs(p) + np.abs(v) + 1e-12)
    mid = lambda name: out[name].reshape(n, 2 * r + 1)[:, 1]  # noqa: E731
    assert np.allclose(mid("pressure_variant"), p[:, 1]) and np.allclose(mid("vacuum_variant"), v[:, 1])
    assert np.allclose(mid("composite_raw"), raw[:, 1])
    rho = np.array([0.25, 0.75])  # rollup weights (1, 3) normalised
    x = raw[:, 1]
    comp = [rho[0] * x[0] + rho[1] * x[0],
            rho[0] * x[:2].mean() + rho[1] * x[:2].mean(),
            rho[0] * x[1:3].mean() + rho[1] * x[:3].mean()]
    assert np.allclose(mid("composite"), comp)
    d1 = mid("composite_d1")
    assert d1[0] == 0.0  # needs two samples
    assert np.allclose(d1[1:], np.diff(comp) / 0.1)
    d2 = mid("composite_d2")
    assert d2[1] == 0.0 and np.isclose(d2[2], (d1[2] - d1[1]) / 0.1)
    assert np.all(mid("composite_d3") == 0.0)  # needs four samples
    assert np.all(np.abs(out["composite"]) <= 1.0)


def test_state5_is_symmetric_under_price_mirroring() -> None:
    for k in (-3, -1, 0, 1, 3):
        for a in (-1, 0, 1):
            for b in (-1, 0, 1):
                assert state5_code(-k, -b, -a) == -state5_code(k, a, b)
    assert state5_code(2, 1, 0) == 2  # ask up, bid flat, above spot: bull vacuum (the seed said -1)
    assert state5_code(2, 0, 1) == 2
    assert state5_code(-2, 1, 1) == 1 and state5_code(-2, -1, -1) == -2 and state5_code(2, 1, -1) == 0


def test_series_follow_absolute_ticks_across_spot_moves() -> None:
    """Inputs constant per absolute price level while the spot moves: no derivative spike (the seed's
    relative-k series jumped at every reprice, SPEC §10.7)."""
    cfg = _cfg()
    n, r = 12, 3
    spot = np.array([100, 100, 100, 101, 101, 102, 102, 102, 101, 101, 101, 101])
    level_value = {t: float(t % 5) - 2.0 for t in range(90, 110)}  # v_add per absolute tick
    v_add = np.array([[level_value[s + k] for k in range(-r, r + 1)] for s in spot])
    bins, grid = _silver(n, r, spot, {"v_add": v_add, "v_pull": np.ones_like(v_add)})
    out = compute_gold(bins, grid, cfg, r, TICK)
    d1 = out["composite_d1"].reshape(n, 2 * r + 1)
    assert np.abs(d1).max() < 1e-9
    assert np.abs(out["composite_raw"]).max() > 0.1  # the feature itself is not trivial


def test_invalid_bins_are_masked_and_break_series() -> None:
    cfg = _cfg()
    n, r = 6, 1
    rng = np.random.default_rng(0)
    v_add = rng.random((n, 3))
    bins, grid = _silver(n, r, [100] * n, {"v_add": v_add, "v_pull": rng.random((n, 3))},
                         valid=[1, 1, 1, 0, 1, 1])
    out = compute_gold(bins, grid, cfg, r, TICK)
    rows = lambda name: out[name].reshape(n, 3)  # noqa: E731
    assert not out["gold_valid"].reshape(n, 3)[3].any()
    for name in ("pressure_variant", "composite", "flow_score"):
        assert np.all(rows(name)[3] == 0.0)
    assert np.all(rows("composite_d1")[4] == 0.0)  # the series restarted after the invalid bin
    assert np.all(rows("composite_d1")[5] != 0.0)


def test_batch_equals_step_with_moves_gaps_and_invalid_bins() -> None:
    """The slot-major parallel batch (`GoldRuntime.batch`) against the bin-by-bin stream order on a day
    with spot jumps beyond the radius, a bin_seq gap and invalid bins, chunked differently, with the
    state handed between the two in the middle."""
    cfg = _cfg(flow_zscore_window_bins=9, flow_zscore_min_periods=4)
    n, r = 400, 4
    rng = np.random.default_rng(7)
    spot = 1000 + np.cumsum(rng.choice([-12, -1, 0, 0, 0, 0, 1, 2], n))
    inputs = {name: np.round(rng.standard_normal((n, 2 * r + 1)), 1) for name in GOLD_INPUTS}
    valid = rng.random(n) > 0.05
    bins, grid = _silver(n, r, spot, inputs, valid=valid, ask_sign=rng.integers(-1, 2, n),
                         bid_sign=rng.integers(-1, 2, n))
    bins["bin_seq"][250:] += 3  # a gap
    w = 2 * r + 1
    stream = GoldRuntime(cfg, r, TICK).step(bins, grid)
    rt = GoldRuntime(cfg, r, TICK)
    edges = [0, 1, 60, 200, 201, 330, n]
    parts = [(rt.batch if i % 2 == 0 else rt.step)(*_slice(bins, grid, b0, b1, w))
             for i, (b0, b1) in enumerate(itertools.pairwise(edges))]
    for name, col in stream.items():
        assert np.array_equal(np.concatenate([p[name] for p in parts]), col), name
    assert (stream["composite_d3"] != 0).any() and (stream["flow_score"] != 0).any()


def test_config_from_instrument_and_validation() -> None:
    inst = locked_instrument()
    cfg = GoldFeatureConfig.from_instrument(inst)
    assert cfg.c5 == inst.c5 and cfg.flow_windows == tuple(inst.flow_windows)
    assert cfg.config_hash == GoldFeatureConfig.from_instrument(inst).config_hash
    assert cfg.config_hash != GoldFeatureConfig.from_instrument(inst, c1=2.0).config_hash
    with pytest.raises(ValidationError, match="flow_rollup_weights"):
        _cfg(flow_rollup_weights=(1.0,))
    with pytest.raises(ValidationError, match="flow_zscore_min_periods"):
        _cfg(flow_zscore_min_periods=10)


# ---- a real day ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_day():
    inst = locked_instrument()
    bins_t, grid_t = eng.run_file(sample(ESH4_1225), inst)
    bins = {c: bins_t[c].to_numpy() for c in bins_t.column_names}
    grid = {c: grid_t[c].to_numpy() for c in grid_t.column_names}
    cfg = GoldFeatureConfig.from_instrument(inst)
    return inst, cfg, bins, grid, compute_gold(bins, grid, cfg, inst.grid_radius_ticks, inst.tick_int)


def _slice(bins, grid, b0: int, b1: int, w: int):
    return ({c: v[b0:b1] for c, v in bins.items()}, {c: v[b0 * w: b1 * w] for c, v in grid.items()})


def test_stream_equals_batch_on_a_full_day(real_day) -> None:
    inst, cfg, bins, grid, batch = real_day
    r = inst.grid_radius_ticks
    w = 2 * r + 1
    assert len(bins["bin_seq"]) > 50_000
    rt = GoldRuntime(cfg, r, inst.tick_int)
    rng = np.random.default_rng(11)
    edges = np.unique(np.r_[0, rng.integers(1, len(bins["bin_seq"]), 40), len(bins["bin_seq"])])
    parts = [rt.step(*_slice(bins, grid, b0, b1, w)) for b0, b1 in itertools.pairwise(edges)]
    for name, col in batch.items():
        stream = np.concatenate([p[name] for p in parts])
        assert np.array_equal(stream, col), name  # the same kernel: bit-identical, not just 1e-9
    assert (batch["flow_state_code"] != 0).any() and (batch["composite_d3"] != 0).any()
    assert np.isfinite(batch["flow_score"]).all() and np.abs(batch["flow_score"]).max() <= 1.0


def test_gold_is_causal(real_day) -> None:
    inst, cfg, bins, grid, _ = real_day
    r = inst.grid_radius_ticks
    w = 2 * r + 1
    b0, cut, b1 = 20_000, 23_000, 26_000
    sb, sg = _slice(bins, grid, b0, b1, w)
    future = {c: v.copy() for c, v in sg.items()}
    rows = slice((cut - b0) * w, None)
    rng = np.random.default_rng(5)
    for name in GOLD_INPUTS:
        future[name][rows] = rng.standard_normal(future[name][rows].shape) * 10
    sb_future = {c: v.copy() for c, v in sb.items()}
    sb_future["spot_ref_price_int"][cut - b0:] += 3 * inst.tick_int
    a = compute_gold(sb, sg, cfg, r, inst.tick_int)
    b = compute_gold(sb_future, future, cfg, r, inst.tick_int)
    past = slice(0, (cut - b0) * w)
    for name in a:
        assert np.array_equal(a[name][past], b[name][past]), name
    assert not np.array_equal(a["composite"][rows], b["composite"][rows])
