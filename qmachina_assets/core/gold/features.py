"""Built-in gold features from silver only (SPEC §4.1–§4.4): force block, rolled composite and its
derivatives, state5 and flow scoring. One numba step per bin serves both the batch path (a loop over
the day) and the stream (`GoldRuntime.step`), so offline and served numbers are the same code.

Decisions where the rebuild departs from SPEC §4 (SPEC §10 items 6, 7, 8, 11):
- **Absolute-tick series.** The temporal state (composite ring, derivative chain, z windows) follows
  an absolute price level, not a relative k: the seed's per-k series mixed price levels every time the
  spot moved, so composite_d1..d3 spiked on each reprice (§10.7). Silver's v/a/j are already
  absolute-tick quantities, so the gold series are too; output is still laid out on the (bin, k) grid.
  A level's series starts when it enters the ±R window and resets when it leaves it, when a bin is
  invalid or when bin_seq is not contiguous (warm-up gates apply again), because a derivative across a
  gap would divide a multi-bin change by one bin's Δ.
- **Invalid bins are masked** (§10.6): a bin with `book_valid` false or no spot emits zeros, gold_valid
  false, and breaks every series.
- **One definition of weights and epsilons** (§10.8): rollup weights and derivative weights are both
  normalised to sum 1 (composite ∈ [-1, 1] like composite_raw); `composite_eps` and `scale_eps` are
  config fields (default 1e-12) shipped to the browser in `gold_config`; Δ = cell_width_ms / 1000 always.
- **Undefined, not zero** during warm-up: d1 needs 2 samples of the series, d2 3, d3 4; an undefined
  value occupies its slot in the z window (the window is the last W bins) but is not a statistic input,
  and is emitted as 0.
- **state5 is symmetric** (§10.11): with d = sign(ask_sign + bid_sign) (the BBO's net reprice
  direction), above the spot d > 0 is bull_vacuum (2) and d < 0 bear_pressure (-1); below it d > 0 is
  bull_pressure (1) and d < 0 bear_vacuum (-2); k = 0 or d = 0 is mixed (0). Mirroring prices (k -> -k,
  ask <-> bid, signs negated) negates the code. The seed labelled ask-up/bid-flat bearish.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Literal

import numpy as np
from numba import njit, prange
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qmachina_assets.core.gold import rolling
from qmachina_assets.core.instrument import InstrumentConfig
from qmachina_assets.core.numba_cache import drop_stale_cache

drop_stale_cache(__file__, ("rolling.py",))
GOLD_VERSION = "gold-1"

#: Float gold columns per (bin, k), then the int8 codes, in output order.
GOLD_FLOAT_COLUMNS: tuple[str, ...] = (
    "pressure_variant", "vacuum_variant", "composite_raw", "composite",
    "composite_d1", "composite_d2", "composite_d3", "flow_score",
)
GOLD_CODE_COLUMNS: tuple[str, ...] = ("state5_code", "flow_state_code")
#: Silver inputs of the built-in set.
GOLD_INPUTS: tuple[str, ...] = ("v_add", "v_rest_depth", "a_add", "v_pull", "v_fill", "a_pull")


class GoldFeatureConfig(BaseModel):
    """Every parameter of the built-in gold set (SPEC §4.5 `gold_config`), shipped to the browser as is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cell_width_ms: int = Field(ge=1)
    c1: float = Field(ge=0)
    c2: float = Field(ge=0)
    c3: float = Field(ge=0)
    c4: float = Field(ge=0)
    c5: float = Field(ge=0)
    c6: float = Field(ge=0)
    c7: float = Field(ge=0)
    flow_windows: tuple[int, ...] = Field(min_length=1)
    flow_rollup_weights: tuple[float, ...] = Field(min_length=1)
    flow_derivative_weights: tuple[float, float, float]
    flow_tanh_scale: float = Field(gt=0)
    flow_neutral_threshold: float = Field(gt=0, lt=1)
    flow_zscore_window_bins: int = Field(ge=2)
    flow_zscore_min_periods: int = Field(ge=2)
    composite_eps: float = Field(1e-12, gt=0)
    scale_eps: float = Field(1e-12, gt=0)
    series: Literal["absolute_tick"] = "absolute_tick"

    @model_validator(mode="after")
    def _cross_field(self) -> GoldFeatureConfig:
        if len(self.flow_windows) != len(self.flow_rollup_weights):
            raise ValueError("flow_rollup_weights: one weight per flow_windows entry expected")
        if any(w < 1 for w in self.flow_windows):
            raise ValueError("flow_windows: every window must be >= 1 bin")
        if any(w < 0 for w in (*self.flow_rollup_weights, *self.flow_derivative_weights)):
            raise ValueError("flow_rollup_weights/flow_derivative_weights: weights must be >= 0")
        if sum(self.flow_rollup_weights) <= 0:
            raise ValueError("flow_rollup_weights: at least one weight must be > 0")
        if sum(self.flow_derivative_weights) <= 0:
            raise ValueError("flow_derivative_weights: at least one weight must be > 0")
        if self.flow_zscore_min_periods > self.flow_zscore_window_bins:
            raise ValueError("flow_zscore_min_periods: must be <= flow_zscore_window_bins")
        return self

    @classmethod
    def from_instrument(cls, inst: InstrumentConfig, **overrides: object) -> GoldFeatureConfig:
        fields = {name: getattr(inst, name) for name in cls.model_fields if hasattr(inst, name)}
        return cls(**{**fields, **overrides})

    @property
    def dt_s(self) -> float:
        return self.cell_width_ms / 1000.0

    @property
    def rollup_weights_normalised(self) -> tuple[float, ...]:
        total = sum(self.flow_rollup_weights)
        return tuple(w / total for w in self.flow_rollup_weights)

    @property
    def derivative_weights_normalised(self) -> tuple[float, float, float]:
        total = sum(self.flow_derivative_weights)
        return tuple(w / total for w in self.flow_derivative_weights)  # type: ignore[return-value]

    @property
    def config_hash(self) -> str:
        """First 12 hex of sha256 over compact sorted JSON (the lineage key of a gold partition)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---- the per-bin kernel ---------------------------------------------------------------------------

# int64 state columns per slot
_TICK, _SEQ, _NSEEN, _ZHEAD, _ZLEN, _NS1, _NS2, _NS3, _MAD1, _MAD2, _MAD3 = range(11)  # _MAD*: MAD split hints
# float64 state columns per slot
_PREV_C, _PREV_D1, _PREV_D2 = range(3)
_EMPTY = np.iinfo(np.int64).min


@njit(cache=True, _nrt=False, error_model="numpy")
def state5_code(k: int, ask_sign: int, bid_sign: int) -> int:
    s = ask_sign + bid_sign
    d = 1 if s > 0 else (-1 if s < 0 else 0)
    if k == 0 or d == 0:
        return 0
    if k > 0:
        return 2 if d > 0 else -1
    return 1 if d > 0 else -2


@njit(cache=True, _nrt=False, error_model="numpy")
def _reset(si_row) -> None:
    si_row[_NSEEN] = 0
    _reset_z(si_row)


@njit(cache=True, _nrt=False, error_model="numpy")
def _reset_z(si_row) -> None:
    """The z windows' part of `_reset` (the batch path resets the series' part a block of cells earlier)."""
    si_row[_ZHEAD] = 0
    si_row[_ZLEN] = 0
    si_row[_NS1] = 0
    si_row[_NS2] = 0
    si_row[_NS3] = 0


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def _force(inp, r, out_f, ro, coef, eps_c) -> float:
    """Force block of input row r (pressure, vacuum, composite_raw written at output row ro); returns raw."""
    v_add = inp[0, r]
    v_rest = inp[1, r]
    a_add = inp[2, r]
    v_pull = inp[3, r]
    v_fill = inp[4, r]
    a_pull = inp[5, r]
    p = coef[0] * v_add + coef[1] * max(v_rest, 0.0) + coef[2] * max(a_add, 0.0)
    v = coef[3] * v_pull + coef[4] * v_fill + coef[5] * max(-v_rest, 0.0) + coef[6] * max(a_pull, 0.0)
    raw = (p - v) / (abs(p) + abs(v) + eps_c)
    out_f[0, ro] = p
    out_f[1, ro] = v
    out_f[2, ro] = raw
    return raw


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def _derivatives(comp, n, out_f, ro, sf_row, dt):
    """composite and d1..d3 of the n-th sample (output row ro) from the previous composite/d1/d2."""
    d1 = (comp - sf_row[_PREV_C]) / dt if n >= 2 else np.nan
    d2 = (d1 - sf_row[_PREV_D1]) / dt if n >= 3 else np.nan
    d3 = (d2 - sf_row[_PREV_D2]) / dt if n >= 4 else np.nan
    sf_row[_PREV_C] = comp
    sf_row[_PREV_D1] = d1
    sf_row[_PREV_D2] = d2
    out_f[3, ro] = comp
    out_f[4, ro] = 0.0 if math.isnan(d1) else d1
    out_f[5, ro] = 0.0 if math.isnan(d2) else d2
    out_f[6, ro] = 0.0 if math.isnan(d3) else d3
    return d1, d2, d3


@njit(cache=True, _nrt=False, error_model="numpy")
def _series(inp, r, out_f, ro, si_row, sf_row, ring_row, coef, windows, rho, params):
    """First half of one sample of one absolute-tick series: force block, rolled composite and its
    derivatives (input row r, output row ro), returned as (d1, d2, d3) for `_score`. It touches only the
    composite ring and the previous composite/d1/d2, never `_score`'s state."""
    raw = _force(inp, r, out_f, ro, coef, params[1])
    n = si_row[_NSEEN] + 1
    si_row[_NSEEN] = n
    newest = (n - 1) % ring_row.shape[0]
    ring_row[newest] = raw
    comp = 0.0
    for w in range(windows.shape[0]):
        comp += rho[w] * rolling.window_mean(ring_row, newest, n, windows[w])
    return _derivatives(comp, n, out_f, ro, sf_row, params[0])


@njit(cache=True, _nrt=False, error_model="numpy")
def _score(k, ask_sign, bid_sign, ro, d1, d2, d3, out_f, out_i, si_row, fifo3, srt3, dw, params):
    """Second half: the derivatives' robust z windows, flow score and codes (output row ro). It touches only
    the z windows' state, never `_series`'."""
    eps_s = params[2]
    scale = params[3]
    theta = params[4]
    min_p = np.int64(params[5])
    # the three pushes first, then the three z: a z read right after its own push's memmove stalls on
    # store forwarding (measured ~10 % of the cell); the windows are independent, the sums keep c order
    head = si_row[_ZHEAD]
    length = si_row[_ZLEN]
    h, ln, n1 = rolling.window_push(fifo3[0], srt3[0], head, length, si_row[_NS1], d1)
    h, ln, n2 = rolling.window_push(fifo3[1], srt3[1], head, length, si_row[_NS1 + 1], d2)
    h, ln, n3 = rolling.window_push(fifo3[2], srt3[2], head, length, si_row[_NS1 + 2], d3)
    si_row[_NS1] = n1
    si_row[_NS1 + 1] = n2
    si_row[_NS1 + 2] = n3
    si_row[_ZHEAD] = h
    si_row[_ZLEN] = ln
    score = 0.0
    for c in range(3):
        x = d1 if c == 0 else (d2 if c == 1 else d3)
        z, si_row[_MAD1 + c] = rolling.robust_z_at(x, srt3[c], n1 if c == 0 else (n2 if c == 1 else n3), min_p,
                                                  eps_s, si_row[_MAD1 + c])
        term = dw[c] * math.tanh(z / scale)
        if not math.isnan(term):
            score += term
    score = min(max(score, -1.0), 1.0)
    out_f[7, ro] = score
    out_i[0, ro] = state5_code(k, ask_sign, bid_sign)
    out_i[1, ro] = 1 if score >= theta else (-1 if score <= -theta else 0)


@njit(cache=True, _nrt=False, error_model="numpy")
def _cell(k, ask_sign, bid_sign, inp, r, out_f, out_i, si_row, sf_row, ring_row, fifo3, srt3,
          coef, windows, rho, dw, params):
    """One sample of one absolute-tick series: the whole gold formula set (SPEC §4.1–§4.4 as amended
    in the module docstring), `_series` then `_score`. Every path (stream, batch) calls these two and
    nothing else for the math; the batch path may run a slot's next `_series` before its `_score`."""
    d1, d2, d3 = _series(inp, r, out_f, r, si_row, sf_row, ring_row, coef, windows, rho, params)
    _score(k, ask_sign, bid_sign, r, d1, d2, d3, out_f, out_i, si_row, fifo3, srt3, dw, params)


@njit(cache=True, _nrt=False, error_model="numpy")
def _zero_bin(out_f, out_i, r0, w) -> None:
    for j in range(w):
        for c in range(out_f.shape[0]):
            out_f[c, r0 + j] = 0.0
        out_i[0, r0 + j] = 0
        out_i[1, r0 + j] = 0


@njit(cache=True, _nrt=False, error_model="numpy")
def _run_bins(seqs, valid, spot_ticks, ask_signs, bid_signs, inp, out_f, out_i,
              si, sf, ring, fifo, srt, coef, windows, rho, dw, params):
    """The stream order: bin after bin, state keyed by absolute tick mod S (S = 2R+1: one bin's window
    is S contiguous ticks, so they never share a slot). A slot whose tick differs or whose last bin is
    not the previous bin_seq starts a new series."""
    n_slots = si.shape[0]
    radius = n_slots // 2
    for b in range(seqs.shape[0]):
        r0 = b * n_slots
        if not valid[b]:
            _zero_bin(out_f, out_i, r0, n_slots)
            continue
        seq = seqs[b]
        for j in range(n_slots):
            tick = spot_ticks[b] + j - radius
            s = tick % n_slots
            if si[s, _TICK] != tick or si[s, _SEQ] != seq - 1:
                si[s, _TICK] = tick
                _reset(si[s])
            si[s, _SEQ] = seq
            _cell(j - radius, ask_signs[b], bid_signs[b], inp, r0 + j, out_f, out_i, si[s], sf[s], ring[s],
                  fifo[s], srt[s], coef, windows, rho, dw, params)


#: cells per slot run through `_series` before their `_score`s in the batch path (scratch length)
_BLK = 64


@njit(cache=True, parallel=True, _nrt=False, error_model="numpy")
def _run_slots(seqs, valid, spot_ticks, ask_signs, bid_signs, inp, out_f, out_i, out0,
               si, sf, ring, fifo, srt, sc_f, sc_i, sc_lin, coef, windows, rho, dw, params):
    """`_run_bins` regrouped by slot: each slot (absolute tick mod S) walks the bins on its own, in
    parallel over slots. A slot's state only ever sees its own cells, in bin order, through the same
    `_series`/`_score` calls as the stream order, so the result is the same to the bit; its windows stay
    in L1 for the whole run instead of being evicted by the other S-1 slots at every bin. Each cell is
    written at its (bin, k) row (plus `out0` in the outputs), so the output is in bin order.

    Blocked in two passes (their states are disjoint): `_series`' work for up to _BLK cells of the slot,
    their (d1, d2, d3), bin and row kept in the slot's scratch `sc_f[s]`/`sc_i[s]`, then those cells'
    `_score`s. The composite's window sums are serial add chains (40 dependent adds a cell for W = 40,
    ~75 ns of a ~445 ns cell, measured) that out-of-order execution could not overlap across cells; here
    they run as vector lanes, one lane per cell, each adding the same values in the same order as
    `window_mean` (30k dense bins, 1 thread: 445 -> 370 ns per cell, bit-identical)."""
    n_slots = si.shape[0]
    radius = n_slots // 2
    n_bins = seqs.shape[0]
    for b in range(n_bins):
        if not valid[b]:
            _zero_bin(out_f, out_i, out0 + b * n_slots, n_slots)
    n_ring = ring.shape[1]
    for s in prange(n_slots):
        scf = sc_f[s]
        sci = sc_i[s]
        lin = sc_lin[s]
        ring_row = ring[s]
        b = 0
        while b < n_bins:
            # the block's cells (a series reset only at its first cell)
            m = 0
            while b < n_bins and m < _BLK:
                if valid[b]:
                    lo = spot_ticks[b] - radius
                    j = (s - lo) % n_slots  # the one row of bin b whose tick is in slot s
                    tick = lo + j
                    seq = seqs[b]
                    fresh = 0
                    if si[s, _TICK] != tick or si[s, _SEQ] != seq - 1:
                        if m > 0:
                            break  # bin b starts the next block
                        si[s, _TICK] = tick
                        si[s, _NSEEN] = 0  # the z windows' reset waits for this cell's `_score`
                        fresh = 1
                    si[s, _SEQ] = seq
                    sci[0, m] = b
                    sci[1, m] = j * 2 + fresh
                    m += 1
                b += 1
            # the ring's last n_ring samples oldest first, +0.0 before the series' first, then the block's raws
            n0 = si[s, _NSEEN]
            for i in range(n_ring):
                t = n0 - n_ring + i
                lin[i] = ring_row[t % n_ring] if t >= 0 else 0.0
            for q in range(m):
                r = sci[0, q] * n_slots + (sci[1, q] >> 1)
                raw = _force(inp, r, out_f, out0 + r, coef, params[1])
                lin[n_ring + q] = raw
                ring_row[(n0 + q) % n_ring] = raw
            # window sums vectorised across the block's cells: each lane is `window_mean`'s own chain
            # (0.0, then oldest to newest; the +0.0 padding before a series' first sample leaves it 0.0)
            comp = scf[4]
            acc = scf[3]
            for q in range(m):
                comp[q] = 0.0
            for wi in range(windows.shape[0]):
                w = windows[wi]
                for q in range(m):
                    acc[q] = 0.0
                for i in range(w):
                    src = lin[n_ring - w + 1 + i:n_ring - w + 1 + i + m]
                    for q in range(m):
                        acc[q] += src[q]
                for q in range(m):
                    nq = n0 + q + 1
                    comp[q] += rho[wi] * (acc[q] / (w if nq > w else nq))
            for q in range(m):
                r = sci[0, q] * n_slots + (sci[1, q] >> 1)
                d1, d2, d3 = _derivatives(comp[q], n0 + q + 1, out_f, out0 + r, sf[s], params[0])
                scf[0, q] = d1
                scf[1, q] = d2
                scf[2, q] = d3
            si[s, _NSEEN] = n0 + m
            for q in range(m):
                bq = sci[0, q]
                code = sci[1, q]
                jq = code >> 1
                if code & 1:
                    _reset_z(si[s])
                _score(jq - radius, ask_signs[bq], bid_signs[bq], out0 + bq * n_slots + jq, scf[0, q], scf[1, q],
                       scf[2, q], out_f, out_i, si[s], fifo[s], srt[s], dw, params)


@njit(cache=True)
def series_ids(seqs, valid, spot_ticks, radius):
    """Series id per grid row (-1 on invalid bins) by the same continuity rule as `_run_bins`: a row
    continues the series of its absolute tick when that tick was in the previous bin's window and the
    previous bin is bin_seq - 1 and valid."""
    w = 2 * radius + 1
    out = np.full(seqs.shape[0] * w, -1, np.int64)
    prev_ids = np.full(w, -1, np.int64)
    cur_ids = np.full(w, -1, np.int64)
    next_id = 0
    prev_ok = False
    prev_spot = 0
    prev_seq = 0
    for b in range(seqs.shape[0]):
        if not valid[b]:
            prev_ok = False
            continue
        cont = prev_ok and seqs[b] == prev_seq + 1
        for j in range(w):
            pj = spot_ticks[b] + j - radius - (prev_spot - radius)  # index in the previous window
            if cont and 0 <= pj < w:
                cur_ids[j] = prev_ids[pj]
            else:
                cur_ids[j] = next_id
                next_id += 1
            out[b * w + j] = cur_ids[j]
        prev_ids[:] = cur_ids
        prev_ok = True
        prev_spot = spot_ticks[b]
        prev_seq = seqs[b]
    return out


# ---- Python API -----------------------------------------------------------------------------------


def _bin_inputs(bins: dict[str, np.ndarray], grid: dict[str, np.ndarray], radius: int,
                tick_int: int) -> tuple[np.ndarray, ...]:
    """(bin_seq, valid, spot_tick, ask_sign, bid_sign) from silver column dicts, after checking the grid."""
    w = 2 * radius + 1
    n_bins = len(bins["bin_seq"])
    if len(grid["k"]) != n_bins * w:
        raise ValueError(f"grid: expected {n_bins} bins x {w} rows (radius {radius}), got {len(grid['k'])}")
    k = np.asarray(grid["k"]).reshape(n_bins, w)
    if n_bins and not (k == np.arange(-radius, radius + 1)).all():
        raise ValueError("grid: rows must be ordered (bin_seq, k) with k = -R..R for every bin")
    spot = np.asarray(bins["spot_ref_price_int"], np.int64)
    valid = np.asarray(bins["book_valid"], np.bool_) & (spot > 0)
    return (np.asarray(bins["bin_seq"], np.int64), valid, spot // tick_int,
            np.asarray(bins["ask_reprice_sign"], np.int64), np.asarray(bins["bid_reprice_sign"], np.int64))


def _grid_inputs(grid: dict[str, np.ndarray], r0: int, r1: int) -> np.ndarray:
    """inputs[6, r1 - r0] (GOLD_INPUTS) of grid rows r0..r1."""
    return np.stack([np.asarray(grid[c][r0:r1], np.float64) for c in GOLD_INPUTS])


def _outputs(seqs: np.ndarray, valid: np.ndarray, k: np.ndarray, out_f: np.ndarray, out_i: np.ndarray,
             w: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"bin_seq": np.repeat(seqs, w), "k": np.asarray(k, np.int32)}
    for c, name in enumerate(GOLD_FLOAT_COLUMNS):
        out[name] = out_f[c]
    for c, name in enumerate(GOLD_CODE_COLUMNS):
        out[name] = out_i[c]
    out["gold_valid"] = np.repeat(valid, w)
    return out


class _Params:
    """The config as the arrays the kernels take."""

    def __init__(self, config: GoldFeatureConfig):
        self.coef = np.array([getattr(config, f"c{i}") for i in range(1, 8)], np.float64)
        self.windows = np.array(config.flow_windows, np.int64)
        self.rho = np.array(config.rollup_weights_normalised, np.float64)
        self.dw = np.array(config.derivative_weights_normalised, np.float64)
        self.params = np.array([config.dt_s, config.composite_eps, config.scale_eps, config.flow_tanh_scale,
                                config.flow_neutral_threshold, config.flow_zscore_min_periods], np.float64)

    def args(self) -> tuple[np.ndarray, ...]:
        return self.coef, self.windows, self.rho, self.dw, self.params


class GoldRuntime:
    """Incremental gold for a stream: explicit state, advanced one bin (or a few) at a time.

    State per slot (absolute tick mod 2R+1): the tick and last bin_seq it holds, samples seen, the
    composite_raw ring (max window), the previous composite/d1/d2, and per derivative channel a FIFO of
    the last W values with its sorted copy of the defined ones.
    """

    def __init__(self, config: GoldFeatureConfig, radius: int, tick_int: int):
        self.config = config
        self.radius = radius
        self.tick_int = tick_int
        n = 2 * radius + 1
        zw = config.flow_zscore_window_bins
        self.si = np.zeros((n, _MAD3 + 1), np.int64)
        self.si[:, _TICK] = _EMPTY
        self.sf = np.zeros((n, 3), np.float64)
        self.ring = np.zeros((n, max(config.flow_windows)), np.float64)
        self.fifo = np.zeros((n, 3, zw), np.float64)
        self.srt = np.zeros((n, 3, zw), np.float64)
        self._p = _Params(config)

    def step(self, bins: dict[str, np.ndarray], grid: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Advance over the given consecutive bins (silver column dicts); gold columns per grid row."""
        seqs, valid, spot_ticks, ask_s, bid_s = _bin_inputs(bins, grid, self.radius, self.tick_int)
        inp = _grid_inputs(grid, 0, len(grid["k"]))
        out_f = np.empty((len(GOLD_FLOAT_COLUMNS), inp.shape[1]), np.float64)
        out_i = np.empty((2, inp.shape[1]), np.int8)
        _run_bins(seqs, valid, spot_ticks, ask_s, bid_s, inp, out_f, out_i, self.si, self.sf, self.ring,
                  self.fifo, self.srt, *self._p.args())
        return _outputs(seqs, valid, grid["k"], out_f, out_i, 2 * self.radius + 1)

    def batch(self, bins: dict[str, np.ndarray], grid: dict[str, np.ndarray],
              chunk_bins: int = 2048) -> dict[str, np.ndarray]:
        """`step` for many bins at once: the same cells regrouped by slot and run in parallel over slots
        (`_run_slots`), equal to `step` bit for bit (the state carries over to either). The bins are
        fed `chunk_bins` at a time so each call's input rows stay in cache, straight into outputs
        allocated once (concatenating per-chunk outputs cost 40 % on top of the kernel)."""
        seqs, valid, spot_ticks, ask_s, bid_s = _bin_inputs(bins, grid, self.radius, self.tick_int)
        w = 2 * self.radius + 1
        rows = len(grid["k"])
        out_f = np.empty((len(GOLD_FLOAT_COLUMNS), rows), np.float64)
        out_i = np.empty((2, rows), np.int8)
        sc_f = np.empty((w, 5, _BLK), np.float64)  # per slot: a block's (d1, d2, d3, sum, composite) ...
        sc_i = np.empty((w, 2, _BLK), np.int64)  # ... and (bin, 2 * row in bin + reset flag)
        sc_lin = np.empty((w, self.ring.shape[1] + _BLK), np.float64)  # ... and its raws after the ring's
        for b0 in range(0, len(seqs), chunk_bins):
            b1 = min(b0 + chunk_bins, len(seqs))
            _run_slots(seqs[b0:b1], valid[b0:b1], spot_ticks[b0:b1], ask_s[b0:b1], bid_s[b0:b1],
                       _grid_inputs(grid, b0 * w, b1 * w), out_f, out_i, b0 * w, self.si, self.sf, self.ring,
                       self.fifo, self.srt, sc_f, sc_i, sc_lin, *self._p.args())
        return _outputs(seqs, valid, grid["k"], out_f, out_i, w)


def compute_gold(bins: dict[str, np.ndarray], grid: dict[str, np.ndarray], config: GoldFeatureConfig,
                 radius: int, tick_int: int, chunk_bins: int = 2048) -> dict[str, np.ndarray]:
    """Batch gold for a silver partition (bins and grid as numpy column dicts): `GoldRuntime.batch`
    (slot-major, parallel over slots) from a fresh state."""
    return GoldRuntime(config, radius, tick_int).batch(bins, grid, chunk_bins)
