"""The loopback Live gateway against the official `databento.Live` client (real TCP, real protocol)."""

from __future__ import annotations

import time
from pathlib import Path

import databento as db
import databento_dbn
import numpy as np
import pytest

from qmachina_assets.core.engine.engine import Engine
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.instrument import locked_instrument
from qmachina_serving.live.book_snapshot import resting_orders, snapshot_records
from tests.conftest import ESH4_1225, sample
from tests.support.live import gateway, live_client, window_file

MIDDAY = 1703545200_000_000_000  # 2023-12-25 23:00 UTC (18:00 ET, the Sunday open)


def collect(port: int, *, timeout: float = 60, subscribe: dict | None = None, **kw) -> tuple[list, db.Live]:
    """Records of one session until the gateway closes it."""
    live = live_client(port, **kw)
    recs: list = []
    live.add_callback(recs.append)
    live.subscribe(dataset="GLBX.MDP3", schema="mbo", **(subscribe or {"symbols": ["ESH4"], "snapshot": True}))
    live.start()
    live.block_for_close(timeout=timeout)
    return recs, live


def as_array(recs: list) -> np.ndarray:
    body = b"".join(bytes(r) for r in recs if isinstance(r, databento_dbn.MBOMsg))
    return np.frombuffer(body, dtype=dbn.MBO_DTYPE)


def test_round_trip_whole_file_as_fast_as_possible(tmp_path: Path) -> None:
    src = sample(ESH4_1225)
    _, expected = dbn.load_mbo(src)
    with gateway([src], log=tmp_path / "gw.log") as gw:
        recs, live = collect(gw.port, heartbeat_interval_s=5)
    got = as_array(recs)
    assert got.tobytes() == np.asarray(expected).tobytes()  # every record, in order, byte for byte
    kinds = [type(r).__name__ for r in recs if not isinstance(r, databento_dbn.MBOMsg)]
    assert kinds[:2] == ["SystemMsg", "SymbolMappingMsg"]  # subscription ack, then the symbol's mapping
    assert live.symbology_map == {17077: "ESH4"}
    ack = next(r for r in recs if isinstance(r, databento_dbn.SystemMsg))
    assert ack.code == databento_dbn.SystemCode.SUBSCRIPTION_ACK and "Subscription request 0" in ack.msg


def test_snapshot_mid_day_is_the_book_then_the_market(tmp_path: Path) -> None:
    src = sample(ESH4_1225)
    _, allrecs = dbn.load_mbo(src)
    allrecs = np.asarray(allrecs)
    with gateway([src], extra=("--start", str(MIDDAY))) as gw:
        recs, _ = collect(gw.port)
    got = as_array(recs)
    pos = int(np.searchsorted(allrecs["ts_recv"], MIDDAY))
    snap = got[(got["flags"] & dbn.F_SNAPSHOT) != 0]
    n_snap = len(snap)
    assert snap["action"][0] == b"R" and (snap["action"][1:] == b"A").all()
    assert int(snap["flags"][-1]) == dbn.F_SNAPSHOT | dbn.F_BAD_TS_RECV | dbn.F_LAST
    assert got[n_snap:].tobytes() == allrecs[pos:].tobytes()
    # the snapshot's orders are exactly the resting orders of the file before the market opened
    book = resting_orders(allrecs[:pos])
    assert np.array_equal(snap["order_id"][1:].astype(np.int64), book["order_id"])
    assert np.array_equal(snap["size"][1:].astype(np.int64), book["size"])
    # and the engine's book after the file's history has exactly the snapshot's depth on every level it holds
    eng = Engine(locked_instrument())
    eng.feed(allrecs[:pos])
    tick = locked_instrument().tick_int
    for side, code in ((0, b"B"), (1, b"A")):
        mine = snap[1:][snap["side"][1:] == code]
        depth: dict[int, int] = {}
        for px, sz in zip((mine["price"] // tick).tolist(), mine["size"].tolist(), strict=True):
            depth[px] = depth.get(px, 0) + sz
        levels = eng.levels(side)
        assert levels and all(depth.get(t) == d for t, d in levels.items())


def test_intraday_replay_from_start(tmp_path: Path) -> None:
    src = sample(ESH4_1225)
    _, allrecs = dbn.load_mbo(src)
    allrecs = np.asarray(allrecs)
    start = MIDDAY + 60_000_000_000
    with gateway([src]) as gw:
        recs, _ = collect(gw.port, subscribe={"symbols": ["ESH4"], "start": start})
    got = as_array(recs)
    expected = allrecs[allrecs["ts_event"] >= start]
    assert got.tobytes() == expected.tobytes()
    assert any(isinstance(r, databento_dbn.SystemMsg) and r.code == databento_dbn.SystemCode.REPLAY_COMPLETED
               for r in recs)


def test_refused_auth_is_a_clear_error(tmp_path: Path) -> None:
    src = sample(ESH4_1225)
    with gateway([src]) as gw:
        with pytest.raises(db.BentoError, match="Authentication failed"):
            collect(gw.port, key="db-thisIsNotTheKeyTheGatewayKnows")
        gw.control("refuse_auth 1")  # the right key, refused once by the fault command
        with pytest.raises(db.BentoError, match="Authentication failed"):
            collect(gw.port)
        recs, _ = collect(gw.port)  # and accepted again
        assert len(as_array(recs)) == 68792
        assert gw.status()["refused"] == 2


def test_paced_reset_reconnects_with_a_new_session_and_heartbeats(tmp_path: Path) -> None:
    """At 2x real time a 20 s window: a reset is an error disconnect, the client's reconnect policy opens
    a new session (reconnect callback with the gap) and the idle gateway sends heartbeats."""
    window_file(sample(ESH4_1225), tmp_path / "w.dbn", MIDDAY, MIDDAY + 10_000_000_000)
    with gateway([tmp_path / "w.dbn"], speed=2, at_end="idle") as gw:
        live = live_client(gw.port, heartbeat_interval_s=5, reconnect_policy="reconnect")
        recs: list = []
        gaps: list = []
        live.add_callback(recs.append)
        live.add_reconnect_callback(lambda a, b: gaps.append((a, b)))
        live.subscribe(dataset="GLBX.MDP3", schema="mbo", symbols=["ESH4"], snapshot=True)
        live.start()
        time.sleep(1.5)
        first_session = live.session_id
        assert gw.control("reset") == "ok reset 1"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not gaps:
            time.sleep(0.1)
        assert gaps, "no reconnect after the reset"
        assert live.session_id != first_session
        # after the data (5 s at 2x), the idle gateway keeps the session alive with heartbeats
        deadline = time.monotonic() + 20
        hb = []
        while time.monotonic() < deadline and len(hb) < 1:
            hb = [r for r in recs if isinstance(r, databento_dbn.SystemMsg) and r.is_heartbeat()]
            time.sleep(0.2)
        assert hb, "no heartbeat from an idle gateway"
        live.terminate()


def test_snapshot_records_of_an_empty_history_are_a_bare_clear() -> None:
    snap = snapshot_records(np.zeros(0, dbn.MBO_DTYPE), instrument_id=1, publisher_id=1, ts_recv=5)
    assert len(snap) == 1 and snap["action"][0] == b"R"
    assert int(snap["flags"][0]) == dbn.F_SNAPSHOT | dbn.F_BAD_TS_RECV | dbn.F_LAST
