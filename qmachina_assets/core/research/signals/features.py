"""Causal feature matrices of the six ML signals (SPEC §6.8), vectorised over bins (numpy / numba).

Every builder returns `(X, names)`: X is float64 (n_bins, n_features) and row i uses bins <= i only.
All rolling state restarts at each day boundary (`GridData.day`), so a day's rows are the same whether
that day is scored alone or after other days. A row holds NaN until every one of its rolling windows is
full within the day (the warm-up); ML signals score only rows that are finite everywhere.

Grid columns: the six silver velocity/acceleration/jerk add/pull columns, the gold `pressure_variant`
(P) and `vacuum_variant` (V), and gold `flow_score`. Bands and asymmetries come from `common` (bands by
distance k from the spot, "add" = bid − ask, "pull" = ask − bid: positive = bullish). "P−V at every 10th
column" of the ±50 grid is k = −50, −40, …, 50; on another radius the same number of columns is spread
evenly over ±R.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from qmachina_assets.core.research.signals import common
from qmachina_assets.core.research.signals.base import GridData

#: The six derivative columns whose band asymmetries feed most ML signals, with their asymmetry kind.
ASYM_COLUMNS: tuple[tuple[str, str], ...] = (
    ("v_add", "add"), ("v_pull", "pull"), ("a_add", "add"), ("a_pull", "pull"), ("j_add", "add"), ("j_pull", "pull"),
)
P_COL = "pressure_variant"
V_COL = "vacuum_variant"
FLOW_COL = "flow_score"


# ------------------------------------------------------------------------------------------ kernels


@njit(cache=True)
def _rolling_moments_kernel(x, starts, w, out):
    """out[i, c, :] = (mean, std ddof 1, skew) of x[i-w+1 .. i, c] within a day segment; NaN until the
    window is full or when it holds a NaN. Skew is the biased sample skewness (0 for a constant window)."""
    m = x.shape[1]
    for c in range(m):
        for s in range(starts.shape[0] - 1):
            a = starts[s]
            b = starts[s + 1]
            for i in range(a, b):
                if i - a < w - 1:
                    out[i, c, 0] = np.nan
                    out[i, c, 1] = np.nan
                    out[i, c, 2] = np.nan
                    continue
                tot = 0.0
                for j in range(i - w + 1, i + 1):
                    tot += x[j, c]
                mu = tot / w
                m2 = 0.0
                m3 = 0.0
                for j in range(i - w + 1, i + 1):
                    d = x[j, c] - mu
                    m2 += d * d
                    m3 += d * d * d
                out[i, c, 0] = mu
                if w > 1:
                    out[i, c, 1] = np.sqrt(m2 / (w - 1))
                else:
                    out[i, c, 1] = 0.0
                pop = m2 / w
                if pop > 1e-24:
                    out[i, c, 2] = (m3 / w) / pop ** 1.5
                elif np.isnan(pop):
                    out[i, c, 2] = np.nan
                else:
                    out[i, c, 2] = 0.0


@njit(cache=True)
def _returns_kernel(mid, valid, starts, out):
    """Per-bin change of the last valid mid within the day (0 at the day's first valid bin and on bins
    before it); invalid bins carry the last valid mid forward (change 0)."""
    for s in range(starts.shape[0] - 1):
        last = np.nan
        for i in range(starts[s], starts[s + 1]):
            if valid[i]:
                out[i] = 0.0 if np.isnan(last) else mid[i] - last
                last = mid[i]
            else:
                out[i] = 0.0


# ------------------------------------------------------------------------------------------ helpers


def valid_mask(data: GridData) -> np.ndarray:
    """Bins that can be scored or traded: the book is valid and the mid finite and > 0."""
    mid = np.asarray(data.mid, dtype=np.float64)
    return np.asarray(data.valid, dtype=bool) & np.isfinite(mid) & (mid > 0)


def returns_ticks(data: GridData, tick_size: float) -> np.ndarray:
    """Per-bin mid change in ticks, causal and reset at each day (see `_returns_kernel`)."""
    out = np.empty(data.n_bins, dtype=np.float64)
    _returns_kernel(np.asarray(data.mid, dtype=np.float64), valid_mask(data),
                    common.day_starts(data.day, data.n_bins), out)
    return out / tick_size


def rolling_moments(x: np.ndarray, w: int, day: np.ndarray | None = None) -> np.ndarray:
    """(n, m, 3) rolling mean / std (ddof 1) / skew of each column of x over the last w bins of the day."""
    x2 = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1))
    if w < 1:
        raise ValueError(f"rolling window must be >= 1, got {w}")
    out = np.empty((x2.shape[0], x2.shape[1], 3))
    _rolling_moments_kernel(x2, common.day_starts(day, x2.shape[0]), int(w), out)
    return out


def spread_columns(radius: int, n: int) -> np.ndarray:
    """n column indices spread evenly over k = −R..R (±50 grid, n = 11 → every 10th column)."""
    return np.round(np.linspace(0, 2 * radius, n)).astype(np.int64)


def band_asymmetries(data: GridData) -> tuple[np.ndarray, list[str]]:
    """18 band-mean asymmetries: the six derivative columns × inner/mid/outer bands (SPEC §6.6)."""
    cols, names = [], []
    for col, kind in ASYM_COLUMNS:
        grid = data.grid(col)
        for band, (lo, hi) in common.BANDS.items():
            cols.append(common.asymmetry(grid, lo, hi, kind, mean=True))
            names.append(f"asym_{col}_{band}")
    return np.column_stack(cols), names


def combined_band_asymmetry(data: GridData) -> tuple[np.ndarray, list[str]]:
    """Per band, v_add asymmetry + v_pull asymmetry (band means): (n, 3)."""
    add, pull = data.grid("v_add"), data.grid("v_pull")
    cols, names = [], []
    for band, (lo, hi) in common.BANDS.items():
        cols.append(common.asymmetry(add, lo, hi, "add", mean=True) + common.asymmetry(pull, lo, hi, "pull", mean=True))
        names.append(f"combined_asym_{band}")
    return np.column_stack(cols), names


def p_minus_v(data: GridData) -> np.ndarray:
    return data.grid(P_COL) - data.grid(V_COL)


def _moments(x: np.ndarray, label: str, windows: Sequence[int], day: np.ndarray, which: Sequence[str]
             ) -> tuple[list[np.ndarray], list[str]]:
    idx = {"mean": 0, "std": 1, "skew": 2}
    x2 = x.reshape(x.shape[0], -1)
    cols, names = [], []
    for w in windows:
        mom = rolling_moments(x2, w, day)
        for c in range(x2.shape[1]):
            for stat in which:
                cols.append(mom[:, c, idx[stat]])
                names.append(f"{label}{'' if x2.shape[1] == 1 else f'[{c}]'}_{stat}{w}")
    return cols, names


def _stack(cols: list[np.ndarray], names: list[str]) -> tuple[np.ndarray, list[str]]:
    return np.ascontiguousarray(np.column_stack(cols), dtype=np.float64), names


# ------------------------------------------------------------------------------------ the builders


def gbm_mf_features(data: GridData, tick_size: float, slope_window: int = 50) -> tuple[np.ndarray, list[str]]:
    """53: 18 band asymmetries, their OLS slopes (50), P−V at k = 0 with rolling mean/std (50, 300), tick
    returns' rolling mean/std/skew (50, 200, 600), spread proxy P[k=+1] − P[k=−1] with rolling mean/std (200)."""
    day = data.day
    asym, names = band_asymmetries(data)
    cols = [asym[:, j] for j in range(asym.shape[1])]
    slopes = common.rolling_ols_slope(asym, slope_window, day=day)
    cols += [slopes[:, j] for j in range(slopes.shape[1])]
    names = names + [f"slope{slope_window}_{n}" for n in names]
    pv0 = p_minus_v(data)[:, data.k_index(0)]
    cols.append(pv0)
    names.append("pv_k0")
    c, n = _moments(pv0, "pv_k0", (50, 300), day, ("mean", "std"))
    cols += c
    names += n
    c, n = _moments(returns_ticks(data, tick_size), "ret", (50, 200, 600), day, ("mean", "std", "skew"))
    cols += c
    names += n
    p = data.grid(P_COL)
    spread = p[:, data.k_index(1)] - p[:, data.k_index(-1)]
    cols.append(spread)
    names.append("p_spread")
    c, n = _moments(spread, "p_spread", (200,), day, ("mean", "std"))
    return _stack(cols + c, names + n)


def knn_cl_features(data: GridData, tick_size: float) -> tuple[np.ndarray, list[str]]:
    """35: 18 band asymmetries, OLS slopes (10, 50, 200) of the combined v_add/v_pull asymmetry (summed
    over the bands), P−V at 11 evenly spaced columns (every 10th of ±50), trailing mean returns (20, 100, 600)."""
    day = data.day
    asym, names = band_asymmetries(data)
    cols = [asym[:, j] for j in range(asym.shape[1])]
    combined = combined_band_asymmetry(data)[0].sum(axis=1)
    for w in (10, 50, 200):
        cols.append(common.rolling_ols_slope(combined, w, day=day))
        names.append(f"slope{w}_combined_asym")
    pv = p_minus_v(data)
    for j in spread_columns(data.radius, 11):
        cols.append(pv[:, j])
        names.append(f"pv_k{j - data.radius}")
    c, n = _moments(returns_ticks(data, tick_size), "ret", (20, 100, 600), day, ("mean",))
    return _stack(cols + c, names + n)


def lsvm_der_features(data: GridData, slope_windows: Sequence[int] = (100, 300)) -> tuple[np.ndarray, list[str]]:
    """60: 18 band asymmetries, their OLS slopes at (100, 300), and six full-width 1/|k|-weighted
    bid/ask divergences (k ±1..24) of the derivative columns."""
    asym, names = band_asymmetries(data)
    cols = [asym[:, j] for j in range(asym.shape[1])]
    base = list(names)
    for w in slope_windows:
        slopes = common.rolling_ols_slope(asym, w, day=data.day)
        cols += [slopes[:, j] for j in range(slopes.shape[1])]
        names += [f"slope{w}_{n}" for n in base]
    weights = common.distance_weights(1, 24)
    for col, kind in ASYM_COLUMNS:
        cols.append(common.asymmetry(data.grid(col), 1, 24, kind, weights=weights))
        names.append(f"div_{col}")
    return _stack(cols, names)


def svm_sp_features(data: GridData, tick_size: float) -> tuple[np.ndarray, list[str]]:
    """45: P−V at 21 evenly spaced columns (every 5th of ±50), per-band combined asymmetry rolling
    mean/std (50, 200, 600), tick returns' rolling mean/std (50, 200, 600)."""
    day = data.day
    pv = p_minus_v(data)
    cols, names = [], []
    for j in spread_columns(data.radius, 21):
        cols.append(pv[:, j])
        names.append(f"pv_k{j - data.radius}")
    comb, comb_names = combined_band_asymmetry(data)
    for b, label in enumerate(comb_names):
        c, n = _moments(comb[:, b], label, (50, 200, 600), day, ("mean", "std"))
        cols += c
        names += n
    c, n = _moments(returns_ticks(data, tick_size), "ret", (50, 200, 600), day, ("mean", "std"))
    return _stack(cols + c, names + n)


def xgb_snap_features(data: GridData, tick_size: float, snap_k: int = 25) -> tuple[np.ndarray, list[str]]:
    """163: P, V and flow_score at k −25..+25, tick returns' rolling mean/std (50, 200, 600), and the side
    totals of P and V over k ±1..24."""
    lo, hi = data.k_index(-snap_k), data.k_index(snap_k) + 1
    cols, names = [], []
    for col in (P_COL, V_COL, FLOW_COL):
        g = data.grid(col)[:, lo:hi]
        cols += [g[:, j] for j in range(g.shape[1])]
        names += [f"{col}_k{k}" for k in range(-snap_k, snap_k + 1)]
    c, n = _moments(returns_ticks(data, tick_size), "ret", (50, 200, 600), data.day, ("mean", "std"))
    cols += c
    names += n
    for col in (P_COL, V_COL):
        bid, ask = common.side_pair(data.grid(col), 1, 24)
        cols += [bid, ask]
        names += [f"{col}_bid_total", f"{col}_ask_total"]
    return _stack(cols, names)


def pca_ad_inputs(data: GridData) -> tuple[np.ndarray, np.ndarray]:
    """(P−V profile over every k, (v_add − v_pull) mean bid side minus mean ask side over k ±1..R)."""
    net = data.grid("v_add") - data.grid("v_pull")
    bid, ask = common.side_pair(net, 1, data.radius, mean=True)
    return np.ascontiguousarray(p_minus_v(data)), bid - ask
