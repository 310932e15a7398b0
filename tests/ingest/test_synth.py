"""Synthetic MBO days: exact size, determinism, DBN round trip, GLBX conventions, book validity, realism.

Book validity is checked by replaying the records through `tests/support/reference_book.py`, an
independent pure-Python book with Databento semantics.
"""

from __future__ import annotations

import datetime as dt
import re

import databento as db
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from qmachina_assets.core.ingest import dbn, synth
from qmachina_assets.core.instrument import load_instrument
from tests.conftest import ESH4_1225, sample
from tests.support.reference_book import ReferenceBook

DATE = dt.date(2024, 3, 1)
SYMBOL = "ESH4"
F_LAST, F_SNAP = dbn.F_LAST, dbn.F_SNAPSHOT | dbn.F_BAD_TS_RECV
HOUR_NS = 3_600_000_000_000


def _params(n: int, seed: int = 7, **kw) -> synth.SynthParams:
    return synth.SynthParams(n_records=n, seed=seed, date=DATE, symbol=SYMBOL, **kw)


@pytest.fixture(scope="module")
def es():
    return load_instrument()


@pytest.fixture(scope="module")
def day(es) -> np.ndarray:
    """A ~200k-record day, the subject of most checks."""
    return synth.generate_records(_params(200_000), es)


def _replay(records: np.ndarray) -> dict:
    """Run records through the reference book; figures at every F_LAST point, modify/cancel kinds."""
    book = ReferenceBook()
    crossed = one_sided = 0
    mids: list[float] = []
    kinds = dict.fromkeys(("m_price", "m_up", "m_down", "c_partial", "c_full"), 0)
    cols = zip(records["action"].tolist(), records["side"].tolist(), records["price"].tolist(),
               records["size"].tolist(), records["order_id"].tolist(), records["flags"].tolist(), strict=True)
    for action, side, price, size, oid, flags in cols:
        if action in (b"M", b"C"):
            prior = book.orders.get(oid)
            if prior is not None and action == b"M":
                key = "m_price" if price != prior.price else ("m_up" if size > prior.size else "m_down")
                kinds[key] += 1
            elif prior is not None:
                kinds["c_partial" if size < prior.size else "c_full"] += 1
        book.apply(action, side, price, size, oid, flags)
        if flags & F_LAST and not flags & dbn.F_SNAPSHOT:
            bb, ba = book.best_bid, book.best_ask
            if bb is None or ba is None:
                one_sided += 1
                continue
            crossed += bb >= ba
            mids.append((bb + ba) / 2)
    return {"book": book, "crossed": crossed, "one_sided": one_sided, "mids": np.array(mids), **kinds}


@pytest.fixture(scope="module")
def replay(day) -> dict:
    return _replay(day)


def _events(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) record index ranges of the venue events (each closed by F_LAST)."""
    ends = np.flatnonzero(records["flags"] & F_LAST) + 1
    starts = np.concatenate(([0], ends[:-1]))
    return starts, ends


# ---- size, determinism, parameters ---------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 7, 50, 333, 5_000, 123_457])
def test_exact_record_count_and_closed_events(es, n):
    recs = synth.generate_records(_params(n, seed=n), es)
    assert recs.dtype == dbn.MBO_DTYPE and len(recs) == n
    assert recs["action"][0] == b"R"
    assert recs["flags"][-1] & F_LAST  # the file never ends inside an event
    assert (recs["rtype"] == dbn.MBO_RTYPE).all() and (recs["length"] == dbn.MBO_LENGTH_WORDS).all()
    book = ReferenceBook()
    for r in recs.tolist():
        book.apply(r[10], r[11], r[6], r[7], r[5], r[8])
    assert book.problems.total() == 0, book.problems.details


def test_deterministic_by_seed(es):
    a = synth.generate_records(_params(50_000, seed=11), es)
    b = synth.generate_records(_params(50_000, seed=11), es)
    c = synth.generate_records(_params(50_000, seed=12), es)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    assert not np.array_equal(a["price"], c["price"])


def test_params_validation():
    with pytest.raises(ValidationError):
        _params(0)
    with pytest.raises(ValidationError):
        _params(10, seed=-1)
    with pytest.raises(ValidationError):
        _params(10, latency_min_ns=5_000, latency_max_ns=1_000)


def test_symbol_outside_root_raises(es, tmp_path):
    p = synth.SynthParams(n_records=100, seed=1, date=DATE, symbol="NQH4")
    with pytest.raises(ValueError, match=r"NQH4.*'ES'"):
        synth.generate_records(p, es)
    out = tmp_path / "nq.dbn.zst"
    with pytest.raises(ValueError, match="NQH4"):
        synth.write_synthetic_day(out, p, es)
    assert not out.exists()
    with pytest.raises(ValueError, match="ESM4-ESU4"):  # spreads are not outrights
        synth.generate_records(_params(100).model_copy(update={"symbol": "ESM4-ESU4"}), es)


# ---- files ------------------------------------------------------------------------------------------
def test_written_zst_decodes_with_databento(es, tmp_path):
    params = _params(60_000, seed=3)
    recs = synth.generate_records(params, es)
    out = synth.write_synthetic_day(tmp_path / "day.dbn.zst", params, es)
    assert out.read_bytes()[:4] == dbn.ZSTD_MAGIC

    store = db.DBNStore.from_file(out)
    arr = store.to_ndarray()
    assert arr.tobytes() == recs.tobytes()
    start, end = synth.day_bounds_ns(DATE)
    iid = synth.synthetic_instrument_id(SYMBOL)
    assert str(store.schema) == "mbo" and store.dataset == es.dataset == "GLBX.MDP3"
    assert store.symbols == [SYMBOL]
    assert store.metadata.start == start and store.metadata.end == end
    assert store.metadata.version == 3
    (interval,) = store.mappings[SYMBOL]
    assert (interval["start_date"], interval["end_date"]) == (DATE, DATE + dt.timedelta(days=1))
    assert int(interval["symbol"]) == iid
    assert set(np.unique(recs["instrument_id"]).tolist()) == {iid}
    assert set(np.unique(recs["publisher_id"]).tolist()) == {1}
    assert set(np.unique(recs["channel_id"]).tolist()) == {0}

    df = store.to_df()
    assert len(df) == len(recs)
    assert set(df["symbol"].unique()) == {SYMBOL}
    assert df["action"].iloc[0] == "R" and set(df["side"].unique()) <= {"A", "B", "N"}

    header, arr2 = dbn.load_mbo(out)  # the project's own reader agrees
    assert header.schema == "mbo" and header.instrument_ids(SYMBOL) == {iid}
    assert arr2.tobytes() == recs.tobytes()


def test_plain_dbn_is_uncompressed(es, tmp_path):
    params = _params(5_000, seed=4)
    out = synth.write_synthetic_day(tmp_path / "day.dbn", params, es)
    assert out.read_bytes()[:3] == b"DBN"
    assert db.DBNStore.from_file(out).to_ndarray().tobytes() == synth.generate_records(params, es).tobytes()


# ---- conventions ------------------------------------------------------------------------------------
def test_snapshot_conventions(day, es):
    start_ns, _ = synth.day_bounds_ns(DATE)
    r = day[0]
    assert (r["action"], r["side"], int(r["price"]), r["size"], r["order_id"]) == (
        b"R", b"N", dbn.UNDEF_PRICE, 0, 0)
    assert r["flags"] == F_SNAP and r["ts_recv"] == start_ns
    snap = np.flatnonzero(day["flags"] & dbn.F_SNAPSHOT)
    n_snap = len(snap)
    assert (snap == np.arange(n_snap)).all()  # the snapshot is one leading block
    adds = day[1:n_snap]
    assert (adds["action"] == b"A").all() and (adds["size"] > 0).all()
    assert (adds["ts_recv"] == start_ns).all() and (adds["ts_event"] < start_ns).all()
    assert (adds["flags"][:-1] == F_SNAP).all() and adds["flags"][-1] == F_SNAP | F_LAST  # 40 ... 168
    assert (adds["sequence"] == 0).all()
    for side in (b"B", b"A"):
        px = adds["price"][adds["side"] == side]
        levels, per_level = np.unique(px, return_counts=True)
        assert 10 <= len(levels) <= 20
        assert per_level.mean() >= 3
        assert np.all(np.diff(levels) == es.tick_int)  # contiguous levels
    bid, ask = adds["price"][adds["side"] == b"B"].max(), adds["price"][adds["side"] == b"A"].min()
    assert bid < ask
    # queue order within a level is placement order; ids grow with placement time
    for px in np.unique(adds["price"]):
        lvl = adds[adds["price"] == px]
        assert np.all(np.diff(lvl["ts_event"].astype(np.int64)) >= 0)
        assert np.all(np.diff(lvl["order_id"].astype(np.int64)) > 0)


def test_event_conventions(day):
    start_ns, end_ns = synth.day_bounds_ns(DATE)
    starts, ends = _events(day)
    assert ends[-1] == len(day)
    live_from = int(np.flatnonzero(day["flags"] & dbn.F_SNAPSHOT)[-1]) + 1
    live = day[live_from:]
    assert not (live["flags"] & dbn.F_SNAPSHOT).any()
    ts_recv = day["ts_recv"].astype(np.int64)
    ts_event = day["ts_event"].astype(np.int64)
    assert np.all(np.diff(ts_recv) >= 0)
    lat = ts_recv[live_from:] - ts_event[live_from:]
    assert lat.min() >= 0 and np.median(lat) < 20_000  # a few microseconds
    assert ts_event[live_from:].min() >= start_ns and ts_recv.max() < end_ns
    assert ts_recv.max() > end_ns - 60_000_000_000  # reaches ~23:59
    # records of one event share ts_event, ts_recv and sequence; F_LAST only on the last record
    # (the snapshot is one event too, but its ts_event are the orders' placement times)
    ev_id = np.repeat(np.arange(len(ends)), ends - starts)
    same = ev_id[1:] == ev_id[:-1]
    assert not np.any(day["flags"][:-1][same] & F_LAST)
    same[: live_from - 1] = False
    for col in ("ts_event", "ts_recv", "sequence"):
        assert np.all(day[col][1:][same] == day[col][:-1][same]), col
    seq_live = live["sequence"][live["flags"] & F_LAST != 0].astype(np.int64)
    assert np.all(np.diff(seq_live) > 0)
    assert (live["ts_in_delta"] > 0).all()


def test_trade_sequences(day):
    """T (aggressor side, per level) + F per resting order, then the C/M for the same ids, maybe an A."""
    starts, ends = _events(day)
    actions = day["action"]
    has_t = np.add.reduceat((actions == b"T").astype(np.int64), starts) > 0
    assert has_t.sum() > 1_000
    pattern = re.compile(rb"(TF+)+[CM]+A?")
    sweeps = 0
    for s, e in zip(starts[has_t], ends[has_t], strict=True):
        ev = day[s:e]
        acts = b"".join(ev["action"].tolist())
        assert pattern.fullmatch(acts), acts
        t = ev[ev["action"] == b"T"]
        f = ev[ev["action"] == b"F"]
        cm = ev[(ev["action"] == b"C") | (ev["action"] == b"M")]
        aggressor = t["side"][0]
        resting = b"A" if aggressor == b"B" else b"B"
        assert (t["side"] == aggressor).all()
        assert (f["side"] == resting).all() and (cm["side"] == resting).all()
        assert len(set(t["order_id"].tolist())) == 1
        assert f["order_id"].tolist() == cm["order_id"].tolist()
        assert len(set(f["order_id"].tolist())) == len(f)
        assert f["price"].tolist() == cm["price"].tolist()
        # level quantities add up; a buy sweeps upwards, a sell downwards
        lvl = np.cumsum(ev["action"] == b"T")[ev["action"] == b"F"]
        assert np.bincount(lvl, weights=f["size"])[1:].tolist() == t["size"].astype(float).tolist()
        step = np.diff(t["price"].astype(np.int64))
        assert np.all(step > 0) if aggressor == b"B" else np.all(step < 0)
        sweeps += len(t) > 1
        full = cm["action"] == b"C"
        assert (cm["size"][full] == f["size"][full]).all()  # a full fill cancels exactly what was filled
        if acts.endswith(b"A"):
            rest = ev[-1]
            assert rest["side"] == aggressor and rest["order_id"] == t["order_id"][0]
            # the remainder rests at its limit, at or through the last level taken
            if aggressor == b"B":
                assert rest["price"] >= t["price"].max()
            else:
                assert rest["price"] <= t["price"].min()
    assert sweeps > 10  # some trades take more than one level


def test_book_valid_under_reference_replay(day, replay, es):
    problems = replay["book"].problems
    assert problems.total() == 0, problems.details
    assert replay["crossed"] == 0
    assert replay["one_sided"] <= 0.001 * len(replay["mids"])
    not_r = day["action"] != b"R"
    assert np.all(day["price"][not_r] % es.tick_int == 0)
    assert np.all(day["size"][not_r] > 0)
    adds = day[day["action"] == b"A"]
    assert len(np.unique(adds["order_id"])) == len(adds)  # ids never reused
    for key in ("m_price", "m_up", "m_down", "c_partial", "c_full"):
        assert replay[key] > 100, key
    # a realistic book: a one-tick spread most of the time, many levels and orders resting
    book = replay["book"]
    assert len(book.depth("B")) >= 8 and len(book.depth("A")) >= 8
    assert 100 < len(book) < 5_000


def test_reference_book_matches_real_esh4_day():
    """The reference book itself: the real ESH4 2023-12-25 file replays with no unknown C/M order ids."""
    recs = db.DBNStore.from_file(sample(ESH4_1225)).to_ndarray()
    book = ReferenceBook()
    aggressors: set[int] = set()  # T order ids of the current event
    self_fills = 0
    for r in recs.tolist():
        action, oid, flags = r[10], r[5], r[8]
        if action == b"T":
            aggressors.add(oid)
        if action == b"F" and oid not in book.orders:
            # GLBX also reports the aggressor's own fill (before its Add) and auction fills (side N)
            assert oid in aggressors or r[11] == b"N"
            self_fills += 1
        book.apply(action, r[11], r[6], r[7], oid, flags)
        if flags & F_LAST:
            aggressors.clear()
    p = book.problems
    assert (p.unknown_cancel, p.unknown_modify, p.duplicate_add, p.over_cancel) == (0, 0, 0, 0)
    assert p.unknown_fill == self_fills
    assert not book.is_crossed()


def test_reference_book_priority_rules():
    b = ReferenceBook()
    b.apply("A", "B", 100, 5, 1)
    b.apply("A", "B", 100, 3, 2)
    b.apply("A", "B", 100, 2, 3)
    b.apply("A", "A", 101, 4, 4)
    assert b.queue("B", 100) == [1, 2, 3] and b.depth("B") == {100: 10}
    b.apply("M", "B", 100, 4, 1)  # size down keeps priority
    assert b.queue("B", 100) == [1, 2, 3]
    b.apply("M", "B", 100, 6, 2)  # size up goes to the back
    assert b.queue("B", 100) == [1, 3, 2]
    b.apply("M", "B", 99, 4, 1)  # price change: back of the new level
    assert b.queue("B", 100) == [3, 2] and b.queue("B", 99) == [1]
    b.apply("C", "B", 100, 1, 3)  # partial cancel
    assert b.orders[3].size == 1 and b.queue("B", 100) == [3, 2]
    b.apply("T", "A", 100, 1, 9)
    b.apply("F", "B", 100, 1, 3)  # T and F never change the book
    assert b.orders[3].size == 1
    b.apply("C", "B", 100, 1, 3)
    assert b.queue("B", 100) == [2] and (b.best_bid, b.best_ask) == (100, 101) and not b.is_crossed()
    b.apply("C", "B", 100, 1, 77)
    b.apply("F", "A", 101, 1, 78)
    b.apply("M", "A", 100, 1, 79)  # unknown Modify: counted and inserted, which locks the book
    b.apply("A", "B", 98, 1, 2)
    b.apply("A", "B", 98, 0, 80)
    p = b.problems
    counted = (p.unknown_cancel, p.unknown_fill, p.unknown_modify, p.duplicate_add, p.zero_size_add)
    assert counted == (1, 1, 1, 1, 1)
    assert b.is_crossed()
    b.apply("R", "N", dbn.UNDEF_PRICE, 0, 0)
    assert len(b) == 0 and b.best_bid is None and b.best_ask is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 4_000), seed=st.integers(0, 2**32), vol=st.floats(0, 400), mkt=st.floats(0, 0.5))
def test_any_small_day_is_a_valid_book(es, n, seed, vol, mkt):
    recs = synth.generate_records(_params(n, seed=seed, daily_vol_ticks=vol, w_market=mkt), es)
    assert len(recs) == n and recs["flags"][-1] & F_LAST
    res = _replay(recs)
    assert res["book"].problems.total() == 0, res["book"].problems.details
    assert res["crossed"] == 0


# ---- realism ----------------------------------------------------------------------------------------
def test_price_range_of_a_day(replay, es):
    mids = replay["mids"] / es.tick_int
    assert 20 <= mids.max() - mids.min() <= 300


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_price_range_of_a_larger_day(es, seed):
    recs = synth.generate_records(_params(1_500_000, seed=seed), es)
    trades = recs["price"][recs["action"] == b"T"] / es.tick_int
    assert 20 <= trades.max() - trades.min() <= 300


def test_intraday_intensity(day):
    start_ns, _ = synth.day_bounds_ns(DATE)
    last = day[(day["flags"] & F_LAST != 0) & (day["flags"] & dbn.F_SNAPSHOT == 0)]
    hours = (last["ts_recv"].astype(np.int64) - start_ns) / HOUR_NS
    per_hour = np.histogram(hours, bins=96, range=(0, 24))[0] * 4.0  # events per hour, 15-min bins
    open_hour = per_hour[54:58].mean()  # 13:30-14:30 UTC
    asia = per_hour[12:16].mean()  # 03:00-04:00 UTC
    close = per_hour[76:80].mean()  # 19:00-20:00 UTC
    midday = per_hour[66:70].mean()  # 16:30-17:30 UTC
    assert open_hour > 3 * asia and close > 3 * asia
    assert open_hour > midday and close > midday  # U shape
    assert per_hour.min() >= 0 and (per_hour > 0).sum() >= 90  # activity across the whole day
    # clustered arrivals: inter-event gaps are over-dispersed compared with a Poisson process
    gaps = np.diff(last["ts_event"].astype(np.int64))
    assert gaps.std() / gaps.mean() > 1.5
