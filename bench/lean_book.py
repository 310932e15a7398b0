"""A lean book-plus-grid loop: the engine's floor, with no physics (issue 21 item 2's yardstick).

It does what any MBO -> grid engine must do and nothing more: the same order hash table and depth
array (`core.engine.book`), A/C/M/R applied to them, a re-centred absolute-tick window, and per closed
bin inside the emission window the best prices plus the +-R depth grid around the spot (2 floats per
row). No chains, masses, fill attribution, counters or snapshot handling. `bench/engine.py` runs it on
the same records in the same process, so the engine's speed is reported as a ratio that machine load
does not move much. Not used by the product.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from qmachina_assets.core.engine import book as bk
from qmachina_assets.core.instrument import InstrumentConfig

_A, _C, _M, _R = (ord(c) for c in "ACMR")
_SIDE_B = ord("B")
_NEED_GROW = 1


@njit(cache=True, _nrt=False)
def _recentre(ht, depth, best, oow, anchor) -> int:
    """The anchor after re-centring on the raw BBO (a best level neared an edge, as in the engine)."""
    rb, ra = bk.raw_bbo(ht)
    target = (rb + ra + 1) // 2 if rb >= 0 and ra >= 0 else max(rb, ra)
    if target >= 0 and target != anchor:
        bk.rebuild_depth(ht, depth, best, oow, target)
        return target
    return anchor


@njit(cache=True, _nrt=False)
def _run(ts_a, act_a, side_a, px_a, sz_a, oid_a, start, stop, ht, depth, best, oow, st, tick_int, cell,
         emit_start, emit_end, radius, out_bins, out_grid):
    """Apply records [start, stop); emit bins into out_bins/out_grid. Returns (next, n_bins, status);
    st = [anchor, anchor set, bin start, clock set, used slots, live orders]."""
    n = depth.shape[1]
    margin = max(1, n // 16)
    w = 2 * radius + 1
    nb = 0
    i = start
    while i < stop:
        if (st[4] + 2) * 2 > ht.shape[0]:
            return i, nb, _NEED_GROW
        ts = ts_a[i]
        if st[3] == 0:
            st[2] = min((ts // cell) * cell, emit_start)
            st[3] = 1
        while ts >= st[2] + cell:
            bs = st[2]
            if bs >= emit_start and bs < emit_end:
                if nb == out_bins.shape[1]:
                    return i, nb, 0
                base = st[0] - n // 2
                bb = best[0]
                ba = best[1]
                out_bins[0, nb] = bs + cell
                out_bins[1, nb] = (base + bb) * tick_int if bb >= 0 else 0
                out_bins[2, nb] = (base + ba) * tick_int if ba >= 0 else 0
                c = (bb + ba + 1) // 2
                for j in range(w):
                    idx = c - radius + j
                    row = nb * w + j
                    if bb >= 0 and ba >= 0 and 0 <= idx < n:
                        out_grid[0, row] = float(depth[0, idx])
                        out_grid[1, row] = float(depth[1, idx])
                    else:
                        out_grid[0, row] = 0.0
                        out_grid[1, row] = 0.0
                nb += 1
            st[2] = bs + cell
        act = act_a[i]
        sd = 0 if side_a[i] == _SIDE_B else 1
        px = px_a[i]
        sz = np.int64(sz_a[i])
        oid = oid_a[i]
        if act in (_A, _M):
            tick = px // tick_int
            if st[1] == 0:
                st[0] = tick
                st[1] = 1
            slot = bk.ht_find(ht, oid)
            if slot >= 0:
                idx = ht[slot, bk.H_TICK] - st[0] + n // 2
                if 0 <= idx < n:
                    bk.depth_change(depth, best, ht[slot, bk.H_SIDE], idx, -ht[slot, bk.H_SIZE])
                st[4] += bk.ht_remove(ht, slot)
                st[5] -= 1
            if sz > 0:
                st[4] += bk.ht_insert(ht, oid, sd, tick, sz)
                st[5] += 1
                idx = tick - st[0] + n // 2
                if 0 <= idx < n:
                    bk.depth_change(depth, best, sd, idx, sz)
        elif act == _C:
            slot = bk.ht_find(ht, oid)
            if slot >= 0:
                rem = ht[slot, bk.H_SIZE]
                red = min(sz, rem)
                idx = ht[slot, bk.H_TICK] - st[0] + n // 2
                if 0 <= idx < n:
                    bk.depth_change(depth, best, ht[slot, bk.H_SIDE], idx, -red)
                if red == rem:
                    st[4] += bk.ht_remove(ht, slot)
                    st[5] -= 1
                else:
                    ht[slot, bk.H_SIZE] = rem - red
        elif act == _R:
            ht[:, :] = 0
            depth[:, :] = 0
            best[0] = -1
            best[1] = -1
            st[4] = 0
            st[5] = 0
        bb = best[0]
        ba = best[1]
        if st[1] == 1 and ((bb >= 0 and (bb < margin or bb >= n - margin))
                           or (ba >= 0 and (ba < margin or ba >= n - margin))):
            st[0] = _recentre(ht, depth, best, oow, st[0])
        i += 1
    return i, nb, 0


def run(records: np.ndarray, instrument: InstrumentConfig, start_ns: int | None, end_ns: int | None,
        step: int = 2_000_000, bins_per_call: int = 128) -> tuple[int, int]:
    """Feed the records through the lean loop `step` at a time (as the engine bench); (bins, grid rows)."""
    n = int(instrument.n_absolute_ticks)
    radius = int(instrument.grid_radius_ticks)
    cell = int(instrument.cell_width_ms) * 1_000_000
    emit_start = -(1 << 62) if start_ns is None else (int(start_ns) // cell) * cell
    emit_end = (1 << 62) if end_ns is None else int(end_ns)
    ht = bk.new_table()
    depth = np.zeros((2, n), np.int64)
    best = np.full(2, -1, np.int64)
    oow = np.zeros(2, np.int64)
    st = np.zeros(6, np.int64)
    out_bins = np.zeros((3, bins_per_call), np.int64)
    out_grid = np.zeros((2, bins_per_call * (2 * radius + 1)), np.float64)
    views = (records["ts_recv"].view(np.int64), records["action"].view(np.uint8), records["side"].view(np.uint8),
             records["price"], records["size"], records["order_id"].view(np.int64))
    bins = 0
    for s0 in range(0, len(records), step):
        i, stop = s0, min(s0 + step, len(records))
        while i < stop:
            i, nb, status = _run(*views, i, stop, ht, depth, best, oow, st, int(instrument.tick_int), cell,
                                 emit_start, emit_end, radius, out_bins, out_grid)
            bins += nb
            if status == _NEED_GROW:
                ht = bk.grown(ht, int(st[5]))
                st[4] = st[5]
    return bins, bins * (2 * radius + 1)
