"""Deterministic, realistic synthetic MBO days (CME/GLBX conventions as Databento normalizes them).

Public API: `SynthParams`, `generate_records`, `write_synthetic_day` (and `write_records` for records
already generated), `synthetic_instrument_id`, `day_bounds_ns`, `intensity_profile`.

Model
- A latent fair price (float, in ticks) does a random walk in *event time*, scaled so its standard
  deviation over the whole day is `daily_vol_ticks` whatever `n_records` is, plus a few jumps. Because
  the step is per event, volatility in wall-clock time follows the intensity.
- Each venue event is an Add (near the fair price, geometric distance from the touch), a Cancel (full
  or partial; stale and far-away orders preferred), a Modify (price change, size up, size down), or an
  aggressive order (buy/sell biased towards the fair price). An Add that would cross becomes an
  aggressive limit order. Aggressors sweep price-time FIFO levels and emit, as Databento does for GLBX,
  `T` per level, `F` per filled resting order, then the `C`/`M` records that change the book; a limit
  aggressor's unfilled remainder rests as an `A` at its limit. An emptied side is refilled at once.
- Records are produced in event time `u` (exponential gaps, Hawkes-like self-excitation after trades)
  and mapped onto the UTC day through the inverse cumulative intensity: a U-shaped CME profile (US
  cash open 13:30 and close 20:00 UTC by default, quiet Asia, 22:00-23:00 maintenance lull) times
  random decaying bursts and a slow log-AR(1) regime factor.

Planted effect (the demo's findable edge; `planted_episodes_per_day` 0 turns it off): episodes start at
random events (~800 a day, most in the busy RTH hours). Each has a direction D = ±1 (leaning back
towards the day's start price, so the day's range stays realistic) and two phases. Lead
(`planted_lead_events` events, ~2 s at the open): 90 % of the events are the informed flow — an Add
(twice the usual size) joining the touch the price will move away from (the bid when D = +1) or a Cancel
of the newest order at the other touch. Move (`planted_move_events` events): the fair price steps
D·`planted_move_ticks` (14) ticks, and the book follows through the ordinary aggressors. So resting
liquidity building at the bid while the ask is pulled precedes a rise (mirrored for a fall); the gold
flow score at the bid touch (k = −1) rises in the lead. Without costs the effect is an easy win; the demo
experiment finds it with the spread, 0.5 tick of costs and one bin of latency paid (README "Demo").

Engine: one numba kernel (`cache=True`) writes straight into the fields of the preallocated MBO array.
The book is intrusive doubly-linked FIFO lists over order slots, head/tail per (side, absolute tick) on a
fixed window of `window_ticks` around the start price (the fair price is reflected off its edges), a
live-order pool with swap-remove for O(1) random Cancel/Modify targets, and best bid/ask tracked by
scanning from the previous best. A second kernel stamps ts_event/ts_recv.

Identity: `instrument_id = 1 + crc32(symbol) % 999_999` (`synthetic_instrument_id`), publisher 1 (GLBX),
channel 0. Order ids start at 6_400_000_000_000 and only grow; `sequence` grows per live event (snapshot
records carry 0).

Determinism: the kernels draw from their own xoshiro256+ stream seeded through numpy's SeedSequence and
the intraday profile from numpy's PCG64 Generator, so equal parameters give byte-identical records.
Limits: no auction/pre-open phase (the book is never crossed, there are no side-N fills), one
instrument per file, and `sequence` is a u32 (fine below ~3e9 events).
"""

from __future__ import annotations

import calendar
import datetime as dt
import os
import zlib
from pathlib import Path

import numpy as np
from numba import njit
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.instrument import InstrumentConfig

GLBX_PUBLISHER_ID = 1
CHANNEL_ID = 0
DAY_NS = 86_400 * 1_000_000_000
ORDER_ID_BASE = 6_400_000_000_000
PROFILE_BIN_S = 1  # resolution of the intraday intensity profile

_F_LAST = dbn.F_LAST
_F_SNAP = dbn.F_SNAPSHOT | dbn.F_BAD_TS_RECV
_UNDEF_PRICE = dbn.UNDEF_PRICE
_ACT_A, _ACT_C, _ACT_M, _ACT_R, _ACT_T, _ACT_F = (ord(c) for c in "ACMRTF")
_SIDE_CODE = (ord("B"), ord("A"))  # side 0 = bid, 1 = ask
_SIDE_N = ord("N")

# columns of the order-slot table
_OID, _OSIDE, _OPX, _OSIZE, _OPREV, _ONEXT, _OLP = range(7)


class SynthParams(BaseModel):
    """What a synthetic day looks like. Only n_records, seed, date and symbol are required."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_records: int = Field(gt=0, description="exact number of MBO records produced")
    seed: int = Field(ge=0)
    date: dt.date = Field(description="UTC day the records cover")
    symbol: str = Field(min_length=1, description="outright contract of the instrument root, e.g. ESH4")

    initial_price: float = Field(4800.0, gt=0, description="start price in instrument units (ES: 4800.00)")
    window_ticks: int = Field(8192, ge=1024, le=1 << 20, description="absolute tick window of the book")
    snapshot_levels: int = Field(15, ge=1, le=500, description="levels per side in the midnight snapshot")
    snapshot_orders_per_level: float = Field(6.0, ge=1.0, description="mean orders per snapshot level")
    snapshot_max_age_s: float = Field(6 * 3600.0, gt=0, description="oldest snapshot order placement")
    target_live_orders: int = Field(500, ge=20, description="both sides; cancels scale with book size")
    max_depth_ticks: int = Field(40, ge=2, description="farthest passive Add from the touch")
    mean_depth_ticks: float = Field(5.0, gt=0, description="mean passive distance behind the touch")
    p_touch: float = Field(0.35, ge=0, le=1, description="share of passive Adds at the touch")
    p_improve: float = Field(0.6, ge=0, le=1, description="Adds inside a spread wider than one tick")
    far_ticks: float = Field(25.0, gt=0, description="orders farther than this from fair get cancelled first")

    w_add: float = Field(0.46, ge=0)
    w_cancel: float = Field(0.36, ge=0)
    w_modify: float = Field(0.12, ge=0)
    w_market: float = Field(0.035, ge=0)
    p_partial_cancel: float = Field(0.12, ge=0, le=1)
    p_rest_remainder: float = Field(0.6, ge=0, le=1, description="aggressors that are limit, not IOC")

    daily_vol_ticks: float = Field(50.0, ge=0, description="std of the fair price over the whole day")
    jumps_per_day: float = Field(6.0, ge=0)
    jump_mean_ticks: float = Field(3.0, ge=0)

    open_utc_hour: float = Field(13.5, ge=0, lt=24)
    close_utc_hour: float = Field(20.0, ge=0, lt=24)
    bursts_per_day: float = Field(40.0, ge=0)
    burst_mean_s: float = Field(60.0, gt=0, description="typical decay time of an activity burst")
    # event-time Hawkes: rate 1 + x, x += hawkes_jump per trade, decays at hawkes_decay per unit event
    # time; with ~7 % of events trading the branching ratio is 0.07 * jump / decay (keep it < 1)
    hawkes_jump: float = Field(6.0, ge=0, description="event-rate excitation added by each trade")
    hawkes_decay: float = Field(1.0, gt=0, description="excitation decay rate per unit of event time")

    # the planted order-flow effect (module doc, "Planted effect"); planted_episodes_per_day 0 turns it off
    planted_episodes_per_day: float = Field(800.0, ge=0, description="informed-flow episodes per day")
    planted_lead_events: int = Field(100, ge=1, description="events of flow before the price moves")
    planted_share: float = Field(0.9, ge=0, le=1, description="share of the lead's events that are the flow")
    planted_move_ticks: float = Field(14.0, ge=0, description="fair-price move after the lead, in ticks")
    planted_move_events: int = Field(30, ge=1, description="events the move is spread over")

    latency_min_ns: int = Field(2_000, ge=1, description="ts_recv - ts_event, lower bound")
    latency_max_ns: int = Field(9_000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SynthParams:
        if self.latency_max_ns < self.latency_min_ns:
            raise ValueError("latency_max_ns: must be >= latency_min_ns")
        if self.close_utc_hour <= self.open_utc_hour:
            raise ValueError("close_utc_hour: must be after open_utc_hour")
        if self.w_add <= 0 and self.w_market <= 0:
            raise ValueError("w_add: at least one of w_add / w_market must be > 0")
        if 2 * (self.max_depth_ticks + self.snapshot_levels + 64) >= self.window_ticks:
            raise ValueError("window_ticks: too small for max_depth_ticks / snapshot_levels")
        return self


def synthetic_instrument_id(symbol: str) -> int:
    """Fixed instrument id of a synthetic symbol: 1 + crc32(symbol) % 999_999 (stable across runs)."""
    return 1 + zlib.crc32(symbol.encode("utf-8")) % 999_999


def day_bounds_ns(date: dt.date) -> tuple[int, int]:
    """[00:00 UTC of `date`, 00:00 UTC of the next day) in ns since the epoch."""
    start = calendar.timegm(date.timetuple()) * 1_000_000_000
    return start, start + DAY_NS


def _check_symbol(symbol: str, instrument: InstrumentConfig) -> None:
    if not instrument.symbol_matches_root(symbol):
        raise ValueError(
            f"symbol {symbol!r} is not an outright contract of the instrument root "
            f"{instrument.symbol_root!r} ({instrument.dataset})"
        )


# ---------------------------------------------------------------------------------------------
# intraday intensity (numpy, seeded)
# ---------------------------------------------------------------------------------------------
def intensity_profile(params: SynthParams) -> np.ndarray:
    """Relative event intensity per `PROFILE_BIN_S` second of the UTC day (deterministic by seed)."""
    rng = np.random.default_rng([params.seed, 0x5EED])
    nbins = 86_400 // PROFILE_BIN_S
    h = (np.arange(nbins) + 0.5) * PROFILE_BIN_S / 3600.0
    op, cl = params.open_utc_hour, params.close_utc_hour
    after_open = np.clip(h - op, 0.0, None)
    before_close = np.clip(cl - h, 0.0, None)
    lam = 0.14 + 0.10 * np.exp(-(((h - 1.0) / 0.8) ** 2))  # Asia
    lam += 0.30 / (1.0 + np.exp(-(h - 7.0) / 0.25))  # Europe from 07:00 UTC onwards
    lam += 1.0 * np.exp(-np.clip(h - (op - 1.0), 0.0, None) / 0.12) * (h >= op - 1.0)  # data at open-1h
    rth = (h >= op) & (h < cl)
    lam += rth * (0.9 + 1.6 * np.exp(-after_open / 0.4) + 1.2 * np.exp(-before_close / 0.3))
    lam -= rth * 0.35 * np.exp(-(((h - (op + cl) / 2.0) / 1.0) ** 2))  # lunch lull
    post = h >= cl
    lam += post * 1.2 * np.exp(-np.clip(h - cl, 0.0, None) / 0.12)
    lam -= post * 0.25 / (1.0 + np.exp(-(h - (cl + 1.0)) / 0.1))  # Europe gone, evening
    lam = np.clip(lam, 0.05, None)
    maint = (h >= 22.0) & (h < 23.0)  # CME daily maintenance window (winter times)
    lam[maint] *= 0.05
    lam += (h >= 23.0) * 0.3 * np.exp(-np.clip(h - 23.0, 0.0, None) / 0.15)  # reopen
    # slow regime factor: log-AR(1) per minute
    n_min = nbins * PROFILE_BIN_S // 60
    eps = rng.standard_normal(n_min) * 0.11
    ar = np.empty(n_min)
    acc = 0.0
    for i in range(n_min):
        acc = 0.93 * acc + eps[i]
        ar[i] = acc
    lam *= np.exp(np.repeat(ar, 60 // PROFILE_BIN_S)[:nbins])
    # random bursts: start times follow the base intensity, exponential decay
    n_bursts = rng.poisson(params.bursts_per_day)
    if n_bursts:
        starts = rng.choice(nbins, size=n_bursts, p=lam / lam.sum())
        amps = rng.lognormal(0.0, 0.6, n_bursts)
        taus = rng.lognormal(np.log(params.burst_mean_s / PROFILE_BIN_S), 0.5, n_bursts)
        mult = np.ones(nbins)
        for s0, a, tau in zip(starts, amps, taus, strict=True):
            end = min(nbins, int(s0 + 8 * tau) + 1)
            mult[s0:end] += a * np.exp(-np.arange(end - s0) / tau)
        lam *= mult
    return lam


# ---------------------------------------------------------------------------------------------
# numba kernels
#
# Helpers carry explicit signatures, so each compiles once (no literal-typed variants) and later
# imports load them from the on-disk cache. They never allocate, so they run with `_nrt=False`: no
# atomic reference counting of their array arguments, which otherwise costs about 45 % of the run time.
# ---------------------------------------------------------------------------------------------
def _sig(ret: str, *args: str) -> str:
    return f"{ret}({', '.join(args)})"


_I = "int64"
_F = "float64"
_RS = "uint64[::1]"  # xoshiro256+ state
_O = "int64[:, ::1]"  # order-slot table, also head/tail per (side, tick) and the trade plan
_V = "int64[::1]"
# record columns: action, side, price, size, order_id, flags (strided views into the MBO array)
_COLS = ("uint8[:]", "uint8[:]", "int64[:]", "uint32[:]", "uint64[:]", "uint8[:]")
# book: slots, head, tail, best (bid, ask), orders per side, live pool, free stack, (n live, n free)
_BOOK = (_O, _O, _O, _V, _V, _V, _V, _V)
_JIT = {"cache": True, "_nrt": False}

_U = np.uint64


@njit(_sig(_F, _RS), **_JIT)
def _rand(rs):
    """xoshiro256+ uniform in [0, 1): our own generator, cheap and independent of library versions."""
    s0 = rs[0]
    s1 = rs[1]
    s2 = rs[2]
    s3 = rs[3]
    r = s0 + s3
    t = s1 << _U(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = (s3 << _U(45)) | (s3 >> _U(19))
    rs[0] = s0
    rs[1] = s1
    rs[2] = s2
    rs[3] = s3
    return (r >> _U(11)) * (1.0 / 9007199254740992.0)


@njit(_sig(_I, _RS, _I), **_JIT)
def _randint(rs, k):
    """Uniform integer in [0, k) for k >= 1."""
    return min(int(_rand(rs) * k), k - 1)


@njit(_sig(_F, _RS), **_JIT)
def _expo(rs):
    return -np.log(1.0 - _rand(rs))


@njit(_sig(_F, _RS), **_JIT)
def _normal(rs):
    """Zero mean, unit variance, bell-shaped (Irwin-Hall of 4): plenty for a random walk's steps."""
    return (_rand(rs) + _rand(rs) + _rand(rs) + _rand(rs) - 2.0) * 1.7320508075688772


@njit(_sig("void", _I, _I, _I, _I, _I, _I, _I, *_COLS), **_JIT)
def _put(pos, act, side, px, size, oid, flags, c_act, c_side, c_px, c_size, c_oid, c_flags):
    c_act[pos] = act
    c_side[pos] = side
    c_px[pos] = px
    c_size[pos] = size
    c_oid[pos] = oid
    c_flags[pos] = flags


@njit(_sig("void", _I, _I, _I, *_BOOK[:5]), **_JIT)
def _book_link(slot, side, p, o, head, tail, best, nside):
    """Append a slot at the back of level (side, p)."""
    t = tail[side, p]
    o[slot, _OPREV] = t
    o[slot, _ONEXT] = -1
    if t >= 0:
        o[t, _ONEXT] = slot
    else:
        head[side, p] = slot
    tail[side, p] = slot
    o[slot, _OSIDE] = side
    o[slot, _OPX] = p
    if side == 0:
        if p > best[0]:
            best[0] = p
    elif p < best[1]:
        best[1] = p


@njit(_sig("void", _I, _O, _O, _O), **_JIT)
def _book_unlink(slot, o, head, tail):
    side = o[slot, _OSIDE]
    p = o[slot, _OPX]
    pv = o[slot, _OPREV]
    nx = o[slot, _ONEXT]
    if pv >= 0:
        o[pv, _ONEXT] = nx
    else:
        head[side, p] = nx
    if nx >= 0:
        o[nx, _OPREV] = pv
    else:
        tail[side, p] = pv


@njit(_sig("void", _I, _I, _O, _V, _V, _I), **_JIT)
def _fix_best(side, p, head, best, nside, W):
    """After level (side, p) may have emptied: rescan from the previous best if needed."""
    if best[side] != p or head[side, p] >= 0:
        return
    if nside[side] == 0:
        best[side] = -1 if side == 0 else W
        return
    if side == 0:
        q = p - 1
        while q >= 0 and head[0, q] < 0:
            q -= 1
        best[0] = q
    else:
        q = p + 1
        while q < W and head[1, q] < 0:
            q += 1
        best[1] = q


@njit(_sig(_I, _I, _I, _I, _I, *_BOOK), **_JIT)
def _new_order(side, p, size, oid, o, head, tail, best, nside, live, free, ctr):
    ctr[1] -= 1
    slot = free[ctr[1]]
    o[slot, _OID] = oid
    o[slot, _OSIZE] = size
    _book_link(slot, side, p, o, head, tail, best, nside)
    nside[side] += 1
    live[ctr[0]] = slot
    o[slot, _OLP] = ctr[0]
    ctr[0] += 1
    return slot


@njit(_sig("void", _I, *_BOOK, _I), **_JIT)
def _remove_order(slot, o, head, tail, best, nside, live, free, ctr, W):
    side = o[slot, _OSIDE]
    p = o[slot, _OPX]
    _book_unlink(slot, o, head, tail)
    nside[side] -= 1
    _fix_best(side, p, head, best, nside, W)
    k = o[slot, _OLP]
    last = live[ctr[0] - 1]
    live[k] = last
    o[last, _OLP] = k
    ctr[0] -= 1
    free[ctr[1]] = slot
    ctr[1] += 1


@njit(_sig("void", _I, _I, _I, *_BOOK[:5], _I), **_JIT)
def _move_order(slot, new_p, new_size, o, head, tail, best, nside, W):
    """Modify that loses priority: back of the (new) level."""
    side = o[slot, _OSIDE]
    old_p = o[slot, _OPX]
    _book_unlink(slot, o, head, tail)
    o[slot, _OSIZE] = new_size
    _book_link(slot, side, new_p, o, head, tail, best, nside)
    _fix_best(side, old_p, head, best, nside, W)


@njit(_sig(_I, _RS), **_JIT)
def _passive_size(rs):
    r = _rand(rs)
    if r < 0.55:
        return 1
    if r < 0.72:
        return 2
    if r < 0.82:
        return 3
    if r < 0.95:
        return 4 + int(3.0 * _expo(rs))
    r2 = _rand(rs)
    if r2 < 0.4:
        return 10
    if r2 < 0.6:
        return 12
    if r2 < 0.8:
        return 20
    return 25 + 25 * int(_rand(rs) * 3.0)


@njit(_sig(_I, _RS), **_JIT)
def _aggressor_size(rs):
    r = _rand(rs)
    if r < 0.45:
        return 1
    if r < 0.65:
        return 2
    if r < 0.75:
        return 3
    if r < 0.94:
        return 4 + int(6.0 * _expo(rs))
    return 20 + int(60.0 * _expo(rs))


@njit(_sig(_I, _I, _I, _I, _I, _I, "boolean", _I, _I, _I, *_BOOK, _I, _O, _O, *_COLS), **_JIT)
def _trade(pos, n, s, qty, limit, rest, aggr_oid, base_tick, tick_int,
           o, head, tail, best, nside, live, free, ctr, W, plan_lvl, plan_fill,
           c_act, c_side, c_px, c_size, c_oid, c_flags):
    """Aggressor on side `s` for `qty` up to price index `limit`; returns the new write position.

    Plans the fills first (within the record budget), then writes T/F per level, then the C/M
    records that reduce the resting orders, then the resting remainder (limit orders only).
    """
    opp = 1 - s
    budget = n - pos - 1  # keep one record for a resting remainder
    nl = 0
    nf = 0
    recs = 0
    rem = qty
    truncated = False
    p = best[opp]
    while rem > 0:
        if opp == 1:
            if p >= W or p > limit:
                break
        elif p < 0 or p < limit:
            break
        slot = head[opp, p]
        started = False
        while slot >= 0 and rem > 0:
            need = 2 if started else 3
            if recs + need > budget:
                truncated = True
                break
            if not started:
                plan_lvl[nl, 0] = p
                plan_lvl[nl, 1] = nf
                plan_lvl[nl, 2] = 0
                nl += 1
                started = True
                recs += 1
            fill = min(rem, o[slot, _OSIZE])
            plan_fill[nf, 0] = slot
            plan_fill[nf, 1] = fill
            nf += 1
            plan_lvl[nl - 1, 2] += fill
            recs += 2
            rem -= fill
            slot = o[slot, _ONEXT]
        if truncated or rem == 0 or nf >= nside[opp]:
            break
        # next non-empty level on the resting side
        if opp == 1:
            p += 1
            while p < W and p <= limit and head[1, p] < 0:
                p += 1
        else:
            p -= 1
            while p >= 0 and p >= limit and head[0, p] < 0:
                p -= 1
    aggr_code = _SIDE_CODE[s]
    opp_code = _SIDE_CODE[opp]
    for li in range(nl):
        px = (base_tick + plan_lvl[li, 0]) * tick_int
        _put(pos, _ACT_T, aggr_code, px, plan_lvl[li, 2], aggr_oid, 0,
             c_act, c_side, c_px, c_size, c_oid, c_flags)
        pos += 1
        end = plan_lvl[li + 1, 1] if li + 1 < nl else nf
        for k in range(plan_lvl[li, 1], end):
            slot = plan_fill[k, 0]
            _put(pos, _ACT_F, opp_code, px, plan_fill[k, 1], o[slot, _OID], 0,
                 c_act, c_side, c_px, c_size, c_oid, c_flags)
            pos += 1
    for k in range(nf):
        slot = plan_fill[k, 0]
        fill = plan_fill[k, 1]
        px = (base_tick + o[slot, _OPX]) * tick_int
        left = o[slot, _OSIZE] - fill
        if left == 0:
            _put(pos, _ACT_C, opp_code, px, fill, o[slot, _OID], 0,
                 c_act, c_side, c_px, c_size, c_oid, c_flags)
            _remove_order(slot, o, head, tail, best, nside, live, free, ctr, W)
        else:
            _put(pos, _ACT_M, opp_code, px, left, o[slot, _OID], 0,
                 c_act, c_side, c_px, c_size, c_oid, c_flags)
            o[slot, _OSIZE] = left
        pos += 1
    if rem > 0 and rest and not truncated and pos < n and 0 <= limit < W:
        _put(pos, _ACT_A, aggr_code, (base_tick + limit) * tick_int, rem, aggr_oid, 0,
             c_act, c_side, c_px, c_size, c_oid, c_flags)
        _new_order(s, limit, rem, aggr_oid, o, head, tail, best, nside, live, free, ctr)
        pos += 1
    return pos


@njit(_sig(_F, _I, _F, _F, _O), **_JIT)
def _stale_score(slot, f, far, o):
    p = o[slot, _OPX] + 0.0
    dist = f - p if o[slot, _OSIDE] == 0 else p - f  # >0 on the right side of fair
    if dist < 0.0:
        return 1000.0 - dist
    if dist > far:
        return dist - far
    return 0.0


@njit(_sig(_I, _F, _F, _O, _V, _V, _V, _O, _O, _I, _I, _RS), **_JIT)
def _pick_cancel(f, far, o, live, ctr, best, head, tail, bid_ref, ask_ref, rs):
    """A Cancel target: the stale touch's last order, else the worse of two random live orders."""
    if _rand(rs) < 0.5:
        if best[1] <= bid_ref and head[1, best[1]] >= 0:  # asks at or under fair: pulled
            return tail[1, best[1]]
        if best[0] >= ask_ref and best[0] >= 0:
            return tail[0, best[0]]
    a = live[_randint(rs, ctr[0])]
    b = live[_randint(rs, ctr[0])]
    score_a = _stale_score(a, f, far, o)
    score_b = _stale_score(b, f, far, o)
    return b if score_b > score_a else a


@njit(cache=True)
def _generate_kernel(rs, n, W, base_tick, tick_int, start_ns, f0, pf, pi, s_side, s_px, s_age, s_id, next_id,
                     c_act, c_side, c_px, c_size, c_oid, c_flags, c_seq, c_tse, c_tsr, c_tsd, c_u):
    """Fill the record columns; returns (records in the snapshot incl. the Clear, total event time)."""
    # tunables, in the order generate_records packs them
    (target, sig_day, jumps_day, jump_mean, w_add, w_cancel, w_mod, w_mkt, p_partial, mean_depth, p_touch,
     p_improve, h_jump, h_decay, margin, far, p_rest, ep_day, ep_share, ep_move) = (
        pf[0], pf[1], pf[2], pf[3], pf[4], pf[5], pf[6], pf[7], pf[8], pf[9], pf[10],
        pf[11], pf[12], pf[13], pf[14], pf[15], pf[16], pf[17], pf[18], pf[19])
    lat_min, lat_max, cap, max_depth, ep_lead, ep_move_events = pi[0], pi[1], pi[2], pi[3], pi[4], pi[5]
    ep_phase = 0  # planted episode: 0 none, 1 lead (the flow), 2 move (the fair price steps ep_move ticks)
    ep_left = 0
    ep_dir = 1

    head = np.full((2, W), -1, np.int64)
    tail = np.full((2, W), -1, np.int64)
    o = np.zeros((cap, 7), np.int64)
    live = np.zeros(cap, np.int64)
    free = np.arange(cap - 1, -1, -1).astype(np.int64)
    ctr = np.array([0, cap], np.int64)  # live count, free count
    best = np.array([-1, W], np.int64)
    nside = np.zeros(2, np.int64)
    plan_lvl = np.zeros((cap + 1, 3), np.int64)
    plan_fill = np.zeros((cap + 1, 2), np.int64)

    # ---- snapshot: the Clear, then the planned Adds (see _snapshot_plan) ----
    _put(0, _ACT_R, _SIDE_N, _UNDEF_PRICE, 0, 0, _F_SNAP, c_act, c_side, c_px, c_size, c_oid, c_flags)
    c_tse[0] = start_ns
    c_tsr[0] = start_ns
    c_seq[0] = 0
    c_tsd[0] = 0
    c_u[0] = 0.0
    pos = 1
    f = f0
    for i in range(s_side.shape[0]):
        if pos >= n:
            break
        side = s_side[i]
        p = s_px[i]
        size = _passive_size(rs)
        _put(pos, _ACT_A, _SIDE_CODE[side], (base_tick + p) * tick_int, size, s_id[i], _F_SNAP,
             c_act, c_side, c_px, c_size, c_oid, c_flags)
        c_tse[pos] = start_ns - s_age[i]
        c_tsr[pos] = start_ns
        c_seq[pos] = 0
        c_tsd[pos] = 0
        c_u[pos] = 0.0
        _new_order(side, p, size, s_id[i], o, head, tail, best, nside, live, free, ctr)
        pos += 1
    c_flags[pos - 1] = c_flags[pos - 1] | _F_LAST
    n_snap = pos

    # ---- live events ----
    u = 0.0
    x = 0.0
    seq = 1000 + _randint(rs, 100_000)
    events = 0
    rpe = 1.6  # records per event, re-estimated as we go
    while pos < n:
        start = pos
        gap = _expo(rs) / (1.0 + x)
        u += gap
        x *= np.exp(-h_decay * gap)
        if events > 2000:
            rpe = (pos - n_snap) / events
        est_events = max((n - n_snap) / rpe, 1.0)
        f += sig_day / np.sqrt(est_events) * _normal(rs)
        if _rand(rs) < jumps_day / est_events:
            jmp = 1.0 + jump_mean * _expo(rs)
            f += jmp if _rand(rs) < 0.5 else -jmp
        plant = False
        if ep_day > 0.0:
            if ep_phase == 0 and _rand(rs) < ep_day / est_events:
                ep_phase = 1
                ep_left = ep_lead
                # directions lean back towards the day's start (P(up) 12 % four moves above it): the
                # day's range stays realistic however many episodes it holds
                p_up = 0.5 - 0.5 * np.tanh((f - f0) / (4.0 * ep_move + 1.0))
                ep_dir = 1 if _rand(rs) < p_up else -1
            if ep_phase == 1:
                plant = _rand(rs) < ep_share
                ep_left -= 1
                if ep_left <= 0:
                    ep_phase = 2
                    ep_left = ep_move_events
            elif ep_phase == 2:
                f += ep_dir * ep_move / ep_move_events
                ep_left -= 1
                if ep_left <= 0:
                    ep_phase = 0
        if f < margin:
            f = 2.0 * margin - f
        elif f > W - margin:
            f = 2.0 * (W - margin) - f
        bid_ref = int(np.floor(f))
        ask_ref = bid_ref + 1
        remaining = n - pos
        nlive = ctr[0]
        fill_ratio = nlive / target
        wc = w_cancel * fill_ratio if nlive > 0 else 0.0
        wm = w_mod * fill_ratio if nlive > 0 else 0.0
        wk = w_mkt if remaining >= 3 else 0.0
        # event kind; a full slot pool forces a Cancel
        r = w_add + 0.5 * wc if nlive >= cap - 8 else _rand(rs) * (w_add + wc + wm + wk)
        traded = False
        if plant:
            # ---- the planted flow: join the touch the price will move away from, pull the other one ----
            side = 0 if ep_dir > 0 else 1
            if _rand(rs) < 0.5:
                p = best[0] if side == 0 else best[1]
                if 0 <= p < W:
                    oid = next_id
                    next_id += 1 + _randint(rs, 3)
                    size = 2 * _passive_size(rs)
                    _put(pos, _ACT_A, _SIDE_CODE[side], (base_tick + p) * tick_int, size, oid, 0,
                         c_act, c_side, c_px, c_size, c_oid, c_flags)
                    _new_order(side, p, size, oid, o, head, tail, best, nside, live, free, ctr)
                    pos += 1
            else:
                other = 1 - side
                p = best[other]
                if 0 <= p < W and head[other, p] >= 0 and nside[other] > 1:
                    slot = tail[other, p]
                    _put(pos, _ACT_C, _SIDE_CODE[other], (base_tick + p) * tick_int, o[slot, _OSIZE],
                         o[slot, _OID], 0, c_act, c_side, c_px, c_size, c_oid, c_flags)
                    _remove_order(slot, o, head, tail, best, nside, live, free, ctr, W)
                    pos += 1
        elif r < w_add:
            # ---- Add (crosses -> aggressive limit order) ----
            pb = 0.5 + 0.3 * (nside[1] - nside[0]) / (nside[0] + nside[1] + 1.0)
            side = 0 if _rand(rs) < pb else 1
            if best[0] >= 0 and best[1] < W and best[1] - best[0] > 1 and _rand(rs) < p_improve:
                p = best[0] + 1 if side == 0 else best[1] - 1
            else:
                d = 0
                if _rand(rs) >= p_touch:
                    d = 1 + int(mean_depth * _expo(rs))
                    if d > max_depth:
                        d = 1 + _randint(rs, max_depth)
                p = bid_ref - d if side == 0 else ask_ref + d
            size = _passive_size(rs)
            crosses = (side == 0 and p >= best[1]) or (side == 1 and p <= best[0])
            oid = next_id
            next_id += 1 + _randint(rs, 3)
            if crosses and remaining >= 3:
                opp_best = best[1] if side == 0 else best[0]
                size += int((2.0 * (abs(p - opp_best) + 1)) * _expo(rs))
                pos = _trade(pos, n, side, size, p, True, oid, base_tick, tick_int,
                             o, head, tail, best, nside, live, free, ctr, W, plan_lvl, plan_fill,
                             c_act, c_side, c_px, c_size, c_oid, c_flags)
                traded = True
            else:
                if crosses:
                    p = best[1] - 1 if side == 0 else best[0] + 1
                _put(pos, _ACT_A, _SIDE_CODE[side], (base_tick + p) * tick_int, size, oid, 0,
                     c_act, c_side, c_px, c_size, c_oid, c_flags)
                _new_order(side, p, size, oid, o, head, tail, best, nside, live, free, ctr)
                pos += 1
        elif r < w_add + wc:
            # ---- Cancel, full or partial ----
            slot = _pick_cancel(f, far, o, live, ctr, best, head, tail, bid_ref, ask_ref, rs)
            sz = o[slot, _OSIZE]
            side = o[slot, _OSIDE]
            px = (base_tick + o[slot, _OPX]) * tick_int
            if sz > 1 and _rand(rs) < p_partial:
                q = 1 + _randint(rs, sz - 1)
                _put(pos, _ACT_C, _SIDE_CODE[side], px, q, o[slot, _OID], 0,
                     c_act, c_side, c_px, c_size, c_oid, c_flags)
                o[slot, _OSIZE] = sz - q
            else:
                _put(pos, _ACT_C, _SIDE_CODE[side], px, sz, o[slot, _OID], 0,
                     c_act, c_side, c_px, c_size, c_oid, c_flags)
                _remove_order(slot, o, head, tail, best, nside, live, free, ctr, W)
            pos += 1
        elif r < w_add + wc + wm:
            # ---- Modify: size down (keeps priority), size up or price change (back of level) ----
            slot = live[_randint(rs, nlive)]
            sz = o[slot, _OSIZE]
            side = o[slot, _OSIDE]
            p = o[slot, _OPX]
            kind = _rand(rs)
            new_p = p
            new_size = sz
            if kind >= 0.65:
                step = 1 + (1 if _rand(rs) < 0.3 else 0)
                cand = p + step if _rand(rs) < 0.5 else p - step
                ok = 0 <= cand < W
                if side == 0:
                    ok = ok and cand < best[1] and bid_ref - cand <= max_depth
                else:
                    ok = ok and cand > best[0] and cand - ask_ref <= max_depth
                if ok:
                    new_p = cand
                else:
                    kind = 0.5
            if new_p == p:
                shrink = kind < 0.45 and sz > 1
                new_size = sz - 1 - _randint(rs, sz - 1) if shrink else sz + 1 + int(2.0 * _expo(rs))
            _put(pos, _ACT_M, _SIDE_CODE[side], (base_tick + new_p) * tick_int, new_size, o[slot, _OID], 0,
                 c_act, c_side, c_px, c_size, c_oid, c_flags)
            if new_p == p and new_size < sz:
                o[slot, _OSIZE] = new_size
            else:
                _move_order(slot, new_p, new_size, o, head, tail, best, nside, W)
            pos += 1
        else:
            # ---- aggressive order, leaning towards the fair price ----
            if best[0] >= 0 and best[1] < W:
                pb = 0.5 + 0.6 * (f - 0.5 * (best[0] + best[1] + 1.0))
                pb = min(0.85, max(0.15, pb))
            else:
                pb = 0.5
            side = 0 if _rand(rs) < pb else 1
            opp_best = best[1] if side == 0 else best[0]
            oid = next_id
            next_id += 1 + _randint(rs, 3)
            if 0 <= opp_best < W:
                rest = _rand(rs) < p_rest
                ext = _randint(rs, 3)
                if rest:
                    limit = opp_best + ext if side == 0 else opp_best - ext
                    limit = min(W - 1, max(0, limit))
                else:
                    limit = W - 1 if side == 0 else 0
                pos = _trade(pos, n, side, _aggressor_size(rs), limit, rest, oid, base_tick, tick_int,
                             o, head, tail, best, nside, live, free, ctr, W, plan_lvl, plan_fill,
                             c_act, c_side, c_px, c_size, c_oid, c_flags)
                traded = True
        if pos == start:
            # nothing written (aggressor without counterpart): a plain Add at the reference price
            side = 0 if nside[0] <= nside[1] else 1
            p = bid_ref if side == 0 else ask_ref
            if side == 0 and p >= best[1]:
                p = best[1] - 1
            if side == 1 and p <= best[0]:
                p = best[0] + 1
            oid = next_id
            next_id += 1 + _randint(rs, 3)
            size = _passive_size(rs)
            _put(pos, _ACT_A, _SIDE_CODE[side], (base_tick + p) * tick_int, size, oid, 0,
                 c_act, c_side, c_px, c_size, c_oid, c_flags)
            _new_order(side, p, size, oid, o, head, tail, best, nside, live, free, ctr)
            pos += 1
        if traded:
            x += h_jump
        seq = _close_event(start, pos, seq, u, lat_min, lat_max, c_flags, c_seq, c_tsr, c_tsd, c_u, rs)
        events += 1
        # ---- an emptied side is refilled at once, one Add per event ----
        for side in range(2):
            if nside[side] == 0:
                k = 0
                n_refill = 4 + _randint(rs, 4)
                while k < n_refill and pos < n:
                    p = min(bid_ref, best[1] - 1) - k if side == 0 else max(ask_ref, best[0] + 1) + k
                    oid = next_id
                    next_id += 1 + _randint(rs, 3)
                    size = _passive_size(rs)
                    u += 0.05 * _expo(rs)
                    _put(pos, _ACT_A, _SIDE_CODE[side], (base_tick + p) * tick_int, size, oid, 0,
                         c_act, c_side, c_px, c_size, c_oid, c_flags)
                    _new_order(side, p, size, oid, o, head, tail, best, nside, live, free, ctr)
                    pos += 1
                    seq = _close_event(pos - 1, pos, seq, u, lat_min, lat_max, c_flags, c_seq, c_tsr, c_tsd,
                                       c_u, rs)
                    events += 1
                    k += 1
    return n_snap, u + 1.0


@njit(_sig(_I, _I, _I, _I, _F, _I, _I, "uint8[:]", "uint32[:]", "uint64[:]", "int32[:]", "float64[::1]", _RS),
      **_JIT)
def _close_event(start, end, seq, u, lat_min, lat_max, c_flags, c_seq, c_tsr, c_tsd, c_u, rs):
    """Shared fields of one venue event; F_LAST on its last record. Returns the next sequence."""
    lat = lat_min + int(((lat_max - lat_min) / 3.0 + 1.0) * _expo(rs))
    if lat > lat_max:
        lat = lat_max
    tsd = lat // 2
    for i in range(start, end):
        c_seq[i] = seq
        c_tsr[i] = lat  # latency for now; _stamp turns it into ts_recv
        c_tsd[i] = tsd
        c_u[i] = u
    c_flags[end - 1] = c_flags[end - 1] | _F_LAST
    return seq + 1 + (1 if _rand(rs) < 0.2 else 0)


@njit(cache=True)
def _stamp(n_snap, u_total, cum, bin_ns, start_ns, c_u, c_tse, c_tsr):
    """Map event time onto the day through the cumulative intensity; ts_recv = ts_event + latency."""
    nb = cum.shape[0] - 1
    j = 0
    prev = np.int64(start_ns)
    last_u = -1.0
    ts = np.int64(start_ns)
    for i in range(n_snap, c_u.shape[0]):
        uu = c_u[i]
        if uu != last_u:
            t = uu / u_total
            while j < nb - 1 and cum[j + 1] <= t:
                j += 1
            frac = (t - cum[j]) / (cum[j + 1] - cum[j])
            frac = min(max(frac, 0.0), 1.0)
            ts = np.int64(start_ns) + np.int64((j + frac) * bin_ns)
            last_u = uu
        r = ts + np.int64(c_tsr[i])
        if r < prev:
            r = prev
        c_tse[i] = ts
        c_tsr[i] = r
        prev = r


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def _snapshot_plan(params: SynthParams, bid_ref: int) -> tuple[np.ndarray, ...]:
    """Midnight snapshot orders in emission order: bids best-first, then asks best-first, each level in
    queue (placement-time) order. Older orders carry smaller ids, as exchange ids grow with time."""
    rng = np.random.default_rng([params.seed, 0x5A4])
    L = params.snapshot_levels
    k = np.arange(L)
    lam = (params.snapshot_orders_per_level - 1.0) * (0.7 + 0.6 * k / max(1, L - 1))
    counts = 1 + rng.poisson(np.concatenate([lam, lam]))
    total = int(counts.sum())
    group = np.repeat(np.arange(2 * L), counts)
    age = 1_000_000 + (rng.random(total) * params.snapshot_max_age_s * 1e9).astype(np.int64)
    order = np.lexsort((-age, group))  # by level, oldest first within a level
    group, age = group[order], age[order]
    side = (group >= L).astype(np.int64)
    level = group % L
    px = np.where(side == 0, bid_ref - level, bid_ref + 1 + level).astype(np.int64)
    ids = np.empty(total, np.int64)
    by_time = np.argsort(-age, kind="stable")
    ids[by_time] = ORDER_ID_BASE + rng.integers(0, 1_000_000) + np.cumsum(rng.integers(1, 4, total))
    return side, px, age, ids


def _rng_state(seed: int) -> np.ndarray:
    """xoshiro256+ state for the kernels, from numpy's SeedSequence (never all zero)."""
    state = np.random.SeedSequence([seed, 0xC0FFEE]).generate_state(4, np.uint64)
    state[0] |= np.uint64(1)
    return state


def generate_records(params: SynthParams, instrument: InstrumentConfig) -> np.ndarray:
    """Exactly `params.n_records` MBO records (MBO_DTYPE) of one synthetic UTC day; deterministic by seed."""
    _check_symbol(params.symbol, instrument)
    n = params.n_records
    tick_int = int(instrument.tick_int)
    tick0 = round(params.initial_price / instrument.price_scale / tick_int)
    W = params.window_ticks
    base_tick = max(1, tick0 - W // 2)
    margin = params.max_depth_ticks + params.snapshot_levels + 32.0
    f0 = min(max(tick0 - base_tick + 0.5, margin), W - margin)
    start_ns, _ = day_bounds_ns(params.date)
    snapshot_max = 2 * params.snapshot_levels * (params.snapshot_orders_per_level * 3 + 20)
    cap = int(max(65_536, 8 * params.target_live_orders + snapshot_max))

    pf = np.array([
        params.target_live_orders, params.daily_vol_ticks, params.jumps_per_day, params.jump_mean_ticks,
        params.w_add, params.w_cancel, params.w_modify, params.w_market, params.p_partial_cancel,
        params.mean_depth_ticks, params.p_touch, params.p_improve, params.hawkes_jump, params.hawkes_decay,
        margin, params.far_ticks, params.p_rest_remainder, params.planted_episodes_per_day, params.planted_share,
        params.planted_move_ticks,
    ], dtype=np.float64)
    pi = np.array([params.latency_min_ns, params.latency_max_ns, cap, params.max_depth_ticks,
                   params.planted_lead_events, params.planted_move_events], dtype=np.int64)

    out = np.zeros(n, dtype=dbn.MBO_DTYPE)
    out["length"] = dbn.MBO_LENGTH_WORDS
    out["rtype"] = dbn.MBO_RTYPE
    out["publisher_id"] = GLBX_PUBLISHER_ID
    out["instrument_id"] = synthetic_instrument_id(params.symbol)
    out["channel_id"] = CHANNEL_ID
    c_u = np.empty(n, dtype=np.float64)
    s_side, s_px, s_age, s_id = _snapshot_plan(params, int(np.floor(f0)))
    next_id = int(s_id.max()) + 1 + (int(params.seed) % 7)
    n_snap, u_total = _generate_kernel(
        _rng_state(params.seed), n, W, base_tick, tick_int, start_ns, f0, pf, pi,
        s_side, s_px, s_age, s_id, next_id,
        out["action"].view(np.uint8), out["side"].view(np.uint8), out["price"], out["size"],
        out["order_id"], out["flags"], out["sequence"], out["ts_event"], out["ts_recv"],
        out["ts_in_delta"], c_u,
    )
    lam = intensity_profile(params)
    cum = np.concatenate(([0.0], np.cumsum(lam)))
    cum /= cum[-1]
    bin_ns = PROFILE_BIN_S * 1_000_000_000
    _stamp(n_snap, u_total, cum, bin_ns, start_ns, c_u, out["ts_event"], out["ts_recv"])
    return out


def write_synthetic_day(out_path: str | os.PathLike[str], params: SynthParams,
                        instrument: InstrumentConfig) -> Path:
    """Generate a day and write it as a DBN v3 MBO file (zstd iff the name ends in `.zst`)."""
    _check_symbol(params.symbol, instrument)
    records = generate_records(params, instrument)
    return write_records(out_path, records, params, instrument)


def write_records(out_path: str | os.PathLike[str], records: np.ndarray, params: SynthParams,
                  instrument: InstrumentConfig) -> Path:
    """Write already generated records of `params` with the synthetic day's header."""
    start_ns, end_ns = day_bounds_ns(params.date)
    iid = synthetic_instrument_id(params.symbol)
    return dbn.write_mbo(
        out_path,
        records,
        dataset=instrument.dataset,
        symbols=[params.symbol],
        start_ns=start_ns,
        end_ns=end_ns,
        mappings={params.symbol: [(params.date, params.date + dt.timedelta(days=1), iid)]},
    )
