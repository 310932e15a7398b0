"""Processes of the live path for tests: the loopback gateway (`qmachina live-gateway`), `qmachina live`, a
private redis-server, and small real-data day files.

Every process runs in its own process group on free ports and is SIGKILLed as a group at the end (the
brief's rule for servers started by tests). `window_file` cuts a real day down to minutes with a
Databento-style snapshot at its head, so the engine's bin count (one per 100 ms of market time) stays small.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_serving.live.book_snapshot import snapshot_records
from qmachina_serving.live.gateway import DEMO_KEY, control

QMACHINA = [sys.executable, "-m", "qmachina_assets.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


@dataclass
class GatewayProc:
    proc: subprocess.Popen
    port: int
    control_port: int
    info: dict

    def control(self, command: str) -> str:
        return control("127.0.0.1", self.control_port, command)

    def status(self) -> dict:
        return json.loads(self.control("status")[3:])

    def clock(self) -> dict:
        return json.loads(self.control("clock")[3:])


@contextlib.contextmanager
def gateway(files: list[Path], *, speed: float = 0, at_end: str = "close", port: int = 0,
            extra: tuple[str, ...] = (), log: Path | None = None) -> Iterator[GatewayProc]:
    """`qmachina live-gateway` as a subprocess; yields once it prints its ports."""
    with gateways([files], speed=speed, at_end=at_end, port=port, extra=extra, logs=[log]) as (gw,):
        yield gw


@contextlib.contextmanager
def gateways(file_sets: list[list[Path]], *, speed: float = 0, at_end: str = "close", port: int = 0,
             extra: tuple[str, ...] = (), logs: list[Path | None] | None = None) -> Iterator[list[GatewayProc]]:
    """Several gateways started together (their start-ups overlap); yields once each printed its ports."""
    procs, errs = [], []
    logs = logs or [None] * len(file_sets)
    try:
        for files, log in zip(file_sets, logs, strict=True):
            args = [*QMACHINA, "live-gateway", *map(str, files), "--speed", str(speed), "--at-end", at_end,
                    "--port", str(port), *extra]
            err = log.open("ab") if log is not None else subprocess.DEVNULL
            errs.append(err)
            procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, cwd=PROJECT_ROOT,
                                          start_new_session=True))
        out = []
        for proc, log in zip(procs, logs, strict=True):
            line = proc.stdout.readline() if proc.stdout else b""
            if not line:
                raise RuntimeError(f"gateway did not start (exit {proc.wait(timeout=10)}); see {log}")
            info = json.loads(line)
            out.append(GatewayProc(proc, info["port"], info["control_port"], info))
        yield out
    finally:
        for proc in procs:
            kill_group(proc)
        for err in errs:
            if err is not subprocess.DEVNULL:
                err.close()


@dataclass
class RedisProc:
    proc: subprocess.Popen
    port: int
    dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        kill_group(self.proc)

    def start(self) -> None:
        self.proc = _spawn_redis(self.port, self.dir)


def _spawn_redis(port: int, d: Path) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(d)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return proc
        time.sleep(0.05)
    kill_group(proc)
    raise RuntimeError(f"redis-server did not start on {port}")


@contextlib.contextmanager
def private_redis(tmp: Path) -> Iterator[RedisProc]:
    """A redis-server of the test's own on a free port (the shared one on 6379 is never stopped)."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    d = tmp / "redis"
    d.mkdir(exist_ok=True)
    port = free_port()
    r = RedisProc(_spawn_redis(port, d), port, d)
    try:
        yield r
    finally:
        r.stop()


def window_file(src: Path, out: Path, start_ns: int, end_ns: int, *, symbol: str | None = None) -> np.ndarray:
    """Write `out`: the book of `src` at `start_ns` as a snapshot, then its records with ts_recv in
    [start_ns, end_ns) (one instrument). Returns the records written."""
    header, recs = dbn.load_mbo(src)
    recs = np.asarray(recs)
    sym = symbol or header.symbols[0]
    iid = next(iter(header.instrument_ids(sym)), int(recs["instrument_id"][0]))
    recs = recs[recs["instrument_id"] == iid]
    ts = recs["ts_recv"].view(np.int64)
    lo, hi = np.searchsorted(ts, start_ns, "left"), np.searchsorted(ts, end_ns, "left")
    snap = snapshot_records(recs[:lo], instrument_id=iid, publisher_id=int(recs["publisher_id"][0]),
                            ts_recv=start_ns)
    body = np.concatenate([snap, recs[lo:hi]])
    day = header.start_date
    mapping = header.mappings.get(sym) or [(day, day + dt.timedelta(days=1), iid)]
    dbn.write_mbo(out, body, dataset=header.dataset, symbols=[sym], start_ns=header.start_ns,
                  end_ns=header.end_ns, mappings={sym: mapping})
    return body


def live_client(port: int, **kw):
    import databento as db

    return db.Live(key=kw.pop("key", DEMO_KEY), gateway="127.0.0.1", port=port, **kw)


@contextlib.contextmanager
def live_process(gateways: list[int], lake: Path, redis_url: str, *extra: str, log: Path | None = None,
                 env_extra: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """`qmachina live` against loopback gateways (ports, in failover order); yields once it printed its start."""
    args = [*QMACHINA, "live", *(a for p in gateways for a in ("--gateway", f"127.0.0.1:{p}")), "--key", DEMO_KEY,
            "--lake", str(lake), "--redis-url", redis_url, *extra]
    env = {**os.environ, **(env_extra or {})}
    env.pop("QMACHINA_REGISTRY_URL", None)
    err = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, cwd=PROJECT_ROOT, env=env,
                            start_new_session=True)
    try:
        line = proc.stdout.readline() if proc.stdout else b""
        if not line:
            raise RuntimeError(f"qmachina live did not start (exit {proc.wait(timeout=10)}); see {log}")
        yield proc
    finally:
        kill_group(proc)
        if log is not None:
            err.close()


@contextlib.contextmanager
def replicas(lake: Path, n: int, access, *, wait: bool = True, **env_extra: str) -> Iterator[list]:
    """`n` serving processes on free ports over the same lake, started together (each in its own group);
    `wait=False` yields at once (call `wait_ready` after starting something else meanwhile)."""
    from tests.support.serving import Server

    env = {**os.environ, "QMACHINA_LAKE_DIR": str(lake), "QMACHINA_SERVING_LOG_LEVEL": "warning", **env_extra}
    env.pop("QMACHINA_REGISTRY_URL", None)
    env.pop("QMACHINA_CONTROL_URL", None)
    procs, servers = [], []
    try:
        for _ in range(n):
            port = free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "qmachina_serving", "--port", str(port)],
                                          cwd=PROJECT_ROOT, env=env, start_new_session=True))
            servers.append(Server(port, lake, "", access))
            servers[-1].proc = procs[-1]
        if wait:
            wait_ready(servers)
        yield servers
    finally:
        for p in procs:
            kill_group(p)


def wait_ready(servers: list) -> None:
    deadline = time.time() + 240
    for srv in servers:
        while True:
            assert srv.proc.poll() is None, f"server exited with {srv.proc.returncode}"
            with contextlib.suppress(OSError):
                if srv.get("/readyz", auth=False)[0] == 200:
                    break
            assert time.time() < deadline, "server not ready"
            time.sleep(0.2)
