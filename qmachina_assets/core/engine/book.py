"""Numba L3 order book on plain numpy arrays (Databento MBO semantics, SPEC §1.3 [REBUILD]).

Why arrays and not objects: the engine's hot loop is one njit kernel over the packed MBO records; all
book state lives in numpy arrays so it is checkpointable as-is and never touches Python per event.

Layout
- Order table `ht[cap, 8]` int64, an open-addressing hash table (linear probing, Fibonacci hashing,
  backward-shift deletion: no tombstones, so probe chains stay as short as the live load factor allows)
  keyed by order_id: columns `key, state (0 empty / 1 live; 2 = tombstone is only accepted from old
  tables), side (0 bid, 1 ask), tick (absolute = price // tick_int), size (remaining), fill_event
  (venue-event seq of the last F on this order), fill_qty (F volume of that event not yet matched by a
  C/M)`. One row = one cache line. It never grows inside a kernel: the kernel returns `NEED_GROW` and
  the caller rehashes (`rehash`).
- Depth `depth[2, N]` int64 over an absolute-tick window of N slots; slot `N//2` is the anchor tick.
  Orders outside the window stay in the table (counted out-of-window) and are invisible to depth/BBO.
- Best bid/ask are slot indices (-1 = empty side), maintained incrementally: a better non-empty level
  becomes best; an emptied best level scans outward. Invariant: best == extreme non-empty slot.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# order-table columns
H_KEY, H_STATE, H_SIDE, H_TICK, H_SIZE, H_FEID, H_FQTY = 0, 1, 2, 3, 4, 5, 6
H_COLS = 8
EMPTY, LIVE, TOMB = 0, 1, 2
BID, ASK = 0, 1
_GOLDEN = np.uint64(11400714819323198485)  # 2^64 / phi, Fibonacci hashing
MIN_CAPACITY = 1 << 14


def new_table(capacity: int = MIN_CAPACITY) -> np.ndarray:
    """An empty order table; capacity is rounded up to a power of two."""
    cap = MIN_CAPACITY
    while cap < capacity:
        cap <<= 1
    return np.zeros((cap, H_COLS), dtype=np.int64)


@njit(cache=True, _nrt=False)
def ht_find(ht: np.ndarray, oid: int) -> int:
    """Slot of the live order `oid`, or -1."""
    mask = ht.shape[0] - 1
    h = np.int64((np.uint64(oid) * _GOLDEN) >> np.uint64(32)) & mask
    while True:
        st = ht[h, H_STATE]
        if st == EMPTY:
            return -1
        if st == LIVE and ht[h, H_KEY] == oid:
            return h
        h = (h + 1) & mask


@njit(cache=True, _nrt=False)
def ht_insert(ht: np.ndarray, oid: int, side: int, tick: int, size: int) -> int:
    """Insert a live order known to be absent; returns +1 if an EMPTY slot was consumed (used count)."""
    mask = ht.shape[0] - 1
    h = np.int64((np.uint64(oid) * _GOLDEN) >> np.uint64(32)) & mask
    while ht[h, H_STATE] == LIVE:
        h = (h + 1) & mask
    used = 1 if ht[h, H_STATE] == EMPTY else 0
    ht[h, H_KEY] = oid
    ht[h, H_STATE] = LIVE
    ht[h, H_SIDE] = side
    ht[h, H_TICK] = tick
    ht[h, H_SIZE] = size
    ht[h, H_FEID] = -1
    ht[h, H_FQTY] = 0
    return used


@njit(cache=True, _nrt=False)
def ht_remove(ht: np.ndarray, slot: int) -> int:
    """Delete a live slot by backward shift: later members of its probe run whose home slot is not
    cyclically inside (hole, member] move into the hole. Returns -1 (slots in use)."""
    mask = ht.shape[0] - 1
    hole = slot
    j = slot
    while True:
        j = (j + 1) & mask
        if ht[j, H_STATE] == EMPTY:
            break
        home = np.int64((np.uint64(ht[j, H_KEY]) * _GOLDEN) >> np.uint64(32)) & mask
        # the member stays iff its home is cyclically in (hole, j]: moving it would break its own probe
        stays = (hole < home <= j) if hole <= j else (home > hole or home <= j)
        if not stays:
            for c in range(H_COLS):
                ht[hole, c] = ht[j, c]
            hole = j
    for c in range(H_COLS):
        ht[hole, c] = 0
    return -1


@njit(cache=True)
def rehash(ht: np.ndarray, new_cap: int) -> np.ndarray:
    """Copy live orders into a fresh table (drops tombstones)."""
    out = np.zeros((new_cap, H_COLS), dtype=np.int64)
    mask = new_cap - 1
    for s in range(ht.shape[0]):
        if ht[s, H_STATE] != LIVE:
            continue
        h = np.int64((np.uint64(ht[s, H_KEY]) * _GOLDEN) >> np.uint64(32)) & mask
        while out[h, H_STATE] == LIVE:
            h = (h + 1) & mask
        for c in range(H_COLS):
            out[h, c] = ht[s, c]
    return out


def grown(ht: np.ndarray, live: int) -> np.ndarray:
    """Table for continuing after NEED_GROW: double when over a quarter live, else purge tombstones."""
    cap = ht.shape[0]
    new_cap = cap * 2 if live * 4 >= cap else cap
    while live * 4 >= new_cap:
        new_cap *= 2
    return rehash(ht, new_cap)


@njit(cache=True, _nrt=False)
def depth_change(depth: np.ndarray, best: np.ndarray, side: int, idx: int, qty: int) -> None:
    """Add `qty` (may be negative) at slot `idx` of a side and keep best[side] exact."""
    n = depth.shape[1]
    v = depth[side, idx] + qty
    depth[side, idx] = v
    b = best[side]
    if qty > 0:
        if b < 0 or (side == BID and idx > b) or (side == ASK and idx < b):
            best[side] = idx
    elif v == 0 and idx == b:
        if side == BID:
            j = idx - 1
            while j >= 0 and depth[BID, j] == 0:
                j -= 1
            best[BID] = j
        else:
            j = idx + 1
            while j < n and depth[ASK, j] == 0:
                j += 1
            best[ASK] = j if j < n else -1


@njit(cache=True, _nrt=False)
def raw_bbo(ht: np.ndarray) -> tuple[int, int]:
    """Best bid / ask absolute ticks from the raw order table (-1 when a side is empty)."""
    bb = -1
    ba = -1
    for s in range(ht.shape[0]):
        if ht[s, H_STATE] != LIVE:
            continue
        t = ht[s, H_TICK]
        if ht[s, H_SIDE] == BID:
            if bb < 0 or t > bb:
                bb = t
        elif ba < 0 or t < ba:
            ba = t
    return bb, ba


@njit(cache=True, _nrt=False)
def rebuild_depth(ht: np.ndarray, depth: np.ndarray, best: np.ndarray, oow: np.ndarray, anchor: int) -> None:
    """Recompute depth, best and out-of-window counts from the raw orders for a given anchor."""
    n = depth.shape[1]
    base = anchor - n // 2
    for i in range(n):
        depth[0, i] = 0
        depth[1, i] = 0
    oow[0] = 0
    oow[1] = 0
    for s in range(ht.shape[0]):
        if ht[s, H_STATE] != LIVE:
            continue
        side = ht[s, H_SIDE]
        idx = ht[s, H_TICK] - base
        if 0 <= idx < n:
            depth[side, idx] += ht[s, H_SIZE]
        else:
            oow[side] += 1
    best[BID] = -1
    best[ASK] = -1
    for i in range(n - 1, -1, -1):
        if depth[BID, i] > 0:
            best[BID] = i
            break
    for i in range(n):
        if depth[ASK, i] > 0:
            best[ASK] = i
            break


def book_levels(ht: np.ndarray) -> tuple[dict[int, int], dict[int, int]]:
    """(bid, ask) {absolute tick: total size} from the raw table (tests and diagnostics only)."""
    live = ht[ht[:, H_STATE] == LIVE]
    out: tuple[dict[int, int], dict[int, int]] = ({}, {})
    for side in (BID, ASK):
        rows = live[live[:, H_SIDE] == side]
        ticks, inv = np.unique(rows[:, H_TICK], return_inverse=True)
        sizes = np.bincount(inv, weights=rows[:, H_SIZE], minlength=len(ticks))
        out[side].update({int(t): int(s) for t, s in zip(ticks, sizes, strict=True)})
    return out
