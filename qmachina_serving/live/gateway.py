"""The loopback Live gateway: a real TCP server speaking Databento's Live protocol over lake files.

`qmachina live-gateway FILE... --port N [--speed X]` serves the MBO records of FILE... (merged on ts_recv)
to any `databento.Live(gateway=..., port=N)` client, written from the protocol facts in
notes/databento.md §e: greeting, CRAM authentication against the configured keys, subscription lines,
`start_session`, a DBN v3 Metadata header, then records (subscription acks, symbol mappings, snapshot
records for `snapshot=1`, data, heartbeats when idle, `REPLAY_COMPLETED` after an intraday replay).

The market. One clock per gateway process, started by the first `start_session`:
- `--speed X` replays at X times real time on the ts_recv clock; gaps longer than `--skip-idle-s` of market
  time (the overnight hours of a day file) are skipped. Every session sees the same market: records become
  available when the clock reaches them, whoever is connected (a client that is away misses them and must
  replay them with `start=`).
- `--speed 0` sends as fast as each socket takes the bytes; the market is then where the furthest session
  is (a new snapshot subscription starts there).
A session subscribed with `start=T` gets every record of its instruments with ts_event >= T from the
market's history, then follows the market; `snapshot=1` gets the book at the market position (R + A
records, `book_snapshot`) then follows the market; neither: the market from now on.

Faults (the control port, one command per line, answered `ok ...` / `err ...`):
`reset` (RST every session), `stall S` (send nothing, heartbeats included, for S seconds), `refuse_auth N`
(refuse the next N logins; -1: all until `refuse_auth 0`), `error TEXT` (ErrorMsg then close),
`new_session` (drop every session; later sessions get ids of a new epoch), `down` / `up` (stop / resume
listening, sessions dropped), `status`, `clock` (JSON). At the end of the data the gateway keeps the
sessions alive with heartbeats (`--at-end idle`) or sends a last heartbeat at the files' end time and
closes them cleanly (`--at-end close`, the end of a demo or test day).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import databento_dbn as dbnlib
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from qmachina_assets.core.ingest import dbn
from qmachina_serving.live import wire
from qmachina_serving.live.book_snapshot import snapshot_records

log = logging.getLogger("qmachina_serving.live.gateway")

#: The key `qmachina live-gateway` accepts when none is given (the loopback demo's; never a real key).
DEMO_KEY = "db-qmachinaLoopbackDemoKey000001"
AUTH_TIMEOUT_S = 30.0
HEARTBEAT_DEFAULT_S = 30


class GatewayConfig(BaseModel):
    """Everything `qmachina live-gateway` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    files: list[Path] = Field(min_length=1)
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0: a free port (printed at start)")
    control_port: int = Field(0, ge=0, le=65535)
    speed: float = Field(1.0, ge=0, description="x real time on the ts_recv clock; 0: as fast as the socket")
    skip_idle_s: float = Field(5.0, gt=0, description="market-time gaps longer than this are skipped (paced)")
    start_ns: int | None = Field(None, description="the market opens at the first record at/after this ts_recv")
    at_end: str = Field("idle", pattern="^(idle|close)$")
    keys: list[str] = Field(default_factory=lambda: [DEMO_KEY])
    chunk_records: int = Field(65536, ge=1)


class Market:
    """The records of the files (merged on ts_recv) and the shared clock."""

    def __init__(self, files: list[Path], *, speed: float, skip_idle_s: float, start_ns: int | None):
        headers, arrays = [], []
        for f in files:
            h, recs = dbn.load_mbo(f)
            headers.append(h)
            arrays.append(np.asarray(recs))
        datasets = {h.dataset for h in headers}
        if len(datasets) != 1:
            raise ValueError(f"gateway files mix datasets {sorted(datasets)}; expected one")
        self.dataset = datasets.pop()
        recs = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        if len(arrays) > 1:
            recs = recs[np.argsort(recs["ts_recv"], kind="stable")]
        self.records = np.ascontiguousarray(recs)
        self.n = len(self.records)
        self.ts_recv = self.records["ts_recv"].view(np.int64)
        self.ts_event = self.records["ts_event"].view(np.int64)
        self.iid = self.records["instrument_id"].astype(np.int64)
        self.symbols: dict[str, int] = {}
        for h in headers:
            for sym, ivs in h.mappings.items():
                for _, _, iid in ivs:
                    self.symbols.setdefault(sym, iid)
            if not h.mappings and len(h.symbols) == 1 and self.n:
                self.symbols.setdefault(h.symbols[0], int(self.iid[0]))
        self.publisher: dict[int, int] = {}
        for iid in np.unique(self.iid):
            self.publisher[int(iid)] = int(self.records["publisher_id"][np.argmax(self.iid == iid)])
        self.end_ns = max((h.end_ns or 0) for h in headers) or (int(self.ts_recv[-1]) + 1 if self.n else 0)
        self.speed = float(speed)
        self.first = 0 if start_ns is None else int(np.searchsorted(self.ts_recv, int(start_ns), side="left"))
        gaps = np.diff(self.ts_recv, prepend=self.ts_recv[:1]) if self.n else np.zeros(0, np.int64)
        excess = np.maximum(gaps - int(skip_idle_s * 1e9), 0)
        self.eff = self.ts_recv - np.cumsum(excess)  # market time with the idle gaps removed
        self.wall0: float | None = None  # monotonic time the clock started
        self.wall0_unix_ns: int | None = None
        self.position = self.first  # as-fast mode: furthest position delivered by any session

    @property
    def paced(self) -> bool:
        return self.speed > 0

    def start_clock(self) -> None:
        if self.wall0 is None:
            self.wall0 = time.monotonic()
            self.wall0_unix_ns = time.time_ns()

    def _eff0(self) -> int:
        return int(self.eff[self.first]) if self.first < self.n else (int(self.eff[-1]) if self.n else 0)

    def _eff_now(self) -> float:
        assert self.wall0 is not None
        return self._eff0() + (time.monotonic() - self.wall0) * self.speed * 1e9

    def due(self) -> int:
        """Records [0, due) are published now."""
        if not self.paced:
            return self.n
        if self.wall0 is None:
            return self.first
        return max(self.first, int(np.searchsorted(self.eff, self._eff_now(), side="right")))

    def market_position(self) -> int:
        return self.due() if self.paced else self.position

    def now_ns(self) -> int:
        """Market time on the ts_recv clock (heartbeats, snapshots, session start)."""
        pos = self.market_position()
        if pos == 0:
            return int(self.ts_recv[0]) if self.n else time.time_ns()
        last = int(self.ts_recv[pos - 1])
        if self.paced and self.wall0 is not None:
            ahead = int(self._eff_now() - float(self.eff[pos - 1]))
            if pos < self.n:
                ahead = min(ahead, int(self.ts_recv[pos]) - last - 1)
            return last + max(0, ahead)
        return last

    def wall_at(self, pos: int) -> float:
        """Monotonic time record `pos` is due (paced)."""
        assert self.wall0 is not None
        return self.wall0 + (float(self.eff[pos]) - self._eff0()) / (self.speed * 1e9)

    def clock(self) -> dict[str, Any]:
        return {"speed": self.speed, "paced": self.paced, "records": self.n, "first": self.first,
                "position": self.market_position(), "market_ns": self.now_ns() if self.n else None,
                "wall0_unix_ns": self.wall0_unix_ns,
                "eff0_ns": self._eff0() if self.n else None,
                "eff0_ts_recv_ns": int(self.ts_recv[self.first]) if self.first < self.n else None}


@dataclass
class Subscription:
    sub_id: int
    symbols: list[str]
    start_ns: int | None
    snapshot: bool
    schema: str = "mbo"


@dataclass
class Faults:
    refuse_auth: int = 0  # >0: refuse that many logins; <0: refuse every login
    epoch: int = 0
    sessions_started: int = 0


class AuthRefused(Exception):
    pass


@dataclass(eq=False)
class GatewaySession:
    """One client connection."""

    gateway: Gateway
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    session_id: str = ""
    heartbeat_s: float = HEARTBEAT_DEFAULT_S
    stalled_until: float = 0.0
    pending: list[Subscription] = field(default_factory=list)
    closed: bool = False
    sent_records: int = 0
    # active instruments: iid -> (from position, min ts_event)
    active: dict[int, tuple[int, int]] = field(default_factory=dict)
    cursor: int = 0
    replaying: bool = False  # a start= replay that has not caught up with the market yet
    task: asyncio.Task[None] | None = None

    @property
    def peer(self) -> str:
        return str(self.writer.get_extra_info("peername"))

    async def run(self) -> None:
        g = self.gateway
        w = self.writer
        challenge = wire.new_challenge()
        w.write(wire.format_line(lsg_version=wire.LSG_VERSION))
        w.write(wire.format_line(cram=challenge))
        await w.drain()
        line = await asyncio.wait_for(self.reader.readline(), AUTH_TIMEOUT_S)
        req = wire.parse_line(line)
        problem = self._auth_problem(challenge, req)
        if problem:
            w.write(wire.format_line(success=0, error=problem))
            await w.drain()
            log.info("refused login from %s: %s", self.peer, problem)
            raise AuthRefused(problem)
        g.faults.sessions_started += 1
        self.session_id = f"qm{g.faults.epoch}-{g.faults.sessions_started}"
        if req.get("heartbeat_interval_s"):
            self.heartbeat_s = float(req["heartbeat_interval_s"])
        w.write(wire.format_line(success=1, session_id=self.session_id))
        await w.drain()
        started = False
        while not started:
            line = await self.reader.readline()
            if not line:
                return
            msg = wire.parse_line(line)
            if "start_session" in msg:
                started = True
            elif "schema" in msg:
                self._add_subscription(msg)
        g.market.start_clock()
        listener = asyncio.create_task(self._read_more())
        try:
            await self._stream()
        finally:
            listener.cancel()

    def _auth_problem(self, challenge: str, req: dict[str, str]) -> str | None:
        g = self.gateway
        if g.faults.refuse_auth:
            if g.faults.refuse_auth > 0:
                g.faults.refuse_auth -= 1
            return "Authentication failed."
        if not wire.check_cram(challenge, req.get("auth", ""), g.config.keys):
            return "Authentication failed."
        if req.get("dataset") != g.market.dataset:
            return f"Unknown dataset {req.get('dataset')!r}; this gateway serves {g.market.dataset}"
        if req.get("encoding", "dbn") != "dbn":
            return f"Unsupported encoding {req.get('encoding')!r}; this gateway sends dbn"
        if req.get("compression", "none") != "none":
            return f"Unsupported compression {req.get('compression')!r}; this gateway sends none"
        if req.get("ts_out", "0") != "0":
            return "ts_out=1 is not supported by this gateway"
        return None

    def _add_subscription(self, msg: dict[str, str]) -> None:
        start = msg.get("start")
        start_ns = int(start) if start else None
        symbols = [s for s in msg.get("symbols", "").split(",") if s]
        sub_id = int(msg.get("id") or 0)
        for s in self.pending:  # batches of one request (is_last=0) extend it
            if s.sub_id == sub_id and s.start_ns == start_ns and s.schema == msg.get("schema"):
                s.symbols.extend(symbols)
                return
        self.pending.append(Subscription(sub_id, symbols, start_ns, msg.get("snapshot") == "1",
                                         msg.get("schema", "")))

    async def _read_more(self) -> None:
        """Subscriptions after start_session (a roll): applied by the sender at its next step."""
        with contextlib.suppress(Exception):
            while True:
                line = await self.reader.readline()
                if not line:
                    return
                msg = wire.parse_line(line)
                if "schema" in msg:
                    self._add_subscription(msg)

    def _resolve(self, sub: Subscription) -> tuple[list[tuple[str, int]], list[str]]:
        m = self.gateway.market
        if sub.symbols == ["ALL_SYMBOLS"]:
            return sorted(m.symbols.items()), []
        found = [(s, m.symbols[s]) for s in sub.symbols if s in m.symbols]
        return found, [s for s in sub.symbols if s not in m.symbols]

    def _apply_pending(self, out: list[bytes], initial: bool) -> None:
        """Acks, symbol mappings and snapshots of new subscriptions; activates their instruments from the
        session's position (a `start=` replay only in the subscriptions sent before start_session, as the
        real gateway: later subscriptions are not replayed)."""
        m = self.gateway.market
        pos = self.cursor
        now = m.now_ns()
        day = dt.datetime.fromtimestamp(now / 1e9, dt.UTC).date()
        subs, self.pending = self.pending, []
        cursor = pos
        for sub in subs:
            if sub.schema != "mbo":
                out.append(wire.error(now, f"Unsupported schema {sub.schema!r}; this gateway serves mbo",
                                      dbnlib.ErrorCode.INVALID_SUBSCRIPTION))
                continue
            out.append(wire.system(now, f"Subscription request {sub.sub_id} for mbo data succeeded",
                                   dbnlib.SystemCode.SUBSCRIPTION_ACK))
            found, missing = self._resolve(sub)
            if missing:
                out.append(wire.error(now, f"Failed to resolve symbol(s): {', '.join(missing)}",
                                      dbnlib.ErrorCode.SYMBOL_RESOLUTION_FAILED))
            for sym, iid in found:
                out.append(wire.symbol_mapping(now, m.publisher.get(iid, 1), iid, sym, day))
            for _, iid in found:
                if initial and sub.start_ns is not None:
                    lo = 0 if sub.start_ns == 0 else int(np.searchsorted(m.ts_recv, sub.start_ns - 10**9, "left"))
                    self.active[iid] = (lo, int(sub.start_ns))
                    cursor = min(cursor, lo)
                    self.replaying = True
                else:
                    self.active[iid] = (pos, 0)
                    if sub.snapshot:
                        out.append(self._snapshot(iid, pos, now))
        self.cursor = cursor

    def _snapshot(self, iid: int, pos: int, now: int) -> bytes:
        m = self.gateway.market
        prefix = m.records[:pos]
        mine = prefix[m.iid[:pos] == iid]
        if not len(mine):
            return b""  # nothing has happened to this instrument yet: no book to send
        snap = snapshot_records(mine, instrument_id=iid, publisher_id=m.publisher.get(iid, 1), ts_recv=now,
                                channel_id=int(mine["channel_id"][-1]))
        return snap.tobytes()

    def _select(self, lo: int, hi: int) -> bytes:
        m = self.gateway.market
        ids = m.iid[lo:hi]
        keep = np.zeros(hi - lo, dtype=bool)
        idx = np.arange(lo, hi)
        for iid, (from_pos, min_te) in self.active.items():
            sel = ids == iid
            sel &= idx >= from_pos
            if min_te:
                sel &= m.ts_event[lo:hi] >= min_te
            keep |= sel
        n = int(keep.sum())
        self.sent_records += n
        if n == hi - lo:
            return m.records[lo:hi].tobytes()
        return m.records[lo:hi][keep].tobytes() if n else b""

    async def _stream(self) -> None:
        g = self.gateway
        m = g.market
        w = self.writer
        self.cursor = m.market_position()
        w.write(wire.session_metadata(m.dataset, m.now_ns()))
        out: list[bytes] = []
        self._apply_pending(out, initial=True)
        last_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now < self.stalled_until:
                await asyncio.sleep(self.stalled_until - now)
                continue
            if self.pending:
                self._apply_pending(out, initial=False)
            due = min(m.due(), self.cursor + g.config.chunk_records)
            if self.cursor < due:
                out.append(self._select(self.cursor, due))
                self.cursor = due
                if not m.paced:
                    m.position = max(m.position, self.cursor)
            if self.replaying and self.cursor >= m.market_position():
                out.append(wire.system(m.now_ns(), "Replay completed", dbnlib.SystemCode.REPLAY_COMPLETED))
                self.replaying = False
            data = b"".join(out)
            out = []
            if data:
                w.write(data)
                await w.drain()
                last_send = time.monotonic()
                continue
            if self.cursor >= m.n and g.config.at_end == "close":
                w.write(wire.heartbeat(max(m.end_ns, m.now_ns())))
                await w.drain()
                w.write_eof()
                await asyncio.sleep(0.05)
                w.close()
                return
            now = time.monotonic()
            if now - last_send >= self.heartbeat_s:
                w.write(wire.heartbeat(m.now_ns()))
                await w.drain()
                last_send = now
                continue
            wake = last_send + self.heartbeat_s
            if m.paced and self.cursor < m.n and m.wall0 is not None:
                wake = min(wake, m.wall_at(self.cursor))
            elif not m.paced and self.cursor < m.n:
                wake = now + 0.0005  # another session leads the market: follow it
            await asyncio.sleep(max(0.0, min(wake - now, 0.25)))

    def abort(self) -> None:
        """Drop the connection with a TCP RST (an error disconnect for the client)."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    def send_error(self, text: str) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(wire.error(self.gateway.market.now_ns(), text))
        self.writer.close()


class Gateway:
    """The TCP server, its sessions, the market and the control port."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.market = Market(config.files, speed=config.speed, skip_idle_s=config.skip_idle_s,
                             start_ns=config.start_ns)
        self.faults = Faults()
        self.sessions: set[GatewaySession] = set()
        self.server: asyncio.base_events.Server | None = None
        self.control: asyncio.base_events.Server | None = None
        self.port = config.port
        self.control_port = config.control_port
        self.refused = 0

    async def start(self) -> None:
        await self._listen()
        self.control = await asyncio.start_server(self._control, self.config.host, self.control_port)
        self.control_port = self.control.sockets[0].getsockname()[1]

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._client, self.config.host, self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sess = GatewaySession(self, reader, writer)
        self.sessions.add(sess)
        sess.task = asyncio.current_task()
        try:
            await sess.run()
        except AuthRefused:
            self.refused += 1
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self.sessions.discard(sess)
            with contextlib.suppress(Exception):
                writer.close()

    def reset_all(self) -> int:
        n = 0
        for s in list(self.sessions):
            s.abort()
            if s.task is not None:
                s.task.cancel()
            n += 1
        return n

    async def command(self, line: str) -> str:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "reset":
            return f"ok reset {self.reset_all()}"
        if cmd == "stall":
            until = time.monotonic() + float(arg)
            for s in self.sessions:
                s.stalled_until = until
            return f"ok stall {len(self.sessions)}"
        if cmd == "refuse_auth":
            self.faults.refuse_auth = int(arg or -1)
            return f"ok refuse_auth {self.faults.refuse_auth}"
        if cmd == "error":
            for s in list(self.sessions):
                s.send_error(arg or "gateway error")
            return f"ok error {len(self.sessions)}"
        if cmd == "new_session":
            self.faults.epoch += 1
            return f"ok new_session {self.reset_all()}"
        if cmd == "down":
            if self.server is not None:
                self.server.close()
                self.server = None
            return f"ok down {self.reset_all()}"
        if cmd == "up":
            if self.server is None:
                await self._listen()
            return f"ok up {self.port}"
        if cmd == "status":
            return "ok " + json.dumps({"port": self.port, "sessions": sorted(s.session_id for s in self.sessions),
                                       "refused": self.refused, "listening": self.server is not None,
                                       "sent": {s.session_id: s.sent_records for s in self.sessions}})
        if cmd == "clock":
            return "ok " + json.dumps(self.market.clock())
        return f"err unknown command {cmd!r} (reset, stall S, refuse_auth N, error TEXT, new_session, down, up, " \
               "status, clock)"

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = await self.command(line.decode())
                except Exception as exc:  # a bad argument: tell the caller, keep serving
                    reply = f"err {type(exc).__name__}: {exc}"
                writer.write((reply + "\n").encode())
                await writer.drain()
        finally:
            writer.close()

    def describe(self) -> dict[str, Any]:
        m = self.market
        return {"event": "listening", "host": self.config.host, "port": self.port, "control_port": self.control_port,
                "dataset": m.dataset, "records": m.n, "symbols": m.symbols, "speed": m.speed, "pid": os.getpid()}


async def serve(config: GatewayConfig) -> None:
    gw = Gateway(config)
    await gw.start()
    print(json.dumps(gw.describe()), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    gw.reset_all()


def control(host: str, port: int, command: str, timeout: float = 10.0) -> str:
    """Send one control command to a running gateway; its reply (`ok ...`), or RuntimeError on `err ...`."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(command.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply = buf.decode().strip()
    if not reply.startswith("ok"):
        raise RuntimeError(f"gateway {host}:{port} refused {command!r}: {reply}")
    return reply


def _ns(text: str | None) -> int | None:
    """ns since the epoch from digits or an ISO time (UTC when it names no zone)."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    t = dt.datetime.fromisoformat(text)
    return int((t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp() * 1_000_000) * 1000


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    keys = args.key or [k for k in os.environ.get("QMACHINA_GATEWAY_KEYS", "").split(",") if k] or [DEMO_KEY]
    return GatewayConfig(files=args.files, host=args.host, port=args.port, control_port=args.control_port,
                         speed=args.speed, skip_idle_s=args.skip_idle_s, start_ns=_ns(args.start),
                         at_end=args.at_end, keys=keys)


def main_with(args: argparse.Namespace) -> int:
    """`qmachina live-gateway` (the CLI parses the arguments)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gateway %(levelname)s %(message)s", stream=sys.stderr)
    asyncio.run(serve(config_from_args(args)))
    return 0
