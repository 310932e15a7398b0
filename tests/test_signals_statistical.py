"""Shared signal helpers (common.py) against plain numpy/pandas references, and the statistical signals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qmachina_assets.core.signals import common

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
    more_bid_add = np.zeros((1, 2 * r + 1))
    more_bid_add[0, r - 1] = 5.0
    assert common.asymmetry(more_bid_add, 1, 2, "add")[0] > 0  # support below the spot: bullish
    assert common.asymmetry(more_bid_add, 1, 2, "pull")[0] < 0  # liquidity leaving below: bearish


def test_percentile_thresholds():
    v = np.array([-4.0, 1.0, 2.0, 3.0, np.nan, 0.0])
    assert common.percentile_thresholds(v, [50, 100]) == (2.0, 4.0)
    assert common.percentile_thresholds(np.zeros(5), [50]) == ()
