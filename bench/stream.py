"""Stream fan-out benchmark: the serving process and N WebSocket clients on loopback.

Usage: python bench/stream.py [--clients 200] [--seconds 30] [--speed 1] [--client-procs 1]
                              [--url ws://host:port --serving ALIAS]   (attach to a running server)

Without --url it builds a throw-away lake (the real ESH4 2023-12-25 sample -> bronze), registers a
serving version (vp_flow_score on the 18:00-19:00 ET Sunday open) in its SQLite registry, starts
`python -m qmachina_serving` in its own process group, and kills the group at the end.

Every client joins the same replay session (same alias, window and speed). Per bin it records the
latency from the bin's close on the paced clock (`due_unix_ns` of its grid_update) to the receipt of
the bin's Arrow frame, and the bins it missed (gaps in bin_seq after its first bin). The first
`--warmup` seconds are left out (clients still connecting). Reports p50/p95/p99/max latency, missed
bins, server and client CPU (% of one core) over the measured window; the last line is JSON.
Goal on a 2-core machine: 200 clients at 100 ms bins, p99 < 20 ms, no missed bins.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = "nautilus_trader/esh4-glbx-mdp3-20231225.mbo.dbn.zst"
PIPELINE = """name: bench_sunday_open
description: Sunday open of the real ESH4 sample day (stream benchmark).
pipeline_code_version: 1
capture:
  symbol: ESH4
  dates: [2023-12-25]
  start_et: "18:00"
  end_et: "19:00"
engine: {}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_lake(root: Path, streams: int = 50) -> tuple[str, str]:
    """Bronze of the sample day + a registered serving version; returns the alias and an admin's token of
    the lake's default workspace (clients authenticate like any other; stream stats need admin). The
    workspace's concurrent-stream quota is raised to `streams` (+ margin): with the default 50 the server
    refuses the 51st client with close code 4429 and the figures would be those of 50 clients."""
    from qmachina_assets.core.ingest import lake as lakemod
    from qmachina_assets.core.ingest.bronze import build_bronze
    from qmachina_assets.core.instrument import load_instrument
    from qmachina_assets.core.paths import PROJECT_ROOT, shared_data_root
    from qmachina_assets.core.registry import Registry

    inst = load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml")
    lake = root / "lake"
    lake.mkdir(parents=True)
    f = lakemod.land_raw_file(shared_data_root() / SAMPLE, lake, inst)
    build_bronze([f.path], date=f.date, symbol="ESH4", lake=lake, instrument=inst)
    cfg = root / "configs"
    (cfg / "pipelines").mkdir(parents=True)
    (cfg / "serving").mkdir()
    (cfg / "pipelines" / "bench_sunday_open.yaml").write_text(PIPELINE)
    spec = (PROJECT_ROOT / "configs" / "serving" / "vp_flow_score.yaml").read_text()
    spec = spec.replace("pipeline: es_sample_days", "pipeline: bench_sunday_open")
    spec = spec.replace("name: vp_flow_score", "name: vp_bench")
    (cfg / "serving" / "vp_bench.yaml").write_text(spec)
    with Registry(lake=lake, instrument=inst) as reg:
        reg.register(cfg / "serving" / "vp_bench.yaml", alias="bench", actor="bench/stream.py",
                     reason="stream benchmark", configs_dir=cfg, expected_version_id=reg.current("bench"))
    from qmachina_assets.core.control import ControlPlane

    with ControlPlane(lake=lake) as cp:
        cp.create_workspace("default", actor="bench/stream.py", owner="bench")
        cp.add_member("default", "bench_admin", "admin", actor="bench/stream.py")
        _, token = cp.create_token("default", "bench_admin", actor="bench/stream.py", label="stream benchmark")
        quotas = cp.quotas("default").model_copy(update={"max_concurrent_streams": max(50, streams + 16)})
        cp.set_quotas("default", quotas, actor="bench/stream.py")
    return "bench", token


def start_server(lake: Path, port: int, queue_bins: int, nice: int = 0) -> subprocess.Popen:
    env = {"QMACHINA_SERVING_DIRECT_WRITE": "true", **os.environ, "QMACHINA_LAKE_DIR": str(lake),
           "QMACHINA_SERVING_LOG_LEVEL": "warning",
           "QMACHINA_SERVING_MAX_SUBSCRIBERS": "5000", "QMACHINA_SERVING_CLIENT_QUEUE_BINS": str(queue_bins)}
    cmd = [sys.executable, "-m", "qmachina_serving", "--port", str(port)]
    if nice:
        cmd = ["nice", "-n", str(nice), *cmd]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server not ready after 180 s")


# ---- clients (run in their own process(es)) -------------------------------------------------------


class _Record:
    """What one client saw: per-bin latency (receive - due, ns), receive times, missed bins, how it ended."""

    def __init__(self) -> None:
        self.lat: list[int] = []
        self.recv: list[int] = []
        self.missed = 0
        self.prev: int | None = None
        self.due = 0
        self.seq = -1
        self.end: str | None = None

    def text(self, msg: str) -> None:
        if msg.startswith('{"type":"grid_update"'):
            i = msg.rindex('"due_unix_ns":"') + 15
            self.due = int(msg[i:msg.index('"', i)])
            j = msg.index('"bin_seq":') + 10
            self.seq = int(msg[j:msg.index(",", j)])
        else:
            kind = json.loads(msg)["type"]
            if kind in ("end_of_stream", "error"):
                self.end = kind

    def binary(self, now: int) -> None:
        self.lat.append(now - self.due)
        self.recv.append(now)
        if self.prev is not None and self.seq != self.prev + 1:
            self.missed += self.seq - self.prev - 1
        self.prev = self.seq


class LeanClient(asyncio.Protocol):
    """A minimal RFC 6455 client (what a browser's native WebSocket costs, not a Python library's):
    handshake, unmasked server frames parsed in place, pings answered, no per-message queue."""

    def __init__(self, host: str, path: str, rec: _Record, stop_at: float, done: asyncio.Future, token: str):
        self.req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Authorization: Bearer {token}\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        self.rec, self.stop_at, self.done = rec, stop_at, done
        self.buf = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.req)

    def _send(self, opcode: int, payload: bytes) -> None:  # client frames are masked (zero key)
        assert self.transport is not None and len(payload) < 126
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        if self.open and not buf:  # the usual case: whole frames in one read, parsed in place (no copy)
            pos = self._frames(data)
            if pos < len(data):
                buf += data[pos:]
            return
        buf += data
        if not self.open:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._finish(f"handshake: {bytes(buf[:40])!r}")
                return
            del buf[:i + 4]
            self.open = True
        del buf[:self._frames(buf)]

    def _frames(self, buf: bytes | bytearray) -> int:
        """Handle the complete frames at the start of `buf`; returns the bytes consumed."""
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1] & 0x7F
            off = pos + 2
            if b1 == 126:
                if n - pos < 4:
                    break
                b1, off = int.from_bytes(buf[pos + 2:pos + 4], "big"), pos + 4
            elif b1 == 127:
                if n - pos < 10:
                    break
                b1, off = int.from_bytes(buf[pos + 2:pos + 10], "big"), pos + 10
            if n - off < b1:
                break
            op = b0 & 0x0F
            if op == 2:
                now = time.time_ns()
                self.rec.binary(now)
                if now / 1e9 > self.stop_at:
                    self._send(8, (1000).to_bytes(2, "big"))
                    self._finish("client_stop")
                    return n
            elif op == 1:
                self.rec.text(buf[off:off + b1].decode())
            elif op == 9:
                self._send(10, bytes(buf[off:off + b1]))
            elif op == 8:
                code = int.from_bytes(buf[off:off + 2], "big") if b1 >= 2 else 1005
                self._finish(self.rec.end or f"close {code}")
                return n
            pos = off + b1
        return pos

    def _finish(self, why: str) -> None:
        self.rec.end = self.rec.end if why.startswith("close") and self.rec.end else why
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.rec.end = self.rec.end or "connection_lost"
            self.done.set_result(None)


async def _lean_client(uri: str, rec: _Record, stop_at: float, token: str) -> None:
    from urllib.parse import urlsplit

    u = urlsplit(uri)
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    try:
        await loop.create_connection(lambda: LeanClient(u.netloc, f"{u.path}?{u.query}", rec, stop_at, done, token),
                                     u.hostname, u.port)
        await done
    except Exception as exc:
        rec.end = f"{type(exc).__name__}: {exc}"


async def _websockets_client(uri: str, rec: _Record, stop_at: float, token: str) -> None:
    from websockets.asyncio.client import connect

    try:
        async with connect(uri, max_size=None, compression=None, open_timeout=60, ping_interval=None,
                           additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            async for msg in ws:
                if isinstance(msg, bytes):
                    now = time.time_ns()
                    rec.binary(now)
                    if now / 1e9 > stop_at:
                        rec.end = rec.end or "client_stop"
                        break
                else:
                    rec.text(msg)
    except Exception as exc:
        rec.end = f"{type(exc).__name__}: {exc}"


async def _client(uri: str, out: dict, stop_at: float, kind: str, token: str) -> None:
    rec = _Record()
    await (_lean_client if kind == "lean" else _websockets_client)(uri, rec, stop_at, token)
    out["lat"].append(np.asarray(rec.lat, dtype=np.int64))
    out["recv"].append(np.asarray(rec.recv, dtype=np.int64))
    out["missed"].append(rec.missed)
    out["end"].append(rec.end or "?")


def client_proc(uri: str, n: int, stop_at: float, ramp_s: float, kind: str, token: str, conn) -> None:
    import resource

    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    out: dict = {"lat": [], "recv": [], "missed": [], "end": []}

    async def main() -> None:
        tasks = []
        for _ in range(n):
            tasks.append(asyncio.create_task(_client(uri, out, stop_at, kind, token)))
            await asyncio.sleep(ramp_s / max(n, 1))
        await asyncio.gather(*tasks)

    runner(main())
    ru = resource.getrusage(resource.RUSAGE_SELF)
    conn.send({"out": out, "cpu_s": ru.ru_utime + ru.ru_stime})
    conn.close()


# ---- main ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds left out at the start")
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--client-procs", type=int, default=1)
    ap.add_argument("--client", choices=("lean", "websockets"), default="lean",
                    help="lean: minimal RFC 6455 protocol client; websockets: the websockets library")
    ap.add_argument("--queue-bins", type=int, default=64, help="server's per-client queue (started server)")
    ap.add_argument("--server-nice", type=int, default=0,
                    help="niceness of the started server (negative needs privileges; for shared machines)")
    ap.add_argument("--url", default=None, help="ws://host:port of a running server (skips setup)")
    ap.add_argument("--serving", default="bench")
    ap.add_argument("--token", default=os.environ.get("QMACHINA_TOKEN"),
                    help="with --url: an API token of the server's workspace (default: $QMACHINA_TOKEN; admin for "
                         "the stream stats)")
    args = ap.parse_args()

    tmp = None
    server = None
    try:
        if args.url is None:
            tmp = Path(tempfile.mkdtemp(prefix="qm_bench_stream_"))
            serving, token = build_lake(tmp, streams=args.clients)
            port = free_port()
            t = time.time()
            server = start_server(tmp / "lake", port, args.queue_bins, args.server_nice)
            print(f"server ready in {time.time() - t:.1f} s (pid {server.pid}, port {port})", file=sys.stderr)
            base = f"ws://127.0.0.1:{port}"
        else:
            base, serving, token = args.url.rstrip("/"), args.serving, args.token
            if not token:
                ap.error("--url needs --token (or QMACHINA_TOKEN): the stream requires authentication")
        # end of the replay window a little after the client stop (a normal end of stream follows)
        total = args.warmup + args.seconds
        end = (dt.datetime(2000, 1, 1, 18, 0) + dt.timedelta(seconds=total * args.speed + 5)).time()
        uri = (f"{base}/v1/stream?serving={serving}&speed={args.speed:g}"
               f"&end={min(end, dt.time(18, 59, 59)).isoformat(timespec='seconds')}")
        t_start = time.time()
        stop_at = t_start + total
        per = [args.clients // args.client_procs + (i < args.clients % args.client_procs)
               for i in range(args.client_procs)]
        ctx = mp.get_context("spawn")
        procs, pipes = [], []
        for n in per:
            a, b = ctx.Pipe(duplex=False)
            p = ctx.Process(target=client_proc,
                            args=(uri, n, stop_at, min(2.0, args.warmup / 2), args.client, token, b))
            p.start()
            procs.append(p)
            pipes.append(a)
        time.sleep(max(0.0, t_start + args.warmup - time.time()))
        spid = server.pid if server is not None else None
        s_cpu0 = cpu_seconds(spid) if spid else None
        c_cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        t0 = time.time()
        time.sleep(max(0.0, stop_at - time.time()))
        t1 = time.time()
        s_cpu1 = cpu_seconds(spid) if spid else None
        c_cpu1 = sum(cpu_seconds(p.pid) for p in procs)  # not reaped yet: /proc still has their figures
        stats = None
        try:
            http = base.replace("ws://", "http://")
            req = urllib.request.Request(f"{http}/v1/stream/stats", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                stats = json.loads(r.read())
        except OSError:
            pass
        results = [c.recv() for c in pipes]
        for p in procs:
            p.join(timeout=30)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    window_lo = int((t_start + args.warmup) * 1e9)
    lats, missed, ends, per_client_bins = [], 0, {}, []
    for res in results:
        out = res["out"]
        for lat, recv, m, end in zip(out["lat"], out["recv"], out["missed"], out["end"], strict=True):
            keep = recv >= window_lo
            lats.append(lat[keep])
            per_client_bins.append(int(keep.sum()))
            missed += m
            ends[end] = ends.get(end, 0) + 1
    lat_ms = np.concatenate(lats) / 1e6 if lats else np.zeros(0)
    measured = t1 - t0
    report = {
        "clients": args.clients, "client": args.client, "server_nice": args.server_nice,
        "loadavg_1m": round(os.getloadavg()[0], 2), "client_procs": args.client_procs, "speed": args.speed,
        "bin_ms": 100 / args.speed, "measured_s": round(measured, 2),
        "bins_per_client_min": min(per_client_bins, default=0), "bins_per_client_max": max(per_client_bins, default=0),
        "frames": int(lat_ms.size),
        "latency_ms": {q: round(float(np.percentile(lat_ms, p)), 3) if lat_ms.size else None
                       for q, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))},
        "missed_bins": missed, "client_ends": ends,
        "server_cpu_pct": round(100 * (s_cpu1 - s_cpu0) / measured, 1) if s_cpu0 is not None else None,
        "client_cpu_pct": round(100 * (c_cpu1 - c_cpu0) / measured, 1),
        "server_direct_writers": stats["sessions"][0].get("direct_writers") if stats and stats["sessions"] else None,
        "server_skipped": stats["sessions"][0]["skipped"] if stats and stats["sessions"] else None,
        "server_dropped": stats["sessions"][0]["dropped"] if stats and stats["sessions"] else None,
        "pacer_lateness_ms": stats["sessions"][0]["pacer_lateness_ms"] if stats and stats["sessions"] else None,
        "server_all_written_ms": stats["sessions"][0]["all_written_ms"] if stats and stats["sessions"] else None,
    }
    lm = report["latency_ms"]
    print(f"{args.clients} clients, {report['bin_ms']:g} ms bins, {measured:.1f} s measured: "
          f"latency p50 {lm['p50']} / p95 {lm['p95']} / p99 {lm['p99']} / max {lm['max']} ms; "
          f"missed bins {missed}; server CPU {report['server_cpu_pct']} %, clients {report['client_cpu_pct']} %; "
          f"client ends {ends}")
    if ends.get("error"):
        print(f"WARNING: {ends['error']} clients ended with an error message (refused: quota, auth, ...)",
              file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
