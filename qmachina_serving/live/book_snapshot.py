"""MBO book snapshots as Databento streams them (notes/databento.md §d "Snapshots"), computed from records.

A snapshot of one instrument at a position of its record stream is an `R` (clear: order_id 0, null price,
size 0, side N) followed by one `A` per resting order, bids then asks, best level first and queue
priority within a level; every record carries F_SNAPSHOT | F_BAD_TS_RECV and the last one F_LAST.
`ts_recv` is the snapshot's generation time; `ts_event` is the time the order took its queue position.

Used by the loopback gateway (snapshot=1 subscriptions, at connect and after a reconnect) and by the live
capture (the book at UTC midnight heads the next day's file, as in Databento's historical daily files).

Queue priority follows Databento's order-tracking rules: A enters at the back; M with a price change or a
size increase goes to the back, a size decrease keeps its place; an M of an unknown id is an add; C
subtracts its size and removes the order at 0; R clears; T, F and N leave the book alone.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import Dict

from qmachina_assets.core.ingest import dbn

_A, _C, _M, _R = (ord(c) for c in "ACMR")
_SIDE_B = ord("B")
SNAPSHOT_FLAGS = dbn.F_SNAPSHOT | dbn.F_BAD_TS_RECV  # 40


@njit(cache=True)
def _resting(act, side, px, sz, oid, ts_event, start, stop):
    """Resting orders after records [start, stop): (side 0 bid / 1 ask, price, size, order id, priority
    index, ts_event of the priority record), unsorted."""
    slot_of = Dict.empty(key_type=types.int64, value_type=types.int64)
    cap = 1024
    o_side = np.empty(cap, np.int64)
    o_px = np.empty(cap, np.int64)
    o_sz = np.empty(cap, np.int64)
    o_id = np.empty(cap, np.int64)
    o_prio = np.empty(cap, np.int64)
    o_ts = np.empty(cap, np.int64)
    o_live = np.zeros(cap, np.bool_)
    used = 0
    for i in range(start, stop):
        a = act[i]
        if a == _R:
            slot_of.clear()
            for s in range(used):
                o_live[s] = False
            continue
        if a != _A and a != _C and a != _M:
            continue
        key = oid[i]
        if a == _C:
            if key in slot_of:
                s = slot_of[key]
                o_sz[s] -= sz[i]
                if o_sz[s] <= 0:
                    o_live[s] = False
                    del slot_of[key]
            continue
        sd = 0 if side[i] == _SIDE_B else 1
        if a == _M and key in slot_of:
            s = slot_of[key]
            if sz[i] == 0:
                o_live[s] = False
                del slot_of[key]
                continue
            if px[i] != o_px[s] or sz[i] > o_sz[s]:  # loses priority: back of the (new) level
                o_live[s] = False
                del slot_of[key]
            else:
                o_sz[s] = sz[i]
                continue
        elif key in slot_of:  # duplicate add of a live id replaces the order
            s = slot_of[key]
            o_live[s] = False
            del slot_of[key]
        if sz[i] == 0:
            continue
        if used == cap:
            cap *= 2
            o_side = _grow(o_side, cap)
            o_px = _grow(o_px, cap)
            o_sz = _grow(o_sz, cap)
            o_id = _grow(o_id, cap)
            o_prio = _grow(o_prio, cap)
            o_ts = _grow(o_ts, cap)
            nl = np.zeros(cap, np.bool_)
            nl[:used] = o_live[:used]
            o_live = nl
        o_side[used] = sd
        o_px[used] = px[i]
        o_sz[used] = sz[i]
        o_id[used] = key
        o_prio[used] = i
        o_ts[used] = ts_event[i]
        o_live[used] = True
        slot_of[key] = used
        used += 1
    keep = np.flatnonzero(o_live[:used])
    return o_side[keep], o_px[keep], o_sz[keep], o_id[keep], o_prio[keep], o_ts[keep]


@njit(cache=True)
def _grow(a, cap):
    out = np.empty(cap, a.dtype)
    out[: a.shape[0]] = a
    return out


def resting_orders(records: np.ndarray) -> dict[str, np.ndarray]:
    """The resting orders after `records` (one instrument's MBO records, in stream order), in snapshot
    order: bids best first, then asks best first, queue priority within a level."""
    if records.dtype != dbn.MBO_DTYPE:
        raise TypeError(f"records must have the MBO dtype, got {records.dtype}")
    side, px, sz, oid, prio, ts = _resting(
        records["action"].view(np.uint8), records["side"].view(np.uint8), records["price"],
        records["size"].astype(np.int64), records["order_id"].view(np.int64), records["ts_event"].view(np.int64),
        0, len(records))
    # bids: price descending; asks: price ascending; then priority (lexsort: last key is primary)
    level_key = np.where(side == 0, -px, px)
    order = np.lexsort((prio, level_key, side))
    return {"side": side[order], "price": px[order], "size": sz[order], "order_id": oid[order],
            "ts_event": ts[order]}


def snapshot_records(records: np.ndarray, *, instrument_id: int, publisher_id: int, ts_recv: int,
                     channel_id: int = 0) -> np.ndarray:
    """The snapshot (R, then one A per resting order; last record F_LAST) of the book `records` build."""
    book = resting_orders(records)
    n = len(book["price"]) + 1
    out = np.zeros(n, dtype=dbn.MBO_DTYPE)
    out["length"] = dbn.MBO_LENGTH_WORDS
    out["rtype"] = dbn.MBO_RTYPE
    out["publisher_id"] = publisher_id
    out["instrument_id"] = instrument_id
    out["channel_id"] = channel_id
    out["ts_recv"] = ts_recv
    out["flags"] = SNAPSHOT_FLAGS
    out["action"][0] = b"R"
    out["side"][0] = b"N"
    out["price"][0] = dbn.UNDEF_PRICE
    out["ts_event"][0] = ts_recv
    out["action"][1:] = b"A"
    out["side"][1:] = np.where(book["side"] == 0, b"B", b"A")
    out["price"][1:] = book["price"]
    out["size"][1:] = book["size"]
    out["order_id"][1:] = book["order_id"].view(np.uint64)
    out["ts_event"][1:] = book["ts_event"].view(np.uint64)
    out["flags"][-1] |= dbn.F_LAST
    return out
