"""Physics and binning: each SPEC §10 (1-5) fix, formulas against a hand computation, binning rules."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import numpy as np
import pytest

from qmachina_assets.core.engine import engine as engine_mod
from qmachina_assets.core.engine.engine import Engine, SilverChunk, checkpoint_key
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.synth import SynthParams, generate_records
from tests.conftest import ESH4_1225, ESM4_0508, sample
from tests.engine.test_engine_book import T0, compare_with_reference, make_records, run_all

L = dbn.F_LAST
SNAP = dbn.F_SNAPSHOT | dbn.F_BAD_TS_RECV
CELL = 100_000_000
TAU_V, TAU_A, TAU_J, TAU_R = 2.0, 5.0, 10.0, 30.0


def _alpha(dt_s: float, tau: float) -> float:
    if dt_s <= 0:
        return 0.0
    return 1.0 if dt_s / tau > 50 else -math.expm1(-dt_s / tau)  # = 1 - exp(-x), accurately


def _chain(vaj: tuple[float, float, float], r: float, dt_s: float) -> tuple[float, float, float]:
    """SPEC §2.5 written out independently of the engine."""
    v, a, j = vaj
    av, aa, aj = _alpha(dt_s, TAU_V), _alpha(dt_s, TAU_A), _alpha(dt_s, TAU_J)
    v2 = av * r + (1 - av) * v
    a2 = aa * (v2 - v) / dt_s + (1 - aa) * a
    j2 = aj * (a2 - a) / dt_s + (1 - aj) * j
    return v2, a2, j2


def _row(grid: dict, bin_seq: int, k: int) -> dict[str, float]:
    m = (grid["bin_seq"] == bin_seq) & (grid["k"] == k)
    assert m.sum() == 1
    return {name: arr[m][0] for name, arr in grid.items()}


def _snapshot_book() -> list[tuple]:
    """A midnight snapshot: 10 one-lot bids at 100, one bid at 99, one ask at 101 (F_LAST on the last)."""
    rows = [(T0, "R", "N", None, 0, 0, SNAP)]
    rows += [(T0, "A", "B", 100, 1, 1 + i, SNAP) for i in range(10)]
    rows += [(T0, "A", "B", 99, 4, 50, SNAP), (T0, "A", "A", 101, 2, 60, SNAP | L)]
    return rows


# ---- SPEC §10 item 2: same-timestamp deltas reach the chains -------------------------------------
def test_same_ts_sweep_moves_v_pull_by_bin_close(instrument):
    t = T0 + 10 * CELL + 10_000_000  # 10 ms into a bin
    rows = [*_snapshot_book(), (T0 + 10 * CELL, "N", "N", None, 0, 0, L)]
    rows += [(t, "C", "B", 100, 1, 1 + i, L if i == 9 else 0) for i in range(10)]
    _, _bins, grid = run_all(instrument, make_records(rows))
    # spot = (99 + 101 + 1) // 2 = 100 after the sweep -> tick 100 is k = 0
    row = _row(grid, 0, 0)
    dt_s = (T0 + 11 * CELL - t) * 1e-9
    v, a, j = _chain((0.0, 0.0, 0.0), 10 / dt_s, dt_s)
    # the seed engine loses all 10 deltas (first touch and equal ts give dt = 0) -> v_pull == 0
    assert row["v_pull"] != 0.0
    assert row["v_pull"] == pytest.approx(v, rel=1e-12)
    assert row["a_pull"] == pytest.approx(a, rel=1e-12)
    assert row["j_pull"] == pytest.approx(j, rel=1e-12)
    assert row["pull_mass"] == pytest.approx(10 * math.exp(-dt_s / TAU_R), rel=1e-12)
    assert row["v_bid_depth"] == pytest.approx(_chain((0, 0, 0), -10 / dt_s, dt_s)[0], rel=1e-12)


# ---- SPEC §10 item 4: snapshot does not inflate add_mass; duplicate Add does not leak --------------
def test_snapshot_does_not_inflate_add_mass(instrument):
    rows = [*_snapshot_book(), (T0 + 10 * CELL + 5, "T", "A", 100, 1, 0, L)]
    _, bins, grid = run_all(instrument, make_records(rows))
    assert bins["book_valid"].all()
    assert np.all(grid["add_mass"] == 0.0)  # the seed adds the whole resting book (16 lots)
    assert np.all(grid["v_bid_depth"] == 0.0) and np.all(grid["v_ask_depth"] == 0.0)
    assert grid["bid_depth"].sum() == 14 and grid["ask_depth"].sum() == 2


def test_duplicate_add_no_depth_leak_in_silver(instrument):
    rows = [(T0 + 1, "A", "B", 100, 10, 1, L), (T0 + 2, "A", "A", 102, 1, 2, L),
            (T0 + 3, "A", "B", 100, 4, 1, L)]  # duplicate id 1: replaces, the seed leaks 10
    eng, _, grid = run_all(instrument, make_records(rows))
    assert eng.counters["duplicate_add"] == 1
    assert grid["bid_depth"].sum() == 4
    assert grid["rest_depth"].sum() == 5


# ---- SPEC §10 item 5: re-anchor from raw order prices --------------------------------------------
def test_reanchor_after_market_left_the_window(instrument):
    inst = instrument.model_copy(update={"n_absolute_ticks": 64, "grid_radius_ticks": 5})
    rows = [(T0 + 1, "A", "B", 100, 1, 1, L), (T0 + 2, "A", "A", 101, 1, 2, L)]
    ts = T0 + CELL
    # the market jumps 300 ticks (far beyond the 64-slot window): the old grid sees no BBO at all
    rows += [(ts, "C", "B", 100, 1, 1, 0), (ts, "C", "A", 101, 1, 2, 0),
             (ts, "A", "B", 400, 2, 3, 0), (ts, "A", "A", 401, 2, 4, L)]
    # then it drifts down one tick per event for 150 ticks (margin re-anchors)
    oid, bid, ask = 5, (3, 400), (4, 401)
    for s in range(150):
        ts += 7_000_000
        rows += [(ts, "C", "B", bid[1], 2 if s == 0 else 1, bid[0], 0),
                 (ts, "C", "A", ask[1], 2 if s == 0 else 1, ask[0], 0),
                 (ts, "A", "B", 399 - s, 1, oid, 0), (ts, "A", "A", 400 - s, 1, oid + 1, 0),
                 (ts, "A", "A", 410 - s, 1, 10_000 + oid, L)]  # deeper asks left behind (some leave the window)
        bid, ask = (oid, 399 - s), (oid + 1, 400 - s)
        oid += 2
    eng, ref, _checked = compare_with_reference(inst, make_records(rows))
    assert eng.counters["reanchors"] >= 3
    assert eng.best_prices() == (ref.best_bid, ref.best_ask)


# ---- SPEC §10 item 5: checkpoint key includes engine and config version ------------------------------
def test_checkpoint_key_versions(instrument, monkeypatch):
    base = checkpoint_key(instrument, "sha-a", 1000)
    assert checkpoint_key(instrument, "sha-a", 1000) == base
    other_cfg = instrument.model_copy(update={"tau_velocity": 3.0})
    assert other_cfg.config_version != instrument.config_version
    assert checkpoint_key(other_cfg, "sha-a", 1000) != base
    assert checkpoint_key(instrument, "sha-b", 1000) != base
    assert checkpoint_key(instrument, "sha-a", 2000) != base
    monkeypatch.setattr(engine_mod, "ENGINE_VERSION", "engine-999")
    assert checkpoint_key(instrument, "sha-a", 1000) != base


def test_restore_refuses_other_config(instrument):
    eng = Engine(instrument)
    eng.feed(make_records([(T0 + 1, "A", "B", 100, 1, 1, L)]))
    blob = eng.checkpoint()
    with pytest.raises(ValueError, match="config"):
        Engine.restore(instrument.model_copy(update={"c1": 2.0}), blob)


# ---- SPEC §10 item 1: Databento semantics in the physics (fill is not pull) -------------------------
def test_fill_followed_by_cancel_is_not_pull(instrument):
    rows = [(T0 + 1, "A", "B", 100, 10, 1, L), (T0 + 2, "A", "A", 101, 1, 2, L),
            (T0 + 5_000_000, "T", "A", 100, 6, 0, 0), (T0 + 5_000_000, "F", "B", 100, 6, 1, 0),
            (T0 + 5_000_000, "C", "B", 100, 6, 1, L)]
    _, _, grid = run_all(instrument, make_records(rows))
    row = _row(grid, 0, -1)  # spot 101 -> tick 100 is k = -1
    assert row["pull_mass"] == 0.0 and row["v_pull"] == 0.0
    assert row["fill_mass"] > 5.9 and row["v_fill"] > 0
    assert row["bid_depth"] == 4


# ---- formulas against a hand computation -------------------------------------------------------
def test_three_event_stream_by_hand(instrument):
    t1, t2, t3 = T0 + 1_000_000, T0 + 21_000_000, T0 + 51_000_000
    rows = [(t1, "A", "B", 100, 5, 1, 0), (t1, "A", "A", 101, 1, 9, L),
            (t2, "A", "B", 100, 3, 2, L),
            (t3, "C", "B", 100, 2, 1, L)]
    _, bins, grid = run_all(instrument, make_records(rows), end_ns=T0 + 4 * CELL)
    assert list(bins["bin_event_count"]) == [4, 0, 0, 0]
    # tick 100 by hand. e1: first touch -> dt = 0: mass 5, pending add 5, depth baseline stays 0
    add_m, pull_m = 5.0, 0.0
    add, pull, bid = (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
    d = (t2 - t1) * 1e-9  # e2: pending 5 + delta 3 over dt, depth 0 -> 8
    add_m = add_m * math.exp(-d / TAU_R) + 3
    add, pull, bid = _chain(add, (5 + 3) / d, d), _chain(pull, 0.0, d), _chain(bid, 8 / d, d)
    d = (t3 - t2) * 1e-9  # e3: partial cancel 2, depth 8 -> 6
    add_m *= math.exp(-d / TAU_R)
    pull_m = 2.0
    add, pull, bid = _chain(add, 0.0, d), _chain(pull, 2 / d, d), _chain(bid, -2 / d, d)
    d = (T0 + CELL - t3) * 1e-9  # bin close: passive advance, zero input
    add_m *= math.exp(-d / TAU_R)
    pull_m *= math.exp(-d / TAU_R)
    add, pull, bid = _chain(add, 0.0, d), _chain(pull, 0.0, d), _chain(bid, 0.0, d)
    for b in range(4):
        row = _row(grid, b, -1)
        for name, got, want in (
            ("add_mass", row["add_mass"], add_m), ("pull_mass", row["pull_mass"], pull_m),
            ("v_add", row["v_add"], add[0]), ("a_add", row["a_add"], add[1]), ("j_add", row["j_add"], add[2]),
            ("v_pull", row["v_pull"], pull[0]), ("a_pull", row["a_pull"], pull[1]),
            ("j_pull", row["j_pull"], pull[2]), ("v_bid_depth", row["v_bid_depth"], bid[0]),
            ("a_bid_depth", row["a_bid_depth"], bid[1]), ("j_bid_depth", row["j_bid_depth"], bid[2]),
        ):
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (b, name)
        assert row["v_rest_depth"] == row["v_bid_depth"] + row["v_ask_depth"]
        assert row["bid_depth"] == 6 and row["rest_depth"] == 6
        assert row["last_event_id"] == 4
        # next (empty) bin: SPEC §2.7 passive advance with zero input over one cell
        d = CELL * 1e-9
        add_m *= math.exp(-d / TAU_R)
        pull_m *= math.exp(-d / TAU_R)
        add, pull, bid = _chain(add, 0.0, d), _chain(pull, 0.0, d), _chain(bid, 0.0, d)


def test_long_gap_closed_form_matches_eager_steps(instrument):
    rows = [(T0 + 1, "A", "B", 100, 5, 1, L), (T0 + 2, "A", "A", 101, 1, 2, L),
            (T0 + 30_000_000, "C", "B", 100, 3, 1, L), (T0 + 7000 * CELL + 1, "N", "N", None, 0, 0, L)]
    _, _bins, grid = run_all(instrument, make_records(rows))
    d = (T0 + CELL - T0 - 30_000_000) * 1e-9
    pull = _chain(_chain((0.0, 0.0, 0.0), 3 / ((30_000_000 - 1) * 1e-9), (30_000_000 - 1) * 1e-9), 0.0, d)
    for _b in range(1, 6000):
        pull = _chain(pull, 0.0, CELL * 1e-9)
    row = _row(grid, 5999, -1)
    assert row["v_pull"] == pytest.approx(pull[0], rel=1e-9, abs=1e-300)
    assert row["j_pull"] == pytest.approx(pull[2], rel=1e-6, abs=1e-300)


# ---- real files, binning rules -----------------------------------------------------------------
@pytest.mark.parametrize("rel", [ESH4_1225, ESM4_0508])
def test_real_files_finite_and_aligned(instrument, rel):
    _, recs = dbn.load_mbo(sample(rel))
    eng = Engine(instrument)
    cell = instrument.cell_width_ms * 1_000_000
    seq = 0
    for ch in itertools.chain(eng.iter_feed(recs), eng.iter_flush()):  # streamed: chunks are reused buffers
        for name in ch.grid:
            if ch.grid[name].dtype.kind == "f":
                assert np.isfinite(ch.grid[name]).all(), name
        b = ch.bins
        assert np.all(b["bin_start_ns"] % cell == 0)
        assert np.all(b["bin_end_ns"] - b["bin_start_ns"] == cell)
        assert np.all(b["ts_ns"] == b["bin_end_ns"])
        np.testing.assert_array_equal(b["bin_seq"], np.arange(seq, seq + ch.n_bins))
        seq += ch.n_bins
    first_live = int(recs["ts_recv"][(recs["flags"] & dbn.F_SNAPSHOT) == 0][0])
    assert seq == (int(recs["ts_recv"][-1]) // cell - first_live // cell + 1)
    assert eng.counters["records"] == len(recs)


def test_event_exactly_at_bin_end_belongs_to_next_bin(instrument):
    rows = [(T0 + 5, "A", "B", 100, 1, 1, L), (T0 + 6, "A", "A", 102, 1, 2, L),
            (T0 + CELL, "A", "B", 101, 1, 3, L)]
    _, bins, _ = run_all(instrument, make_records(rows))
    assert list(bins["bin_event_count"]) == [2, 1]
    assert list(bins["best_bid_price_int"]) == [100 * 250_000_000, 101 * 250_000_000]
    assert list(bins["best_bid_move_ticks"]) == [0, 1] and list(bins["microstate_id"]) == [4, 5]


@pytest.fixture(scope="module")
def small_day():
    from qmachina_assets.core.instrument import load_instrument
    from qmachina_assets.core.paths import PROJECT_ROOT

    inst = load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml")
    return generate_records(SynthParams(n_records=12_000, seed=3, date=dt.date(2024, 3, 5), symbol="ESH4"), inst)


def _window(day: dt.date, h0: int, m0: int, h1: int, m1: int) -> tuple[int, int]:
    base = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 10**9
    return base + (h0 * 60 + m0) * 60 * 10**9, base + (h1 * 60 + m1) * 60 * 10**9


def _run_chunked(instrument, recs, size, start, end) -> SilverChunk:
    eng = Engine(instrument, start_ns=start, end_ns=end)
    parts = [eng.feed(recs[i : i + size]) for i in range(0, len(recs), size)]
    parts.append(eng.flush())
    return SilverChunk.concat(parts, instrument.grid_radius_ticks)


def _assert_same(a: SilverChunk, b: SilverChunk) -> None:
    for part in ("bins", "grid"):
        da, db = getattr(a, part), getattr(b, part)
        assert da.keys() == db.keys()
        for k in da:
            np.testing.assert_array_equal(da[k], db[k], err_msg=f"{part}.{k}")


def test_chunking_invariance(instrument, small_day):
    start, end = _window(dt.date(2024, 3, 5), 14, 0, 14, 5)
    whole = _run_chunked(instrument, small_day, len(small_day), start, end)
    assert whole.n_bins == 3000
    assert whole.bins["bin_event_count"].sum() > 30  # plus ~6,000 warm-up records before the window
    for size in (1, 7, 1000):
        _assert_same(whole, _run_chunked(instrument, small_day, size, start, end))


def test_window_equals_slice_of_wider_run(instrument, small_day):
    start, end = _window(dt.date(2024, 3, 5), 14, 0, 14, 5)
    wide_start, wide_end = _window(dt.date(2024, 3, 5), 13, 58, 14, 7)
    narrow = _run_chunked(instrument, small_day, 5000, start, end)
    wide = _run_chunked(instrument, small_day, 5000, wide_start, wide_end)
    sel = (wide.bins["bin_start_ns"] >= start) & (wide.bins["bin_start_ns"] < end)
    for k in ("best_bid_price_int", "best_ask_price_int", "bin_event_count", "event_id"):
        np.testing.assert_array_equal(narrow.bins[k], wide.bins[k][sel])
    rows = np.repeat(sel, 2 * instrument.grid_radius_ticks + 1)
    for k in ("add_mass", "v_pull", "j_bid_depth", "last_event_id"):
        np.testing.assert_array_equal(narrow.grid[k], wide.grid[k][rows])


def test_run_file_and_write_silver(instrument, tmp_path):
    import pyarrow.parquet as pq

    from qmachina_assets.core.engine import silver
    from qmachina_assets.core.engine.engine import iter_file, run_file, write_silver

    bins, grid = run_file(sample(ESM4_0508), instrument, chunk_records=3000)
    assert bins.schema == silver.bins_schema() and grid.schema == silver.grid_schema()
    assert grid.num_rows == bins.num_rows * (2 * instrument.grid_radius_ticks + 1)
    bpath, gpath = write_silver(tmp_path / "silver", iter_file(sample(ESM4_0508), instrument, chunk_records=5000))
    assert pq.read_table(bpath).equals(bins)
    assert pq.read_table(gpath).equals(grid)
    assert grid.column_names[1:] == [name for name, _ in silver.SILVER_COLUMNS]
    for col in ("bin_start_ns", "bin_end_ns", "best_bid_price_int", "best_ask_price_int"):
        assert col in bins.column_names
    assert not [p for p in (tmp_path / "silver").iterdir() if ".qmtmp-" in p.name]


def test_bins_carry_the_intrabin_mid_range(instrument, small_day):
    """mid_high/low_price: the extremes of the mid over the bin's open (the previous close), its F_LAST points
    with an uncrossed two-sided book, and its close — what the evaluator tests TP/SL barriers against
    (issue 14 item 6). Reference: the engine's own book read after every venue event."""
    from qmachina_assets.core.ingest import dbn

    start, end = _window(dt.date(2024, 3, 5), 14, 0, 14, 5)
    whole = _run_chunked(instrument, small_day, 5000, start, end).bins
    eng = Engine(instrument, start_ns=start, end_ns=end)
    cell = instrument.cell_width_ms * 1_000_000
    points: dict[int, list[float]] = {}
    prev = 0
    for e in np.flatnonzero(small_day["flags"] & dbn.F_LAST) + 1:
        eng.feed(small_day[prev:e])
        prev = e
        b, a = eng.best_prices()
        if 0 < b < a:
            ts = int(small_day["ts_recv"][e - 1])
            points.setdefault(ts // cell * cell, []).append((a + b) / 2 * 1e-9)
    bid, ask = whole["best_bid_price_int"], whole["best_ask_price_int"]
    close_ok = (bid > 0) & (ask > 0) & (bid < ask)
    for j in range(1, len(bid)):
        vals = list(points.get(int(whole["bin_start_ns"][j]), []))
        vals += [whole["mid_price"][i] for i in (j - 1, j) if close_ok[i]]
        hi, lo = (max(vals), min(vals)) if vals else (0.0, 0.0)
        assert (whole["mid_high_price"][j], whole["mid_low_price"][j]) == pytest.approx((hi, lo), abs=1e-9), j
    assert np.sum(whole["mid_high_price"][1:] > whole["mid_low_price"][1:]) >= 5  # not a degenerate check
