"""Live path benchmark: loopback gateway -> `qmachina live` -> Redis -> 2 serving replicas -> WebSocket clients.

Usage: python bench/live.py [--clients 200] [--seconds 30] [--speed 10] [--synth-events 5000000]

1. Ingest: the gateway replays a file as fast as the socket takes it (`--speed 0`) to `qmachina live
   --no-publish` (the official `databento.Live` callbacks -> dedupe -> capture -> the engine, bins included);
   the rate is records / seconds between the first and the last ingested batch (the live_sessions row's
   `detail.ingest`). Sources: the real ESH4 2023-12-25 sample and a synthetic day of `--synth-events` records
   (`qmachina synth`; 0 skips it). For reference, the engine alone on the same captured file.
2. Latency: the gateway replays the sample from the Sunday open at `--speed` x real time; `qmachina live`
   publishes alias `bench` (vp_flow_score, the dense grid) to a private redis-server; `--clients` lean
   WebSocket clients are spread over 2 serving replicas (`?serving=bench&source=live`). For every bin frame a
   client receives: latency = receive time - the gateway's send time of the record that closed the bin (the
   gateway's market clock: `clock` on its control port, the same idle-gap rule). Also publish -> receive
   (`due_unix_ns` of a live grid_update is the live process's publish time). p50/p99, frames per client.

Everything runs in throw-away directories, each server in its own process group (killed at the end).
The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_spec = importlib.util.spec_from_file_location("bench_stream", ROOT / "bench" / "stream.py")
bs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bs)  # the stream benchmark's lake builder, server starter and lean client

QM = [sys.executable, "-m", "qmachina_assets.cli"]
MIDDAY = 1703545200_000_000_000  # 2023-12-25 23:00 UTC, the Sunday open
SAMPLE = "nautilus_trader/esh4-glbx-mdp3-20231225.mbo.dbn.zst"
KEY = "db-qmachinaLoopbackDemoKey000001"
SKIP_IDLE_S = 5.0
WARMUP_S = 3.0  # frames of the first seconds (the live process's start, the opening burst) are left out


def kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def start_gateway(files: list[Path], speed: float, *extra: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([*QM, "live-gateway", *map(str, files), "--speed", str(speed), "--at-end", "close",
                             "--skip-idle-s", str(SKIP_IDLE_S), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
    line = proc.stdout.readline() if proc.stdout else b""
    if not line:
        raise RuntimeError("gateway did not start")
    return proc, json.loads(line)


def run_live(port: int, lake: Path, redis_url: str, *extra: str, log: Path) -> subprocess.Popen:
    with log.open("ab") as err:
        return subprocess.Popen([*QM, "live", "--gateway", f"127.0.0.1:{port}", "--key", KEY, "--lake", str(lake),
                                 "--redis-url", redis_url, "--at-close", "exit", "--symbol", "ESH4", *extra],
                                stdout=subprocess.DEVNULL,
                                stderr=err, cwd=ROOT, start_new_session=True)


def session_row(lake: Path) -> dict:
    from qmachina_serving.live.state import LiveSessions

    store = LiveSessions(lake=lake)
    try:
        return store.recent(1)[0]
    finally:
        store.close()


def start_redis(d: Path) -> tuple[subprocess.Popen, str]:
    port = bs.free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(d)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


# ---- 1. ingest -------------------------------------------------------------------------------------------


def ingest(src: Path, work: Path, redis_url: str, name: str) -> dict:
    from qmachina_assets.core.engine.engine import iter_file
    from qmachina_assets.core.instrument import locked_instrument

    lake = work / f"lake_{name}"
    lake.mkdir()
    gw, info = start_gateway([src], 0)
    try:
        live = run_live(info["port"], lake, redis_url, "--no-publish", log=work / f"live_{name}.log")
        rc = live.wait(timeout=3600)
    finally:
        kill(gw)
    row = session_row(lake)
    captured = next((lake / "raw").rglob("*.dbn"))
    t = time.perf_counter()
    bins = sum(c.n_bins for c in iter_file(captured, locked_instrument()))
    engine_s = time.perf_counter() - t
    res = {"source": name, "exit": rc, **row["detail"]["ingest"], "bins": bins, "engine_only_s": round(engine_s, 3),
           "engine_only_records_per_s": round(row["records"] / engine_s) if engine_s else None}
    print(f"ingest {name:<10} {res['records']:>10} records in {res['seconds']:.2f} s = "
          f"{res['records_per_s'] or 0:>10,} rec/s through Live callbacks -> engine ({bins} bins); "
          f"engine alone {res['engine_only_s']:.2f} s", flush=True)
    return res


# ---- 2. latency ------------------------------------------------------------------------------------------


class FrameLog(bs._Record):
    """Per received frame: bin_end_ns, due_unix_ns (publish time), receive time."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[int, int, int]] = []
        self.bin_end = 0

    def text(self, msg: str) -> None:
        if msg.startswith('{"type":"grid_update"'):
            i = msg.index('"bin_end_ns":"') + 14
            self.bin_end = int(msg[i:msg.index('"', i)])
        super().text(msg)

    def binary(self, now: int) -> None:
        super().binary(now)
        self.frames.append((self.bin_end, self.due, now))


def client_proc(uri: str, n: int, stop_at: float, token: str, conn) -> None:
    async def one(out: list) -> None:
        rec = FrameLog()
        await bs._lean_client(uri, rec, stop_at, token)
        out.append((np.asarray(rec.frames, dtype=np.int64).reshape(-1, 3), rec.end or "?"))

    async def main() -> list:
        out: list = []
        tasks = []
        for _ in range(n):
            tasks.append(asyncio.create_task(one(out)))
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
        return out

    import resource

    t0 = time.time()
    out = asyncio.run(main())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    conn.send((out, ru.ru_utime + ru.ru_stime, time.time() - t0))
    conn.close()


def send_times(records: np.ndarray, clock: dict, speed: float, bin_ends: np.ndarray) -> np.ndarray:
    """Wall time (unix ns) the gateway sent the first record at/after each bin end (the record that closed it)."""
    ts = records["ts_recv"].view(np.int64)
    gaps = np.diff(ts, prepend=ts[:1])
    eff = ts - np.cumsum(np.maximum(gaps - int(SKIP_IDLE_S * 1e9), 0))
    j = np.minimum(np.searchsorted(ts, bin_ends, side="left"), len(ts) - 1)
    return clock["wall0_unix_ns"] + ((eff[j] - clock["eff0_ns"]) / speed).astype(np.int64)


def latency(work: Path, redis_url: str, clients: int, seconds: float, speed: float) -> dict:
    from qmachina_assets.core.ingest import dbn
    from qmachina_assets.core.paths import shared_data_root

    alias, token = bs.build_lake(work / "served", streams=clients)  # the quota of concurrent streams
    lake = work / "served" / "lake"
    os.environ["QMACHINA_SERVING_REDIS_URL"] = redis_url
    servers = [bs.start_server(lake, p, 4096) for p in (bs.free_port(), bs.free_port())]
    ports = [int(s.args[s.args.index("--port") + 1]) for s in servers]
    gw = live = None
    try:
        stop_at = time.time() + 25 + seconds  # the live process starts (~15 s), then `seconds` measured
        pipes, procs = [], []
        for i, port in enumerate(ports):
            a, b = mp.Pipe(duplex=False)
            n = clients // 2 + (clients % 2 if i == 0 else 0)
            p = mp.get_context("spawn").Process(target=client_proc, args=(
                f"ws://127.0.0.1:{port}/v1/stream?serving={alias}&source=live", n, stop_at, token, b))
            p.start()
            pipes.append(a)
            procs.append(p)
        time.sleep(4)  # clients connected (they wait for the alias to be published)
        gw, info = start_gateway([shared_data_root() / SAMPLE], speed, "--start", str(MIDDAY))
        live = run_live(info["port"], lake, redis_url, "--alias", alias, log=work / "live_latency.log")
        got = [a.recv() for a in pipes]
        results = [r for r, _, _ in got]
        client_cpu = [round(100 * cpu / wall, 1) for _, cpu, wall in got]  # % of one core, whole client run
        for p in procs:
            p.join()
        from qmachina_serving.live.gateway import control

        clock = json.loads(control("127.0.0.1", info["control_port"], "clock")[3:])
    finally:
        for proc in (live, gw, *servers):
            if proc is not None:
                kill(proc)
    _, recs = dbn.load_mbo(shared_data_root() / SAMPLE)
    ends: dict[str, int] = {}
    for part in results:
        for _, end in part:
            ends[end] = ends.get(end, 0) + 1
    frames = [f for part in results for f, _ in part if len(f)]
    if not frames:
        raise RuntimeError(f"no frame received; see {work / 'live_latency.log'}")
    allf = np.concatenate(frames)
    allf = allf[allf[:, 2] >= allf[:, 2].min() + int(WARMUP_S * 1e9)]  # leave out the clients' first seconds
    sent = send_times(np.asarray(recs), clock, speed, allf[:, 0])
    lat_gw = (allf[:, 2] - sent) / 1e6
    lat_pub = (allf[:, 2] - allf[:, 1]) / 1e6
    per_client = [len(f) for f in frames]
    res = {"clients": clients, "replicas": 2, "speed": speed, "frames": len(allf),
           "frames_per_client_min": int(min(per_client)), "frames_per_client_max": int(max(per_client)),
           "clients_with_frames": len(frames), "client_ends": ends, "client_proc_cpu_pct": client_cpu,
           "loadavg_1m": round(os.getloadavg()[0], 2),
           "gateway_to_client_ms": {"p50": round(float(np.percentile(lat_gw, 50)), 2),
                                    "p99": round(float(np.percentile(lat_gw, 99)), 2),
                                    "max": round(float(lat_gw.max()), 2)},
           "publish_to_client_ms": {"p50": round(float(np.percentile(lat_pub, 50)), 2),
                                    "p99": round(float(np.percentile(lat_pub, 99)), 2)}}
    print(f"latency {clients} clients over 2 replicas at {speed:g}x: gateway send -> client receive "
          f"p50 {res['gateway_to_client_ms']['p50']} ms, p99 {res['gateway_to_client_ms']['p99']} ms "
          f"(publish -> receive p50 {res['publish_to_client_ms']['p50']} ms, p99 "
          f"{res['publish_to_client_ms']['p99']} ms); {len(allf)} frames, {len(frames)} clients; client "
          f"processes' CPU {client_cpu} % of a core", flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--speed", type=float, default=10)
    ap.add_argument("--synth-events", type=int, default=5_000_000)
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    from qmachina_assets.core.paths import shared_data_root

    work = Path(tempfile.mkdtemp(prefix="qm_bench_live_"))
    redis, url = start_redis(work)
    out: dict = {"ingest": [], "latency": None}
    try:
        if not args.skip_ingest:
            out["ingest"].append(ingest(shared_data_root() / SAMPLE, work, url, "esh4_sample"))
            if args.synth_events:
                syn = work / "synth.dbn"
                subprocess.run([*QM, "synth", str(syn), "--events", str(args.synth_events), "--seed", "7",
                                "--date", "2024-03-15", "--symbol", "ESH4"], check=True, cwd=ROOT,
                               stdout=subprocess.DEVNULL)
                out["ingest"].append(ingest(syn, work, url, "synthetic"))
        if not args.skip_latency:
            out["latency"] = latency(work, url, args.clients, args.seconds, args.speed)
    finally:
        kill(redis)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
