"""Engine book vs the independent pure-Python reference book, bin by bin, plus edge-case outcomes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmachina_assets.core.engine.book import H_SIZE, H_STATE, LIVE
from qmachina_assets.core.engine.engine import Engine
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.synth import SynthParams, generate_records
from tests.conftest import ESH4_1225, ESM4_0508, sample
from tests.support.reference_book import ASK, BID, ReferenceBook

TICK = 250_000_000
T0 = 1_700_000_000_000_000_000  # a multiple of 100 ms


def make_records(rows: list[tuple]) -> np.ndarray:
    """MBO array from (ts_recv, action, side, price_ticks|None, size, order_id, flags) tuples."""
    out = np.zeros(len(rows), dtype=dbn.MBO_DTYPE)
    out["length"] = dbn.MBO_LENGTH_WORDS
    out["rtype"] = dbn.MBO_RTYPE
    out["publisher_id"] = 1
    out["instrument_id"] = 1
    for i, (ts, act, side, px, size, oid, flags) in enumerate(rows):
        out["ts_recv"][i] = ts
        out["ts_event"][i] = ts
        out["action"][i] = act.encode()
        out["side"][i] = side.encode()
        out["price"][i] = dbn.UNDEF_PRICE if px is None else px * TICK
        out["size"][i] = size
        out["order_id"][i] = oid
        out["flags"][i] = flags
    return out


def run_all(instrument, records: np.ndarray, **kw) -> tuple[Engine, dict, dict]:
    eng = Engine(instrument, **kw)
    parts = [eng.feed(records), eng.flush()]
    bins = {k: np.concatenate([p.bins[k] for p in parts]) for k in parts[0].bins}
    grid = {k: np.concatenate([p.grid[k] for p in parts]) for k in parts[0].grid}
    return eng, bins, grid


class _Totals:
    """Reference book + per-level totals kept by deltas (summing FIFO queues per bin is too slow)."""

    def __init__(self) -> None:
        self.ref = ReferenceBook()
        self.tot: dict[tuple[bytes, int], int] = {}

    def apply(self, act, side, price, size, oid, flags) -> None:
        ref = self.ref
        if act == b"R":
            ref.apply(act, side, price, size, oid, flags)
            self.tot.clear()
            return
        old = ref.orders.get(oid)
        before = None if old is None else (old.side, old.price, old.size)
        ref.apply(act, side, price, size, oid, flags)
        new = ref.orders.get(oid)
        after = None if new is None else (new.side, new.price, new.size)
        if before == after:
            return
        if before is not None:
            self.tot[before[:2]] -= before[2]
        if after is not None:
            self.tot[after[:2]] = self.tot.get(after[:2], 0) + after[2]

    def levels(self, side: bytes, prices) -> list[int]:
        get = self.tot.get
        return [get((side, p), 0) for p in prices]


def compare_with_reference(instrument, records: np.ndarray) -> tuple[Engine, ReferenceBook, int]:
    """At every emitted bin close: BBO and per-k bid/ask depth equal the reference book's (streamed)."""
    eng = Engine(instrument)
    r = instrument.grid_radius_ticks
    w = 2 * r + 1
    ks = np.arange(-r, r + 1, dtype=np.int64)
    book = _Totals()
    ref = book.ref
    ts = records["ts_recv"].astype(np.int64).tolist()
    act, side = records["action"].tolist(), records["side"].tolist()
    price, size = records["price"].tolist(), records["size"].tolist()
    oid, flags = records["order_id"].tolist(), records["flags"].tolist()
    i, n = 0, len(ts)
    checked = 0
    prev = None
    for chunk in _chunks(eng, records):
        nb = chunk.n_bins
        ends = chunk.bins["bin_end_ns"].tolist()
        want = np.zeros((nb, 2, w), dtype=np.int64)
        want_bbo = np.zeros((nb, 2), dtype=np.int64)
        for b in range(nb):
            moved = False
            while i < n and ts[i] < ends[b]:
                book.apply(act[i], side[i], price[i], size[i], oid[i], flags[i])
                i += 1
                moved = True
            if not moved and prev is not None:
                want[b], want_bbo[b] = prev
                continue
            bb, ba = ref.best_bid, ref.best_ask
            want_bbo[b] = (bb or 0, ba or 0)
            if bb is not None and ba is not None:
                prices = ((bb // TICK + ba // TICK + 1) // 2 * TICK + ks * TICK).tolist()
                want[b, 0] = book.levels(BID, prices)
                want[b, 1] = book.levels(ASK, prices)
            prev = (want[b].copy(), want_bbo[b].copy())
        got_bbo = np.stack([chunk.bins["best_bid_price_int"], chunk.bins["best_ask_price_int"]], axis=1)
        got = np.stack([chunk.grid["bid_depth"].reshape(nb, w), chunk.grid["ask_depth"].reshape(nb, w)], axis=1)
        for name, g, x in (("bbo", got_bbo, want_bbo), ("depth", got.reshape(nb, -1), want.reshape(nb, -1))):
            bad = np.flatnonzero((g != x).any(axis=1))
            assert len(bad) == 0, (f"{name} differs from the reference at {len(bad)} bins, first bin "
                                   f"{checked + bad[0]}: {g[bad[0]].tolist()} != {x[bad[0]].tolist()}")
        checked += nb
    assert checked > 0
    c = eng.counters
    assert c["unknown_cancel"] == ref.problems.unknown_cancel
    assert c["unknown_modify"] == ref.problems.unknown_modify
    assert c["unknown_fill"] == ref.problems.unknown_fill
    return eng, ref, checked


def _chunks(eng: Engine, records: np.ndarray):
    yield from eng.iter_feed(records)
    yield from eng.iter_flush()


def test_esh4_matches_reference(instrument):
    _, recs = dbn.load_mbo(sample(ESH4_1225))
    eng, _ref, checked = compare_with_reference(instrument, recs)
    assert checked > 70_000
    assert eng.counters["crossed_flast_points"] == 891  # the 22:40-23:00 pre-open, notes (d)


def test_esm4_matches_reference(instrument):
    _, recs = dbn.load_mbo(sample(ESM4_0508))
    eng, _, checked = compare_with_reference(instrument, recs)
    assert checked >= 19
    assert eng.counters["crossed_flast_points"] == 0


@pytest.fixture(scope="module")
def synth_day():
    from qmachina_assets.core.instrument import load_instrument
    from qmachina_assets.core.paths import PROJECT_ROOT

    inst = load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml")
    params = SynthParams(n_records=300_000, seed=7, date=dt.date(2024, 3, 4), symbol="ESH4")
    return generate_records(params, inst)


def test_synthetic_day_matches_reference(instrument, synth_day):
    # a 24 h day at 100 ms is 864,000 bins: compare on 1 s bins to keep the pure-Python side fast
    inst = instrument.model_copy(update={"cell_width_ms": 1000})
    _, _, checked = compare_with_reference(inst, synth_day)
    assert checked > 80_000


# ---- hand-written edge cases ----------------------------------------------------------------
L = dbn.F_LAST


def _levels(eng: Engine) -> tuple[dict[int, int], dict[int, int]]:
    return eng.levels(0), eng.levels(1)


def test_partial_cancel(instrument):
    eng = Engine(instrument)
    eng.feed(make_records([(T0 + 1, "A", "B", 100, 10, 1, L), (T0 + 2, "C", "B", 100, 3, 1, L)]))
    assert _levels(eng)[0] == {100: 7}
    eng.feed(make_records([(T0 + 3, "C", "B", 100, 7, 1, L)]))
    assert _levels(eng)[0] == {}
    assert eng.counters["live_orders"] == 0


def test_fill_then_cancel_is_fill_not_pull(instrument):
    recs = make_records([
        (T0 + 1, "A", "B", 100, 10, 1, L),
        (T0 + 2, "A", "A", 101, 5, 2, L),
        (T0 + 1000, "T", "A", 100, 4, 0, 0),
        (T0 + 1000, "F", "B", 100, 4, 1, 0),
        (T0 + 1000, "C", "B", 100, 4, 1, L),  # the venue's book update after the fill
        (T0 + 2000, "C", "B", 100, 1, 1, L),  # a genuine partial cancel, later event
    ])
    eng, _bins, grid = run_all(instrument, recs)
    assert _levels(eng)[0] == {100: 5}  # F did not change the book; C did, once
    k0 = grid["k"] == -1  # spot = (100 + 101 + 1)//2 = 101 -> tick 100 is k = -1
    assert grid["fill_mass"][k0][-1] == pytest.approx(4.0, rel=1e-2)  # decayed over < 0.1 s at tau 30 s
    assert grid["pull_mass"][k0][-1] == pytest.approx(1.0, rel=1e-2)
    assert eng.counters["fill_attributed_reductions"] == 1


def test_trade_and_fill_never_move_depth(instrument):
    eng = Engine(instrument)
    eng.feed(make_records([(T0 + 1, "A", "B", 100, 10, 1, L), (T0 + 2, "A", "A", 101, 3, 2, L)]))
    before = _levels(eng)
    eng.feed(make_records([(T0 + 3, "T", "A", 100, 4, 0, 0), (T0 + 3, "F", "B", 100, 4, 1, L),
                           (T0 + 4, "F", "A", 101, 3, 2, L), (T0 + 5, "N", "N", None, 0, 0, L)]))
    assert _levels(eng) == before


def test_duplicate_add_does_not_leak(instrument):
    eng = Engine(instrument)
    eng.feed(make_records([(T0 + 1, "A", "B", 100, 10, 1, L), (T0 + 2, "A", "B", 98, 5, 1, L)]))
    assert _levels(eng)[0] == {98: 5}
    assert eng.counters["duplicate_add"] == 1
    assert eng.counters["live_orders"] == 1


def test_unknown_ids_counted_no_phantom(instrument):
    eng = Engine(instrument)
    eng.feed(make_records([
        (T0 + 1, "A", "B", 100, 10, 1, L),
        (T0 + 2, "C", "B", 100, 3, 99, L),
        (T0 + 3, "F", "B", 100, 3, 98, L),
        (T0 + 4, "M", "A", 103, 2, 97, L),  # unknown Modify: a real order first seen mid-life -> inserted
    ]))
    c = eng.counters
    assert (c["unknown_cancel"], c["unknown_fill"], c["unknown_modify"]) == (1, 1, 1)
    assert _levels(eng) == ({100: 10}, {103: 2})
    assert c["live_orders"] == 2


def test_crossed_input_counted_and_flagged(instrument):
    recs = make_records([(T0 + 1, "A", "B", 101, 1, 1, L), (T0 + 2, "A", "A", 100, 1, 2, L),
                         (T0 + 300_000_000, "C", "B", 101, 1, 1, L)])
    eng, bins, _ = run_all(instrument, recs)
    assert eng.counters["crossed_flast_points"] == 1
    assert bins["crossed"][0] and bins["crossed_events"][0] == 1
    assert not bins["crossed"][-1]


def test_off_tick_price_skipped(instrument):
    recs = make_records([(T0 + 1, "A", "B", 100, 1, 1, L)])
    recs2 = recs.copy()
    recs2["price"] = 100 * TICK + 7
    recs2["order_id"] = 2
    eng, bins, _ = run_all(instrument, np.concatenate([recs, recs2]))
    assert eng.counters["off_tick_price"] == 1
    assert _levels(eng)[0] == {100: 1}
    assert bins["skipped_records"].sum() == 1


def test_zero_size_add_skipped(instrument):
    eng, _, _ = run_all(instrument, make_records([(T0 + 1, "A", "B", 100, 0, 1, L)]))
    assert eng.counters["zero_size_add"] == 1
    assert eng.counters["live_orders"] == 0


def test_null_price_skipped(instrument):
    eng, _, _ = run_all(instrument, make_records([(T0 + 1, "A", "B", None, 5, 1, L),
                                                  (T0 + 2, "M", "B", None, 5, 2, L)]))
    assert eng.counters["null_price"] == 2
    assert eng.counters["live_orders"] == 0


def test_out_of_order_ts_recv_applied_at_previous_time(instrument):
    cell = 100_000_000
    recs = make_records([
        (T0 + 1, "A", "B", 100, 1, 1, L),
        (T0 + 2 * cell + 5, "A", "A", 102, 1, 2, L),
        (T0 + cell + 5, "A", "B", 101, 4, 3, L),  # goes backwards into a closed bin
    ])
    eng, bins, _ = run_all(instrument, recs)
    assert eng.counters["ts_recv_backwards"] == 1
    assert _levels(eng)[0] == {100: 1, 101: 4}  # applied to the book, never dropped
    assert list(bins["bin_event_count"]) == [1, 0, 2]  # counted in the open bin, closed bins untouched
    assert np.all(np.diff(bins["bin_start_ns"]) == cell)


def test_clear_drops_orders_and_depth(instrument):
    eng = Engine(instrument)
    eng.feed(make_records([(T0 + 1, "A", "B", 100, 10, 1, L), (T0 + 2, "A", "A", 101, 1, 2, L),
                           (T0 + 3, "R", "N", None, 0, 0, L), (T0 + 4, "C", "B", 100, 1, 1, L)]))
    assert _levels(eng) == ({}, {})
    assert eng.counters["unknown_cancel"] == 1


# ---- property tests -------------------------------------------------------------------------
@st.composite
def event_streams(draw):
    """Valid-ish streams over a few levels: A/C/M/F/T/R with live and unknown ids, same-ts bursts."""
    n = draw(st.integers(5, 60))
    rows = []
    live: dict[int, tuple[str, int, int]] = {}
    next_id = 1
    ts = T0
    for _ in range(n):
        ts += draw(st.sampled_from([0, 0, 1, 1000, 40_000_000, 150_000_000]))
        kind = draw(st.sampled_from("AAAACCMMFTR"))
        if kind == "A" or (not live and kind in "CMF"):
            side = draw(st.sampled_from("BA"))
            px = draw(st.integers(95, 99)) if side == "B" else draw(st.integers(100, 104))
            size = draw(st.integers(1, 9))
            rows.append((ts, "A", side, px, size, next_id, L))
            live[next_id] = (side, px, size)
            next_id += 1
        elif kind == "C":
            oid = draw(st.sampled_from(sorted(live)))
            side, px, size = live[oid]
            q = draw(st.integers(1, size))
            rows.append((ts, "C", side, px, q, oid, L))
            if q == size:
                del live[oid]
            else:
                live[oid] = (side, px, size - q)
        elif kind == "M":
            oid = draw(st.sampled_from(sorted(live)))
            side, _, _ = live[oid]
            px = draw(st.integers(95, 99)) if side == "B" else draw(st.integers(100, 104))
            size = draw(st.integers(0, 9))
            rows.append((ts, "M", side, px, size, oid, L))
            if size == 0:
                del live[oid]
            else:
                live[oid] = (side, px, size)
        elif kind == "F":
            oid = draw(st.sampled_from(sorted(live)))
            side, px, size = live[oid]
            rows.append((ts, "F", side, px, draw(st.integers(1, size)), oid, 0))
            rows.append((ts, "T", "N", px, 1, 0, L))
        elif kind == "T":
            rows.append((ts, "T", "A", 100, 1, 0, L))
        else:
            rows.append((ts, "R", "N", None, 0, 0, L))
            live.clear()
        if draw(st.integers(0, 20)) == 0:  # occasionally an unknown id
            rows.append((ts, draw(st.sampled_from("CF")), "B", 97, 1, 10_000 + next_id, L))
    return rows


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(event_streams())
def test_property_book_invariants(instrument, rows):
    recs = make_records(rows)
    eng = Engine(instrument)
    ref = ReferenceBook()
    for i in range(len(recs)):
        before = eng.depth.copy()
        eng.feed(recs[i : i + 1])
        r = recs[i]
        ref.apply(r["action"], r["side"], int(r["price"]), int(r["size"]), int(r["order_id"]), int(r["flags"]))
        assert (eng.depth >= 0).all()
        live = eng.ht[eng.ht[:, H_STATE] == LIVE]
        assert eng.depth.sum() == live[:, H_SIZE].sum()
        if r["action"] in (b"T", b"F", b"N"):
            np.testing.assert_array_equal(eng.depth, before)
        bids = {p // TICK: s for p, s in ref.depth(BID).items()}
        asks = {p // TICK: s for p, s in ref.depth(ASK).items()}
        assert eng.levels(0) == bids
        assert eng.levels(1) == asks
        bb, ba = eng.best_prices()
        assert bb == (ref.best_bid or 0) and ba == (ref.best_ask or 0)
    eng.flush()


def test_order_table_backward_shift_deletion_keeps_every_probe_run():
    """Random inserts/deletes on a tiny table (long runs, wrap-around) against a dict."""
    from qmachina_assets.core.engine import book as bk

    rng = np.random.default_rng(5)
    ht = np.zeros((32, bk.H_COLS), dtype=np.int64)  # below MIN_CAPACITY on purpose: more collisions
    model: dict[int, int] = {}
    for step in range(20_000):
        oid = int(rng.integers(1, 200)) * (1 << int(rng.integers(0, 40)))
        slot = bk.ht_find(ht, oid)
        assert (slot >= 0) == (oid in model)
        if slot >= 0:
            assert ht[slot, bk.H_SIZE] == model.pop(oid)
            assert bk.ht_remove(ht, slot) == -1
        elif len(model) < 24:
            assert bk.ht_insert(ht, oid, 0, 7, step + 1) == 1
            model[oid] = step + 1
        live = ht[ht[:, bk.H_STATE] == bk.LIVE]
        assert len(live) == len(model)
        assert (ht[ht[:, bk.H_STATE] != bk.LIVE] == 0).all()  # freed slots are empty, never tombstones
    for oid, size in model.items():
        assert ht[bk.ht_find(ht, oid), bk.H_SIZE] == size
