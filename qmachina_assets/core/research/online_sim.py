"""Online simulation (SPEC §6.9 [REBUILD]): replay a day through the incremental path, bin by bin, and
report the per-bin latency budget of engine + gold + signal.

The seed timed one batch `compute()` and amortised it per bin. Here every bin goes through exactly what a
live stream does when the bin clock ticks:

1. **Engine.** The file's records are split at bin boundaries on the engine's own clock: the effective
   ts_recv is the running maximum of ts_recv (the engine applies a backwards record at the previous
   ts_recv) and bins are `cell_width_ms` multiples since the epoch; a record at exactly the boundary
   belongs to the next bin. Each bin's records are fed with `Engine.iter_feed(records,
   close_through=bin_end)`: the records are applied, then the bin is closed and emitted at once, as a
   timer at bin_end would, without waiting for the next record. An empty bin is a feed of no records.
   Closing early runs the same `_close_bin` sequence the batch path runs when the next record arrives, so
   the silver equals a batch run bit for bit (tested). Records before the emission window (the warm-up
   of the book and physics) are fed in bulk and not timed.
2. **Gold.** `GoldRuntime.step` on that one bin (the same kernel as the batch gold).
3. **Signal.** Signals are batch `score(GridData)`; online, a rolling GridData buffer holds the last
   `lookback` bins of the columns the signal reads (invalid bins zeroed, as `load_grid_data` does) and the
   signal's value for the bin is the last entry of `score(buffer)`.

Lookback (`signal_lookback`): the number of bins the value at a bin depends on, from the signal's Params.
For finite-memory signals it is exact, so the online value equals the batch score at every bin (tested):
flow_score, msd, gold_column: 1; ads: max(slope window) − 1 + zscore_window (a slope needs w bins, the z window holds
W slopes); derivative: zscore_window_bins + 3 (d1..d3 of the state base need 3 earlier bins, then the z
window); iirc: the longest slope window; jad, erd: the z window. EMA-based signals (pfp, spg and the
pfp/svac parts of ads_pfp_svac) have infinite memory: the buffer covers the EMA's horizon to a weight of
`EMA_TOLERANCE` (ceil(ln tol / ln(1 − α)) bins for the slowest α), so the online value differs from the
batch one by at most that share of the EMA's initial deviation (`exact` false in the report). The ads
warm-up and pfp lag gates use bins-into-day, which the buffer reproduces once it is at least that long.
ML signals need a model fitted on earlier days (fit/score protocol of ml.py): `replay` refuses them; their
lookback (`served_signal` streams a published version's stored model) is their features' longest window, + 1
bin and the last valid bin before it where the features use tick returns (`Lookback.keep_last_valid`: a return
is the change from the last valid mid of the day, however far back; the buffer keeps that bin), which makes
them exact except pca_ad (its warm-up gate counts the day's valid bins).

Timing: `time.perf_counter_ns` around each stage of each bin. Engine time is all engine work since the
previous emitted bin (a feed that emits nothing, e.g. before the bin clock starts, is added to the next
bin). `total` = engine + gold + signal of the bin. The JIT is warmed on the file's first records before
the replay, and the first `warmup_bins` emitted bins (default: the lookback, so timed bins see a full
buffer) are replayed but left out of the statistics. `bin_budget_ms` defaults to cell_width_ms.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import resource
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from pydantic import BaseModel

from qmachina_assets.core.engine import silver
from qmachina_assets.core.engine.engine import Engine, SilverChunk
from qmachina_assets.core.engine.silver_partition import SilverWindow
from qmachina_assets.core.gold.features import GOLD_CODE_COLUMNS, GOLD_FLOAT_COLUMNS, GoldRuntime
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.research.signals import common
from qmachina_assets.core.research.signals.base import GridData, Signal
from qmachina_assets.core.research.signals.catalog import make_signal
from qmachina_assets.core.research.specs import resolve_serving
from qmachina_assets.core.research.sweeps import signal_kwargs

#: Weight of an EMA's initial state still allowed in the value (sets the buffer of EMA-based signals).
EMA_TOLERANCE = 1e-9
STAGES: tuple[str, ...] = ("engine", "gold", "signal", "total")
_GOLD_COLUMNS = frozenset((*GOLD_FLOAT_COLUMNS, *GOLD_CODE_COLUMNS))
_INT64_MIN = np.iinfo(np.int64).min


# ------------------------------------------------------------------------------------------ lookback


@dataclass(frozen=True)
class Lookback:
    """Bins of history the signal's value at a bin depends on; `exact` false: EMA tail truncated.
    `keep_last_valid`: the buffer also keeps the last valid bin before its window (tick returns carry the
    last valid mid across invalid bins, see `OnlineSignal`)."""

    bins: int
    exact: bool
    rule: str
    keep_last_valid: bool = False


def _ml_lookback(sig: Signal) -> Lookback:
    """The longest rolling window of an ML signal's features (signals/features.py) from its Params; + 1 and
    `keep_last_valid` where they use tick returns (a return needs the previous valid mid)."""
    p, name = sig.params, sig.name
    ret = "tick returns: + 1 bin and the last valid bin before it"
    if name == "gbm_mf":
        w = max(p.slope_window, 300, 600, 200)
        return Lookback(w + 1, True, f"max(slope_window {p.slope_window}, P-V 300, returns 600, spread 200) + 1; "
                                     + ret, keep_last_valid=True)
    if name == "knn_cl":
        return Lookback(601, True, "max(slopes 200, returns 600) + 1; " + ret, keep_last_valid=True)
    if name == "svm_sp":
        return Lookback(601, True, "max(band moments 600, returns 600) + 1; " + ret, keep_last_valid=True)
    if name == "xgb_snap":
        return Lookback(601, True, "returns 600 + 1; " + ret, keep_last_valid=True)
    if name == "lsvm_der":
        return Lookback(max(p.slope_windows), True, "max(slope_windows)")
    if name == "pca_ad":
        return Lookback(p.z_window, False, f"z_window; the z_min_periods gate counts valid bins since the day's start "
                                           f"(the buffer counts them over its {p.z_window} bins)")
    raise ValueError(f"ML signal {name!r} has no online lookback rule (known: gbm_mf, knn_cl, lsvm_der, pca_ad, "
                     "svm_sp, xgb_snap)")


def _ema_bins(alpha: float, tol: float = EMA_TOLERANCE) -> int:
    """Bins after which an EMA's initial state weighs (1 − α)^n <= tol."""
    return 1 if alpha >= 1.0 else math.ceil(math.log(tol) / math.log(1.0 - alpha))


def signal_lookback(sig: Signal, cell_width_ms: int) -> Lookback:
    """The rolling-buffer length of a signal (see the module docstring for each rule). An ML signal's is its
    features' longest window (it scores with a fitted model: `served_signal` loads a published version's)."""
    p, name = sig.params, sig.name
    if sig.kind == "ml":
        return _ml_lookback(sig)
    if name in ("flow_score", "msd", "gold_column"):
        return Lookback(1, True, "pointwise")
    if name == "ads":
        return Lookback(max(p.slope_windows) - 1 + p.zscore_window, True, "max(slope_windows) - 1 + zscore_window")
    if name == "derivative":
        return Lookback(p.zscore_window_bins + 3, True, "zscore_window_bins + 3 (d1..d3)")
    if name == "iirc":
        return Lookback(max(p.fast_window, p.slow_window), True, "max(fast_window, slow_window)")
    if name in ("jad", "erd"):
        return Lookback(p.zscore_window, True, "zscore_window")
    if name == "pfp":
        return Lookback(p.lag_bins + _ema_bins(p.ema_alpha), False,
                        f"lag_bins + EMA horizon (alpha {p.ema_alpha}, tol {EMA_TOLERANCE:g})")
    if name == "spg":
        alpha = common.span_alpha(max(p.fast_span, p.slow_span, p.curv_span))
        return Lookback(_ema_bins(alpha), False, f"slowest EMA horizon (alpha {alpha:.4g}, tol {EMA_TOLERANCE:g})")
    if name == "ads_pfp_svac":
        b = sig._bins(_empty_grid(cell_width_ms))  # the signal's own ms -> bins conversions
        ads = max(b["slopes"]) - 1 + b["z_window"]
        pfp = b["lag"] + _ema_bins(p.pfp_ema_alpha)
        svac = _ema_bins(p.svac_norm_alpha)
        return Lookback(max(ads, b["ads_warmup"], pfp, svac), False,
                        f"max(ADS {ads}, ADS warm-up {b['ads_warmup']}, PFP lag + EMA {pfp}, SVac EMA {svac}; "
                        f"tol {EMA_TOLERANCE:g})")
    raise ValueError(f"signal {name!r} has no online lookback rule (known: ads, ads_pfp_svac, derivative, erd, "
                     "flow_score, gold_column, iirc, jad, msd, pfp, spg)")


def _empty_grid(cell_width_ms: int) -> GridData:
    z = np.zeros(0)
    return GridData(z.astype(np.int64), z, z, z, z.astype(bool), z.astype(np.int64), 0, int(cell_width_ms))


# ----------------------------------------------------------------------------------- rolling buffer


class OnlineSignal:
    """A batch signal scored online: a rolling GridData of the last `lookback` bins, value = last score.

    Storage is 2·lookback rows per column; when the end is reached the live rows are copied to the front
    (amortised one row per bin), so the buffer is always a contiguous view in time order.

    `dsl_columns`: columns the signal reads from a Gold DSL's outputs, which the caller computes once per bin
    (the stream's DSL follower) and passes to `push` as `dsl` (rows laid out as the silver grid's).

    `threads`: numba threads while scoring (default 1; None = leave numba's setting). The batch kernels
    run several series in a `prange` loop; on a buffer of a few hundred bins a parallel launch costs far
    more than the work (measured on this 2-core box under load: ads 8 ms per bin with 2 threads, 0.23 ms
    with 1), and a stream scores one bin at a time on one thread anyway.
    """

    def __init__(self, signal: Signal, lookback: int, radius: int, cell_width_ms: int, price_scale: float,
                 threads: int | None = 1, dsl_columns: Collection[str] = (), keep_last_valid: bool = False):
        if lookback < 1:
            raise ValueError(f"lookback must be >= 1 bin, got {lookback}")
        silver_names = {n for n, _ in silver.GRID_COLUMNS}
        missing = [c for c in signal.columns if c not in silver_names and c not in _GOLD_COLUMNS
                   and c not in dsl_columns]
        if missing:
            raise ValueError(f"signal {signal.name!r} reads {', '.join(missing)}: not a silver or built-in gold "
                             f"column, nor a Gold DSL output fed online (dsl_columns: "
                             f"{', '.join(dsl_columns) or 'none'}), not available online")
        #: where push() reads each column: the silver grid, the built-in gold or the DSL outputs
        self._source = {c: "gold" if c in _GOLD_COLUMNS else ("grid" if c in silver_names else "dsl")
                        for c in signal.columns}
        self.dsl_columns = tuple(c for c, src in self._source.items() if src == "dsl")
        self.signal, self.lookback, self.radius = signal, int(lookback), int(radius)
        self.cell_width_ms, self.price_scale = int(cell_width_ms), float(price_scale)
        cap = max(2 * self.lookback, self.lookback + 1)
        w = 2 * self.radius + 1
        self._ts = np.zeros(cap, np.int64)
        self._mid = np.zeros(cap)
        self._bid = np.zeros(cap)
        self._ask = np.zeros(cap)
        self._valid = np.zeros(cap, bool)
        self._day = np.zeros(cap, np.int64)
        self._cols = {c: np.zeros((cap, w)) for c in signal.columns}
        self._start = 0
        self._n = 0
        self.threads = threads
        self.keep_last_valid = bool(keep_last_valid)

    def _arrays(self) -> list[np.ndarray]:
        return [self._ts, self._mid, self._bid, self._ask, self._valid, self._day, *self._cols.values()]

    def push(self, bins: dict[str, np.ndarray], grid: dict[str, np.ndarray], gold: dict[str, np.ndarray],
             b: int = 0, dsl: Mapping[str, np.ndarray] | None = None) -> float:
        """Append bin `b` of a silver chunk (its gold, and its Gold DSL outputs when the signal reads some) and
        return the signal's value at it."""
        if dsl is None and self.dsl_columns:
            raise ValueError(f"signal {self.signal.name!r} reads Gold DSL output(s) {', '.join(self.dsl_columns)}: "
                             "push() needs the bin's DSL outputs (dsl=)")
        if self._n == self.lookback and not self.keep_last_valid:
            self._start += 1
            self._n -= 1
        if self._start + self._n == self._ts.shape[0]:
            self._make_room()
        i = self._start + self._n
        mid = float(bins["mid_price"][b])
        valid = bool(bins["book_valid"][b]) and mid > 0
        self._ts[i] = bins["ts_ns"][b]
        self._mid[i] = mid if valid else 0.0
        self._bid[i] = bins["best_bid_price_int"][b] * self.price_scale
        self._ask[i] = bins["best_ask_price_int"][b] * self.price_scale
        self._valid[i] = valid
        w = 2 * self.radius + 1
        r0 = b * w
        sources = {"gold": gold, "grid": grid, "dsl": dsl}
        for c, arr in self._cols.items():
            if valid:
                arr[i] = sources[self._source[c]][c][r0:r0 + w]  # type: ignore[index]
            else:
                arr[i] = 0.0
        self._n += 1
        if self.keep_last_valid:
            self._trim()
        return self.value()

    def _make_room(self) -> None:
        """Move the live rows to the front (amortised one row per bin), or double the storage when they fill
        more than half of it (only with `keep_last_valid`, across a stretch of invalid bins)."""
        s, n, cap = self._start, self._n, self._ts.shape[0]
        if n > cap // 2:
            def grow(a: np.ndarray) -> np.ndarray:
                out = np.zeros((2 * cap, *a.shape[1:]), a.dtype)
                out[:n] = a[s:s + n]
                return out
            self._ts, self._mid, self._bid, self._ask = (grow(a) for a in (self._ts, self._mid, self._bid, self._ask))
            self._valid, self._day = grow(self._valid), grow(self._day)
            self._cols = {c: grow(a) for c, a in self._cols.items()}
        else:
            for a in self._arrays():
                a[:n] = a[s:s + n]
        self._start = 0

    def _trim(self) -> None:
        """`keep_last_valid`: drop the oldest rows while the buffer holds more than `lookback` bins, except the
        last valid bin before the window (rows 1 .. n − lookback are the ones before it): the tick return of
        the window's first valid bin is its change from that bin's mid, as in the batch day."""
        while self._n > self.lookback:
            s, j = self._start, self._n - self.lookback
            if self._valid[s] and not self._valid[s + 1:s + j + 1].any():
                break
            self._start += 1
            self._n -= 1

    def state(self) -> dict[str, np.ndarray]:
        """The buffer's live rows as arrays (a checkpoint; `load_state` resumes from it)."""
        s, e = self._start, self._start + self._n
        out = {"ts": self._ts, "mid": self._mid, "bid": self._bid, "ask": self._ask, "valid": self._valid,
               "day": self._day, **{f"col:{c}": a for c, a in self._cols.items()}}
        return {k: a[s:e].copy() for k, a in out.items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        n = int(state["ts"].shape[0])
        if n > self.lookback and not self.keep_last_valid:
            raise ValueError(f"OnlineSignal state holds {n} bins, the buffer {self.lookback}")
        while n > self._ts.shape[0] // 2 and self.keep_last_valid:
            self._start, self._n = 0, self._ts.shape[0] // 2 + 1
            self._make_room()
        self._start, self._n = 0, n
        for key, arr in (("ts", self._ts), ("mid", self._mid), ("bid", self._bid), ("ask", self._ask),
                         ("valid", self._valid), ("day", self._day),
                         *((f"col:{c}", a) for c, a in self._cols.items())):
            arr[:n] = state[key]

    def data(self) -> GridData:
        s, e = self._start, self._start + self._n
        return GridData(self._ts[s:e], self._mid[s:e], self._bid[s:e], self._ask[s:e], self._valid[s:e],
                        self._day[s:e], self.radius, self.cell_width_ms, {c: a[s:e] for c, a in self._cols.items()})

    def value(self) -> float:
        if self.threads is None:
            return float(self.signal.score(self.data())[-1])
        before = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        try:
            return float(self.signal.score(self.data())[-1])
        finally:
            numba.set_num_threads(before)


# ----------------------------------------------------------------------------------- record splitting


def iter_bin_records(chunks: Iterable[np.ndarray], cell_ns: int, start_ns: int | None = None,
                     end_ns: int | None = None) -> Iterator[tuple[int | None, np.ndarray]]:
    """Split a record stream at bin boundaries on the engine's clock.

    Yields `(None, records)` for records before the first emitted bin (feed them in bulk), then
    `(bin_end, records)` for every bin in order, empty bins included, through the end of the emission
    window (`end_ns`) or the bin of the last record. Records after the window are not yielded.
    """
    first = None if start_ns is None else (int(start_ns) // cell_ns) * cell_ns
    final = None if end_ns is None else ((int(end_ns) - 1) // cell_ns + 1) * cell_ns
    last = _INT64_MIN
    cur: int | None = None  # end of the open bin
    pending: list[np.ndarray] = []

    def take() -> np.ndarray:
        out = pending[0] if len(pending) == 1 else (np.concatenate(pending) if pending
                                                    else np.zeros(0, dbn.MBO_DTYPE))
        pending.clear()
        return out

    for recs in chunks:
        if not len(recs):
            continue
        eff = np.maximum.accumulate(recs["ts_recv"].view(np.int64))
        np.maximum(eff, last, out=eff)
        last = int(eff[-1])
        i = 0
        if cur is None:
            if first is None:
                cur = (int(eff[0]) // cell_ns + 1) * cell_ns
            else:
                j = int(np.searchsorted(eff, first, "left"))
                if j:
                    yield None, recs[:j]
                if j == len(recs):
                    continue
                i, cur = j, first + cell_ns
        while i < len(recs):
            if final is not None and cur > final:
                return
            j = i + int(np.searchsorted(eff[i:], cur, "left"))
            if j == len(recs):
                pending.append(recs[i:])
                break
            pending.append(recs[i:j])
            yield cur, take()
            i, cur = j, cur + cell_ns
    if cur is None:
        if first is None or final is None:
            return
        cur = first + cell_ns
    stop = final if final is not None else cur
    while cur <= stop:
        yield cur, take()
        cur += cell_ns


# --------------------------------------------------------------------------------------------- report


class StageLatency(BaseModel):
    p50_us: float
    p95_us: float
    p99_us: float
    max_us: float
    mean_us: float


class OnlineSimReport(BaseModel):
    """Per-bin latency of the incremental path over one replayed file (SPEC §6.9)."""

    file: str
    serving: str
    signal: str
    signal_params: dict
    lookback_bins: int
    lookback_exact: bool
    lookback_rule: str
    signal_threads: int | None
    date: str
    start_et: str | None
    end_et: str | None
    cell_width_ms: int
    grid_radius_ticks: int
    records: int  # replayed bin by bin (inside the window)
    warmup_records: int  # fed in bulk before the window, untimed
    bins: int  # emitted bins
    valid_bins: int
    signal_defined_bins: int
    warmup_bins: int  # emitted bins replayed but not timed
    timed_bins: int
    stages: dict[str, StageLatency]
    bin_budget_ms: float
    over_budget_bins: int
    over_budget_share: float
    p99_total_budget_pct: float
    peak_rss_mb: float
    wall_seconds: float


@dataclass
class BinOutput:
    """What the online path produced for one bin (handed to `on_bin`, outside the timed stages)."""

    silver: SilverChunk  # one bin, detached copy
    gold: dict[str, np.ndarray]
    signal: float


def _latency(ns: np.ndarray) -> StageLatency:
    if ns.size == 0:
        return StageLatency(p50_us=0.0, p95_us=0.0, p99_us=0.0, max_us=0.0, mean_us=0.0)
    us = ns.astype(np.float64) / 1e3
    p50, p95, p99 = np.percentile(us, [50, 95, 99])
    return StageLatency(p50_us=round(float(p50), 2), p95_us=round(float(p95), 2), p99_us=round(float(p99), 2),
                        max_us=round(float(us.max()), 2), mean_us=round(float(us.mean()), 2))


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _one_bin(ch: SilverChunk, b: int, w: int) -> SilverChunk:
    if ch.n_bins == 1:
        return ch
    return SilverChunk(bins={k: v[b:b + 1] for k, v in ch.bins.items()},
                       grid={k: v[b * w:(b + 1) * w] for k, v in ch.grid.items()})


def _warm_jit(path: Path, instrument, gold_config, signal: Signal, lookback: int, threads: int | None) -> None:
    """Compile/load every kernel of the timed path on the file's first records (throwaway state)."""
    cell_ns = int(instrument.cell_width_ms) * 1_000_000
    radius = int(instrument.grid_radius_ticks)
    eng = Engine(instrument)
    runtime = GoldRuntime(gold_config, radius, instrument.tick_int)
    buf = OnlineSignal(signal, lookback, radius, int(instrument.cell_width_ms), float(instrument.price_scale),
                       threads)
    chunks = dbn.iter_mbo_chunks(path, chunk_records=50_000)
    try:
        recs = next(chunks, np.zeros(0, dbn.MBO_DTYPE))
    finally:
        chunks.close()
    bins: list[SilverChunk] = []
    for end, part in iter_bin_records([recs], cell_ns):
        for ch in eng.iter_feed(part, close_through=-1 if end is None else end):
            bins.extend(_one_bin(ch, b, 2 * radius + 1).copy() for b in range(ch.n_bins))
        if len(bins) >= 8:
            break
    if not bins:
        for ch in eng.iter_flush():
            bins.extend(_one_bin(ch, b, 2 * radius + 1).copy() for b in range(ch.n_bins))
    if not bins:
        return
    for i in range(min(lookback + 2, 400)):
        ch = bins[i % len(bins)]
        buf.push(ch.bins, ch.grid, runtime.step(ch.bins, ch.grid))


# ------------------------------------------------------------------------------------------------ run


def run_online_sim(path: str | os.PathLike[str], serving_name: str, *, start_et: str | None = None,
                   end_et: str | None = None, warmup_bins: int | None = None, bin_budget_ms: float | None = None,
                   lookback_bins: int | None = None, signal_threads: int | None = 1,
                   chunk_records: int = 1_000_000,
                   on_bin: Callable[[BinOutput], None] | None = None) -> OnlineSimReport:
    """Replay `path` bin by bin through engine -> gold -> signal with the serving spec's runtime, gold
    config and signal; time each stage per bin (see the module docstring).

    `start_et`/`end_et` (HH:MM, both or neither) is the emission window in ET on the file's start date
    (records before it warm the book in bulk, untimed). `warmup_bins` (default: the signal's lookback)
    emitted bins are replayed but not timed. `lookback_bins` overrides the signal's rolling buffer.
    `signal_threads`: numba threads while scoring (see `OnlineSignal`; None = numba's default).
    `on_bin` receives each bin's silver/gold/signal outside the timed stages (tests, debugging).
    """
    t_wall = time.perf_counter()
    p = Path(path)
    serving, pipeline = resolve_serving(serving_name)
    if serving.signal is None:
        raise ValueError(f"serving spec {serving.name!r} has no signal (signal: null): nothing to score online")
    instrument = serving.runtime(pipeline)
    gold_config = serving.gold_config(pipeline)
    signal = make_signal(serving.signal.name, signal_kwargs(serving))
    if signal.kind == "ml":
        raise ValueError(f"signal {signal.name!r} is an ML signal: it scores with a model fitted on earlier days "
                         "(fit/score protocol), which online-sim does not train; use a statistical signal (a "
                         "published ML version streams with its stored model: served_signal)")
    cw = int(instrument.cell_width_ms)
    lb = signal_lookback(signal, cw)
    if lookback_bins is not None:
        if lookback_bins < 1:
            raise ValueError(f"lookback_bins must be >= 1, got {lookback_bins}")
        lb = Lookback(int(lookback_bins), lookback_bins >= lb.bins and lb.exact, f"override ({lb.rule}: {lb.bins})")
    warm = lb.bins if warmup_bins is None else int(warmup_bins)
    if warm < 0:
        raise ValueError(f"warmup_bins must be >= 0, got {warmup_bins}")
    budget_ms = float(cw if bin_budget_ms is None else bin_budget_ms)
    if budget_ms <= 0:
        raise ValueError(f"bin_budget_ms must be > 0, got {bin_budget_ms}")

    header = dbn.read_header(p)
    dbn.require_mbo(header)
    date: dt.date = header.start_date
    start_ns, end_ns = SilverWindow(start_et=start_et, end_et=end_et).bounds_ns(date)
    radius, w = int(instrument.grid_radius_ticks), 2 * int(instrument.grid_radius_ticks) + 1
    cell_ns = cw * 1_000_000

    _warm_jit(p, instrument, gold_config, signal, lb.bins, signal_threads)

    eng = Engine(instrument, start_ns, end_ns)
    runtime = GoldRuntime(gold_config, radius, instrument.tick_int)
    buf = OnlineSignal(signal, lb.bins, radius, cw, float(instrument.price_scale), signal_threads)
    t_eng, t_gold, t_sig = [], [], []
    n_records = n_pre = n_valid = n_defined = 0
    pc = time.perf_counter_ns
    carry = 0  # engine time of feeds that emitted no bin yet (goes to the next emitted bin)
    for end, recs in iter_bin_records(dbn.iter_mbo_chunks(p, chunk_records=chunk_records), cell_ns,
                                      start_ns, end_ns):
        if end is None:  # before the window: warm the book in bulk, untimed
            n_pre += len(recs)
            for _ in eng.iter_feed(recs):
                pass
            continue
        n_records += len(recs)
        t0 = pc()
        for ch in eng.iter_feed(recs, close_through=end):
            carry += pc() - t0
            for b in range(ch.n_bins):
                one = _one_bin(ch, b, w)
                t1 = pc()
                g = runtime.step(one.bins, one.grid)
                t2 = pc()
                v = buf.push(one.bins, one.grid, g)
                t3 = pc()
                t_eng.append(carry)
                t_gold.append(t2 - t1)
                t_sig.append(t3 - t2)
                carry = 0
                n_valid += bool(one.bins["book_valid"][0]) and float(one.bins["mid_price"][0]) > 0
                n_defined += math.isfinite(v)
                if on_bin is not None:
                    on_bin(BinOutput(one.copy(), {k: a.copy() for k, a in g.items()}, v))
            t0 = pc()
        carry += pc() - t0
    eng_ns = np.asarray(t_eng, np.int64)
    gold_ns, sig_ns = np.asarray(t_gold, np.int64), np.asarray(t_sig, np.int64)
    n_bins = len(gold_ns)
    timed = slice(min(warm, n_bins), n_bins)
    per = {"engine": eng_ns[timed], "gold": gold_ns[timed], "signal": sig_ns[timed]}
    per["total"] = per["engine"] + per["gold"] + per["signal"]
    stages = {s: _latency(per[s]) for s in STAGES}
    over = int((per["total"] > budget_ms * 1e6).sum())
    n_timed = int(per["total"].size)
    return OnlineSimReport(
        file=str(p), serving=serving.name, signal=signal.name, signal_params=signal.params.model_dump(mode="json"),
        lookback_bins=lb.bins, lookback_exact=lb.exact, lookback_rule=lb.rule, signal_threads=signal_threads,
        date=date.isoformat(), start_et=start_et, end_et=end_et, cell_width_ms=cw, grid_radius_ticks=radius,
        records=n_records, warmup_records=n_pre, bins=n_bins, valid_bins=n_valid, signal_defined_bins=n_defined,
        warmup_bins=n_bins - n_timed, timed_bins=n_timed, stages=stages, bin_budget_ms=budget_ms,
        over_budget_bins=over, over_budget_share=round(over / n_timed, 6) if n_timed else 0.0,
        p99_total_budget_pct=round(stages["total"].p99_us / (budget_ms * 1e3) * 100.0, 3),
        peak_rss_mb=_peak_rss_mb(), wall_seconds=round(time.perf_counter() - t_wall, 3),
    )


def format_report(report: OnlineSimReport) -> str:
    """A small text table of the report."""
    r = report
    window = f"{r.start_et}-{r.end_et} ET" if r.start_et else "whole file"
    exact = "exact" if r.lookback_exact else f"EMA tail truncated at {EMA_TOLERANCE:g}"
    threads = "numba default" if r.signal_threads is None else r.signal_threads
    lines = [
        f"online-sim {r.serving}: signal {r.signal} (lookback {r.lookback_bins} bins, {exact}; "
        f"scoring threads {threads})",
        f"file {r.file}, {r.date} {window}, {r.cell_width_ms} ms cells, radius {r.grid_radius_ticks}",
        f"bins {r.bins} (valid {r.valid_bins}, timed {r.timed_bins}, warm-up {r.warmup_bins}); "
        f"records {r.records} bin by bin, {r.warmup_records} before the window",
        f"{'stage':<8}{'p50 µs':>11}{'p95 µs':>11}{'p99 µs':>11}{'max µs':>11}{'mean µs':>11}",
    ]
    for name in STAGES:
        s = r.stages[name]
        lines.append(f"{name:<8}{s.p50_us:>11.1f}{s.p95_us:>11.1f}{s.p99_us:>11.1f}{s.max_us:>11.1f}{s.mean_us:>11.1f}")
    lines.append(f"budget {r.bin_budget_ms:g} ms/bin: {r.over_budget_bins} bins over ({r.over_budget_share:.4%}), "
                 f"p99 total = {r.p99_total_budget_pct:.2f} % of the budget; peak RSS {r.peak_rss_mb:.0f} MB; "
                 f"wall {r.wall_seconds:.1f} s")
    return "\n".join(lines)
