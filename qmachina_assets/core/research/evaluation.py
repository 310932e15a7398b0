"""TP/SL evaluation of a causal bin-level signal (SPEC §6.4 firing, §6.5 metrics), rebuilt without the
seed's defects (SPEC §10 items 6, 9, 14). One numba kernel simulates the trades and one computes the
metrics; `evaluate` runs them once, `evaluate_grid` runs them for every parameter combination in a
single parallel call, so a sweep and a single run are the same code. `Trader` applies the same rules one
bin at a time without look-ahead (for a stream), tested to make exactly `evaluate`'s trades.

Rules (each departs from the seed where noted):
- **Firing** (SPEC §6.4, kept): from `warmup_bins` on, state = +1 if s ≥ thr, −1 if s ≤ −thr, else 0
  (NaN is 0); fire when state ≠ 0, state ≠ the previous bin's state, the bin is valid and
  i − last ≥ cooldown. The previous state updates on every bin, suppressed or invalid alike.
- **No look-ahead, execution latency**: s[i] may only use data up to bin i's close (the caller's contract);
  the order reaches the market `latency_bins` later (default 1): the entry fills at the close prices of the
  first tradable bin e ≥ i + latency of the same session (no fill when there is none) and the first bin
  that can exit is e + 1. Trades record both the signal bin and the entry (fill) bin. With latency 0 the
  entry is bin i's close, the seed's zero-latency fill that made the demo's winners look profitable.
- **Sessions** (`day`, default the UTC day): each session is evaluated alone — warmup, state and cooldown
  restart at its first bin and a position still open at its last tradable bin closes there (`truncated`),
  so no position is held overnight and in-sample figures over several training days equal the sum of the
  days evaluated one by one.
- **One position at a time** by default: a signal is ignored while a position is open and cooldown
  counts from the exit bin. The seed let positions overlap (cooldown from the last fire only);
  `allow_overlap=True` restores that.
- **Valid bins only** (§10.6): a bin is tradable when `valid` is true, mid is finite and > 0 (and, in
  cross mode, both sides are finite and > 0). Invalid bins are never an entry or an exit: the exit
  scan skips them, so a 09:30 `mid = 0` bin can no longer close a trade at a price of zero.
- **Prices** (§10.14): "mid" enters and exits at the mid; "cross" buys at the ask and sells at the bid,
  paying the spread twice per round trip. Barriers sit at entry ± tp/sl ticks and are tested on the
  exit-side price (a long exits at the bid, a short at the ask). `cost_ticks_per_trade` (fees +
  slippage, round trip) is subtracted from every trade.
- **Barrier fills** (§10.14): a bin whose price reaches or passes a barrier exits AT THE BARRIER, not at
  the overshooting observed price, so a TP trade earns exactly tp − cost and an SL trade −sl − cost
  (gaps through a stop are therefore optimistic; put that slippage in `cost_ticks_per_trade`).
  Barriers are compared with a 1e−9·tick tolerance against float noise.
- **Both barriers in one bin** (possible with the optional intrabin `high`/`low` of the mid; sweeps and
  replays pass the dataset's `mid_high_price`/`mid_low_price`, the mid's range over the bin's venue events): the STOP
  wins, the conservative assumption since the order within the bin is unknown. In cross mode the
  exit-side extremes are the mid's extremes shifted by the bin's closing half spread.
- **Timeout** at the last valid bin ≤ e + max_hold at its exit-side price. When the session ends before
  e + max_hold, the trade closes at the session's last valid bin with outcome `truncated` (2). With no valid bin
  after the entry, that is the entry bin itself at its exit-side price (a round trip in place).
- **Metrics** over the evaluated bins (valid and ≥ warmup into their session) only: exposure is the share of
  them inside a position (bins entry+1 … exit), trades_per_hour divides by their time (count × the median bin
  width), never the whole dataset's wall clock as the seed did (§10.14). Daily pnl is summed per UTC day
  of the exit bin over every UTC day that has an evaluated bin (days without trades count as 0);
  sharpe_like_per_day = mean / sd (ddof 1) of those sums × √n_days. Drawdown is on the cumulative pnl in
  trade (entry) order from 0; the equity curve books each trade's pnl at its exit bin. timeout_rate
  includes truncated trades so the three rates sum to 1.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numba import njit, prange
from pydantic import BaseModel, ConfigDict, Field

NS_PER_DAY = 86_400_000_000_000
NS_PER_HOUR = 3_600_000_000_000

OUTCOME_TP = 1
OUTCOME_SL = -1
OUTCOME_TIMEOUT = 0
OUTCOME_TRUNCATED = 2

TRADE_DTYPE = np.dtype([
    ("signal_bin", np.int64), ("entry_bin", np.int64), ("exit_bin", np.int64), ("direction", np.int8),
    ("entry_price", np.float64),
    ("exit_price", np.float64), ("outcome", np.int8), ("pnl_ticks", np.float64), ("hold_bins", np.int64),
])

#: Metric vector layout shared by the kernel, `EvalMetrics` and `evaluate_grid` (NaN = undefined).
METRIC_NAMES: tuple[str, ...] = (
    "n_trades", "n_long", "n_short", "n_tp", "n_sl", "n_timeout", "n_truncated",
    "hit_rate", "sl_rate", "timeout_rate", "mean_pnl_ticks", "total_pnl_ticks", "profit_factor",
    "max_drawdown_ticks", "sharpe_like_per_day", "exposure", "trades_per_hour", "median_hold_bins",
)
COUNT_METRICS: tuple[str, ...] = METRIC_NAMES[:7]
_N_METRICS = len(METRIC_NAMES)


class EvalParams(BaseModel):
    """One evaluation setting. Defaults are the honest ones: crossing the spread, one position at a time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(gt=0)
    tp_ticks: float = Field(gt=0)
    sl_ticks: float = Field(gt=0)
    max_hold_bins: int = Field(ge=1)
    cooldown_bins: int = Field(ge=1)
    tick_size: float = Field(gt=0)
    warmup_bins: int = Field(0, ge=0)
    entry_mode: Literal["mid", "cross"] = "cross"
    cost_ticks_per_trade: float = Field(0.0, ge=0)
    #: Bins between the signal's bin close and the fill (the entry is at the close of bin i + latency).
    latency_bins: int = Field(1, ge=0)
    #: The seed allowed overlapping positions (cooldown from the last fire); default is one at a time.
    allow_overlap: bool = False


class EvalMetrics(BaseModel):
    """Summary of one evaluation; None where a ratio is undefined (no trades, no losses, < 2 days …)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_trades: int
    n_long: int
    n_short: int
    n_tp: int
    n_sl: int
    n_timeout: int
    n_truncated: int
    hit_rate: float | None
    sl_rate: float | None
    timeout_rate: float | None
    mean_pnl_ticks: float | None
    total_pnl_ticks: float
    profit_factor: float | None
    max_drawdown_ticks: float
    sharpe_like_per_day: float | None
    exposure: float | None
    trades_per_hour: float | None
    median_hold_bins: float | None

    @classmethod
    def from_vector(cls, v: np.ndarray) -> EvalMetrics:
        out: dict[str, float | int | None] = {}
        for name, x in zip(METRIC_NAMES, v, strict=True):
            if name in COUNT_METRICS:
                out[name] = int(x)
            else:
                out[name] = None if math.isnan(x) else float(x)
        return cls(**out)


@dataclass(frozen=True)
class EvalResult:
    trades: np.ndarray  # TRADE_DTYPE, in entry order
    metrics: EvalMetrics
    equity: np.ndarray  # float64 per bin: cumulative realised pnl (ticks), booked at each exit bin


# ---- kernels ----------------------------------------------------------------------------------------


_BLOCK = 16  # barrier-scan block sizes (powers of two; _BLOCK2 a multiple of _BLOCK)
_BLOCK2 = 256


@njit(cache=True, inline="always")
def _state(x: float, thr: float) -> int:
    """+1 / −1 / 0 signal state; NaN compares false and is flat."""
    return 1 if x >= thr else (-1 if x <= -thr else 0)


@njit(cache=True)
def _simulate(s, ok, le, se, lpx, spx, lhi, llo, shi, slo, last_ok, blk, blk2, nxt, sess, thr, tp, sl, cooldown,
              max_hold, warmup, latency, tick, cost, overlap, o_sig, o_entry, o_exit, o_dir, o_ep, o_xp, o_out,
              o_pnl) -> int:
    """Fire and resolve every trade; returns how many were written to the o_* buffers (entry order).

    le/se: long/short entry prices; lpx/spx: long/short exit-side close prices; lhi/llo and shi/slo:
    their intrabin extremes, set to ∓inf on untradable bins so those never touch a barrier; last_ok[k]:
    the last tradable bin ≤ k; nxt[k]: the first tradable bin ≥ k (n when none); sess: session start bins
    followed by n (each session is simulated alone: warmup, state and cooldown restart, nothing crosses
    its end); blk/blk2: the four extremes' maxima/minima per _BLOCK/_BLOCK2 bins, which let the barrier
    scan skip whole blocks (with overlap, every trade scans up to max_hold bins)."""
    eps = 1e-9 * tick
    m = 0
    for q in range(sess.shape[0] - 1):
        a = sess[q]
        n = sess[q + 1]  # this session's bins are [a, n)
        prev = 0
        last = a + warmup - cooldown  # every i >= a + warmup passes the first cooldown test
        i = a + warmup
        while i < n:
            st = _state(s[i], thr)
            fire = st != 0 and st != prev and ok[i] and i - last >= cooldown
            prev = st
            if not fire:
                i += 1
                continue
            e = i + latency  # the order reaches the market `latency` bins later: the first tradable bin then
            if e < n:
                e = nxt[e]
            if e >= n:  # no tradable bin left in the session: the order is never filled
                i += 1
                continue
            if st > 0:
                entry = le[e]
                tp_px = entry + tp * tick
                sl_px = entry - sl * tick
            else:
                entry = se[e]
                tp_px = entry - tp * tick
                sl_px = entry + sl * tick
            end = e + max_hold
            outcome = 0
            if end > n - 1:
                end = n - 1
                outcome = 2
            if st > 0:  # barrier above / below and the extremes that test them
                up, dn, hi, lo, r = tp_px - eps, sl_px + eps, lhi, llo, 0
            else:
                up, dn, hi, lo, r = sl_px - eps, tp_px + eps, shi, slo, 2
            t_up = False
            t_dn = False
            j = e + 1
            while j <= end:
                if (j & (_BLOCK - 1)) == 0:
                    if (j & (_BLOCK2 - 1)) == 0 and j + _BLOCK2 - 1 <= end:
                        b = j // _BLOCK2
                        if blk2[r, b] < up and blk2[r + 1, b] > dn:
                            j += _BLOCK2
                            continue
                    if j + _BLOCK - 1 <= end:
                        b = j // _BLOCK
                        if blk[r, b] < up and blk[r + 1, b] > dn:
                            j += _BLOCK
                            continue
                t_up = hi[j] >= up
                t_dn = lo[j] <= dn
                if t_up or t_dn:
                    break
                j += 1
            if j <= end:
                j_last = j
                stop = t_dn if st > 0 else t_up  # both touched in one bin -> the stop
                outcome = -1 if stop else 1
            else:
                j_last = last_ok[end]  # >= e: the entry bin is tradable
            if outcome == -1:
                xp = sl_px
                pnl = -sl - cost
            elif outcome == 1:
                xp = tp_px
                pnl = tp - cost
            else:
                xp = lpx[j_last] if st > 0 else spx[j_last]
                pnl = st * (xp - entry) / tick - cost
            o_sig[m] = i
            o_entry[m] = e
            o_exit[m] = j_last
            o_dir[m] = st
            o_ep[m] = entry
            o_xp[m] = xp
            o_out[m] = outcome
            o_pnl[m] = pnl
            m += 1
            if overlap:
                last = i
                i += 1
            else:  # no bin before exit + cooldown can fire: jump there, taking the state of the bin before it
                last = j_last
                k = j_last + cooldown - 1
                if k >= n:
                    break
                prev = _state(s[k], thr)
                i = k + 1
    return m


@njit(cache=True)
def _metrics(entry, exit_, dirs, outc, pnl, m, eval_cum, day_idx, n_days, valid_hours, out) -> None:
    """Fill `out` (METRIC_NAMES order) from the first m trades."""
    out[:] = np.nan
    n_long = 0
    n_tp = 0
    n_sl = 0
    n_to = 0
    n_tr = 0
    total = 0.0
    gross_win = 0.0
    gross_loss = 0.0
    peak = 0.0
    max_dd = 0.0
    daily = np.zeros(max(n_days, 1))
    covered = 0
    cur_a = -1
    cur_b = -1  # current union interval (cur_a, cur_b] of position bins
    for k in range(m):
        if dirs[k] > 0:
            n_long += 1
        o = outc[k]
        if o == 1:
            n_tp += 1
        elif o == -1:
            n_sl += 1
        elif o == 0:
            n_to += 1
        else:
            n_tr += 1
        p = pnl[k]
        total += p
        if p > 0:
            gross_win += p
        elif p < 0:
            gross_loss -= p
        if total > peak:
            peak = total
        if peak - total > max_dd:
            max_dd = peak - total
        daily[day_idx[exit_[k]]] += p
        a = entry[k]
        b = exit_[k]
        if a >= cur_b:  # disjoint from the running union (entries come in order)
            covered += eval_cum[cur_b + 1] - eval_cum[cur_a + 1]
            cur_a = a
            cur_b = b
        elif b > cur_b:
            cur_b = b
    covered += eval_cum[cur_b + 1] - eval_cum[cur_a + 1]
    out[0] = m
    out[1] = n_long
    out[2] = m - n_long
    out[3] = n_tp
    out[4] = n_sl
    out[5] = n_to
    out[6] = n_tr
    out[11] = total
    out[13] = max_dd
    n_eval = eval_cum[eval_cum.shape[0] - 1]
    if n_eval > 0:
        out[15] = covered / n_eval
    if valid_hours > 0:
        out[16] = m / valid_hours
    if m > 0:
        out[7] = n_tp / m
        out[8] = n_sl / m
        out[9] = (n_to + n_tr) / m
        out[10] = total / m
        out[17] = np.median(exit_[:m] - entry[:m])
    if gross_loss > 0:
        out[12] = gross_win / gross_loss
    if n_days >= 2:
        mu = daily.mean()
        var = ((daily - mu) ** 2).sum() / (n_days - 1)
        if var > 0:
            out[14] = mu / math.sqrt(var) * math.sqrt(n_days)


@njit(cache=True, parallel=True)
def _grid(s, ok, le, se, lpx, spx, lhi, llo, shi, slo, last_ok, blk, blk2, nxt, sess, thrs, tps, sls, cds, max_hold,
          warmup, latency, tick, cost, overlap, eval_cum, day_idx, n_days, valid_hours):
    n_combo = thrs.shape[0]
    out = np.empty((n_combo, _N_METRICS))
    cap = max(s.shape[0], 1)  # at most one fire per bin
    for c in prange(n_combo):
        o_sig = np.empty(cap, np.int64)
        o_entry = np.empty(cap, np.int64)
        o_exit = np.empty(cap, np.int64)
        o_dir = np.empty(cap, np.int8)
        o_ep = np.empty(cap)
        o_xp = np.empty(cap)
        o_out = np.empty(cap, np.int8)
        o_pnl = np.empty(cap)
        m = _simulate(s, ok, le, se, lpx, spx, lhi, llo, shi, slo, last_ok, blk, blk2, nxt, sess, thrs[c], tps[c],
                      sls[c], cds[c], max_hold, warmup, latency, tick, cost, overlap, o_sig, o_entry, o_exit, o_dir,
                      o_ep, o_xp, o_out, o_pnl)
        _metrics(o_entry, o_exit, o_dir, o_out, o_pnl, m, eval_cum, day_idx, n_days, valid_hours, out[c])
    return out


# ---- input preparation (vectorised) -------------------------------------------------------------------


@dataclass(frozen=True)
class _Prepared:
    s: np.ndarray
    ok: np.ndarray
    prices: tuple[np.ndarray, ...]  # le, se, lpx, spx, lhi, llo, shi, slo, last_ok, blk, blk2, nxt, sess (_simulate)
    eval_cum: np.ndarray
    day_idx: np.ndarray
    n_days: int
    valid_hours: float


def _f64(name: str, a, n: int) -> np.ndarray:
    out = np.ascontiguousarray(a, dtype=np.float64)
    if out.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {out.shape}")
    return out


def _block_extremes(arrays: tuple[np.ndarray, ...], size: int) -> np.ndarray:
    """Rows max(hi), min(lo), max(hi), min(lo) of the (long hi, long lo, short hi, short lo) arrays per block."""
    n = arrays[0].shape[0]
    nb = -(-n // size)
    out = np.empty((4, nb))
    for r, a in enumerate(arrays):
        hi_row = r % 2 == 0
        pad = np.full(nb * size, -np.inf if hi_row else np.inf)
        pad[:n] = a
        out[r] = (np.max if hi_row else np.min)(pad.reshape(nb, size), axis=1)
    return out


def _sessions(ts: np.ndarray, day) -> np.ndarray:
    """Session start bins followed by n: where `day` (default: the UTC day of ts) changes."""
    n = ts.shape[0]
    d = ts // NS_PER_DAY if day is None else np.asarray(day)
    if d.shape != (n,):
        raise ValueError(f"day must have shape ({n},), got {d.shape}")
    if n > 1 and np.any(np.diff(d) < 0):
        raise ValueError("day must be non-decreasing (sessions in time order)")
    starts = np.flatnonzero(np.concatenate(([n > 0], d[1:] != d[:-1]))) if n else np.zeros(0, np.int64)
    return np.append(starts, n).astype(np.int64)


def _prepare(s, mid, best_bid, best_ask, ts_ns, valid, high, low, entry_mode: str, warmup: int,
             day=None) -> _Prepared:
    s = np.ascontiguousarray(s, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError("s must be 1-D")
    n = s.shape[0]
    mid = _f64("mid", mid, n)
    bid = _f64("best_bid", best_bid, n)
    ask = _f64("best_ask", best_ask, n)
    ts = np.ascontiguousarray(ts_ns, dtype=np.int64)
    valid = np.ascontiguousarray(valid, dtype=bool)
    if ts.shape != (n,) or valid.shape != (n,):
        raise ValueError("ts_ns and valid must have the same length as s")
    if n > 1 and np.any(np.diff(ts) < 0):
        raise ValueError("ts_ns must be non-decreasing")

    def positive(a: np.ndarray) -> np.ndarray:
        return np.isfinite(a) & (a > 0)

    ok = valid & positive(mid)
    if entry_mode == "cross":
        ok &= positive(bid) & positive(ask)
        le, se, lpx, spx = ask, bid, bid, ask
    else:
        le = se = lpx = spx = mid
    with np.errstate(invalid="ignore"):
        if high is None:
            mhi = mid
        else:
            mhi = _f64("high", high, n)
            mhi = np.where(np.isnan(mhi), mid, mhi)
        if low is None:
            mlo = mid
        else:
            mlo = _f64("low", low, n)
            mlo = np.where(np.isnan(mlo), mid, mlo)
        # exit-side extremes: the mid's extremes shifted by the closing (exit-side − mid) offset, and never
        # narrower than the close itself
        lhi = np.maximum(lpx, mhi + (lpx - mid))
        llo = np.minimum(lpx, mlo + (lpx - mid))
        shi = np.maximum(spx, mhi + (spx - mid))
        slo = np.minimum(spx, mlo + (spx - mid))
        lhi = np.where(ok, lhi, -np.inf)
        llo = np.where(ok, llo, np.inf)
        shi = np.where(ok, shi, -np.inf)
        slo = np.where(ok, slo, np.inf)
    blk, blk2 = (_block_extremes((lhi, llo, shi, slo), size) for size in (_BLOCK, _BLOCK2))
    idx = np.arange(n, dtype=np.int64)
    last_ok = np.maximum.accumulate(np.where(ok, idx, -1))
    nxt = np.minimum.accumulate(np.where(ok, idx, n)[::-1])[::-1].copy()
    sess = _sessions(ts, day)
    prices = (*(np.ascontiguousarray(a) for a in (le, se, lpx, spx, lhi, llo, shi, slo)), last_ok, blk, blk2, nxt,
              sess)

    ev = ok.copy()
    first = np.repeat(sess[:-1], np.diff(sess))  # each bin's session start
    ev[idx - first < warmup] = False  # warmup restarts every session
    eval_cum = np.zeros(n + 1, np.int64)
    np.cumsum(ev, out=eval_cum[1:])
    day = ts // NS_PER_DAY
    d_ev = day[ev]  # sorted, as ts is
    days = d_ev[np.concatenate(([True], d_ev[1:] != d_ev[:-1]))] if d_ev.size else d_ev
    day_idx = np.clip(np.searchsorted(days, day), 0, max(len(days) - 1, 0)).astype(np.int64)
    d = np.diff(ts)
    d = d[d > 0]
    bin_ns = float(np.median(d)) if d.size else 0.0
    return _Prepared(s, ok, prices, eval_cum, day_idx, len(days), float(ev.sum()) * bin_ns / NS_PER_HOUR)


# ---- public API -----------------------------------------------------------------------------------------


def evaluate(s, mid, best_bid, best_ask, ts_ns, valid, params: EvalParams, high=None, low=None,
             day=None) -> EvalResult:
    """Trades, metrics and equity curve of one setting.

    s: the signal per bin, causal (s[i] from data ≤ bin i's close), NaN = no value; mid/best_bid/best_ask:
    closing prices (0 or NaN where undefined); ts_ns: bin close times (non-decreasing); valid: book valid;
    high/low: optional intrabin extremes of the mid (None or NaN = the close); day: the session of each bin
    (non-decreasing; default the UTC day of ts_ns): no position is held across a session's end."""
    p = params
    prep = _prepare(s, mid, best_bid, best_ask, ts_ns, valid, high, low, p.entry_mode, p.warmup_bins, day)
    cap = max(prep.s.shape[0], 1)
    bufs = (np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int8),
            np.empty(cap), np.empty(cap), np.empty(cap, np.int8), np.empty(cap))
    m = _simulate(prep.s, prep.ok, *prep.prices, float(p.threshold), float(p.tp_ticks), float(p.sl_ticks),
                  p.cooldown_bins, p.max_hold_bins, p.warmup_bins, p.latency_bins, float(p.tick_size),
                  float(p.cost_ticks_per_trade), p.allow_overlap, *bufs)
    vec = np.empty(_N_METRICS)
    o_sig, o_entry, o_exit, o_dir, o_ep, o_xp, o_out, o_pnl = bufs
    _metrics(o_entry, o_exit, o_dir, o_out, o_pnl, m, prep.eval_cum, prep.day_idx, prep.n_days,
             prep.valid_hours, vec)
    trades = np.empty(m, TRADE_DTYPE)
    trades["signal_bin"] = o_sig[:m]
    trades["entry_bin"] = o_entry[:m]
    trades["exit_bin"] = o_exit[:m]
    trades["direction"] = o_dir[:m]
    trades["entry_price"] = o_ep[:m]
    trades["exit_price"] = o_xp[:m]
    trades["outcome"] = o_out[:m]
    trades["pnl_ticks"] = o_pnl[:m]
    trades["hold_bins"] = o_exit[:m] - o_entry[:m]
    n = prep.s.shape[0]
    equity = np.cumsum(np.bincount(o_exit[:m], weights=o_pnl[:m], minlength=n)[:n].astype(np.float64))
    return EvalResult(trades, EvalMetrics.from_vector(vec), equity)


def evaluate_grid(s, mid, best_bid, best_ask, ts_ns, valid, *, thresholds, tp_list, sl_list, cooldown_list,
                  max_hold_bins: int, tick_size: float, warmup_bins: int = 0,
                  entry_mode: Literal["mid", "cross"] = "cross", cost_ticks_per_trade: float = 0.0,
                  allow_overlap: bool = False, latency_bins: int = 1, high=None, low=None,
                  day=None) -> dict[str, np.ndarray]:
    """Metrics of every (threshold, tp, sl, cooldown) combination in one parallel numba call.

    Returns column arrays, one row per combination in `itertools.product(thresholds, tp_list, sl_list,
    cooldown_list)` order: the four parameters, then METRIC_NAMES (counts int64, the rest float64 with
    NaN where `EvalMetrics` has None). Each row equals `evaluate` with the same EvalParams."""
    combos = list(itertools.product(thresholds, tp_list, sl_list, cooldown_list))
    if not combos:
        raise ValueError("every parameter list needs at least one value")
    t0, tp0, sl0, cd0 = combos[0]
    EvalParams(threshold=t0, tp_ticks=tp0, sl_ticks=sl0, cooldown_bins=cd0, max_hold_bins=max_hold_bins,
               tick_size=tick_size, warmup_bins=warmup_bins, entry_mode=entry_mode,
               cost_ticks_per_trade=cost_ticks_per_trade, allow_overlap=allow_overlap,
               latency_bins=latency_bins)  # the fixed fields
    arr = np.array(combos, dtype=np.float64)
    if np.any(~(arr[:, :3] > 0)):
        raise ValueError("thresholds, tp_list and sl_list must be > 0")
    cds = arr[:, 3].astype(np.int64)
    if np.any(cds < 1) or np.any(cds != arr[:, 3]):
        raise ValueError("cooldown_list must hold integers >= 1")
    prep = _prepare(s, mid, best_bid, best_ask, ts_ns, valid, high, low, entry_mode, warmup_bins, day)
    out = _grid(prep.s, prep.ok, *prep.prices, np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1]),
                np.ascontiguousarray(arr[:, 2]), cds, int(max_hold_bins), int(warmup_bins), int(latency_bins),
                float(tick_size),
                float(cost_ticks_per_trade), bool(allow_overlap), prep.eval_cum, prep.day_idx, prep.n_days,
                prep.valid_hours)
    cols: dict[str, np.ndarray] = {"threshold": arr[:, 0].copy(), "tp_ticks": arr[:, 1].copy(),
                                   "sl_ticks": arr[:, 2].copy(), "cooldown_bins": cds}
    for k, name in enumerate(METRIC_NAMES):
        cols[name] = out[:, k].astype(np.int64) if name in COUNT_METRICS else out[:, k].copy()
    return cols


# ---- the incremental form (the stream) ------------------------------------------------------------------


@dataclass(frozen=True)
class TradeEvent:
    """An entry or exit as the stream announces it: `bin` is the bin it happened at (entry: the fill bin; exit:
    the exit bin), `known_at` the bin whose close made it known (a timeout is known at the end of its window,
    a truncation when the session ends)."""

    event: Literal["entry", "exit"]
    bin: int
    known_at: int
    direction: int
    price: float
    outcome: int | None = None
    pnl_ticks: float | None = None


OUTCOME_NAMES = {OUTCOME_TP: "tp", OUTCOME_SL: "sl", OUTCOME_TIMEOUT: "timeout", OUTCOME_TRUNCATED: "truncated"}


class Trader:
    """`evaluate`'s rules one bin at a time, for one session, without look-ahead: `step` takes a bin's score and
    prices and returns the events known at its close; `finish` closes what the session's end closes. The
    trades equal `evaluate(...)` on the same session (tested), so a stream can show the evaluated strategy.
    One position at a time only (`allow_overlap` is an offline study tool)."""

    def __init__(self, params: EvalParams):
        if params.allow_overlap:
            raise ValueError("Trader: allow_overlap is not supported incrementally")
        self.p = params
        self.eps = 1e-9 * params.tick_size
        self.b = -1  # index of the last bin seen
        self.prev = 0
        self.last = params.warmup_bins - params.cooldown_bins
        self.last_ok = -1
        self.last_ok_px = (math.nan, math.nan)  # long / short exit-side close of the last tradable bin
        self.pending: tuple[int, int] | None = None  # (signal bin, direction)
        self.pos: dict | None = None
        self.trades: list[tuple] = []  # TRADE_DTYPE rows

    def _ok(self, mid: float, bid: float, ask: float, valid: bool) -> bool:
        good = bool(valid) and math.isfinite(mid) and mid > 0
        if self.p.entry_mode == "cross":
            good = good and math.isfinite(bid) and bid > 0 and math.isfinite(ask) and ask > 0
        return good

    def step(self, score: float, mid: float, bid: float, ask: float, valid: bool, high: float | None = None,
             low: float | None = None) -> list[TradeEvent]:
        p = self.p
        self.b += 1
        b = self.b
        out: list[TradeEvent] = []
        ok = self._ok(mid, bid, ask, valid)
        cross = p.entry_mode == "cross"
        lpx, spx = (bid, ask) if cross else (mid, mid)
        if ok:  # exit-side extremes exactly as _prepare computes them
            mhi = mid if high is None or math.isnan(high) else high
            mlo = mid if low is None or math.isnan(low) else low
            ext = (max(lpx, mhi + (lpx - mid)), min(lpx, mlo + (lpx - mid)),
                   max(spx, mhi + (spx - mid)), min(spx, mlo + (spx - mid)))
        pos = self.pos
        if pos is not None and b > pos["entry"]:
            if ok:
                hi, lo = (ext[0], ext[1]) if pos["dir"] > 0 else (ext[2], ext[3])
                t_up, t_dn = hi >= pos["up"], lo <= pos["dn"]
                if t_up or t_dn:
                    stop = t_dn if pos["dir"] > 0 else t_up
                    self._close(b, b, -1 if stop else 1, out)
            if self.pos is not None and b == pos["end"]:
                j = self.last_ok if not ok else b
                self._close(j, b, OUTCOME_TIMEOUT, out, lpx if ok else None, spx if ok else None)
        st = _state(score, p.threshold)
        if self.pending is not None and ok and b >= self.pending[0] + p.latency_bins:
            i, d = self.pending
            self.pending = None
            entry = ask if (cross and d > 0) else (bid if cross else mid)
            tp_px, sl_px = entry + d * p.tp_ticks * p.tick_size, entry - d * p.sl_ticks * p.tick_size
            up, dn = (tp_px - self.eps, sl_px + self.eps) if d > 0 else (sl_px - self.eps, tp_px + self.eps)
            self.pos = {"signal": i, "entry": b, "dir": d, "price": entry, "tp": tp_px, "sl": sl_px, "up": up,
                        "dn": dn, "end": b + p.max_hold_bins}
            out.append(TradeEvent("entry", b, b, d, entry))
        elif (self.pending is None and self.pos is None and b >= p.warmup_bins and st != 0 and st != self.prev
              and ok and b - self.last >= p.cooldown_bins):
            self.pending = (b, st)
            if p.latency_bins == 0:
                self.prev = st
                return [*out, *self._fill_now(b, st, mid, bid, ask)]
        if b >= p.warmup_bins:  # the state before the warmup's end is not seen (evaluate starts there)
            self.prev = st
        if ok:
            self.last_ok = b
            self.last_ok_px = (lpx, spx)
        return out

    def _fill_now(self, b: int, d: int, mid: float, bid: float, ask: float) -> list[TradeEvent]:
        """Zero latency: the signal bin is its own fill bin (it is tradable, or it could not have fired)."""
        self.pending = None
        cross = self.p.entry_mode == "cross"
        entry = ask if (cross and d > 0) else (bid if cross else mid)
        p = self.p
        tp_px, sl_px = entry + d * p.tp_ticks * p.tick_size, entry - d * p.sl_ticks * p.tick_size
        up, dn = (tp_px - self.eps, sl_px + self.eps) if d > 0 else (sl_px - self.eps, tp_px + self.eps)
        self.pos = {"signal": b, "entry": b, "dir": d, "price": entry, "tp": tp_px, "sl": sl_px, "up": up,
                    "dn": dn, "end": b + p.max_hold_bins}
        self.last_ok = b
        self.last_ok_px = (bid, ask) if cross else (mid, mid)
        return [TradeEvent("entry", b, b, d, entry)]

    def _close(self, j: int, known: int, outcome: int, out: list[TradeEvent], lpx: float | None = None,
               spx: float | None = None) -> None:
        p, pos = self.p, self.pos
        assert pos is not None
        d = pos["dir"]
        if outcome == OUTCOME_SL:
            xp, pnl = pos["sl"], -p.sl_ticks - p.cost_ticks_per_trade
        elif outcome == OUTCOME_TP:
            xp, pnl = pos["tp"], p.tp_ticks - p.cost_ticks_per_trade
        else:
            if lpx is not None and j == known:
                xp = lpx if d > 0 else spx
            else:
                xp = self.last_ok_px[0] if d > 0 else self.last_ok_px[1]
            pnl = d * (xp - pos["price"]) / p.tick_size - p.cost_ticks_per_trade
        self.trades.append((pos["signal"], pos["entry"], j, d, pos["price"], xp, outcome, pnl, j - pos["entry"]))
        out.append(TradeEvent("exit", j, known, d, xp, outcome, pnl))
        self.pos = None
        self.last = j

    def finish(self) -> list[TradeEvent]:
        """The session ended: an open position closes at its last tradable bin (`truncated`); an unfilled
        order is dropped."""
        out: list[TradeEvent] = []
        self.pending = None
        if self.pos is not None:
            self._close(self.last_ok, self.b, OUTCOME_TRUNCATED, out)
        return out

    def state(self) -> dict:
        """Everything `step` carries between bins, JSON-able (a checkpoint; `load_state` resumes from it)."""
        return {"b": self.b, "prev": self.prev, "last": self.last, "last_ok": self.last_ok,
                "last_ok_px": list(self.last_ok_px), "pending": None if self.pending is None else list(self.pending),
                "pos": None if self.pos is None else dict(self.pos), "trades": [list(t) for t in self.trades]}

    def load_state(self, state: dict) -> None:
        self.b, self.prev, self.last, self.last_ok = (int(state[k]) for k in ("b", "prev", "last", "last_ok"))
        self.last_ok_px = (float(state["last_ok_px"][0]), float(state["last_ok_px"][1]))
        self.pending = None if state["pending"] is None else (int(state["pending"][0]), int(state["pending"][1]))
        self.pos = None if state["pos"] is None else dict(state["pos"])
        self.trades = [tuple(t) for t in state["trades"]]

    def trade_array(self) -> np.ndarray:
        return np.array(self.trades, dtype=TRADE_DTYPE)
