"""The serving process end to end: uvicorn in a subprocess, a real lake and registry, WebSocket clients.

The real ESH4 2023-12-25 sample is landed into a throw-away lake, bronze and silver are built for the
18:00-18:05 ET Sunday open, a serving version of that window is registered (alias `live`), and
`python -m qmachina_serving` serves it (own process group, killed with SIGKILL at teardown).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from qmachina_assets.core.engine import silver
from qmachina_assets.core.engine.silver_partition import silver_dir
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.registry import Registry
from qmachina_serving.settings import ServingSettings
from tests.support.auth import seed_access
from tests.support.served_signals import evaluated_day, expected_events, stream_events
from tests.support.serving import DATE, Server, build_served_lake, serve

ALLOWED_ORIGIN = "http://viewer.test"


@pytest.fixture(scope="module")
def served_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(lake, version id of alias `live`): bronze + silver of the window, two registered versions."""
    world = build_served_lake(tmp_path_factory.mktemp("serving"))
    with Registry(lake=world.lake, instrument=world.instrument) as reg:
        version = reg.register(world.serving("vp_stream_test"), alias="live", actor="tests",
                               reason="stream contract", configs_dir=world.configs, expected_version_id=None).version
        reg.register(world.serving("ema_stream_test"), alias="ema", actor="tests",
                     reason="the second serving model (SPEC §9)", configs_dir=world.configs,
                     expected_version_id=None)
    AUTH.update(seed_access(world.lake, roles=("viewer",)).ws_headers("viewer"))
    return world.lake, version.version_id


def _serve(lake: Path, version_id: str, **env_extra: str):
    env = {"QMACHINA_SERVING_CORS_ORIGINS": ALLOWED_ORIGIN, "QMACHINA_SERVING_MAX_STALL_S": "1.0",
           "QMACHINA_SERVING_CLIENT_QUEUE_BINS": "16", "QMACHINA_SERVING_LEAD_IN_S": "0.05",
           "QMACHINA_SERVING_INLINE_WARMUP_RECORDS": "19000",  # starts after 18:03 warm up in the worker
           **env_extra}
    return serve(lake, version_id, **env)


@pytest.fixture(scope="module")
def server(served_lake) -> Iterator[Server]:
    with _serve(*served_lake) as srv:
        yield srv


@pytest.fixture(scope="module")
def server_asgi(served_lake) -> Iterator[Server]:
    """The same server writing through the two plain ASGI sends per bin (no wire.DirectWriter); queues as deep as
    `server_deep`'s, since its tests compare every bin of a max-speed day (a client descheduled for more than 16
    bins at 1,000 bins/s would be skipped ahead, as the stream does for slow readers)."""
    with _serve(*served_lake, QMACHINA_SERVING_DIRECT_WRITE="false", QMACHINA_SERVING_CLIENT_QUEUE_BINS="4096",
                QMACHINA_SERVING_MAX_STALL_S="30") as srv:
        yield srv


@pytest.fixture(scope="module")
def server_deep(served_lake) -> Iterator[Server]:
    """The same server with client queues deep enough for a whole 3,000-bin day: a max-speed stream then reaches
    the (slower) Python client whole instead of skipping ahead (the signal tests compare every event)."""
    with _serve(*served_lake, QMACHINA_SERVING_CLIENT_QUEUE_BINS="4096", QMACHINA_SERVING_MAX_STALL_S="30",
                QMACHINA_SERVING_INLINE_WARMUP_RECORDS="1000") as srv:  # every mid-day start warms in the worker
        yield srv


#: The stream's credential (a real viewer token of the served lake; set by `served_lake`).
AUTH: dict[str, str] = {}


async def _collect(uri: str, *, limit_bins: int | None = None, **kw) -> dict:
    """Every message of one stream: runtime_config, [(grid_update, arrow bytes, t_recv_ns)], signal messages
    (each right after its bin's binary frame, or the final one before end_of_stream), end, close."""
    out: dict = {"hello": None, "bins": [], "signals": [], "end": None, "error": None, "close": None,
                 "first_bin_s": None}
    t0 = time.perf_counter()
    pending = None
    kw.setdefault("additional_headers", AUTH)
    async with connect(uri, max_size=None, compression=None, **kw) as ws:
        try:
            async for msg in ws:
                if isinstance(msg, bytes):
                    assert pending is not None, "binary frame without a preceding grid_update"
                    out["bins"].append((pending, msg, time.time_ns()))
                    pending = None
                    if out["first_bin_s"] is None:
                        out["first_bin_s"] = time.perf_counter() - t0
                    if limit_bins is not None and len(out["bins"]) >= limit_bins:
                        break
                    continue
                d = json.loads(msg)
                if d["type"] == "runtime_config":
                    assert out["hello"] is None and not out["bins"]
                    out["hello"] = d
                elif d["type"] == "grid_update":
                    assert out["hello"] is not None, "grid_update before runtime_config"
                    assert pending is None, "two grid_updates without a binary frame"
                    pending = d
                elif d["type"] == "signal":
                    assert pending is None and out["bins"] and out["end"] is None
                    assert d["bin_seq"] == out["bins"][-1][0]["bin_seq"], "a signal message not right after its bin"
                    assert d.get("final") or len(out["signals"]) == len(out["bins"]) - 1
                    out["signals"].append(d)
                elif d["type"] == "end_of_stream":
                    out["end"] = d
                elif d["type"] == "error":
                    out["error"] = d
        except ConnectionClosed:
            pass
        if ws.close_code is not None:
            out["close"] = (ws.close_code, ws.close_reason)
    return out


def run(coro):
    return asyncio.run(coro)


def test_probes_and_rest(server):
    assert server.get("/healthz")[:3:2] == (200, {"status": "ok"})
    status, _, body = server.get("/readyz")
    assert status == 200 and body["ready"] and set(body["checks"].values()) == {"ok"}
    status, _, body = server.get("/v1/serving/aliases/live")  # the REST router is mounted on the same app
    assert status == 200 and server.version_id in json.dumps(body)
    assert server.get("/v1/serving/aliases/live", auth=False)[0] == 401
    assert server.get("/healthz", auth=False)[0] == 200 and server.get("/readyz", auth=False)[0] == 200


def _post(server: Server, path: str, body: dict | None = None, headers: dict | None = None):
    req = urllib.request.Request(server.http + path, data=json.dumps(body or {}).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read()), r.headers


def test_stream_credentials_header_cookie_ticket(server):
    """The stream takes a Bearer header, the login cookie or a single-use ticket; nothing else."""
    uri = f"{server.ws}?serving=live&start=18:04:59&speed=10"
    none = run(_collect(uri, additional_headers={}))
    assert none["close"][0] == 4401 and none["error"]["reason"] == "missing" and not none["bins"]
    bad = run(_collect(uri, additional_headers={"Authorization": "Bearer qm_aaaaaaaaaa_" + "b" * 43}))
    assert bad["close"][0] == 4401 and bad["error"]["reason"] == "unknown"
    assert run(_collect(uri))["end"] is not None  # the viewer's Bearer header
    me, headers = _post(server, "/auth/login", {"token": server.access.tokens["viewer"]})
    cookie = headers["set-cookie"]
    assert me["role"] == "viewer" and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert server.access.tokens["viewer"] not in cookie
    got = run(_collect(uri, additional_headers={"Cookie": cookie.split(";")[0]}))
    assert got["end"] is not None and got["bins"]
    ticket = _post(server, "/v1/auth/ticket", headers=server.access.headers("viewer"))[0]["ticket"]
    assert run(_collect(f"{uri}&ticket={ticket}", additional_headers={}))["end"] is not None
    again = run(_collect(f"{uri}&ticket={ticket}", additional_headers={}))  # single use
    assert again["close"][0] == 4401 and again["error"]["reason"] == "reused"


@pytest.mark.parametrize("which", ["server_deep", "server_asgi"])  # deep queues: every bin of a 1,000 bins/s day
def test_contract_bin_by_bin_against_silver(request, which):
    server = request.getfixturevalue(which)
    got = run(_collect(f"{server.ws}?serving=live&speed=100"))
    hello = got["hello"]
    assert hello["type"] == "runtime_config" and hello["stream_format"] == "dense_grid"
    assert hello["serving"]["serving_id"] == server.version_id and hello["serving"]["alias"] == "live"
    assert hello["grid_rows"] == 101 and hello["cell_width_ms"] == 100
    fields = hello["grid_schema_fields"]
    assert [f["name"] for f in fields] == silver.silver_schema().names
    assert {f["name"]: f["role"] for f in fields}["k"] == "grid_index" and all(f["role"] for f in fields)
    assert hello["gold_config"]["flow_windows"] == [5, 10, 20, 40] and hello["visualization"]["display_mode"]
    assert hello["replay"]["date"] == DATE and hello["replay"]["end"] == "window"
    assert hello["replay"]["dates_with_data"] == [DATE]
    assert hello["projection_horizons_ms"] == [b * 100 for b in hello["projection_horizons_bins"]]

    s = silver_dir(server.lake, "ESH4", DATE)
    bins = pq.read_table(s / "bins.parquet").to_pylist()
    grid = pq.read_table(s / "grid.parquet")
    assert len(got["bins"]) == len(bins) == 3000
    assert got["end"] == {"type": "end_of_stream", "reason": "end_of_window", "bins": 3000, "last_bin_seq": 2999,
                          "session_id": hello["replay"]["session_id"]}
    assert got["close"] == (1000, "end of stream")
    assert got["signals"] == [] and "signals" not in hello["replay"]  # only with signals=1
    wire = silver.silver_schema()
    expected = grid.drop(["bin_seq"]).cast(wire)
    w = 101
    for i, ((upd, frame, _), ref) in enumerate(zip(got["bins"], bins, strict=True)):
        table = pa.ipc.open_stream(frame).read_all()
        assert table.schema.equals(wire), i  # names, types and nullability of silver_schema()
        assert table.num_rows == w and table.column("k").to_pylist() == list(range(-50, 51))
        assert table.equals(expected.slice(i * w, w)), f"bin {i}: grid differs from silver"
        assert upd["bin_seq"] == ref["bin_seq"] == i
        for key in ("ts_ns", "bin_start_ns", "bin_end_ns", "spot_ref_price_int", "best_bid_price_int",
                    "best_ask_price_int"):
            assert upd[key] == str(ref[key]), (i, key)
        for key in ("bin_event_count", "event_id", "mid_price", "book_valid", "crossed"):
            assert upd[key] == ref[key], (i, key)


def test_ema_ensemble_streams_the_spot_row_of_silver(server):
    """SPEC §9: same contract, one k = 0 row per bin (fill_mass, rest_depth, last_event_id at the spot tick),
    equal to the silver asset's k = 0 row, zero where the spot is invalid."""
    got = run(_collect(f"{server.ws}?serving=ema&start=18:04&speed=100"))
    hello = got["hello"]
    assert hello["model_config"] == {"model": "ema_ensemble"} and hello["visualization"]["display_mode"] == "candle"
    assert [f["name"] for f in hello["grid_schema_fields"]] == ["k", "fill_mass", "rest_depth", "last_event_id"]
    s = silver_dir(server.lake, "ESH4", DATE)
    bins = pq.read_table(s / "bins.parquet").to_pandas().set_index("bin_end_ns")  # bin_seq counts from the start
    grid = pq.read_table(s / "grid.parquet", filters=[("k", "==", 0)]).to_pandas().set_index("bin_seq")
    assert len(got["bins"]) == 600 and got["end"]["reason"] == "end_of_window"
    nonzero = 0
    for upd, frame, _ in got["bins"]:
        table = pa.ipc.open_stream(frame).read_all()
        assert table.num_rows == 1 and table.schema.names == ["k", "fill_mass", "rest_depth", "last_event_id"]
        row = table.to_pylist()[0]
        ref_bin = bins.loc[int(upd["bin_end_ns"])]
        assert upd["spot_ref_price_int"] == str(ref_bin["spot_ref_price_int"])
        seq = int(ref_bin["bin_seq"])
        if ref_bin["spot_ref_price_int"] == 0:
            assert row == {"k": 0, "fill_mass": 0.0, "rest_depth": 0.0, "last_event_id": 0}
            continue
        ref = grid.loc[seq]
        assert row == {"k": 0, "fill_mass": ref["fill_mass"], "rest_depth": ref["rest_depth"],
                       "last_event_id": ref["last_event_id"]}, seq
        nonzero += row["rest_depth"] > 0
    assert nonzero > 300  # the spot level rests depth most of the time: the rows are real, not zeros


@pytest.mark.parametrize(("query", "code", "needle"), [
    ("speed=2", 4400, "missing parameter 'serving'"),
    ("serving=live&colour=red", 4400, "unknown parameter 'colour'"),
    ("serving=live&speed=0", 4400, "speed"),
    ("serving=live&start=18:04&end=18:01", 4400, "before end"),
    ("serving=nope", 4404, "nope"),
    ("serving=sv_0000000000000000", 4404, "sv_0000000000000000"),
    ("serving=live&date=2023-12-24", 4410, "no data"),
    ("serving=live&start=20:00&end=21:00", 4410, "no data"),
    ("serving=live&signals=yes", 4400, "signals 'yes'"),
    ("serving=ema&signals=1", 4422, "has no signal (signal: null)"),
    ("serving=live&source=live&signals=1", 4400, "'signals' is not allowed with source=live"),
])
def test_error_closes_with_documented_code(server, query, code, needle):
    got = run(_collect(f"{server.ws}?{query}"))
    assert got["hello"] is None and not got["bins"]
    assert got["error"]["code"] == code and needle in got["error"]["message"]
    assert got["close"][0] == code and needle in got["close"][1]


def test_origin_and_cors(server):
    with pytest.raises(InvalidStatus) as exc:
        run(_collect(f"{server.ws}?serving=live", origin="http://evil.test"))
    assert exc.value.response.status_code == 403
    ok = run(_collect(f"{server.ws}?serving=live&start=18:04:59&speed=10", origin=ALLOWED_ORIGIN))
    assert ok["close"][0] == 1000 and len(ok["bins"]) == 10
    _, headers, _ = server.get("/healthz", {"Origin": ALLOWED_ORIGIN})
    assert headers.get("access-control-allow-origin") == ALLOWED_ORIGIN
    _, headers, _ = server.get("/healthz", {"Origin": "http://evil.test"})
    assert "access-control-allow-origin" not in {k.lower() for k in headers}
    with pytest.raises(ValueError, match=r"'\*' is not accepted"):
        ServingSettings(cors_origins="*")
    assert ServingSettings(cors_origins="http://a.test, http://b.test/").cors_origins == ["http://a.test",
                                                                                        "http://b.test"]


def _collect_with_session(server: Server, uri: str, start_et: str, **kw) -> tuple[dict, dict]:
    """A stream's messages and its session's stats (open info) while it runs."""

    async def go() -> tuple[dict, dict]:
        task = asyncio.create_task(_collect(uri, **kw))
        live: list[dict] = []
        while not task.done():
            await asyncio.sleep(0.02)
            stats = (await asyncio.to_thread(server.get, "/v1/stream/stats"))[2]
            live = [s for s in stats["sessions"] if s["replay"]["start_et"].endswith(f"{start_et}-05:00")] or live
            if live and live[0]["bins_sent"]:
                break
        return await task, live[0]

    return run(go())


def test_midday_start_from_cached_checkpoint(server):
    uri = f"{server.ws}?serving=live&start=18:03:30&end=18:04:30&speed=50"
    # first request: 20k records before 18:03:30 > QMACHINA_SERVING_INLINE_WARMUP_RECORDS, so the checkpoint
    # is built in the worker process (the event loop never runs that engine call) and stored in the lake
    first, opened = _collect_with_session(server, uri, "18:03:30", limit_bins=1)
    assert first["bins"] and opened["open"]["checkpoint"] == "built_in_worker"
    got, live = _collect_with_session(server, uri, "18:03:30")
    assert live["open"]["checkpoint"] == "hit" and live["open"]["open_s"] < 0.5, live["open"]
    assert got["first_bin_s"] < 1.0, got["first_bin_s"]
    assert len(got["bins"]) == 600 and got["close"][0] == 1000
    # from the checkpoint, the physics equal silver's bins at the same times (bin_seq restarts at 0)
    s = silver_dir(server.lake, "ESH4", DATE)
    bins = pq.read_table(s / "bins.parquet").to_pandas().set_index("bin_end_ns")
    grid = pq.read_table(s / "grid.parquet")
    w = 101
    floats = ["k", *silver.SILVER_FLOAT_COLUMNS, "last_event_id"]
    for upd, frame, _ in got["bins"][::50]:
        ref_seq = int(bins.loc[int(upd["bin_end_ns"]), "bin_seq"])
        table = pa.ipc.open_stream(frame).read_all().select(floats)
        assert table.equals(grid.slice(ref_seq * w, w).select(floats).cast(table.schema)), upd["bin_seq"]


def test_two_clients_share_one_session_and_bytes(server):
    uri = f"{server.ws}?serving=live&start=18:01&end=18:01:20&speed=10"

    async def both():
        return await asyncio.gather(_collect(uri), _collect(uri))

    a, b = run(both())
    assert a["hello"]["replay"]["session_id"] == b["hello"]["replay"]["session_id"]
    ba = {u["bin_seq"]: (u, f) for u, f, _ in a["bins"]}
    bb = {u["bin_seq"]: (u, f) for u, f, _ in b["bins"]}
    common = sorted(set(ba) & set(bb))
    assert len(common) >= 150 and max(common) == 199
    for seq in common:
        assert ba[seq][0] == bb[seq][0] and ba[seq][1] == bb[seq][1], seq  # same grid_update, same bytes
    assert a["close"][0] == b["close"][0] == 1000


def test_slow_client_does_not_delay_fast_one(server):
    uri = f"{server.ws}?serving=live&start=18:01:30&end=18:03:30&speed=50"  # 1200 bins, 2 ms apart
    before = server.get("/v1/stream/stats")[2]["finished"]

    async def scenario():
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        slow = await connect(uri, sock=sock, max_size=None, compression=None, max_queue=1, additional_headers=AUTH)
        fast = asyncio.create_task(_collect(uri))
        got = await fast
        slow.transport.abort()  # a polite close would wait for the server's reply behind unread data
        return got

    got = run(scenario())
    after = server.get("/v1/stream/stats")[2]["finished"]
    seqs = [u["bin_seq"] for u, _, _ in got["bins"]]
    assert seqs == list(range(seqs[0], 1200)) and seqs[0] < 20  # the fast client missed nothing
    late_ms = np.array([(t - int(u["due_unix_ns"])) / 1e6 for u, _, t in got["bins"]])
    # a blocking fan-out would hold the fast client for the slow one's whole stall (> 1 s)
    assert np.percentile(late_ms, 95) < 50, np.percentile(late_ms, [50, 95, 99, 100])
    gaps_ms = np.diff([t for _, _, t in got["bins"]]) / 1e6  # bins are due every 2 ms
    assert np.percentile(gaps_ms, 99) < 50, np.percentile(gaps_ms, [50, 99, 100])
    assert after["dropped"] - before["dropped"] == 1  # the slow client, after > max_stall_s without reading
    assert after["skipped"] - before["skipped"] > 0  # and it was skipped ahead before that


def _tcp_state(sock: socket.socket) -> int:
    """Linux tcp_info.tcpi_state of a socket (7 = TCP_CLOSE: e.g. after the peer's RST)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


async def _stalled_reader(server: Server, uri: str):
    """A client that reads the handshake and then nothing (tiny receive buffer, websockets' queue of 1)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    ws = await connect(uri, sock=sock, max_size=None, compression=None, max_queue=1, additional_headers=AUTH)
    return ws, sock


def test_dead_reader_is_dropped_and_its_socket_aborted_in_bounded_time(server):
    """A client that stops reading: dropped (4429) after max_stall_s without progress, its socket aborted
    close_grace_s later (the server's RST turns the client's TCP state to CLOSE), and what it pinned on the
    server meanwhile (transport buffer + unsent kernel queue) stays under the documented bound."""
    uri = f"{server.ws}?serving=live&start=18:00:10&end=18:04:50&speed=50"  # 27 KB every 2 ms
    before = server.get("/v1/stream/stats")[2]["finished"]
    settings = ServingSettings()  # the fixture sets max_stall_s=1.0 and leaves close_grace_s, send_buffer_bytes

    async def scenario():
        t0 = time.monotonic()
        ws, sock = await _stalled_reader(server, uri)
        pinned = 0
        while _tcp_state(sock) != 7 and time.monotonic() - t0 < 15:
            stats = (await asyncio.to_thread(server.get, "/v1/stream/stats"))[2]
            pinned = max([pinned, *(s["pinned_bytes"] for s in stats["sessions"])])
            await asyncio.sleep(0.05)
        cut_s = time.monotonic() - t0
        state = _tcp_state(sock)
        ws.transport.abort()
        return cut_s, state, pinned

    cut_s, state, pinned = run(scenario())
    assert state == 7, "the server never cut the connection of a client that stopped reading"
    # stall (1.0 s) + grace (1.0 s) + the time to fill the buffers at ~13 MB/s and the polling step
    assert cut_s < 1.0 + settings.close_grace_s + 1.5, cut_s
    after = server.get("/v1/stream/stats")[2]["finished"]
    assert after["dropped"] - before["dropped"] == 1 and after["aborted"] - before["aborted"] == 1
    frame = 30_000  # one bin's two frames at ±50 ticks (~27 KB)
    bound = 2 * settings.send_buffer_bytes + 64 * 1024 + 2 * frame
    assert 0 < pinned <= bound, (pinned, bound)


def test_slow_reader_that_resumes_gets_close_4429(server):
    """A client stalled past max_stall_s that reads again within close_grace_s finds the 4429 close frame
    behind the bytes that were already queued for it."""
    uri = f"{server.ws}?serving=live&start=18:00:20&end=18:04:50&speed=50"
    before = server.get("/v1/stream/stats")[2]["finished"]["dropped"]

    async def scenario():
        ws, _ = await _stalled_reader(server, uri)
        t0 = time.monotonic()
        while server.get("/v1/stream/stats")[2]["finished"]["dropped"] == before and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.05)
        n = 0
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                n += 1
        return n, ws.close_code, ws.close_reason

    n, code, reason = run(scenario())
    assert code == 4429 and "slow consumer" in reason, (code, reason)
    assert n > 1  # the queued bins came first


def test_pacing_tracks_absolute_deadlines(server):
    got = run(_collect(f"{server.ws}?serving=live&start=18:02&end=18:02:02&speed=1"))
    assert len(got["bins"]) == 20 and got["close"][0] == 1000
    due = np.array([int(u["due_unix_ns"]) for u, _, _ in got["bins"]])
    assert np.all(np.abs(np.diff(due) - 100_000_000) < 1_000)  # the schedule: t0 + n * 100 ms
    recv = np.array([t for _, _, t in got["bins"]])
    late_ms = (recv - due) / 1e6
    assert np.median(late_ms) < 5 and np.percentile(late_ms, 90) < 15, late_ms
    resid_ms = (recv - recv[0] - np.arange(len(recv)) * 100_000_000) / 1e6
    slope = np.polyfit(np.arange(len(recv)), resid_ms, 1)[0]
    assert abs(slope) < 0.25, (slope, resid_ms)  # no cumulative drift (sleep-after-send would add ~ms/bin)
    assert abs(np.median(resid_ms[-5:]) - np.median(resid_ms[:5])) < 5, resid_ms


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_wire_frames_parse_as_websocket_frames(size):
    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    from qmachina_serving.stream.wire import bin_wire, ws_frame

    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    reader = StreamReader()
    reader.feed_data(ws_frame(0x2, payload) + bin_wire('{"type":"grid_update"}', b"\x01\x02"))
    reader.feed_eof()
    frames = []
    for _ in range(3):
        parser = Frame.parse(reader.read_exact, mask=False, max_size=None, extensions=[])
        with pytest.raises(StopIteration) as stop:
            next(parser)
        frames.append(stop.value.value)
    assert [(f.opcode, f.fin) for f in frames] == [(Opcode.BINARY, True), (Opcode.TEXT, True), (Opcode.BINARY, True)]
    assert frames[0].data == payload and frames[1].data == b'{"type":"grid_update"}' and frames[2].data == b"\x01\x02"


# ---- signals=1: the served signal is the evaluated one -------------------------------------------------


def test_signals_stream_the_evaluated_trades_exactly(server_deep):
    """signals=1 at max speed: every bin's score equals the batch signal on the research dataset and the entry /
    exit events equal `evaluate`'s trades on the same day with the same params: bins, directions, prices,
    outcomes and P&L, exactly (flow_score has a one-bin memory, so the online score is exact)."""
    s, data, params, res = evaluated_day(server_deep.lake, "vp_stream_test")
    assert res.metrics.n_trades >= 4 and {int(o) for o in res.trades["outcome"]} >= {1, -1}  # the test can fail
    got = run(_collect(f"{server_deep.ws}?serving=live&signals=1&speed=1000"))
    info = got["hello"]["replay"]["signals"]
    assert info["signal"] == "flow_score" and info["eval_source"] == "defaults" and info["lookback_exact"]
    assert info["eval"] == {**params.model_dump(mode="json"), "threshold": 0.15, "cooldown_bins": 20,
                            "tp_ticks": 8.0, "sl_ticks": 4.0, "latency_bins": 1, "entry_mode": "cross"}
    assert len(got["bins"]) == len(data.ts_ns) == 3000 and got["end"]["bins"] == 3000
    signals = got["signals"]
    assert len(signals) == 3001 and signals[-1]["final"] and signals[-1]["score"] is None
    assert [m["ts_ns"] for m in signals[:-1]] == [u["ts_ns"] for u, _, _ in got["bins"]] == [str(t) for t in data.ts_ns]
    scores = np.array([np.nan if m["score"] is None else m["score"] for m in signals[:-1]])
    np.testing.assert_array_equal(scores, s)  # NaN where the batch score is NaN, else bit-equal
    assert stream_events(signals) == expected_events(res, data)
    for m in signals:  # an event is announced at or after its own bin (a timeout's exit when its window ends)
        assert all(e["bin_seq"] <= m["bin_seq"] for e in m["events"])


def test_signals_midday_start_resumes_the_evaluation_state(server_deep):
    """A mid-day start with signals=1 warms the signal (gold, score buffer, Trader) from the capture window's
    start into the engine checkpoint (built in the worker process here): its messages are the full day's
    (which equal the evaluation, above) from that bin on, positions opened before the start included."""
    full = run(_collect(f"{server_deep.ws}?serving=live&signals=1&speed=1000"))["signals"]
    start_ts = int(full[1100]["ts_ns"])  # the bin ending 100 ms after 18:01:50 (a position is open then)
    uri = f"{server_deep.ws}?serving=live&signals=1&start=18:01:50&speed=1000"
    first, opened = _collect_with_session(server_deep, uri, "18:01:50")
    assert opened["open"]["checkpoint"] == "built_in_worker" and opened["open"]["signal"]["state"] == "checkpoint"
    got = first["signals"]
    assert first["bins"][0][0]["ts_ns"] == str(start_ts) and first["bins"][0][0]["bin_seq"] == 0
    expected = [m for m in full if int(m["ts_ns"]) >= start_ts]
    assert len(got) == len(expected) == 1901

    def key(e: dict) -> tuple:
        return e["event"], e["ts_ns"], e["direction"], e["price"], e.get("outcome"), e.get("pnl_ticks")

    for a, b in zip(got, expected, strict=True):
        assert (a["ts_ns"], a["score"], a.get("final")) == (b["ts_ns"], b["score"], b.get("final"))
        assert [key(e) for e in a["events"]] == [key(e) for e in b["events"]]
        # bin_seq restarts at 0 at the start: an event's bin_seq is its bin in this stream's numbering
        assert all(e["bin_seq"] - a["bin_seq"] == (int(e["ts_ns"]) - int(a["ts_ns"])) // 100_000_000
                   for e in a["events"])
    events = [e for m in got for e in m["events"]]
    assert len(events) >= 5 and events[0]["event"] == "exit"  # the first closes a position opened before the start


@pytest.mark.parametrize("which", ["server", "server_asgi"])
def test_signals_message_follows_each_bin_on_both_write_paths(request, which):
    """With signals=1 each bin's `signal` message comes right after its binary frame (`_collect` checks the
    order) on the direct-write path (one write of text + binary + signal frames) and the plain ASGI sends; the
    final one, before end_of_stream, names the session's last bin."""
    server = request.getfixturevalue(which)
    got = run(_collect(f"{server.ws}?serving=live&signals=1&start=18:04:50&speed=10"))
    assert len(got["bins"]) == 100 and len(got["signals"]) == 101 and got["close"][0] == 1000
    assert got["signals"][-1]["final"] is True and got["signals"][-1]["bin_seq"] == got["end"]["last_bin_seq"]
    assert all(isinstance(m["score"], float) for m in got["signals"][:-1])
    assert [e["event"] for e in got["signals"][-1]["events"]] == ["exit"]  # the position open at the end
    assert got["signals"][-1]["events"][0]["outcome"] == "truncated"


def test_serving_process_imports_no_dagster(served_lake):
    lake, _ = served_lake
    code = ("import sys; from pathlib import Path\n"
            "from qmachina_serving.app import create_app\n"
            "from qmachina_serving.stream.replay import BinProducer, parse_query, plan_replay\n"
            "from qmachina_serving.stream.source import RegistrySource\n"
            f"lake = Path({str(lake)!r}); create_app()\n"
            "v = RegistrySource(lake=lake).resolve('live')\n"
            "p = BinProducer(lake, plan_replay(v, parse_query([('serving', 'live')], 10), lake), v)\n"
            "p.open(); assert p.produce(5)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QMACHINA_LAKE_DIR": str(lake)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
