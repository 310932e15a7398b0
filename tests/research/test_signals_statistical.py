"""Shared signal helpers (common.py) against plain numpy/pandas references, and the statistical signals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qmachina_assets.core.research.signals import common, statistical
from qmachina_assets.core.research.signals.base import REGISTRY, GridData

# ------------------------------------------------------------------------------------ common helpers


def _series(n=700, seed=0, nan_frac=0.05):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).cumsum() * 0.1 + rng.normal(size=n)
    x[rng.random(n) < nan_frac] = np.nan
    x[100:140] = 1.5  # a constant stretch: MAD 0
    day = np.zeros(n, dtype=np.int64)
    day[n // 2:] = 1
    return x, day


def _per_day(ref, x, day):
    return np.concatenate([ref(x[day == d]) for d in np.unique(day)])


def _ref_slope(x, w):
    xs = np.arange(w, dtype=float)
    out = np.full(x.shape[0], np.nan)
    for i in range(w - 1, x.shape[0]):
        y = x[i - w + 1: i + 1]
        if np.isfinite(y).all():
            out[i] = np.polyfit(xs, y, 1)[0]
    return out


def _ref_robust_z(x, window, min_periods, eps=1e-12):
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        v = x[max(0, i - window + 1): i + 1]
        v = v[~np.isnan(v)]
        if np.isnan(x[i]):
            out[i] = np.nan
        elif v.size < min_periods:
            out[i] = 0.0
        else:
            med = np.median(v)
            s = 1.4826 * np.median(np.abs(v - med))
            out[i] = (x[i] - med) / s if s > eps else 0.0
    return out


def test_rolling_ols_slope_matches_polyfit_per_day():
    x, day = _series()
    for w in (2, 10, 25):
        got = common.rolling_ols_slope(x, w, day=day)
        want = _per_day(lambda s, w=w: _ref_slope(s, w), x, day)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)
        assert np.isnan(got[350: 350 + w - 1]).all()  # restarts at the day boundary
    np.testing.assert_allclose(common.rolling_ols_slope(x, 10), _ref_slope(x, 10), rtol=1e-9, atol=1e-12,
                               equal_nan=True)
    np.testing.assert_allclose(common.rolling_ols_slope(np.arange(20.0) * 3, 5)[4:], 3.0)


def test_rolling_robust_z_matches_numpy_per_day_and_2d():
    x, day = _series()
    got = common.rolling_robust_z(x, 60, 20, day=day)
    want = _per_day(lambda s: _ref_robust_z(s, 60, 20), x, day)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert (got[350:369][~np.isnan(x[350:369])] == 0).all()  # warming up again after the boundary
    x2 = np.column_stack([x, x[::-1]])
    got2 = common.rolling_robust_z(x2, 60, 20)
    np.testing.assert_allclose(got2[:, 1], _ref_robust_z(x[::-1], 60, 20), rtol=1e-12, atol=1e-12, equal_nan=True)
    with pytest.raises(ValueError):
        common.rolling_robust_z(x, 10, 11)


def test_ema_matches_pandas_per_day():
    x, day = _series()
    x[:3] = np.nan
    for alpha in (0.05, 0.5, 1.0):
        got = common.ema(x, alpha, day=day)
        want = pd.Series(x).groupby(day).transform(
            lambda s, a=alpha: s.ewm(alpha=a, adjust=False, ignore_na=True).mean()).to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    assert common.span_alpha(5) == pytest.approx(1 / 3)


def test_reset_by_day_and_day_starts():
    x, day = _series(nan_frac=0)
    got = common.reset_by_day(lambda s: pd.Series(s).rolling(5).mean().to_numpy(), x, day)
    assert np.isnan(got[350:354]).all() and np.isfinite(got[354])
    assert common.day_starts(day, 700).tolist() == [0, 350, 700]
    assert common.day_starts(None, 7).tolist() == [0, 7]
    assert common.ms_to_bins(1000, 100) == 10 and common.ms_to_bins(50, 100, 2) == 2
    assert common.ms_to_bins(250, 100) == 3


def test_bands_sides_and_asymmetry():
    r = 5
    assert common.band_columns(r, "bid", 1, 3).tolist() == [4, 3, 2]
    assert common.band_columns(r, "ask", 1, 3).tolist() == [6, 7, 8]
    assert common.band_columns(50, "bid", *common.BANDS["inner"]).tolist() == [49, 48, 47]  # SPEC §6.6
    assert sorted(common.band_columns(50, "ask", *common.BANDS["outer"]).tolist()) == list(range(62, 74))
    with pytest.raises(ValueError):
        common.band_columns(r, "ask", 1, 6)
    rng = np.random.default_rng(1)
    g = rng.normal(size=(30, 2 * r + 1))
    ks = np.arange(-r, r + 1)
    np.testing.assert_allclose(common.side_sum(g, -3, -1), g[:, (ks >= -3) & (ks <= -1)].sum(1))
    w = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(common.side_sum(g, 1, 3, w), g[:, 6] + 2 * g[:, 7] + 3 * g[:, 8])
    wd = common.distance_weights(1, 3)
    bid, ask = common.side_pair(g, 1, 3, wd)
    np.testing.assert_allclose(bid, g[:, 4] * wd[0] + g[:, 3] * wd[1] + g[:, 2] * wd[2])
    np.testing.assert_allclose(ask, g[:, 6] * wd[0] + g[:, 7] * wd[1] + g[:, 8] * wd[2])
    np.testing.assert_allclose(common.asymmetry(g, 1, 3, "add"), g[:, 2:5].sum(1) - g[:, 6:9].sum(1))
    np.testing.assert_allclose(common.asymmetry(g, 1, 3, "pull", mean=True), (g[:, 6:9].sum(1) - g[:, 2:5].sum(1)) / 3)
    vec = common.asymmetry_vector(r, 1, 2, "add", mean=True) + common.asymmetry_vector(r, 3, 5, "pull", wd)
    np.testing.assert_allclose(common.project(g, vec), common.asymmetry(g, 1, 2, "add", mean=True)
                               + common.asymmetry(g, 3, 5, "pull", wd))
    np.testing.assert_allclose(common.project(g, np.column_stack([vec, 2 * vec])), np.column_stack(
        [g @ vec, 2 * (g @ vec)]))
    more_bid_add = np.zeros((1, 2 * r + 1))
    more_bid_add[0, r - 1] = 5.0
    assert common.asymmetry(more_bid_add, 1, 2, "add")[0] > 0  # support below the spot: bullish
    assert common.asymmetry(more_bid_add, 1, 2, "pull")[0] < 0  # liquidity leaving below: bearish


def test_rolling_robust_z_std_fallback_where_mad_is_zero():
    rng = np.random.default_rng(3)
    x = np.where(rng.random(400) < 0.2, rng.normal(size=400), 0.0)  # sparse: MAD 0 on most windows
    day = np.repeat([0, 1], 200)
    got = common.rolling_robust_z(x, 50, 10, day=day, std_fallback=True)
    plain = common.rolling_robust_z(x, 50, 10, day=day)

    def ref(s):
        out = _ref_robust_z(s, 50, 10)
        for i in range(s.shape[0]):
            v = s[max(0, i - 49): i + 1]
            med = np.median(v)
            if v.size >= 10 and np.median(np.abs(v - med)) == 0 and v.std() > 1e-12:
                out[i] = (s[i] - v.mean()) / v.std()
        return out

    np.testing.assert_allclose(got, _per_day(ref, x, day), rtol=1e-9, atol=1e-12)
    assert (got != 0).sum() > (plain != 0).sum()


# ------------------------------------------------------------------------------------------- signals

R = 50
N = 3000
STAT = sorted(n for n, c in REGISTRY.items() if c.kind == "statistical")
#: params of signals that have required ones (the generic tests below use these, defaults for the rest)
REQUIRED_PARAMS = {"gold_column": {"column": "flow_score", "k": 1}}


def _make(name, **params):
    return REGISTRY[name]({**REQUIRED_PARAMS.get(name, {}), **params})
#: signals whose score flips sign when the book is mirrored (k -> -k, directional codes negated)
DIRECTIONAL = ("ads", "ads_pfp_svac", "derivative", "erd", "iirc", "jad", "msd", "pfp", "spg")
CODE_DOMAIN = {"state5_code": (-2, 2), "flow_state_code": (-1, 1), "microstate_id": (0, 8)}


def _random_column(name, shape, rng):
    if name in CODE_DOMAIN:
        lo, hi = CODE_DOMAIN[name]
        return rng.integers(lo, hi + 1, size=shape).astype(np.float64)
    if name == "flow_score":
        return rng.uniform(-1, 1, size=shape)
    if name.startswith(("v_", "pressure", "vacuum")):
        return rng.exponential(size=shape)
    return rng.normal(size=shape)


def _empty(n=N, radius=R, n_days=2):
    day = np.repeat(np.arange(n_days), -(-n // n_days))[:n].astype(np.int64)
    mid = np.full(n, 5000.0)
    return GridData(ts_ns=np.arange(n, dtype=np.int64) * 100_000_000, mid=mid, best_bid=mid - 0.125,
                    best_ask=mid + 0.125, valid=np.ones(n, dtype=bool), day=day, radius=radius,
                    cell_width_ms=100, columns={})


def _random_data(seed=0, n=N):
    rng = np.random.default_rng(seed)
    d = _empty(n)
    names = {c for s in STAT for c in _make(s).columns}
    d.columns = {c: _random_column(c, (n, 2 * R + 1), rng) for c in sorted(names)}
    d.valid[rng.choice(n, 30, replace=False)] = False
    for g in d.columns.values():
        g[~d.valid] = 0.0
    return d


@pytest.fixture(scope="module")
def data():
    return _random_data()


def test_registry_has_the_statistical_signals():
    assert sorted(statistical.STATISTICAL_SIGNALS) == STAT
    for name in STAT:
        sig = _make(name)
        assert all(t > 0 for t in sig.default_thresholds)
        with pytest.raises(ValueError):
            _make(name, no_such_param=1)


@pytest.mark.parametrize("name", STAT)
def test_score_is_causal(name, data):
    sig = _make(name)
    base = sig.score(data)
    assert base.shape == (N,) and base.dtype == np.float64
    warm = data.valid & (np.arange(N) % 1500 >= 10)  # pfp has no value for its first lag bins of a day
    assert np.isnan(base[~data.valid]).all() and np.isfinite(base[warm]).all()
    rng = np.random.default_rng(7)
    for t in (400, 1499, 2200):
        cols = dict(data.columns)
        for c in sig.columns:
            g = cols[c].copy()
            g[t + 1:] = _random_column(c, g[t + 1:].shape, rng)
            cols[c] = g
        valid = data.valid.copy()
        valid[t + 1:] = rng.random(N - t - 1) < 0.9
        pert = GridData(data.ts_ns, data.mid, data.best_bid, data.best_ask, valid, data.day, R, 100, cols)
        got = sig.score(pert)
        np.testing.assert_allclose(got[:t + 1], base[:t + 1], rtol=1e-12, atol=1e-12, equal_nan=True)
        assert not np.allclose(got[t + 1:], base[t + 1:], equal_nan=True)  # the future did change


def _mirror(d):
    cols = {}
    for c, g in d.columns.items():
        g = g[:, ::-1].copy()
        cols[c] = -g if c == "state5_code" else g  # a directional label negates; liquidity just moves
    return GridData(d.ts_ns, d.mid, d.best_bid, d.best_ask, d.valid, d.day, d.radius, d.cell_width_ms, cols)


@pytest.mark.parametrize("name", DIRECTIONAL)
def test_mirrored_book_negates_the_score(name, data):
    sig = _make(name)
    s = sig.score(data)
    assert np.nanstd(s) > 0
    np.testing.assert_allclose(sig.score(_mirror(data)), -s, rtol=1e-7, atol=1e-9, equal_nan=True)


def test_scores_reset_at_day_boundary(data):
    """Day 1 scored alone equals day 1 scored after day 0: no state crosses the boundary."""
    day1 = data.slice(1500, N)
    for name in STAT:
        sig = _make(name)
        np.testing.assert_allclose(sig.score(data)[1500:], sig.score(day1), rtol=1e-9, atol=1e-12,
                                   equal_nan=True, err_msg=name)


def test_any_radius_works():
    d = _random_data(n=600)
    small = GridData(d.ts_ns, d.mid, d.best_bid, d.best_ask, d.valid, d.day, 30, 100,
                     {c: g[:, 20:81] for c, g in d.columns.items()})
    for name in STAT:
        assert np.isfinite(_make(name).score(small)[small.valid & (np.arange(600) % 300 >= 10)]).all()
    with pytest.raises(ValueError):
        statistical.Spg().score(GridData(d.ts_ns, d.mid, d.best_bid, d.best_ask, d.valid, d.day, 10, 100,
                                         {c: g[:, 40:61] for c, g in d.columns.items()}))


# ------------------------------------------------------------------------------------ no adaptive thresholds


@pytest.mark.parametrize("name", STAT)
def test_fit_learns_no_thresholds(name, data):
    """Thresholds are the sweep's pre-registered axis: a statistical signal offers no fitted thresholds and
    fitting it does not change its scores (issue 14 item 7: the adaptive ones had no caller)."""
    sig = _make(name)
    assert not hasattr(sig, "thresholds") and not hasattr(sig, "adaptive_thresholds")
    before = _make(name).score(data)
    np.testing.assert_array_equal(sig.fit(data.slice(0, 1500)).score(data), before)


# ------------------------------------------------------------------------------- hand-built sign tests


def _flat(names, n=800, value=1.0, radius=R):
    d = _empty(n, radius, n_days=1)
    d.columns = {c: np.full((n, 2 * radius + 1), value) for c in names}
    return d


def test_ads_more_add_on_the_bid_is_positive():
    rng = np.random.default_rng(0)
    d = _flat(("v_add", "v_pull"))
    d.columns["v_add"] += 0.01 * rng.normal(size=d.columns["v_add"].shape)
    ramp = np.clip(np.arange(800) - 500, 0, None) * 0.05
    d.columns["v_add"][:, R - 3: R] += ramp[:, None]  # inner bid adds start growing at bin 500
    s = statistical.Ads().score(d)
    assert (s[520:560] > 0.2).all()
    mirrored = _mirror(d)
    assert (statistical.Ads().score(mirrored)[520:560] < -0.2).all()


def _pulses(n, every, start, width=1):
    p = np.zeros(n)
    for t in range(start, n, every):
        p[t:t + width] = 5.0
    return p


def test_pfp_inner_leading_outer_on_the_bid_is_positive():
    n, lag = 800, 5
    d = _flat(("v_add", "v_pull", "v_fill"), n=n)
    d.columns["v_fill"][:] = 0.0
    inner = _pulses(n, 37, 10)
    outer = _pulses(n, 37, 10 + lag)  # the bid front reaches the outer zone `lag` bins later
    d.columns["v_add"][:, R - 3: R] += inner[:, None]
    d.columns["v_add"][:, R - 12: R - 4] += outer[:, None]
    s = statistical.Pfp({"lag_bins": lag}).score(d)
    assert np.isnan(s[:lag]).all() and s[100:].mean() > 0.2 and (s[100:] > 0).mean() > 0.8
    seed = statistical.Pfp({"lag_bins": lag, "pairing": "outer_leads"}).score(d)
    assert abs(seed[100:].mean()) < 0.1 * s[100:].mean()  # the seed's pairing does not see an inner-led front


def test_derivative_bbo_up_move_is_positive():
    n = 1000
    rng = np.random.default_rng(5)
    d = _flat(("state5_code", "microstate_id"), n=n, value=0.0)
    direction = rng.choice([-1, 0, 1], size=n, p=[0.05, 0.9, 0.05])
    k = np.arange(-R, R + 1)
    # symmetric gold state5: up move -> +2 above, +1 below; down -> -1 above, -2 below; k = 0 mixed
    d.columns["state5_code"] = np.where(direction[:, None] > 0, np.where(k > 0, 2, 1),
                                        np.where(direction[:, None] < 0, np.where(k > 0, -1, -2), 0))
    d.columns["state5_code"][:, R] = 0
    d.columns["state5_code"] = d.columns["state5_code"].astype(np.float64)
    s = statistical.Derivative().score(d)
    up_from_flat = np.flatnonzero((direction[1:] > 0) & (direction[:-1] == 0)) + 1
    up_from_flat = up_from_flat[up_from_flat >= 60]
    assert up_from_flat.size > 20 and (s[up_from_flat] > 0).all()
    assert (statistical.Derivative({"zscore_fallback": "none"}).score(d)[60:] == 0).mean() > 0.5  # MAD 0
    diag = statistical.Derivative().diagnostics(d)
    assert sum(diag["state5_distribution"].values()) == n and diag["micro9_distribution"]["0"] == n


def test_erd_entropy_spike_with_support_below_is_positive():
    n = 600
    rng = np.random.default_rng(2)
    d = _flat(("flow_state_code", "flow_score"), n=n, value=0.0)
    codes = d.columns["flow_state_code"]
    for i in range(n):
        codes[i, rng.choice(2 * R + 1, rng.integers(0, 8), replace=False)] = 1.0  # a little disorder
    codes[400, ::2] = -1.0  # entropy spike
    codes[400, 1::4] = 1.0
    d.columns["flow_score"][:, :R] = 0.5  # pressure building below the spot
    s = statistical.Erd().score(d)
    assert s[400] > 0.5 and np.abs(s[:400]).max() < s[400]
    assert statistical.Erd({"variant": "b"}).score(d)[400] != 0


def test_iirc_rising_bid_add_ratio_is_positive():
    n = 300
    d = _flat(("v_add", "v_pull", "v_fill"), n=n)
    d.columns["v_add"][:, R - 16: R] += 0.02 * np.arange(n)[:, None]
    s = statistical.Iirc().score(d)
    assert (s[:29] == 0).all() and (s[100:] > 0).all()
    assert (statistical.Iirc().score(_mirror(d))[100:] < 0).all()


def test_jad_bid_add_acceleration_burst_is_positive():
    n = 700
    rng = np.random.default_rng(4)
    d = _flat(("j_add", "j_pull", "a_add", "a_pull"), n=n, value=0.0)
    for g in d.columns.values():
        g += 0.1 * rng.normal(size=g.shape)
    d.columns["a_add"][600, R - 3: R] += 20.0
    d.columns["j_add"][600, R - 3: R] += 20.0
    s = statistical.Jad().score(d)
    assert s[600] > 0.5


def test_msd_vacuum_above_is_positive_and_variants_weigh_distance():
    d = _flat(("vacuum_variant",), n=50, value=0.0)
    d.columns["vacuum_variant"][:, R + 1] = 1.0  # vacuum just above
    d.columns["vacuum_variant"][:, R - 10] = 5.0  # more vacuum, far below
    np.testing.assert_allclose(statistical.Msd().score(d), 1.0 - 0.5)
    np.testing.assert_allclose(statistical.Msd({"variant": "sum"}).score(d), 1.0 - 5.0)


def test_ads_pfp_svac_vacuum_above_is_positive():
    d = _flat(("v_add", "v_pull", "v_fill", "vacuum_variant"), n=400)
    d.columns["vacuum_variant"][:, :R + 1] = 0.0  # vacuum only above the spot
    s = statistical.AdsPfpSvac().score(d)
    assert (s > 0).all()


def test_spg_wall_above_is_bearish_vacuum_above_bullish():
    n = 100
    k = np.arange(-R, R + 1, dtype=np.float64)
    d = _flat(("pressure_variant", "vacuum_variant"), n=n, value=0.0)
    d.columns["pressure_variant"][:] = np.clip(k, 0, None)  # pressure rising away above: a wall
    assert (statistical.Spg().score(d) < 0).all()
    d.columns["pressure_variant"][:] = 0.0
    d.columns["vacuum_variant"][:] = np.clip(k, 0, None)  # vacuum opening up above
    assert (statistical.Spg().score(d) > 0).all()
    sym = _flat(("pressure_variant", "vacuum_variant"), n=n, value=0.0)
    sym.columns["pressure_variant"][:] = np.abs(k)
    np.testing.assert_allclose(statistical.Spg().score(sym), 0.0, atol=1e-12)  # symmetric book: no view
    assert (statistical.Spg({"form": "seed"}).score(sym) > 0).all()  # the seed's bias


def test_flow_score_reads_the_gold_column_at_k():
    d = _flat(("flow_score",), n=20, value=0.0)
    d.columns["flow_score"][:, R] = np.linspace(-1, 1, 20)
    d.columns["flow_score"][:, R + 2] = 0.3
    d.valid[5] = False
    s = statistical.FlowScore().score(d)
    assert np.isnan(s[5]) and np.allclose(np.delete(s, 5), np.delete(np.linspace(-1, 1, 20), 5))
    assert np.allclose(statistical.FlowScore({"k": 2}).score(d)[6:], 0.3)
    with pytest.raises(ValueError):
        statistical.FlowScore({"k": 51}).score(d)


def test_gold_column_reads_a_named_column_at_k():
    """gold_column thresholds any gold column of the data (a Gold DSL output is just another column): its
    `columns` are its params'; an unknown column fails naming it and the data's columns."""
    d = _flat(("flow_score",), n=20, value=0.0)
    d.columns["book_depth_imbalance_z"] = np.zeros((20, 2 * R + 1))
    d.columns["book_depth_imbalance_z"][:, R] = np.linspace(-3, 3, 20)
    d.columns["book_depth_imbalance_z"][:, R - 4] = 0.7
    d.valid[5] = False
    sig = statistical.GoldColumn({"column": "book_depth_imbalance_z"})
    assert sig.columns == ("book_depth_imbalance_z",) and statistical.FlowScore.columns == ("flow_score",)
    s = sig.score(d)
    assert np.isnan(s[5]) and np.array_equal(np.delete(s, 5), np.delete(np.linspace(-3, 3, 20), 5))
    assert np.allclose(statistical.GoldColumn({"column": "book_depth_imbalance_z", "k": -4}).score(d)[6:], 0.7)
    neg = statistical.GoldColumn({"column": "book_depth_imbalance_z", "sign": -1}).score(d)
    assert np.array_equal(neg, -s, equal_nan=True)
    d.columns["flow_score"][:, R] = np.linspace(-1, 1, 20)  # a built-in column: flow_score's own value
    assert np.array_equal(statistical.GoldColumn({"column": "flow_score"}).score(d), statistical.FlowScore().score(d),
                          equal_nan=True)
    with pytest.raises(ValueError, match=r"column 'no_such_output' is not in the data \(it has: "
                                         r"book_depth_imbalance_z, flow_score\)"):
        statistical.GoldColumn({"column": "no_such_output"}).score(d)
    with pytest.raises(ValueError, match="k=51 outside"):
        statistical.GoldColumn({"column": "flow_score", "k": 51}).score(d)
    for bad in ({}, {"column": "x", "sign": 2}, {"column": "not a name"}, {"column": "x", "typo": 1}):
        with pytest.raises(ValueError):
            statistical.GoldColumn(bad)
