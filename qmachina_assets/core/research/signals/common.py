"""Shared, causal building blocks of the signals (SPEC §6.6), vectorised over bins (numba / numpy).

Every rolling helper takes an optional `day` array (the GridData `day` column): its state restarts at
each day boundary, so a value never mixes two trading days. Rolling helpers accept a 1-D series or a
2-D (n_bins, m) array whose columns are independent series.

Bands are expressed as distances from the spot in ticks (k), never as column numbers of a 101-wide
grid: `BANDS` holds SPEC §6.6's inner/mid/outer bands (columns 47–49/51–53, 39–46/54–61, 27–38/62–73
of the ±50 grid are k = ∓(1..3), ∓(4..11), ∓(12..23)), and `band_columns` maps them onto any radius.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from numba import njit, prange

from qmachina_assets.core.gold import rolling
from qmachina_assets.core.numba_cache import drop_stale_cache

drop_stale_cache(__file__, ("../../gold/rolling.py",))

#: SPEC §6.6 bands as (k_lo, k_hi) distances from the spot, both sides.
BANDS: dict[str, tuple[int, int]] = {"inner": (1, 3), "mid": (4, 11), "outer": (12, 23)}

Side = Literal["bid", "ask"]


# ---------------------------------------------------------------------------------------------- days


def day_starts(day: np.ndarray | None, n: int) -> np.ndarray:
    """int64 segment boundaries [0, s1, ..., n]: a new segment wherever `day` changes value."""
    if day is None:
        return np.array([0, n], dtype=np.int64)
    day = np.asarray(day)
    if day.shape != (n,):
        raise ValueError(f"day has shape {day.shape}, expected ({n},)")
    cuts = np.flatnonzero(day[1:] != day[:-1]) + 1
    return np.concatenate(([0], cuts, [n])).astype(np.int64)


def reset_by_day(func: Callable[..., np.ndarray], x: np.ndarray, day: np.ndarray | None, *args, **kwargs) -> np.ndarray:
    """Apply a causal series function to each day separately (state restarts at every day boundary).

    For helpers without a `day` argument (e.g. a pandas rolling statistic); loops over days, not bins.
    """
    x = np.asarray(x)
    starts = day_starts(day, x.shape[0])
    parts = [func(x[a:b], *args, **kwargs) for a, b in itertools.pairwise(starts.tolist())]
    return np.concatenate(parts, axis=0) if parts else np.asarray(func(x, *args, **kwargs))


def _as_rows(x: np.ndarray) -> tuple[np.ndarray, bool]:
    """Series as C-contiguous rows (m, n_bins) for the kernels (each series contiguous in memory)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return np.ascontiguousarray(x.reshape(1, -1)), True
    if x.ndim != 2:
        raise ValueError(f"expected a 1-D series or a 2-D (n_bins, m) array, got shape {x.shape}")
    return np.ascontiguousarray(x.T), False


def _from_rows(out: np.ndarray, flat: bool) -> np.ndarray:
    return out[0] if flat else np.ascontiguousarray(out.T)


def ms_to_bins(ms: float, cell_width_ms: int, min_bins: int = 1) -> int:
    """A duration in ms as a whole number of bins: max(min_bins, ceil(ms / cell_width_ms)) (SPEC §6.7)."""
    return max(int(min_bins), math.ceil(ms / cell_width_ms - 1e-9))


# ------------------------------------------------------------------------------------------ kernels


# Each kernel works on one contiguous series; `_rows` runs it over several series in parallel. A single
# series calls the serial kernel directly: a parallel launch costs ~10 ms on a busy machine.


@njit(cache=True)
def _ols_slope_row(xc, starts, w, oc):
    sx = w * (w - 1) / 2.0
    den = w * ((w - 1) * w * (2 * w - 1) / 6.0) - sx * sx
    for s in range(starts.shape[0] - 1):
        a = starts[s]
        for i in range(a, starts[s + 1]):
            if i - a < w - 1:
                oc[i] = np.nan
                continue
            sy = 0.0
            sxy = 0.0
            base = i - w + 1
            for j in range(w):
                y = xc[base + j]
                sy += y
                sxy += j * y
            oc[i] = (w * sxy - sx * sy) / den


@njit(cache=True, parallel=True)
def _ols_slope_rows(x, starts, w, out):
    for c in prange(x.shape[0]):
        _ols_slope_row(x[c], starts, w, out[c])


@njit(cache=True)
def _std_z(x, a, n, eps):
    """(x − mean)/std (ddof 0) of the sorted window a[:n]; 0 when std <= eps."""
    mu = 0.0
    for t in range(n):
        mu += a[t]
    mu /= n
    var = 0.0
    for t in range(n):
        var += (a[t] - mu) * (a[t] - mu)
    sd = math.sqrt(var / n)
    return (x - mu) / sd if sd > eps else 0.0


@njit(cache=True)
def _robust_z_row(xc, starts, window, min_periods, eps, std_fallback, oc):
    fifo = np.empty(window)
    srt = np.empty(window)
    for s in range(starts.shape[0] - 1):
        head = 0
        length = 0
        ns = 0
        for i in range(starts[s], starts[s + 1]):
            v = xc[i]
            head, length, ns = rolling.window_push(fifo, srt, head, length, ns, v)
            z = rolling.robust_z(v, srt, ns, min_periods, eps)
            if std_fallback and z == 0.0 and ns >= min_periods and srt[0] != srt[ns - 1]:
                med = rolling.sorted_median(srt, ns)
                if not rolling.MAD_SCALE * rolling.sorted_mad(srt, ns, med) > eps:
                    z = _std_z(v, srt, ns, eps)
            oc[i] = z


@njit(cache=True, parallel=True)
def _robust_z_rows(x, starts, window, min_periods, eps, std_fallback, out):
    for c in prange(x.shape[0]):
        _robust_z_row(x[c], starts, window, min_periods, eps, std_fallback, out[c])


@njit(cache=True)
def _ema_row(xc, starts, alpha, oc):
    for s in range(starts.shape[0] - 1):
        y = np.nan
        for i in range(starts[s], starts[s + 1]):
            v = xc[i]
            if not math.isnan(v):
                y = v if math.isnan(y) else y + alpha * (v - y)
            oc[i] = y


@njit(cache=True, parallel=True)
def _ema_rows(x, starts, alpha, out):
    for c in prange(x.shape[0]):
        _ema_row(x[c], starts, alpha, out[c])


def _run(row_kernel, rows_kernel, x: np.ndarray, day: np.ndarray | None, *args) -> np.ndarray:
    x2, flat = _as_rows(x)
    out = np.empty_like(x2)
    starts = day_starts(day, x2.shape[1])
    if x2.shape[0] == 1:
        row_kernel(x2[0], starts, *args, out[0])
    else:
        rows_kernel(x2, starts, *args, out)
    return _from_rows(out, flat)


# -------------------------------------------------------------------------------------- public API


def rolling_ols_slope(x: np.ndarray, w: int, day: np.ndarray | None = None) -> np.ndarray:
    """OLS slope of the last `w` samples against 0..w-1: (w·Σxy − Σx·Σy)/(w·Σx² − (Σx)²) (SPEC §6.6).

    NaN for the first w−1 bins (of each day when `day` is given) and wherever the window holds a NaN.
    """
    if w < 2:
        raise ValueError(f"slope window must be >= 2, got {w}")
    return _run(_ols_slope_row, _ols_slope_rows, x, day, int(w))


def rolling_robust_z(x: np.ndarray, window: int, min_periods: int = 30, eps: float = 1e-12,
                     day: np.ndarray | None = None, std_fallback: bool = False) -> np.ndarray:
    """Causal robust z over the last `window` bins, current bin included (SPEC §4.4/§6.6).

    (x − median)/(1.4826·MAD) of the defined (non-NaN) values in the window; 0 while fewer than
    `min_periods` are defined (the warm-up: a shorter, expanding window is used until it fills), when the
    window is constant or the scale is <= eps; NaN where x is NaN. Never a whole-series fallback.

    `std_fallback`: where the MAD scale is <= eps but the window is not constant (a sparse series whose
    median deviation is 0), use (x − mean)/std (ddof 0) of the same window instead — the causal fallback
    of the seed's incremental runtime (SPEC §4.6), not its offline whole-series one.
    """
    if window < 1 or not 1 <= min_periods <= window:
        raise ValueError(f"need window >= 1 and 1 <= min_periods <= window, got {window}, {min_periods}")
    return _run(_robust_z_row, _robust_z_rows, x, day, int(window), int(min_periods), float(eps),
                bool(std_fallback))


def ema(x: np.ndarray, alpha: float, day: np.ndarray | None = None) -> np.ndarray:
    """Causal EMA, adjust=False, NaN-skipping (pandas `ewm(alpha, adjust=False, ignore_na=True).mean()`).

    Starts at the first defined value (NaN before it); a NaN input leaves the state (and output) unchanged.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"EMA alpha must be in (0, 1], got {alpha}")
    return _run(_ema_row, _ema_rows, x, day, float(alpha))


def span_alpha(span: float) -> float:
    """EMA α of a pandas-style span: 2/(span+1)."""
    return 2.0 / (span + 1.0)


# ------------------------------------------------------------------------------------------- bands


def band_columns(radius: int, side: Side, k_lo: int, k_hi: int) -> np.ndarray:
    """Column indices of the grid (column `radius` = spot) at distances k_lo..k_hi on one side.

    Ordered by distance (k_lo first) on both sides, so a per-distance weight vector lines up with either.
    `side` "bid" is below the spot (k < 0), "ask" above (k > 0). A band beyond the radius is an error.
    """
    if side not in ("bid", "ask"):
        raise ValueError(f"side must be 'bid' or 'ask', got {side!r}")
    if not 0 <= k_lo <= k_hi <= radius:
        raise ValueError(f"band k {k_lo}..{k_hi} must satisfy 0 <= k_lo <= k_hi <= radius={radius}")
    d = np.arange(k_lo, k_hi + 1, dtype=np.int64)
    return radius - d if side == "bid" else radius + d


def grid_radius(grid: np.ndarray) -> int:
    n_cols = grid.shape[1]
    if n_cols % 2 != 1:
        raise ValueError(f"a grid has 2R+1 columns (spot in the middle), got {n_cols}")
    return (n_cols - 1) // 2


def project(grid: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """grid @ weights over the columns where `weights` (a (2R+1,) vector or (2R+1, m) matrix) is non-zero:
    one BLAS call over a strided column block, no copy of the grid."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape[0] != grid.shape[1]:
        raise ValueError(f"weights have {w.shape[0]} rows, the grid {grid.shape[1]} columns")
    nz = np.flatnonzero(w if w.ndim == 1 else np.abs(w).sum(axis=1))
    if nz.size == 0:
        return np.zeros((grid.shape[0], *w.shape[1:]))
    a, b = int(nz[0]), int(nz[-1]) + 1
    return grid[:, a:b] @ w[a:b]


def side_sum(grid: np.ndarray, k_lo: int, k_hi: int, weights: np.ndarray | Sequence[float] | None = None) -> np.ndarray:
    """Per-bin Σ_k w_k·grid[:, k] over the signed relative ticks k_lo..k_hi (e.g. −16..−1 or 1..16).

    `weights` (optional) has one entry per k in k_lo..k_hi, in that order. The radius is read from the
    grid's width (2R+1 columns).
    """
    r = grid_radius(grid)
    if not -r <= k_lo <= k_hi <= r:
        raise ValueError(f"k range {k_lo}..{k_hi} outside the ±{r} grid")
    if weights is None:
        w = np.ones(k_hi - k_lo + 1)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (k_hi - k_lo + 1,):
            raise ValueError(f"weights need {k_hi - k_lo + 1} entries (k {k_lo}..{k_hi}), got {w.shape}")
    return grid[:, r + k_lo: r + k_hi + 1] @ w  # BLAS on the strided block: ~3x a .sum(axis=1)


def distance_weights(k_lo: int, k_hi: int, power: float = 1.0, normalise: bool = True) -> np.ndarray:
    """1/k^power for distances k_lo..k_hi (k_lo >= 1), optionally normalised to sum 1."""
    if k_lo < 1:
        raise ValueError("distance weights need k_lo >= 1")
    w = 1.0 / np.arange(k_lo, k_hi + 1, dtype=np.float64) ** power
    return w / w.sum() if normalise else w


def side_vectors(radius: int, k_lo: int, k_hi: int, weights: np.ndarray | Sequence[float] | None = None,
                 mean: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(bid, ask) full-width (2R+1,) weight vectors of the band at distances k_lo..k_hi (k_lo >= 1):
    `project(grid, bid)` is the band's bid-side sum. `weights` is per distance (k_lo first), both sides;
    `mean` divides by the band width."""
    if k_lo < 1:
        raise ValueError("a side band starts at distance >= 1 (k = 0 is the spot)")
    w = np.ones(k_hi - k_lo + 1) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (k_hi - k_lo + 1,):
        raise ValueError(f"weights need {k_hi - k_lo + 1} entries (distances {k_lo}..{k_hi}), got {w.shape}")
    if mean:
        w = w / (k_hi - k_lo + 1)
    bid = np.zeros(2 * radius + 1)
    ask = np.zeros(2 * radius + 1)
    bid[band_columns(radius, "bid", k_lo, k_hi)] = w
    ask[band_columns(radius, "ask", k_lo, k_hi)] = w
    return bid, ask


def asymmetry_vector(radius: int, k_lo: int, k_hi: int, kind: Literal["add", "pull"],
                     weights: np.ndarray | Sequence[float] | None = None, mean: bool = False) -> np.ndarray:
    """The (2R+1,) vector v with `project(grid, v)` = `asymmetry(grid, ...)`; vectors of several bands add."""
    bid, ask = side_vectors(radius, k_lo, k_hi, weights, mean)
    if kind == "add":
        return bid - ask
    if kind == "pull":
        return ask - bid
    raise ValueError(f"kind must be 'add' or 'pull', got {kind!r}")


def side_pair(grid: np.ndarray, k_lo: int, k_hi: int, weights: np.ndarray | Sequence[float] | None = None,
              mean: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(bid, ask) per-bin sums over distances k_lo..k_hi (k_lo >= 1) on each side of the spot.

    `weights` is per distance (k_lo first) and applies to both sides; `mean` divides by the band width.
    """
    bid, ask = side_vectors(grid_radius(grid), k_lo, k_hi, weights, mean)
    return project(grid, bid), project(grid, ask)  # two gemv: faster than one gemm on a strided block


def asymmetry(grid: np.ndarray, k_lo: int, k_hi: int, kind: Literal["add", "pull"],
              weights: np.ndarray | Sequence[float] | None = None, mean: bool = False) -> np.ndarray:
    """Bid/ask asymmetry over distances k_lo..k_hi, positive = bullish (SPEC §6.6).

    "add"-like columns (resting liquidity arriving: support below, supply above): bid − ask;
    "pull"-like columns (liquidity leaving): ask − bid.
    """
    return project(grid, asymmetry_vector(grid_radius(grid), k_lo, k_hi, kind, weights, mean))


