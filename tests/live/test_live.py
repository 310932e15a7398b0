"""`qmachina live` end to end: the loopback gateway process, the official `databento.Live` client, a private
redis-server, two serving replicas and WebSocket clients (`?serving=ALIAS&source=live`).

One real minute of the ESH4 2023-12-25 sample (Sunday open, with a snapshot at its head) is the market,
replayed at 4x real time; the gateway resets the connection three times, the private Redis is killed and
restarted mid-run, and a last stall outlasts the replay window (an unrepairable gap). Every check compares
against an independent path: the captured day file against the source records, the live silver against
the engine run on the captured file (what `qmachina silver` does), the replicas' frames against each other
and against that silver.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from qmachina_assets import cli
from qmachina_assets.core.engine.engine import SilverChunk, iter_file, run_file
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.synth import SynthParams, generate_records, write_records
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.registry import Registry
from qmachina_serving.live.capture import GAP_CLEAR_FLAGS, read_manifest
from qmachina_serving.live.state import LiveSessions
from tests.conftest import ESH4_1225, sample
from tests.support.auth import seed_access
from tests.support.live import gateway, gateways, live_process, private_redis, replicas, wait_ready, window_file
from tests.support.serving import build_served_lake

MIDDAY = 1703545200_000_000_000  # 2023-12-25 23:00 UTC (18:00 ET, the Sunday open)
WINDOW_S = 60
SPEED = 4  # the minute lasts 15 s
CAPTURED = "raw/databento/future_mbo/ES/2023-12-25/live-es-20231225.mbo.dbn"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("live")
    w = build_served_lake(root, with_silver=False)
    with Registry(lake=w.lake, instrument=w.instrument) as reg:
        vp = reg.register(w.serving("vp_stream_test"), alias="vp", actor="tests", reason="live stream",
                          configs_dir=w.configs, expected_version_id=None).version
        reg.register(w.serving("ema_stream_test"), alias="ema", actor="tests", reason="live stream",
                     configs_dir=w.configs, expected_version_id=None)
    access = seed_access(w.lake, roles=("viewer",))
    win = root / "window.dbn"
    records = window_file(sample(ESH4_1225), win, MIDDAY, MIDDAY + WINDOW_S * 10**9)
    m4_win, m4_records = _m4_window(root)
    # the lock with a roll rule whose ESH4 -> ESM4 roll falls 50 s into the window (81 days before the
    # 2024-03-15 expiry, 18:00:50 ET): the synthetic two-contract day
    text = (PROJECT_ROOT / "configs" / "instrument.yaml").read_text()
    roll_lock = root / "instrument_roll.yaml"
    roll_lock.write_text(re.sub(r"^roll: .*$", 'roll: {rule: calendar, months: HMUZ, days_before_expiry: 81, '
                                                'time_et: "18:00:50"}', text, flags=re.M))
    return {"root": root, "lake": w.lake, "vp": vp.version_id, "access": access, "window": win,
            "records": records, "m4_window": m4_win, "m4_records": m4_records, "roll_lock": roll_lock}


def _m4_window(root: Path) -> tuple[Path, np.ndarray]:
    """ESM4 over the same minute: a busy synthetic minute (14:00 UTC) moved to the window, with its book as a
    snapshot at the head."""
    inst = json_instrument()
    p = SynthParams(n_records=200_000, seed=3, date=dt.date(2023, 12, 25), symbol="ESM4")
    recs = generate_records(p, inst).copy()
    shift = np.uint64(MIDDAY - int(dt.datetime(2023, 12, 25, 14, tzinfo=dt.UTC).timestamp()) * 10**9)
    recs["ts_recv"] += shift
    recs["ts_event"] += shift
    full = root / "esm4_shifted.dbn"
    write_records(full, recs, p, inst)
    out = root / "esm4_window.dbn"
    return out, window_file(full, out, MIDDAY, MIDDAY + WINDOW_S * 10**9, symbol="ESM4")


@pytest.fixture(scope="module")
def redis_server(world):
    with private_redis(world["root"]) as r:
        yield r


def fresh_lake(world, name: str) -> Path:
    """A lake of its own for one live run (the registry and control plane copied: same aliases and tokens)."""
    import shutil

    lake = world["root"] / name
    lake.mkdir()
    for d in ("registry", "control"):
        if (world["lake"] / d).exists():
            shutil.copytree(world["lake"] / d, lake / d)
    return lake


def check_capture_and_parity(lake: Path, silver_out: Path, source: np.ndarray, *, gap: bool = False) -> int:
    """The captured day holds exactly the source records (with `gap`: up to the unrepairable gap, its marker,
    a new snapshot, then the source from there); the live silver equals the engine on that file."""
    captured = lake / CAPTURED
    _, recs = dbn.load_mbo(captured)
    recs = np.asarray(recs)
    # clears with the snapshot flags: the opening snapshot's; with a gap also its marker, then the new snapshot's
    clears = np.flatnonzero((recs["flags"] == GAP_CLEAR_FLAGS) & (recs["action"] == b"R"))
    assert clears[0] == 0 and len(clears) == (3 if gap else 1)
    if gap:
        m = int(clears[1])
        assert clears[2] == m + 1 and recs["ts_recv"][m] < recs["ts_recv"][m + 1]
        before, after = recs[:m], recs[m + 1:]
        head = _snapshot_len(before)
        tail = after[_snapshot_len(after):]
        assert len(tail) > 0 and tail.tobytes() == source[len(source) - len(tail):].tobytes()
        body = before[head:]
        i = len(source) - len(tail)  # the records the gap lost lie before the tail
        j = int(np.searchsorted(source["ts_recv"].view(np.int64), int(body["ts_recv"][0]), "left"))
        while source[j:j + 1].tobytes() != body[:1].tobytes():
            j += 1
        assert source[j:j + len(body)].tobytes() == body.tobytes()  # up to the gap: every record once
        assert i > j + len(body)  # records were lost in the gap (not replayable)
        recs = before  # the part checked below against the source's head
    # the run opened on the gateway's snapshot of the book at the market's position (the source's head is a
    # snapshot too; the records of the first instants may be folded into the gateway's), then every later
    # record exactly once, in order
    head, src_head = _snapshot_len(recs), _snapshot_len(source)
    assert head > 0
    if not gap:
        tail = recs[head:]
        start = len(source) - len(tail)
        assert src_head <= start < src_head + 100, (head, src_head, start)
        assert tail.tobytes() == source[start:].tobytes()  # none lost, none doubled, same order
    bins, grid = run_file(captured, json_instrument())
    live_bins, live_grid = (pq.read_table(silver_out / "ESH4" / "bins.parquet"),
                            pq.read_table(silver_out / "ESH4" / "grid.parquet"))
    assert live_bins.num_rows == bins.num_rows > 500
    assert live_bins.equals(bins) and live_grid.equals(grid)  # bit for bit
    return bins.num_rows


def silver_of(path: Path, iid: int) -> tuple[pa.Table, pa.Table]:
    """`qmachina silver FILE --symbol X`: the engine on one instrument of a file."""
    chunk = SilverChunk.concat([c.copy() for c in iter_file(path, json_instrument(), instrument_ids={iid})], 50)
    return chunk.bins_table(), chunk.grid_table()


def check_roll_capture_and_parity(lake: Path, silver_out: Path, h4: np.ndarray, m4: np.ndarray) -> tuple[int, int]:
    """A capture across the roll: ESH4 from its snapshot on, contiguous, up to the roll; then ESM4 from the
    gateway's snapshot at the roll to the end, contiguous; each contract's live silver equals the engine on
    that contract's records of the captured file."""
    captured = lake / CAPTURED
    _, recs = dbn.load_mbo(captured)
    recs = np.asarray(recs)
    ids = recs["instrument_id"]
    h4_iid, m4_iid = int(h4["instrument_id"][0]), int(m4["instrument_id"][0])
    assert set(np.unique(ids).tolist()) == {h4_iid, m4_iid}
    first_m4 = int(np.argmax(ids == m4_iid))
    assert (ids[:first_m4] == h4_iid).all() and (ids[first_m4:] == m4_iid).all()  # one contract, then the other
    got_h4 = recs[:first_m4]
    body = got_h4[_snapshot_len(got_h4):]
    j = int(np.searchsorted(h4["ts_recv"].view(np.int64), int(body["ts_recv"][0]), "left"))
    while h4[j:j + 1].tobytes() != body[:1].tobytes():
        j += 1
    assert h4[j:j + len(body)].tobytes() == body.tobytes()  # every ESH4 record once, in order, to the roll
    got_m4 = recs[first_m4:]
    tail = got_m4[_snapshot_len(got_m4):]
    assert len(tail) and tail.tobytes() == m4[len(m4) - len(tail):].tobytes()  # and ESM4 from the roll to the end
    out = []
    for sym, iid in (("ESH4", h4_iid), ("ESM4", m4_iid)):
        bins, grid = silver_of(captured, iid)
        lb, lg = pq.read_table(silver_out / sym / "bins.parquet"), pq.read_table(silver_out / sym / "grid.parquet")
        assert lb.num_rows == bins.num_rows > 50 and lb.equals(bins) and lg.equals(grid), sym
        out.append(bins.num_rows)
    return out[0], out[1]


def _snapshot_len(recs: np.ndarray) -> int:
    flags = recs["flags"] & dbn.F_SNAPSHOT
    return int(np.argmin(flags != 0)) if (flags == 0).any() else len(recs)


def json_instrument():
    from qmachina_assets.core.instrument import locked_instrument

    return locked_instrument()


async def collect(uri: str, headers: dict, out: dict, done: asyncio.Event) -> None:
    """Every message of one live stream (text as parsed JSON, bins as (grid_update text, arrow bytes))."""
    async with connect(uri, max_size=None, compression=None, additional_headers=headers) as ws:
        pending = None
        with contextlib.suppress(ConnectionClosed):
            while not done.is_set():
                try:
                    msg = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                if isinstance(msg, bytes):
                    out["seq"].append(("bin", pending, msg))
                    pending = None
                    continue
                d = json.loads(msg)
                if d["type"] == "grid_update":
                    pending = msg
                else:
                    out["seq"].append((d["type"], msg, None))
                    if d["type"] == "source_status" and "live process stopped" in (d.get("reason") or ""):
                        return


def test_live_day_resets_two_replicas_redis_outage(world, redis_server, tmp_path: Path) -> None:
    lake = fresh_lake(world, "lake_a")
    silver_out = tmp_path / "silver_live"
    r = redis_server

    with replicas(world["lake"], 2, world["access"], wait=False, QMACHINA_SERVING_REDIS_URL=r.url,
                  QMACHINA_SERVING_CLIENT_QUEUE_BINS="4096") as (s0, s1), \
            gateway([world["window"]], speed=SPEED, at_end="close", log=tmp_path / "gw.log") as gw:
        wait_ready([s0, s1])
        headers = world["access"].ws_headers("viewer")
        outs = [{"seq": []} for _ in range(3)]

        def drive() -> None:
            with live_process([gw.port], lake, r.url, "--at-close", "exit", "--silver-out", str(silver_out),
                              "--heartbeat-s", "1", "--backoff-base-s", "0.2", "--backoff-cap-s", "0.5",
                              "--max-replay-s", "1.2", "--run-id", "lv_test_a", "--symbol", "ESH4",
                              log=tmp_path / "live.log") as proc:
                deadline = time.monotonic() + 120
                while not gw.status()["sessions"]:
                    assert proc.poll() is None and time.monotonic() < deadline, "live never connected"
                    time.sleep(0.1)
                for _ in range(2):  # two resets, a Redis outage, a third reset
                    time.sleep(1.2)
                    assert gw.control("reset").startswith("ok reset 1")
                time.sleep(1.0)
                r.stop()
                time.sleep(2.0)
                r.start()
                time.sleep(0.8)
                assert gw.control("reset").startswith("ok reset 1")
                time.sleep(0.8)  # then a silence longer than the replay window (1.2 s): an unrepairable gap
                assert gw.control("stall 2.5").startswith("ok stall 1")
                assert proc.wait(timeout=120) == 0

        async def main() -> None:
            done = asyncio.Event()
            tasks = [asyncio.create_task(collect(f"{s.ws}?serving=vp&source=live", headers, o, done))
                     for s, o in ((s0, outs[0]), (s1, outs[1]))]
            tasks.append(asyncio.create_task(collect(f"{s0.ws}?serving=ema&source=live", headers, outs[2], done)))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(drive)
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
            done.set()

        asyncio.run(main())

    # the capture is the source, the live silver is the engine on the capture
    n_bins = check_capture_and_parity(lake, silver_out, world["records"], gap=True)
    manifest = read_manifest(lake / CAPTURED)
    assert manifest["records"] == len(dbn.load_mbo(lake / CAPTURED)[1])
    assert manifest["unrepaired_gaps"] == 1 and manifest["repaired_gaps"] == 3  # the stall; the three resets
    (gap,) = [g for g in manifest["gaps"] if not g["repaired"]]
    assert gap["end_ns"] > gap["start_ns"] and "replay window" in gap["reason"]
    live_bins = pq.read_table(silver_out / "ESH4" / "bins.parquet").to_pydict()
    in_gap = [v for v, e in zip(live_bins["book_valid"], live_bins["bin_end_ns"], strict=True)
              if gap["start_ns"] < e <= gap["end_ns"]]
    assert in_gap and not any(in_gap)  # the book is invalid across the gap

    # each client: first the alias is not published yet, then its live runtime_config, bins, Redis
    # unavailable, available again, bins, and the end of the live process (the three resets are invisible)
    silver_grid = pq.read_table(silver_out / "ESH4" / "grid.parquet")
    w = 101
    for i, out in enumerate(outs):
        kinds = [k for k, _, _ in out["seq"]]
        assert kinds[0] == "source_status" and "not published" in json.loads(out["seq"][0][1])["reason"]
        hello = json.loads(out["seq"][kinds.index("runtime_config")][1])
        assert hello["source"] == "live" and hello["live"]["run_id"] == "lv_test_a"
        assert hello["serving"]["serving_id"] == world["vp"] or i == 2
        down = kinds.index("source_status", 1)
        assert json.loads(out["seq"][down][1])["status"] == "unavailable"
        up = kinds.index("source_status", down + 1)
        assert json.loads(out["seq"][up][1])["status"] == "available"
        before, after = kinds[:down].count("bin"), kinds[up:].count("bin")
        assert before > 50 and after > 50, (before, after)
        bins = [(json.loads(t), a) for k, t, a in out["seq"] if k == "bin"]
        seqs = [b["bin_seq"] for b, _ in bins]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and max(seqs) == n_bins - 1
        if i == 0:  # the dense grid of every received bin is the silver grid's rows of that bin
            for upd, arrow in bins[:: max(1, len(bins) // 40)]:
                t = pa.ipc.open_stream(arrow).read_all()
                ref = silver_grid.slice(upd["bin_seq"] * w, w).select(t.schema.names)
                assert t.num_rows == w and t.equals(ref.cast(t.schema))
        gaps = [json.loads(t) for k, t, _ in out["seq"] if k == "gap"]
        assert [(int(g["start_ns"]), int(g["end_ns"])) for g in gaps] == [(gap["start_ns"], gap["end_ns"])]
    # the replicas sent the same bytes
    frames0 = [(t, a) for k, t, a in outs[0]["seq"] if k in ("bin", "runtime_config")]
    frames1 = [(t, a) for k, t, a in outs[1]["seq"] if k in ("bin", "runtime_config")]
    assert frames0 == frames1

    store = LiveSessions(lake=lake)
    row = store.get("lv_test_a")
    store.close()
    assert row["status"] == "stopped" and row["bins"] == n_bins and row["reconnects"] == 4 and row["gaps"] == 1
    assert row["records"] == manifest["records"]
    assert row["checkpoint_ts_event"] == int(world["records"]["ts_event"][-1])
    assert row["detail"]["redis"]["outages"] == 1 and row["detail"]["redis"]["dropped_bins"] > 0


def _wait(cond, what: str, proc, timeout: float = 30.0) -> float:
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, f"qmachina live exited while waiting for {what}"
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_stall_refused_auth_failover_back_and_roll(world, redis_server, tmp_path: Path, capsys) -> None:
    """A stall is detected within two heartbeat intervals; a refused login is a clear error with backoff, and
    after three of them the run fails over to the second gateway; it moves back once the first accepts it
    again; then the market passes the lock's roll instant and the run follows ESM4 (a synthetic two-contract
    day). Nothing is lost or doubled through all of it."""
    lake = fresh_lake(world, "lake_c")
    silver_out = tmp_path / "silver_live"
    args = ("--at-close", "exit", "--silver-out", str(silver_out), "--heartbeat-s", "1", "--backoff-base-s", "0.2",
            "--backoff-cap-s", "0.5", "--failover-after", "3", "--primary-probe-s", "1", "--run-id", "lv_test_c",
            "--alias", "vp", "--symbol", "ESH4")
    market = [world["window"], world["m4_window"]]  # ESH4 and ESM4 over the same minute
    with gateways([market] * 2, speed=SPEED, at_end="close",
                  logs=[tmp_path / "gw_a.log", tmp_path / "gw_b.log"]) as (a, b), \
            live_process([a.port, b.port], lake, redis_server.url, *args, log=tmp_path / "live.log",
                         env_extra={"QMACHINA_INSTRUMENT_CONFIG_PATH": str(world["roll_lock"])}) as proc:
        _wait(lambda: a.status()["sessions"], "the first session", proc, 120)
        first = a.status()["sessions"]
        time.sleep(0.8)
        assert a.control("stall 3").startswith("ok stall 1")
        _wait(lambda: [s for s in a.status()["sessions"] if s not in first], "a new session after the stall", proc)
        assert a.control("refuse_auth -1") and a.control("reset")
        t = _wait(lambda: b.status()["sessions"], "failover to the second gateway", proc)
        assert a.status()["refused"] == 3  # three attempts, then the next gateway: no hot retry loop
        assert t >= 0.5  # the backoff between them (0.1-0.2, 0.2-0.4, 0.25-0.5 s)
        time.sleep(1.0)
        assert a.control("refuse_auth 0")
        _wait(lambda: a.status()["sessions"] and not b.status()["sessions"], "back on the first gateway", proc)
        assert proc.wait(timeout=60) == 0
    check_roll_capture_and_parity(lake, silver_out, world["records"], world["m4_records"])
    store = LiveSessions(lake=lake)
    row = store.get("lv_test_c")
    store.close()
    assert row["status"] == "stopped" and row["gaps"] == 0 and row["reconnects"] >= 3
    assert [(r["from"], r["to"]) for r in row["detail"]["rolls"]] == [("ESH4", "ESM4")]
    assert row["symbol"] == "ESM4"
    # the alias stream got a new runtime_config at the roll (clients replace theirs on the same connection)
    client = redis.Redis.from_url(redis_server.url)
    configs = [json.loads(f[b"text"]) for _, f in client.xrange("qmachina:live:default:vp")
               if f[b"kind"] == b"msg" and b'"runtime_config"' in f[b"text"][:40]]
    client.close()
    mine = [c["live"]["symbol"] for c in configs if c["live"]["run_id"] == "lv_test_c"]
    assert mine == ["ESH4", "ESM4"]
    stalls = row["detail"]["stalls_s"]
    assert len(stalls) == 1 and 1.0 < stalls[0] <= 2.0  # within two heartbeat intervals of 1 s
    capsys.readouterr()
    assert cli.main(["live", "status", "--lake", str(lake), "--json"]) == 0  # `qmachina live status`
    (printed,) = json.loads(capsys.readouterr().out)
    assert printed["run_id"] == "lv_test_c" and printed["checkpoint_ts_event"] == row["checkpoint_ts_event"]
    log = (tmp_path / "live.log").read_text()
    assert "Authentication failed" in log and "check the API key" in log
    assert f"failing over to 127.0.0.1:{b.port}" in log and "moving back" in log
