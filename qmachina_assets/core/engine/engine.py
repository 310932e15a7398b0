"""The engine: MBO records -> L3 book -> absolute-tick physics -> fixed-bin silver (SPEC §1–§3).

One njit kernel (`_run`) walks the packed record array; all state is numpy arrays owned by `Engine`
(`checkpoint()`/`restore()` serialise them), so any chunking of the input and any checkpoint/restore
point give bit-identical output. No Dagster/FastAPI imports: assets, serving and tests share this.

Semantics (Databento MBO, notes/databento.md §d; SPEC §1.3 [REBUILD]); every outcome is counted:
- A inserts. A duplicate Add of a live id is counted; the old order's depth is removed before the new
  one is inserted (no leak, SPEC §10.4). A size-0 Add, a null price (INT64_MAX) on A/M, a price not on
  the tick grid on A/M, and a side other than B/A on A/C/M are skipped (counted, `skipped_records`).
- C subtracts its size (partial cancel); the order goes at 0 (an over-cancel is counted and removes it).
- M sets the new absolute price/size; size 0 removes. An unknown-id M is counted and inserted.
- R clears every order and all depth; T, F, N never change the book. C/F on unknown ids are counted
  and never create orders.
- Fill attribution: F adds `size` to fill mass at the order's tick and remembers the volume on the
  order; C/M size reductions of that order within the same venue event (records up to F_LAST) are
  attributed to that fill first and only the rest is pull (SPEC §1.3: pull = cancels not caused by fills).
- Snapshot (F_SNAPSHOT) records build the book only (no add mass, no chain input, SPEC §10.4). The
  snapshot ends at a snapshot record with F_LAST or at the first non-snapshot record (2023 GLBX files
  have neither a leading R nor F_LAST on the snapshot); then the window is re-centred on the raw BBO
  and every depth-chain baseline is reset to the current depth.
- A record whose ts_recv is older than the previous one is applied to the book (skipping it would
  corrupt it) at the previous ts_recv (the clock never rewinds into a closed bin); counted.
- Crossed/locked book at an F_LAST point: counted and flagged on the bin; the engine continues.
- An unknown-id M is a depth-only touch (no add mass), as the seed; a duplicate Add's removed depth is
  a depth-only touch; a non-snapshot R is a depth-only touch of every level (the drop shows in the depth
  chains, not in pull mass).

- A snapshot's own R/A records freeze the depth chains: rows are advanced to the clear, depth changes
  made by the snapshot are not fed to the chains, and the baselines are reset when it ends (a rebuild of
  the same book is not "flow"). The seed re-synced depth but counted every snapshot Add as add mass.

Per-bin flags: `book_valid` = no clear/snapshot in progress and both sides non-empty (SPEC §1.5
[REBUILD]: mask `mid_price <= 0`/invalid bins downstream); `crossed` is separate (crossed/locked at the
close or at any F_LAST point of the bin). When the spot is invalid every grid column is zero except `k`.

Window / anchor (SPEC §2.1, §1.6 [REBUILD]): the first priced order sets the anchor; the window is
re-centred on the mid of the RAW order table's BBO (never the old grid) when a best level comes within
`n_absolute_ticks // 16` slots of an edge, when a side is empty in the window but has out-of-window
orders, at the end of a snapshot and after a restore. Physics of ticks leaving the window are dropped.

Binning (SPEC §3.1): bins are `cell_width_ms` on the ts_recv clock aligned to epoch multiples; a bin's
state is the state after the last record with ts_recv < bin_end; a record exactly at bin_end belongs to
the next bin. The bin clock runs from the first non-snapshot record (or the emission start if earlier)
whatever the emission window, so a windowed run equals the same bins of a whole-day run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numba import njit

from qmachina_assets.core.engine import book as bk
from qmachina_assets.core.engine import physics as phy
from qmachina_assets.core.engine import silver
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.instrument import InstrumentConfig
from qmachina_assets.core.numba_cache import drop_stale_cache

ENGINE_VERSION = "engine-2"  # 2: bins carry the intrabin mid range (mid_high/low_price)


# The kernels inline book.py and physics.py: their edits must invalidate this module's numba cache.
drop_stale_cache(__file__, ("book.py", "physics.py"))
INT64_MAX = np.iinfo(np.int64).max

# ---- scalar state (si) indices -----------------------------------------------------------------
(S_TICK_INT, S_CELL_NS, S_ANCHOR, S_ANCHOR_SET, S_LIVE, S_USED, S_EVENTS, S_VENUE_SEQ, S_LAST_TS, S_CLOCK,
 S_BIN_START, S_EMIT_START, S_EMIT_END, S_VALID, S_SNAP, S_PREV_BID, S_PREV_ASK, S_BIN_EVENTS, S_BIN_UNKNOWN,
 S_BIN_CROSSED, S_BIN_SKIPPED, S_IN_EVENT, S_SEQ, S_RA_BB, S_RA_BA, S_RA_OB, S_RA_OA, S_MARGIN,
 S_RADIUS, S_BIN_MID2_HI, S_BIN_MID2_LO) = range(31)
# S_BIN_MID2_HI/LO: highest/lowest bid + ask price sum (1e-9 units) of the open bin at F_LAST points with an
# uncrossed two-sided book, seeded with the book at the bin's open; 0 = none yet
# global counters
(K_UNKNOWN_CANCEL, K_UNKNOWN_MODIFY, K_UNKNOWN_FILL, K_DUP_ADD, K_ZERO_ADD, K_NULL_PRICE, K_OFF_TICK,
 K_BAD_SIDE, K_TS_BACK, K_REANCHOR, K_CROSSED, K_MID_EVENT_BINS, K_BAD_ACTION, K_OVER_CANCEL,
 K_FILL_ATTRIBUTED) = range(32, 47)
N_SI = 48
COUNTERS = {
    "unknown_cancel": K_UNKNOWN_CANCEL, "unknown_modify": K_UNKNOWN_MODIFY, "unknown_fill": K_UNKNOWN_FILL,
    "duplicate_add": K_DUP_ADD, "zero_size_add": K_ZERO_ADD, "null_price": K_NULL_PRICE,
    "off_tick_price": K_OFF_TICK, "bad_side": K_BAD_SIDE, "ts_recv_backwards": K_TS_BACK,
    "reanchors": K_REANCHOR, "crossed_flast_points": K_CROSSED, "bins_closing_mid_event": K_MID_EVENT_BINS,
    "unknown_action": K_BAD_ACTION, "over_cancel": K_OVER_CANCEL, "fill_attributed_reductions": K_FILL_ATTRIBUTED,
    "records": S_EVENTS, "live_orders": S_LIVE,
}

# ---- per-bin int output rows -------------------------------------------------------------------
(O_START, O_END, O_EVENTS, O_EID, O_SPOT, O_BID, O_ASK, O_VALID, O_CROSSED, O_CROSSED_EV, O_UNKNOWN,
 O_SKIPPED, O_MID, O_ASK_MOVE, O_BID_MOVE, O_ANCHOR, O_OOW, O_SEQ, O_MID2_HI, O_MID2_LO) = range(20)
N_OB = 20

DONE, NEED_GROW, OUT_FULL = 0, 1, 2
_A, _C, _M, _R, _T, _F, _N = (ord(c) for c in "ACMRTFN")
_SIDE_B, _SIDE_A = ord("B"), ord("A")
_F_LAST = dbn.F_LAST
_F_SNAP = dbn.F_SNAPSHOT
_UNDEF = dbn.UNDEF_PRICE


# =================================================================================================
# kernel helpers. `_nrt=False` on everything that allocates nothing: with numba's reference counting,
# every call passing arrays costs atomic incref/decref pairs (~60-80 ns per call, measured), which was
# most of the per-record cost.
# =================================================================================================
@njit(cache=True, _nrt=False, error_model="numpy")
def _in_window(si: np.ndarray, n: int, tick: int) -> bool:
    idx = tick - si[S_ANCHOR] + n // 2
    return 0 <= idx < n


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def _order_delta(si, depth, best, ph, tk, pc, tab, big, side, tick, qty, da, dp, df, phys, ts):
    """Depth change of `qty` at an absolute tick plus the physics touch (catch-up first, SPEC §2.7).

    Inlined into `_run`'s single call site (and nowhere else): a call passing eight arrays costs more
    than the book operation itself, and one inlined copy keeps the compile time short."""
    n = depth.shape[1]
    idx = tick - si[S_ANCHOR] + n // 2
    if idx < 0 or idx >= n:
        return
    if phys:
        phy.advance_to(ph, tk, depth, idx, si[S_BIN_START], si[S_CELL_NS], pc, tab, big)
    if qty != 0:
        bk.depth_change(depth, best, side, idx, qty)
    if phys:
        phy.touch(ph, tk, depth, idx, ts, da, dp, df, si[S_EVENTS], pc)


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def _push(dq, dv, nd, side, tick, qty, da, dp, df):
    """Queue one `_order_delta` of the current record (at most two per record) into the scratch rows."""
    dq[nd, 0] = side
    dq[nd, 1] = tick
    dq[nd, 2] = qty
    dv[nd, 0] = da
    dv[nd, 1] = dp
    dv[nd, 2] = df
    return nd + 1


@njit(cache=True, _nrt=False, error_model="numpy")
def _oow_adjust(si, oow, n, side, tick, d):
    if not _in_window(si, n, tick):
        oow[side] += d


@njit(cache=True, _nrt=False, error_model="numpy")
def _split_fill(ht, si, slot, red):
    """Part of a size reduction attributed to a fill of the same order in the same venue event."""
    if red <= 0 or ht[slot, bk.H_FEID] != si[S_VENUE_SEQ]:
        return 0
    f = min(red, ht[slot, bk.H_FQTY])
    ht[slot, bk.H_FQTY] -= f
    if f > 0:
        si[K_FILL_ATTRIBUTED] += 1
    return f


@njit(cache=True, _nrt=False, error_model="numpy")
def _reanchor(si, ht, depth, best, oow, ph, tk, new_anchor):
    """Move the window so slot N//2 is `new_anchor`; rebuild depth from the raw orders."""
    n = depth.shape[1]
    shift = new_anchor - si[S_ANCHOR]
    if si[S_ANCHOR_SET] and shift != 0:
        # in place, no allocation: walk in the direction that reads a row before it is overwritten
        cols = ph.shape[1]
        tcols = tk.shape[1]
        for jj in range(n):
            j = jj if shift > 0 else n - 1 - jj
            src = j + shift
            if 0 <= src < n:
                for c in range(cols):
                    ph[j, c] = ph[src, c]
                for c in range(tcols):
                    tk[j, c] = tk[src, c]
            else:
                for c in range(cols):
                    ph[j, c] = 0.0
                for c in range(tcols):
                    tk[j, c] = 0
    si[S_ANCHOR] = new_anchor
    si[S_ANCHOR_SET] = 1
    bk.rebuild_depth(ht, depth, best, oow, new_anchor)
    if shift != 0:
        for j in range(n):
            src = j + shift
            if src < 0 or src >= n:  # newly visible levels start with a synced baseline
                ph[j, phy.P_BASE] = float(depth[0, j])
                ph[j, phy.P_BASE + 1] = float(depth[1, j])
    si[K_REANCHOR] += 1


@njit(cache=True, _nrt=False, error_model="numpy")
def _recenter_target(ht) -> int:
    bb, ba = bk.raw_bbo(ht)
    if bb >= 0 and ba >= 0:
        return (bb + ba + 1) // 2  # mid tick, round half up (SPEC §1.6)
    if bb >= 0:
        return bb
    return ba  # -1 when the book is empty


@njit(cache=True, _nrt=False, error_model="numpy", inline="always")
def _reanchor_needed(si, n, best, oow) -> bool:
    """A best level near an edge of the window, or a side empty in the window with orders outside it."""
    if si[S_ANCHOR_SET] == 0 or si[S_SNAP] == 1:
        return False
    m = si[S_MARGIN]
    bb = best[0]
    ba = best[1]
    return ((bb >= 0 and (bb < m or bb >= n - m)) or (ba >= 0 and (ba < m or ba >= n - m))
            or (bb < 0 and oow[0] > 0) or (ba < 0 and oow[1] > 0))


@njit(cache=True, _nrt=False, error_model="numpy")
def _check_reanchor(si, ht, depth, best, oow, ph, tk):
    """Re-centre on the raw BBO when a best level nears an edge or a side left the window."""
    if not _reanchor_needed(si, depth.shape[1], best, oow):
        return
    bb = best[0]
    ba = best[1]
    if si[S_RA_BB] == bb and si[S_RA_BA] == ba and si[S_RA_OB] == oow[0] and si[S_RA_OA] == oow[1]:
        return  # already tried for exactly this state: do not rescan the table on every record
    target = _recenter_target(ht)
    if target >= 0 and target != si[S_ANCHOR]:
        _reanchor(si, ht, depth, best, oow, ph, tk, target)
    si[S_RA_BB] = best[0]
    si[S_RA_BA] = best[1]
    si[S_RA_OB] = oow[0]
    si[S_RA_OA] = oow[1]


@njit(cache=True, _nrt=False, error_model="numpy")
def _catch_up_all(si, depth, ph, tk, pc, tab, big):
    for j in range(depth.shape[1]):
        phy.advance_to(ph, tk, depth, j, si[S_BIN_START], si[S_CELL_NS], pc, tab, big)


@njit(cache=True, _nrt=False, error_model="numpy")
def _end_snapshot(si, ht, depth, best, oow, ph, tk, pc, tab, big):
    """Snapshot complete: book valid, window centred on the raw BBO, depth-chain baselines reset."""
    si[S_SNAP] = 0
    si[S_VALID] = 1
    target = _recenter_target(ht)
    if target >= 0 and (si[S_ANCHOR_SET] == 0 or target != si[S_ANCHOR]):
        _reanchor(si, ht, depth, best, oow, ph, tk, target)
    _catch_up_all(si, depth, ph, tk, pc, tab, big)
    for j in range(depth.shape[1]):
        ph[j, phy.P_BASE] = float(depth[0, j])
        ph[j, phy.P_BASE + 1] = float(depth[1, j])


@njit(cache=True, _nrt=False, error_model="numpy")
def _clear(si, ht, depth, best, oow, ph, tk, pc, tab, big, phys, ts):
    """R: drop every order and all depth. A live (non-snapshot) clear is a depth-only touch of each level."""
    n = depth.shape[1]
    _catch_up_all(si, depth, ph, tk, pc, tab, big)
    for j in range(n):
        had = depth[0, j] != 0 or depth[1, j] != 0
        depth[0, j] = 0
        depth[1, j] = 0
        if phys and had:
            phy.touch(ph, tk, depth, j, ts, 0.0, 0.0, 0.0, si[S_EVENTS], pc)
    best[0] = -1
    best[1] = -1
    oow[0] = 0
    oow[1] = 0
    for s_ in range(ht.shape[0]):
        for c in range(ht.shape[1]):
            ht[s_, c] = 0
    si[S_LIVE] = 0
    si[S_USED] = 0
    si[S_VALID] = 0


@njit(cache=True, _nrt=False, error_model="numpy")
def _mid2(si, best, n) -> int:
    """bid + ask price sum (1e-9 units) of an uncrossed two-sided book, else 0."""
    if best[0] < 0 or best[1] < 0 or best[0] >= best[1]:
        return 0
    return (2 * (si[S_ANCHOR] - n // 2) + best[0] + best[1]) * si[S_TICK_INT]


@njit(cache=True, _nrt=False, error_model="numpy")
def _track_mid(si, best, n) -> None:
    """Widen the open bin's mid range by the book at this F_LAST point."""
    m2 = _mid2(si, best, n)
    if m2 > 0:
        if si[S_BIN_MID2_HI] == 0 or m2 > si[S_BIN_MID2_HI]:
            si[S_BIN_MID2_HI] = m2
        if si[S_BIN_MID2_LO] == 0 or m2 < si[S_BIN_MID2_LO]:
            si[S_BIN_MID2_LO] = m2


@njit(cache=True, _nrt=False, error_model="numpy")
def _close_bin(si, depth, best, oow, ph, tk, pc, tab, big, ob, og, oe, nb, radius, tick_int):
    """Close the open bin at T = bin_end: advance, emit (when inside the window), reset bin counters."""
    cell = si[S_CELL_NS]
    bs = si[S_BIN_START]
    t_end = bs + cell
    si[S_BIN_START] = t_end  # boundary t_end is now closed (catch_up bound)
    emitted = 0
    if si[S_IN_EVENT] == 1:
        si[K_MID_EVENT_BINS] += 1
    if bs >= si[S_EMIT_START] and bs < si[S_EMIT_END]:
        n = depth.shape[1]
        base = si[S_ANCHOR] - n // 2
        bb = best[0]
        ba = best[1]
        bid_px = (base + bb) * tick_int if bb >= 0 else 0
        ask_px = (base + ba) * tick_int if ba >= 0 else 0
        w = 2 * radius + 1
        r0 = nb * w
        crossed_now = bb >= 0 and ba >= 0 and bb >= ba
        spot = 0
        if bb >= 0 and ba >= 0:
            c = (bb + ba + 1) // 2
            spot = (base + c) * tick_int
            phy.read_window(ph, tk, depth, c - radius, c + radius + 1, t_end, cell, pc, tab, big, og, oe, r0)
        else:
            for row in range(r0, r0 + w):
                for c in range(og.shape[0]):
                    og[c, row] = 0.0
                oe[row] = 0
        ask_move = 0
        bid_move = 0
        if ask_px > 0 and si[S_PREV_ASK] > 0:
            ask_move = (ask_px - si[S_PREV_ASK]) // tick_int
        if bid_px > 0 and si[S_PREV_BID] > 0:
            bid_move = (bid_px - si[S_PREV_BID]) // tick_int
        ob[O_START, nb] = bs
        ob[O_END, nb] = t_end
        ob[O_EVENTS, nb] = si[S_BIN_EVENTS]
        ob[O_EID, nb] = si[S_EVENTS]
        ob[O_SPOT, nb] = spot
        ob[O_BID, nb] = bid_px
        ob[O_ASK, nb] = ask_px
        ob[O_VALID, nb] = 1 if (si[S_VALID] == 1 and si[S_SNAP] == 0 and bb >= 0 and ba >= 0) else 0
        ob[O_CROSSED, nb] = 1 if (crossed_now or si[S_BIN_CROSSED] > 0) else 0
        ob[O_CROSSED_EV, nb] = si[S_BIN_CROSSED]
        ob[O_UNKNOWN, nb] = si[S_BIN_UNKNOWN]
        ob[O_SKIPPED, nb] = si[S_BIN_SKIPPED]
        ob[O_MID, nb] = si[S_IN_EVENT]
        ob[O_ASK_MOVE, nb] = ask_move
        ob[O_BID_MOVE, nb] = bid_move
        ob[O_ANCHOR, nb] = si[S_ANCHOR]
        ob[O_OOW, nb] = oow[0] + oow[1]
        ob[O_SEQ, nb] = si[S_SEQ]
        _track_mid(si, best, n)  # the close is inside the bin's range
        ob[O_MID2_HI, nb] = si[S_BIN_MID2_HI]
        ob[O_MID2_LO, nb] = si[S_BIN_MID2_LO]
        si[S_SEQ] += 1
        si[S_PREV_BID] = bid_px
        si[S_PREV_ASK] = ask_px
        emitted = 1
    si[S_BIN_EVENTS] = 0
    si[S_BIN_UNKNOWN] = 0
    si[S_BIN_CROSSED] = 0
    si[S_BIN_SKIPPED] = 0
    m2 = _mid2(si, best, depth.shape[1])  # the next bin opens on this book
    si[S_BIN_MID2_HI] = m2
    si[S_BIN_MID2_LO] = m2
    return emitted


@njit(cache=True, _nrt=False, error_model="numpy")
def _will_emit(si) -> bool:
    bs = si[S_BIN_START]
    return bs >= si[S_EMIT_START] and bs < si[S_EMIT_END]


@njit(cache=True, _nrt=False, error_model="numpy")
def _run(ts_a, act_a, side_a, px_a, sz_a, oid_a, fl_a, start, stop, close_through,
         ht, depth, best, oow, ph, tk, si, pc, tab, big, ob, og, oe, dq, dv):
    """Apply records [start, stop) then close bins ending <= close_through. Returns (next, n_bins, status).

    A record's depth/physics deltas are queued (`_push`, scratch `dq`/`dv`) and applied in order after
    its book update: nothing in between reads depth or physics, so this equals applying them in place,
    and the heavy `_order_delta` is inlined at one call site only.
    """
    n = depth.shape[1]
    tick_int = si[S_TICK_INT]
    inv_tick = 1.0 / tick_int
    cell = si[S_CELL_NS]
    radius = si[S_RADIUS]
    cap_bins = ob.shape[1]
    nb = 0
    i = start
    while i < stop:
        if (si[S_USED] + 2) * 2 > ht.shape[0]:
            return i, nb, NEED_GROW
        raw_ts = ts_a[i]
        fl = fl_a[i]
        act = act_a[i]
        is_snap = (fl & _F_SNAP) != 0
        ts = raw_ts if raw_ts >= si[S_LAST_TS] else si[S_LAST_TS]
        if si[S_CLOCK] == 0 and not is_snap:
            origin = (ts // cell) * cell
            if si[S_EMIT_START] >= 0 and si[S_EMIT_START] < origin:
                origin = si[S_EMIT_START]
            if si[S_EMIT_START] < 0:
                si[S_EMIT_START] = origin
            si[S_BIN_START] = origin
            si[S_CLOCK] = 1
            si[S_BIN_EVENTS] = 0  # records before the clock (the opening snapshot) belong to no bin
            si[S_BIN_UNKNOWN] = 0
            si[S_BIN_CROSSED] = 0
            si[S_BIN_SKIPPED] = 0
        if si[S_CLOCK] == 1:
            while ts >= si[S_BIN_START] + cell:
                if nb >= cap_bins and _will_emit(si):
                    return i, nb, OUT_FULL
                nb += _close_bin(si, depth, best, oow, ph, tk, pc, tab, big, ob, og, oe, nb, radius, tick_int)
        # ---- the record is applied from here on (never re-entered) -------------------------
        if raw_ts < si[S_LAST_TS]:
            si[K_TS_BACK] += 1
        si[S_LAST_TS] = ts
        si[S_EVENTS] += 1
        si[S_BIN_EVENTS] += 1
        phys = not is_snap
        if is_snap:
            if si[S_SNAP] == 0:
                si[S_SNAP] = 1
        elif si[S_SNAP] == 1:
            _end_snapshot(si, ht, depth, best, oow, ph, tk, pc, tab, big)
        if si[S_SNAP] == 0 and si[S_VALID] == 0 and act != _R:
            si[S_VALID] = 1
        nd = 0
        sd = 0 if side_a[i] == _SIDE_B else 1
        good_side = side_a[i] == _SIDE_B or side_a[i] == _SIDE_A
        px = px_a[i]
        sz = np.int64(sz_a[i])
        oid = oid_a[i]
        if act in (_A, _M):
            skip = False
            tick = 0
            if not good_side:
                si[K_BAD_SIDE] += 1
                skip = True
            elif px == _UNDEF:
                si[K_NULL_PRICE] += 1
                skip = True
            else:
                tick = phy.fdiv(px, tick_int, inv_tick)  # floor, as px // tick_int
                if px - tick * tick_int != 0:  # px % tick_int != 0
                    si[K_OFF_TICK] += 1
                    skip = True
                elif act == _A and sz == 0:
                    si[K_ZERO_ADD] += 1
                    skip = True
            if skip:
                si[S_BIN_SKIPPED] += 1
            else:
                if si[S_ANCHOR_SET] == 0:
                    si[S_ANCHOR] = tick
                    si[S_ANCHOR_SET] = 1
                slot = bk.ht_find(ht, oid)
                if act == _A:
                    if slot >= 0:  # duplicate Add: remove the old order's depth first (no leak)
                        si[K_DUP_ADD] += 1
                        os_ = ht[slot, bk.H_SIDE]
                        ot = ht[slot, bk.H_TICK]
                        nd = _push(dq, dv, nd, os_, ot, -ht[slot, bk.H_SIZE], 0.0, 0.0, 0.0)
                        _oow_adjust(si, oow, n, os_, ot, -1)
                        si[S_USED] += bk.ht_remove(ht, slot)
                        si[S_LIVE] -= 1
                    si[S_USED] += bk.ht_insert(ht, oid, sd, tick, sz)
                    si[S_LIVE] += 1
                    _oow_adjust(si, oow, n, sd, tick, 1)
                    nd = _push(dq, dv, nd, sd, tick, sz, float(sz), 0.0, 0.0)
                elif slot < 0:  # unknown-id Modify: a real order first seen mid-life, insert it
                    si[K_UNKNOWN_MODIFY] += 1
                    si[S_BIN_UNKNOWN] += 1
                    if sz > 0:
                        si[S_USED] += bk.ht_insert(ht, oid, sd, tick, sz)
                        si[S_LIVE] += 1
                        _oow_adjust(si, oow, n, sd, tick, 1)
                        nd = _push(dq, dv, nd, sd, tick, sz, 0.0, 0.0, 0.0)
                else:
                    os_ = ht[slot, bk.H_SIDE]
                    ot = ht[slot, bk.H_TICK]
                    oq = ht[slot, bk.H_SIZE]
                    if sz == 0:
                        f = _split_fill(ht, si, slot, oq)
                        nd = _push(dq, dv, nd, os_, ot, -oq, 0.0, float(oq - f), 0.0)
                        _oow_adjust(si, oow, n, os_, ot, -1)
                        si[S_USED] += bk.ht_remove(ht, slot)
                        si[S_LIVE] -= 1
                    elif os_ == sd and ot == tick:
                        d = sz - oq
                        ht[slot, bk.H_SIZE] = sz
                        if d >= 0:
                            nd = _push(dq, dv, nd, sd, tick, d, float(d), 0.0, 0.0)
                        else:
                            f = _split_fill(ht, si, slot, -d)
                            nd = _push(dq, dv, nd, sd, tick, d, 0.0, float(-d - f), 0.0)
                    else:
                        f = _split_fill(ht, si, slot, oq)
                        nd = _push(dq, dv, nd, os_, ot, -oq, 0.0, float(oq - f), 0.0)
                        _oow_adjust(si, oow, n, os_, ot, -1)
                        ht[slot, bk.H_SIDE] = sd
                        ht[slot, bk.H_TICK] = tick
                        ht[slot, bk.H_SIZE] = sz
                        _oow_adjust(si, oow, n, sd, tick, 1)
                        nd = _push(dq, dv, nd, sd, tick, sz, float(sz), 0.0, 0.0)
        elif act == _C:
            slot = bk.ht_find(ht, oid)
            if slot < 0:
                si[K_UNKNOWN_CANCEL] += 1
                si[S_BIN_UNKNOWN] += 1
            else:
                os_ = ht[slot, bk.H_SIDE]
                ot = ht[slot, bk.H_TICK]
                rem = ht[slot, bk.H_SIZE]
                red = sz
                if sz > rem:
                    si[K_OVER_CANCEL] += 1
                    red = rem
                f = _split_fill(ht, si, slot, red)
                if red == rem:
                    si[S_USED] += bk.ht_remove(ht, slot)
                    si[S_LIVE] -= 1
                    _oow_adjust(si, oow, n, os_, ot, -1)
                else:
                    ht[slot, bk.H_SIZE] = rem - red
                nd = _push(dq, dv, nd, os_, ot, -red, 0.0, float(red - f), 0.0)
        elif act == _F:
            slot = bk.ht_find(ht, oid)
            tick = -1
            if slot >= 0:
                tick = ht[slot, bk.H_TICK]
                if ht[slot, bk.H_FEID] != si[S_VENUE_SEQ]:
                    ht[slot, bk.H_FEID] = si[S_VENUE_SEQ]
                    ht[slot, bk.H_FQTY] = 0
                ht[slot, bk.H_FQTY] += sz
            else:
                si[K_UNKNOWN_FILL] += 1
                si[S_BIN_UNKNOWN] += 1
                if px != _UNDEF and px % tick_int == 0:
                    tick = px // tick_int
            if tick >= 0 and si[S_ANCHOR_SET] == 1:
                nd = _push(dq, dv, nd, 0, tick, 0, 0.0, 0.0, float(sz))
        elif act == _R:
            if is_snap:
                si[S_SNAP] = 1
            _clear(si, ht, depth, best, oow, ph, tk, pc, tab, big, phys, ts)
            if is_snap:
                si[S_VALID] = 0
        elif act != _T and act != _N:
            si[K_BAD_ACTION] += 1
        for d in range(nd):
            _order_delta(si, depth, best, ph, tk, pc, tab, big, dq[d, 0], dq[d, 1], dq[d, 2], dv[d, 0], dv[d, 1],
                         dv[d, 2], phys, ts)
        if (fl & _F_LAST) != 0:
            si[S_VENUE_SEQ] += 1
            si[S_IN_EVENT] = 0
            if best[0] >= 0 and best[1] >= 0 and best[0] >= best[1]:
                si[S_BIN_CROSSED] += 1
                si[K_CROSSED] += 1
            else:
                _track_mid(si, best, n)
            if is_snap and si[S_SNAP] == 1:
                _end_snapshot(si, ht, depth, best, oow, ph, tk, pc, tab, big)
        else:
            si[S_IN_EVENT] = 1
        if _reanchor_needed(si, n, best, oow):  # cheap test inline; the call passes seven arrays
            _check_reanchor(si, ht, depth, best, oow, ph, tk)
        i += 1
    if si[S_CLOCK] == 1:
        while si[S_BIN_START] + cell <= close_through:
            if nb >= cap_bins and _will_emit(si):
                return i, nb, OUT_FULL
            nb += _close_bin(si, depth, best, oow, ph, tk, pc, tab, big, ob, og, oe, nb, radius, tick_int)
    return i, nb, DONE


@njit(cache=True, _nrt=False, error_model="numpy")
def _after_restore(si, ht, depth, best, oow, ph, tk):
    """Rebuild depth from the raw orders for the saved anchor, then apply the re-anchor rule."""
    bk.rebuild_depth(ht, depth, best, oow, si[S_ANCHOR])
    _check_reanchor(si, ht, depth, best, oow, ph, tk)


# =================================================================================================
# Python API
# =================================================================================================
@dataclass
class SilverChunk:
    """Bins finished by one feed/flush: `bins` (one entry per bin) and `grid` (one per (bin, k)) columns."""

    bins: dict[str, np.ndarray]
    grid: dict[str, np.ndarray]

    @property
    def n_bins(self) -> int:
        return len(self.bins["bin_seq"])

    def bins_table(self) -> pa.Table:
        return silver.table_from_columns(self.bins, silver.bins_schema())

    def grid_table(self) -> pa.Table:
        return silver.table_from_columns(self.grid, silver.grid_schema())

    def copy(self) -> SilverChunk:
        """Detach from the engine's reusable buffers."""
        return SilverChunk(bins={k: v.copy() for k, v in self.bins.items()},
                           grid={k: v.copy() for k, v in self.grid.items()})

    @staticmethod
    def concat(chunks: Iterable[SilverChunk], radius: int) -> SilverChunk:
        chunks = list(chunks)
        if not chunks:
            return SilverChunk.empty(radius)
        if len(chunks) == 1:
            return chunks[0]
        return SilverChunk(
            bins={k: np.concatenate([c.bins[k] for c in chunks]) for k in chunks[0].bins},
            grid={k: np.concatenate([c.grid[k] for c in chunks]) for k in chunks[0].grid},
        )

    @staticmethod
    def empty(radius: int) -> SilverChunk:
        return SilverChunk(
            bins={name: np.zeros(0, dt) for name, dt in silver.BIN_COLUMNS},
            grid={name: np.zeros(0, dt) for name, dt in silver.GRID_COLUMNS},
        )


def checkpoint_key(instrument: InstrumentConfig, source_identity: str, bin_boundary_ns: int) -> str:
    """Key of a checkpoint: engine version, instrument config version, source (sha256/identity), boundary."""
    text = f"{ENGINE_VERSION}|{instrument.config_version}|{source_identity}|{int(bin_boundary_ns)}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def file_identity(path: str | os.PathLike[str]) -> str:
    """sha256 of a source file's bytes (content identity, not mtime)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _record_views(records: np.ndarray) -> tuple[np.ndarray, ...]:
    if records.dtype != dbn.MBO_DTYPE:
        raise TypeError(f"records must have the MBO dtype, got {records.dtype}")
    return (
        records["ts_recv"].view(np.int64), records["action"].view(np.uint8), records["side"].view(np.uint8),
        records["price"], records["size"], records["order_id"].view(np.int64), records["flags"],
    )


_EMPTY_VIEWS = _record_views(np.zeros(0, dbn.MBO_DTYPE))


class Engine:
    """Streaming MBO -> silver engine for one instrument-day (see module docstring for semantics)."""

    def __init__(self, instrument: InstrumentConfig, start_ns: int | None = None, end_ns: int | None = None,
                 bins_per_call: int = 128) -> None:
        self.instrument = instrument
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.bins_per_call = int(bins_per_call)
        n = int(instrument.n_absolute_ticks)
        self.radius = int(instrument.grid_radius_ticks)
        self.cell_ns = int(instrument.cell_width_ms) * 1_000_000
        self.ht = bk.new_table()
        self.depth = np.zeros((2, n), dtype=np.int64)
        self.best = np.full(2, -1, dtype=np.int64)
        self.oow = np.zeros(2, dtype=np.int64)
        self.ph = np.zeros((n, phy.P_COLS), dtype=np.float64)
        self.tk = np.zeros((n, phy.T_COLS), dtype=np.int64)
        self.pc = phy.physics_constants(instrument.tau_rest_decay, instrument.tau_velocity,
                                        instrument.tau_acceleration, instrument.tau_jerk, self.cell_ns * 1e-9)
        self.tab, self.big = phy.power_tables(self.pc)
        si = np.zeros(N_SI, dtype=np.int64)
        si[S_TICK_INT] = instrument.tick_int
        si[S_CELL_NS] = self.cell_ns
        si[S_EMIT_START] = -1 if start_ns is None else (int(start_ns) // self.cell_ns) * self.cell_ns
        si[S_EMIT_END] = INT64_MAX if end_ns is None else int(end_ns)
        si[S_MARGIN] = max(1, n // 16)
        si[S_RADIUS] = self.radius
        si[S_RA_BB] = si[S_RA_BA] = -2
        self.si = si
        self.finished = False
        self._buf: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._dq = np.zeros((2, 3), dtype=np.int64)  # kernel scratch: one record's queued deltas
        self._dv = np.zeros((2, 3), dtype=np.float64)

    # ---- running -------------------------------------------------------------------------------
    def iter_feed(self, records: np.ndarray, close_through: int = -1) -> Iterator[SilverChunk]:
        """Apply records; yield silver for the bins they finish, at most `bins_per_call` bins per chunk.

        The yielded grid columns are views of engine-owned buffers, valid until the next chunk is
        requested (copy to keep them): reusing the buffers avoids faulting in fresh pages for every
        chunk, which otherwise costs more than the engine itself on a full-grid day.
        """
        views = _record_views(records) if len(records) else _EMPTY_VIEWS
        i, n = 0, len(records)
        ob, og, oe = self._buffers()
        while True:
            i, nb, status = _run(*views, i, n, close_through, self.ht, self.depth, self.best, self.oow,
                                 self.ph, self.tk, self.si, self.pc, self.tab, self.big, ob, og, oe,
                                 self._dq, self._dv)
            if nb:
                yield self._chunk(ob, og, oe, nb)
            if status == NEED_GROW:
                self.ht = bk.grown(self.ht, int(self.si[S_LIVE]))
                self.si[S_USED] = self.si[S_LIVE]
            elif status == DONE:
                return

    def _buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._buf is None:
            w = 2 * self.radius + 1
            self._buf = (np.zeros((N_OB, self.bins_per_call), dtype=np.int64),
                         np.zeros((len(silver.SILVER_FLOAT_COLUMNS), self.bins_per_call * w), dtype=np.float64),
                         np.zeros(self.bins_per_call * w, dtype=np.int64))
        return self._buf

    def feed(self, records: np.ndarray) -> SilverChunk:
        """Apply a chunk of records (any chunking gives identical output); silver of the bins it finished."""
        if self.finished:
            raise RuntimeError("engine already flushed")
        return SilverChunk.concat((c.copy() for c in self.iter_feed(records)), self.radius)

    def flush_through(self) -> int:
        """Bin end through which `flush` closes bins (end of the emission window)."""
        if self.si[S_CLOCK] == 0:
            return -1
        if self.end_ns is not None:
            return ((int(self.end_ns) - 1) // self.cell_ns + 1) * self.cell_ns
        return (int(self.si[S_LAST_TS]) // self.cell_ns + 1) * self.cell_ns

    def iter_flush(self) -> Iterator[SilverChunk]:
        self.finished = True
        yield from self.iter_feed(np.zeros(0, dbn.MBO_DTYPE), close_through=self.flush_through())

    def flush(self) -> SilverChunk:
        """End of the day: close and emit bins through the end of the emission window."""
        return SilverChunk.concat((c.copy() for c in self.iter_flush()), self.radius)

    def _chunk(self, ob: np.ndarray, og: np.ndarray, oe: np.ndarray, nb: int) -> SilverChunk:
        w = 2 * self.radius + 1
        rows = nb * w
        labels = silver.microstate_labels(ob[O_ASK_MOVE, :nb], ob[O_BID_MOVE, :nb])
        bid = ob[O_BID, :nb]
        ask = ob[O_ASK, :nb]
        spot = ob[O_SPOT, :nb]
        mid = np.where((bid > 0) & (ask > 0), (bid + ask) / 2.0 * 1e-9, 0.0)
        mid_hi = ob[O_MID2_HI, :nb] / 2.0 * 1e-9  # 0 where the bin never had an uncrossed two-sided book
        mid_lo = ob[O_MID2_LO, :nb] / 2.0 * 1e-9
        bins = {
            "bin_seq": ob[O_SEQ, :nb].copy(), "ts_ns": ob[O_END, :nb].copy(),
            "bin_start_ns": ob[O_START, :nb].copy(), "bin_end_ns": ob[O_END, :nb].copy(),
            "bin_event_count": ob[O_EVENTS, :nb].copy(), "event_id": ob[O_EID, :nb].copy(),
            "spot_ref_price_int": spot.copy(), "mid_price": mid, "best_bid_price_int": bid.copy(),
            "best_ask_price_int": ask.copy(), "book_valid": ob[O_VALID, :nb].astype(bool),
            "crossed": ob[O_CROSSED, :nb].astype(bool), "crossed_events": ob[O_CROSSED_EV, :nb].copy(),
            "unknown_order_events": ob[O_UNKNOWN, :nb].copy(), "skipped_records": ob[O_SKIPPED, :nb].copy(),
            "closes_mid_event": ob[O_MID, :nb].astype(bool), **labels,
            "anchor_tick": ob[O_ANCHOR, :nb].copy(), "out_of_window_orders": ob[O_OOW, :nb].copy(),
            "mid_high_price": mid_hi, "mid_low_price": mid_lo,
        }
        grid: dict[str, np.ndarray] = {
            "bin_seq": np.repeat(bins["bin_seq"], w),
            "k": np.tile(np.arange(-self.radius, self.radius + 1, dtype=np.int32), nb),
        }
        for c, name in enumerate(silver.SILVER_FLOAT_COLUMNS):
            grid[name] = og[c, :rows]
        grid["last_event_id"] = oe[:rows]
        for name in silver.LABEL_COLUMNS:
            grid[name] = np.repeat(labels[name], w)
        return SilverChunk(bins=bins, grid=grid)

    # ---- introspection -------------------------------------------------------------------------
    @property
    def counters(self) -> dict[str, int]:
        """Global outcome counters (unknown ids, skips, re-anchors, crossed F_LAST points, ...)."""
        return {name: int(self.si[idx]) for name, idx in COUNTERS.items()}

    @property
    def bin_boundary_ns(self) -> int:
        """Last closed bin boundary (the state is "as of" this boundary plus the open bin's records);
        with `checkpoint_key(instrument, file_identity(path), engine.bin_boundary_ns)` names a checkpoint."""
        return int(self.si[S_BIN_START])

    @property
    def anchor_tick(self) -> int:
        return int(self.si[S_ANCHOR])

    def best_prices(self) -> tuple[int, int]:
        """(best bid, best ask) in 1e-9 units, 0 for an empty side (current state, not bin-aligned)."""
        base = int(self.si[S_ANCHOR]) - self.depth.shape[1] // 2
        ti = int(self.si[S_TICK_INT])
        return tuple(0 if b < 0 else (base + int(b)) * ti for b in self.best)  # type: ignore[return-value]

    def levels(self, side: int) -> dict[int, int]:
        """{absolute tick: depth} of one side (0 bid, 1 ask) inside the window."""
        base = int(self.si[S_ANCHOR]) - self.depth.shape[1] // 2
        nz = np.flatnonzero(self.depth[side])
        return {int(base + i): int(self.depth[side, i]) for i in nz}

    # ---- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self) -> bytes:
        """Serialise the full state (live orders, scalars, per-tick physics) with version metadata."""
        live = self.ht[self.ht[:, bk.H_STATE] == bk.LIVE]
        meta = {
            "engine_version": ENGINE_VERSION, "config_version": self.instrument.config_version,
            "start_ns": self.start_ns, "end_ns": self.end_ns, "bin_boundary_ns": int(self.si[S_BIN_START]),
            "finished": self.finished,
        }
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), orders=live, si=self.si,
                 ph=self.ph, tk=self.tk)
        return buf.getvalue()

    @classmethod
    def restore(cls, instrument: InstrumentConfig, blob: bytes, bins_per_call: int = 128) -> Engine:
        """Rebuild an engine from `checkpoint()`; refuses another engine or config version."""
        z = np.load(io.BytesIO(blob))
        meta = json.loads(bytes(z["meta"]).decode())
        if meta["engine_version"] != ENGINE_VERSION or meta["config_version"] != instrument.config_version:
            raise ValueError(
                f"checkpoint is for engine {meta['engine_version']} / config {meta['config_version']}, "
                f"this is {ENGINE_VERSION} / {instrument.config_version}"
            )
        eng = cls(instrument, meta["start_ns"], meta["end_ns"], bins_per_call=bins_per_call)
        orders = z["orders"]
        cap = bk.MIN_CAPACITY
        while cap < 4 * max(1, len(orders)):
            cap <<= 1
        table = np.zeros((len(orders), bk.H_COLS), dtype=np.int64)
        table[:] = orders
        eng.ht = bk.rehash(np.ascontiguousarray(table), cap) if len(orders) else bk.new_table(cap)
        eng.si[:] = z["si"]
        eng.si[S_USED] = len(orders)
        eng.ph[:] = z["ph"]
        eng.tk[:] = z["tk"]
        eng.finished = bool(meta["finished"])
        _after_restore(eng.si, eng.ht, eng.depth, eng.best, eng.oow, eng.ph, eng.tk)
        return eng


# =================================================================================================
# files
# =================================================================================================
def iter_file(path: str | os.PathLike[str], instrument: InstrumentConfig, start_ns: int | None = None,
              end_ns: int | None = None, chunk_records: int = 1_000_000,
              instrument_ids: set[int] | None = None) -> Iterator[SilverChunk]:
    """Silver chunks of one MBO file (bounded memory). Only `instrument_ids` (default: all) are used."""
    eng = Engine(instrument, start_ns, end_ns)
    for recs in dbn.iter_mbo_chunks(path, chunk_records=chunk_records):
        if instrument_ids is not None:
            recs = recs[np.isin(recs["instrument_id"], list(instrument_ids))]
        yield from eng.iter_feed(recs)
    yield from eng.iter_flush()


def run_file(path: str | os.PathLike[str], instrument: InstrumentConfig, start_ns: int | None = None,
             end_ns: int | None = None, chunk_records: int = 1_000_000) -> tuple[pa.Table, pa.Table]:
    """(bins, grid) Arrow tables of one file in memory; choose a window for full days (~87 M grid rows)."""
    chunks = [c.copy() for c in iter_file(path, instrument, start_ns, end_ns, chunk_records)]
    all_ = SilverChunk.concat(chunks, int(instrument.grid_radius_ticks))
    return all_.bins_table(), all_.grid_table()


def write_silver(out_dir: str | os.PathLike[str], chunks: Iterable[SilverChunk]) -> tuple[Path, Path]:
    """Write `bins.parquet` and `grid.parquet` incrementally (temp names, renamed on success)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with dbn.atomic_path(out / "bins.parquet") as tb, dbn.atomic_path(out / "grid.parquet") as tg:
        wb = pq.ParquetWriter(tb, silver.bins_schema())
        wg = pq.ParquetWriter(tg, silver.grid_schema())
        try:
            for ch in chunks:
                if ch.n_bins:
                    wb.write_table(ch.bins_table())
                    wg.write_table(ch.grid_table())
        finally:
            wb.close()
            wg.close()
    return out / "bins.parquet", out / "grid.parquet"
