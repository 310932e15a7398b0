"""`qmachina live`: Databento Live MBO -> the silver engine -> every active alias's frames -> Redis Streams.

One long-running process (no Dagster import on its path):
- `databento.Live` (the official client; `gateway=`/`port=` for the loopback gateway or a failover list,
  Databento's own gateway otherwise, key from `DATABENTO_API_KEY`) subscribes the locked instrument's
  front contract, MBO with `snapshot=True`. The client's callback only appends each MBO record's 56 bytes to
  a list; the main thread takes the list every few ms, so the engine sees numpy batches.
- Every record goes, in arrival order, into `DayCapture` (the raw DBN file of the UTC day, `capture.py`) and
  into one `Engine` per distinct engine runtime of the served aliases (the object silver uses: the bins equal
  `qmachina silver` on the captured file, bit for bit). `--silver-out DIR` also writes the lock's engine's
  bins as `bins.parquet`/`grid.parquet` (research, and the parity test).
- Each active alias of the workspace (or the `--alias` list) gets its model's frames (`replay.shaper_for`:
  the same encoder the replay uses) published once per bin to its Redis Stream (`channel.py`).
- Disconnects: the client runs without its own reconnect policy (it re-subscribes without `start=`, so it
  cannot repair a gap); this loop reconnects with a capped, jittered exponential backoff and subscribes with
  an intraday replay from the last ts_event (minus `replay_margin_s`), dropping every record already seen
  (exact: the feed is in ts_recv order; at the last ts_recv the seen records are remembered byte for byte),
  so the engine and the capture see every record exactly once. A silence longer than
  `stall_factor` x the heartbeat interval is a stall (detected here, well before the client's own
  interval + 10 s timeout) and handled as a disconnect.
- Failover: `--gateway` may be given several times (ordered); after `failover_after` failed attempts on one
  the next is tried; while not on the first, the first is probed every `primary_probe_s` and the run moves
  back (with a replay, no gap) once it answers.
- State: a `live_sessions` row (`state.py`) with status and checkpoint (last sequence and ts_event),
  updated about once a second; `qmachina live status` prints the recent rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from qmachina_assets.core.engine import silver
from qmachina_assets.core.engine.engine import Engine, SilverChunk
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.instrument import InstrumentConfig, locked_instrument
from qmachina_assets.core.paths import lake_root
from qmachina_serving.live import wire
from qmachina_serving.live.capture import DayCapture, day_of, gap_clear
from qmachina_serving.live.channel import Publisher
from qmachina_serving.live.state import LiveSessions
from qmachina_serving.stream.protocol import CLOSE_CODES
from qmachina_serving.stream.replay import shaper_for
from qmachina_serving.stream.source import RegistrySource, ServedVersion

log = logging.getLogger("qmachina_serving.live")

DATABENTO_PORT = 13000
START_GRACE_S = 10.0


class LiveConfig(BaseModel):
    """Everything `qmachina live` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gateways: list[str] = Field(default_factory=list, description="host:port, in failover order; empty: "
                                                                  "Databento's gateway for the dataset")
    key: str | None = Field(None, repr=False, description="API key (default: $DATABENTO_API_KEY)")
    symbol: str | None = Field(None, description="contract to subscribe (default: the lock's front contract)")
    workspace: str = "default"
    aliases: list[str] | None = Field(None, description="aliases to publish (default: every alias of the "
                                                        "workspace; []: none, capture and engine only)")
    lake: Path | None = None
    registry_url: str | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    maxlen: int = Field(20_000, ge=10, description="entries kept per alias stream (approximate MAXLEN)")
    heartbeat_interval_s: int = Field(5, ge=1)
    stall_factor: float = Field(1.5, gt=1.0, le=2.0, description="silence of this many heartbeat intervals "
                                                                  "is a stall")
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_cap_s: float = Field(15.0, gt=0)
    failover_after: int = Field(3, ge=1, description="failed attempts on a gateway before the next one")
    primary_probe_s: float = Field(5.0, gt=0)
    replay_margin_s: float = Field(1.0, ge=0, description="the replay after a reconnect starts this much "
                                                          "before the last ts_event (records seen are dropped)")
    max_replay_s: float = Field(23 * 3600.0, gt=0, description="a disconnection longer than this (wall time since "
                                "the last record) cannot be replayed: re-snapshot and report the gap")
    batch_s: float = Field(0.002, gt=0, description="the main thread takes the received records this often")
    at_close: str = Field("reconnect", pattern="^(reconnect|exit)$",
                          description="a clean end of session from the gateway: reconnect, or end the run "
                                      "(flush the engine, close the day's capture file)")
    silver_out: Path | None = None
    run_id: str | None = None


def backoff_s(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Capped exponential backoff with full jitter in its upper half: attempt 1 -> [base/2, base]."""
    top = min(cap, base * (2 ** max(0, attempt - 1)))
    return rng.uniform(top / 2, top)


@dataclass
class AliasFeed:
    """One served alias: its version, frame encoder and engine runtime."""

    alias: str
    version: ServedVersion
    shaper: Any
    engine_key: str


@dataclass
class Inbox:
    """What the client's callback thread hands the main thread (under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    records: list[bytes] = field(default_factory=list)
    mappings: list[tuple[int, int, str]] = field(default_factory=list)  # (records before it, iid, symbol)
    errors: list[str] = field(default_factory=list)
    heartbeats: int = 0
    messages: int = 0
    last_msg: float = field(default_factory=time.monotonic)
    wake: threading.Event = field(default_factory=threading.Event)


class Dedupe:
    """Drops records already seen after a replay (the feed is in ts_recv order)."""

    def __init__(self) -> None:
        self.last_ts_recv = -1
        self.at_last: set[bytes] = set()

    def filter(self, recs: np.ndarray) -> np.ndarray:
        if not len(recs) or self.last_ts_recv < 0:
            return recs
        ts = recs["ts_recv"].view(np.int64)
        keep = ts > self.last_ts_recv
        eq = np.flatnonzero(ts == self.last_ts_recv)
        if len(eq):
            raw = recs.view(np.uint8).reshape(len(recs), -1) if recs.flags.c_contiguous else None
            for i in eq:
                b = raw[i].tobytes() if raw is not None else recs[i:i + 1].tobytes()
                keep[i] = b not in self.at_last
        return recs if keep.all() else recs[keep]

    def seen(self, recs: np.ndarray) -> None:
        if not len(recs):
            return
        ts = recs["ts_recv"].view(np.int64)
        top = int(ts.max())
        if top > self.last_ts_recv:
            self.last_ts_recv = top
            self.at_last = set()
        for i in np.flatnonzero(ts == self.last_ts_recv):
            self.at_last.add(recs[i:i + 1].tobytes())


class SilverSink:
    """`--silver-out`: the lock's engine's bins as Parquet (written as they close; renamed at the end)."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self._ctx = contextlib.ExitStack()
        self.tb = self._ctx.enter_context(dbn.atomic_path(out / "bins.parquet"))
        self.tg = self._ctx.enter_context(dbn.atomic_path(out / "grid.parquet"))
        self.wb = pq.ParquetWriter(self.tb, silver.bins_schema())
        self.wg = pq.ParquetWriter(self.tg, silver.grid_schema())

    def write(self, chunk: SilverChunk) -> None:
        if chunk.n_bins:
            self.wb.write_table(chunk.bins_table())
            self.wg.write_table(chunk.grid_table())

    def close(self) -> None:
        self.wb.close()
        self.wg.close()
        self._ctx.close()


class Stop(Exception):
    pass


class LiveRunner:
    """The `qmachina live` process (see the module docstring)."""

    def __init__(self, config: LiveConfig, instrument: InstrumentConfig | None = None):
        self.cfg = config
        self.instrument = instrument or locked_instrument()
        self.lake = config.lake or lake_root()
        self.run_id = config.run_id or "lv_" + uuid.uuid4().hex[:12]
        self.key = config.key or os.environ.get("DATABENTO_API_KEY")
        if not self.key:
            raise ValueError("qmachina live: no API key (set DATABENTO_API_KEY or pass --key)")
        # the lock's roll rule picks the front contract (the lock's `symbol` without a rule); it is followed
        # across rolls during the run
        self.symbol = config.symbol or self.instrument.front_contract(time.time_ns())
        self.instrument.check_lock(source="qmachina live --symbol", symbols=[self.symbol])
        self.dataset = self.instrument.dataset
        self.gateways: list[tuple[str | None, int]] = [_hostport(g) for g in config.gateways] or [(None,
                                                                                                 DATABENTO_PORT)]
        self.rng = random.Random()
        self.stop_event = threading.Event()
        self.state = LiveSessions(config.registry_url, self.lake)
        self.publisher = Publisher(config.redis_url, maxlen=config.maxlen)
        self.feeds: list[AliasFeed] = []
        self.engines: dict[str, Engine] = {}
        self.runtimes: dict[str, InstrumentConfig] = {}
        self.lock_engine_key = self.instrument.config_version
        self.dedupe = Dedupe()
        self.capture: DayCapture | None = None
        self.silver_sink = SilverSink(config.silver_out / self.symbol) if config.silver_out else None
        self._live: Any = None
        self._rolling: str | None = None  # the contract subscribed for a roll, until its mapping arrives
        self.rolls: list[dict[str, Any]] = []
        self.instrument_id: int | None = None
        self.inbox = Inbox()
        self.gw_index = 0
        self.session_id: str | None = None
        self.records = 0
        self.bins = 0
        self.reconnects = 0
        self.gaps = 0
        self.stalls: list[float] = []  # seconds of silence at each stall detection
        self._publisher_id = 1
        self._last_ts_recv_seen = -1
        self._last_rx = 0.0  # wall time the last record was ingested (the replay window check)
        self._gap: dict[str, Any] | None = None  # a gap waiting for its end (the first record after it)
        self._t_first: float | None = None  # monotonic time of the first / last ingested batch (ingest rate)
        self._t_last = 0.0
        self.last_ts_event: int | None = None
        self.last_sequence: int | None = None
        self.last_error: str | None = None
        self.started_at = dt.datetime.now(dt.UTC)
        self._last_state = 0.0
        self._last_sync = 0.0
        self._day: dt.date | None = None

    # ---- set-up ------------------------------------------------------------------------------------
    def load_aliases(self) -> None:
        """Resolve the served aliases (every alias of the workspace unless listed) and their engines."""
        source = RegistrySource(self.cfg.registry_url, self.lake, self.instrument)
        names = self.cfg.aliases
        if names is None:
            from qmachina_assets.core.registry import Registry

            reg = Registry(url=self.cfg.registry_url, lake=self.lake, instrument=self.instrument)
            try:
                names = [a.name for a in reg.list_aliases(self.cfg.workspace)]
            finally:
                reg.close()
        feeds = []
        for name in names:
            try:
                version = source.resolve(name, self.cfg.workspace)
                shaper = shaper_for(version)
            except Exception as exc:  # one unservable alias must not stop the others
                log.warning("alias %s is not published live: %s", name, exc)
                continue
            key = version.runtime.config_version
            self.runtimes.setdefault(key, version.runtime)
            feeds.append(AliasFeed(name, version, shaper, key))
        source.close()
        self.feeds = feeds
        self.runtimes.setdefault(self.lock_engine_key, self.instrument)
        self.engines = {k: Engine(rt) for k, rt in self.runtimes.items()}
        log.info("publishing %d alias(es): %s", len(feeds), ", ".join(f.alias for f in feeds) or "none")

    def hello(self, feed: AliasFeed) -> dict[str, Any]:
        v = feed.version
        day = self._day or dt.datetime.now(dt.UTC).date()
        # `source: "live"`: the viewer's LIVE badge, and a runtime_config that may be replaced on the connection
        return {**v.runtime_config, "source": "live",
                "replay": {"session_id": self.run_id, "symbol": self.symbol, "date": day.isoformat(), "speed": 1,
                           "cell_width_ms": int(v.runtime.cell_width_ms), "end": "data", "start_ns": None,
                           "end_ns": None, "dates_with_data": []},
                "live": {"run_id": self.run_id, "symbol": self.symbol, "dataset": self.dataset,
                         "alias": feed.alias, "workspace": self.cfg.workspace,
                         "started_at": self.started_at.isoformat(timespec="seconds")},
                "stream_contract": {"version": 1, "close_codes": {str(int(k)): d for k, d in CLOSE_CODES.items()}}}

    def publish_configs(self) -> None:
        for f in self.feeds:
            self.publisher.set_config(self.cfg.workspace, f.alias, self.hello(f))

    # ---- the client --------------------------------------------------------------------------------
    def _on_record(self, rec: Any) -> None:
        """The client's callback (its event-loop thread): as little as possible per record."""
        box = self.inbox
        if type(rec) is _MBO:  # the hot path: no clock read, no wake-up (the main thread takes them every batch_s)
            b = bytes(rec)
            with box.lock:
                box.records.append(b)
            return
        if type(rec) is _SYSTEM:
            if rec.is_heartbeat():
                box.heartbeats += 1
        elif type(rec) is _MAPPING:
            with box.lock:
                box.mappings.append((len(box.records), int(rec.instrument_id), str(rec.stype_out_symbol)))
        elif type(rec) is _ERROR:
            with box.lock:
                box.errors.append(str(rec.err))
        box.messages += 1
        box.last_msg = time.monotonic()
        box.wake.set()

    def _open(self, gateway: tuple[str | None, int], start_ns: int | None) -> Any:
        import databento as db

        host, port = gateway
        live = db.Live(key=self.key, gateway=host, port=port, heartbeat_interval_s=self.cfg.heartbeat_interval_s)
        live.add_callback(self._on_record)
        if start_ns is None:
            live.subscribe(dataset=self.dataset, schema="mbo", symbols=[self.symbol], snapshot=True)
        else:
            live.subscribe(dataset=self.dataset, schema="mbo", symbols=[self.symbol], start=int(start_ns))
        self.inbox.last_msg = time.monotonic()
        live.start()
        return live

    def replay_start(self) -> int | None:
        """Where a reconnection's replay starts (None: nothing seen yet, a snapshot subscription)."""
        if self.last_ts_event is None:
            return None
        return max(1, self.last_ts_event - int(self.cfg.replay_margin_s * 1e9))

    def run(self) -> int:
        """Connect, stream, reconnect and fail over until stopped (SIGTERM/SIGINT) or the data ends."""
        self.state.start(self.run_id, dataset=self.dataset, symbol=self.symbol,
                         detail={"gateways": self.cfg.gateways, "workspace": self.cfg.workspace})
        status = "failed"
        try:
            self.load_aliases()
            self.publish_configs()
            status = self._loop()
        except Stop:
            status = "stopped"
        except BaseException as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("live run failed")
            raise
        finally:
            self._finish(status)
        return 0 if status == "stopped" else 1

    def _loop(self) -> str:
        failures = 0  # consecutive failed attempts on the current gateway
        attempt = 0  # consecutive failed attempts overall (backoff)
        while not self.stop_event.is_set():
            gw = self.gateways[self.gw_index]
            start = self.replay_start()
            if start is not None and time.time() - self._last_rx > self.cfg.max_replay_s:
                self._unrepairable(f"disconnected for {time.time() - self._last_rx:.1f} s, more than the replay "
                                   f"window ({self.cfg.max_replay_s:g} s)")
                start = None
            elif start is not None and self._gap is None:
                self._gap = {"start_ns": self.dedupe.last_ts_recv, "end_ns": None, "repaired": True,
                             "records_missed": 0}
            try:
                live = self._open(gw, start)
            except Exception as exc:
                failures += 1
                attempt += 1
                self.last_error = f"{_gw_name(gw)}: {exc}"
                hint = " (check the API key: DATABENTO_API_KEY or --key)" if "auth" in str(exc).lower() else ""
                log.error("connection to %s failed (attempt %d): %s%s", _gw_name(gw), attempt, exc, hint)
                if failures >= self.cfg.failover_after and len(self.gateways) > 1:
                    self.gw_index = (self.gw_index + 1) % len(self.gateways)
                    failures = 0
                    log.warning("failing over to %s", _gw_name(self.gateways[self.gw_index]))
                self._save_state("starting" if not self.records else "active", force=True)
                self._sleep(backoff_s(attempt, self.cfg.backoff_base_s, self.cfg.backoff_cap_s, self.rng))
                continue
            failures = 0
            records_before = self.records
            self.session_id = str(getattr(live, "session_id", None) or "")
            log.info("streaming from %s (session %s, %s)", _gw_name(gw), self.session_id,
                     "snapshot" if start is None else f"replay from {start}")
            outcome = self._pump(live)
            if outcome == "end" and self.cfg.at_close == "exit":
                return "stopped"
            if self.stop_event.is_set():
                break
            self.reconnects += 1
            if self.records > records_before:
                attempt = 0  # the session delivered: the backoff starts over (one that fails at once keeps growing it)
            if outcome == "failback":
                self.gw_index = 0
                continue
            attempt += 1
            self._sleep(backoff_s(attempt, self.cfg.backoff_base_s, self.cfg.backoff_cap_s, self.rng))
        return "stopped"

    def _pump(self, live: Any) -> str:
        """Feed what the client receives until the session ends: "end" (clean close), "error" (disconnect,
        stall, error message), "failback" (the first gateway answers again) or "stop"."""
        closed = threading.Event()
        outcome: dict[str, Any] = {}

        def watch() -> None:
            try:
                live.block_for_close()
            except Exception as exc:
                outcome["error"] = exc
            closed.set()
            self.inbox.wake.set()

        threading.Thread(target=watch, name="live-close-watch", daemon=True).start()
        self._live = live
        self._rolling = None  # a roll not completed on the previous session starts again on this one
        stall_s = self.cfg.stall_factor * self.cfg.heartbeat_interval_s
        opened_at = self.inbox.messages
        next_probe = time.monotonic() + self.cfg.primary_probe_s
        self._save_state("active", force=True)
        while True:
            self.inbox.wake.wait(self.cfg.batch_s if not closed.is_set() else 0)
            self.inbox.wake.clear()
            time.sleep(self.cfg.batch_s)  # let a batch accumulate (one engine call per batch, not per record)
            self._drain()
            if closed.is_set():
                self._drain()
                err = outcome.get("error")
                if err is None:
                    log.info("the gateway ended the session")
                    return "end"
                self.last_error = f"disconnected: {err}"
                log.warning("session lost: %s", err)
                return "error"
            now = time.monotonic()
            # until the session's first message, the gateway gets START_GRACE_S (it may build a snapshot)
            limit = stall_s if self.inbox.messages > opened_at else max(stall_s, START_GRACE_S)
            if now - self.inbox.last_msg > limit:
                self.stalls.append(round(now - self.inbox.last_msg, 3))
                self.last_error = f"stall: no message for {now - self.inbox.last_msg:.1f} s " \
                                  f"(heartbeat interval {self.cfg.heartbeat_interval_s} s)"
                log.warning("%s; reconnecting", self.last_error)
                _terminate(live)
                self._drain()
                return "error"
            if self.stop_event.is_set():
                _terminate(live)
                self._drain()
                return "stop"
            if self.gw_index != 0 and now >= next_probe:
                next_probe = now + self.cfg.primary_probe_s
                if _answers(self.gateways[0], self.key, self.dataset):
                    log.info("the first gateway %s answers again: moving back", _gw_name(self.gateways[0]))
                    _terminate(live)
                    self._drain()
                    return "failback"
            self._save_state("active")

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stop_event.is_set() and time.monotonic() < end:
            self.stop_event.wait(min(0.1, end - time.monotonic()))
            self._save_state(None)

    # ---- gaps --------------------------------------------------------------------------------------
    def _unrepairable(self, why: str) -> None:
        """The feed lost records it cannot replay: clear the book (the capture's marker record, fed to the engines
        as silver will read it) and start again from a snapshot; the gap is reported when the feed resumes."""
        log.error("unrepairable gap: %s; re-anchoring from a snapshot", why)
        self._gap = {"start_ns": self.dedupe.last_ts_recv, "end_ns": None, "repaired": False, "records_missed": None,
                     "reason": why}
        if self.capture is not None and self.instrument_id is not None and self.last_ts_event is not None:
            marker = gap_clear(self.instrument_id, self._publisher_id, self.dedupe.last_ts_recv, self.last_ts_event)
            self.capture.append(marker)
            self.records += 1
            self._feed(marker)
        self.last_ts_event = None  # the next subscription is a snapshot
        self.dedupe = Dedupe()

    def _close_gap(self, first_ts_recv: int) -> None:
        gap, self._gap = self._gap, None
        if gap is None:
            return
        gap["end_ns"] = int(first_ts_recv)
        if self.capture is not None:
            self.capture.add_gap(gap)
        if gap["repaired"]:
            return
        self.gaps += 1
        msg = {"type": "gap", "start_ns": str(gap["start_ns"]), "end_ns": str(gap["end_ns"]),
               "reason": gap.get("reason"), "book_valid": False}
        for f in self.feeds:
            self.publisher.message(self.cfg.workspace, f.alias, msg)

    # ---- records -----------------------------------------------------------------------------------
    def _drain(self) -> None:
        box = self.inbox
        with box.lock:
            chunks, box.records = box.records, []
            mappings, box.mappings = box.mappings, []
            errors, box.errors = box.errors, []
        if chunks:  # records count as messages for the stall watchdog (the callback does not read the clock)
            box.messages += 1
            box.last_msg = time.monotonic()
        for e in errors:
            self.last_error = f"gateway error: {e}"
            log.warning("gateway error message: %s", e)
        pos = 0
        for at, iid, sym in mappings:  # records before a mapping are of the contract followed until then
            self._ingest_chunks(chunks[pos:at])
            pos = at
            if sym == self._rolling:
                self._complete_roll(sym, iid)
            elif sym == self.symbol:
                self.instrument_id = iid
                if self.capture is not None:
                    self.capture.add_symbol(sym, iid)
        self._ingest_chunks(chunks[pos:])
        if self.instrument.roll is not None and self._rolling is None and self.dedupe.last_ts_recv > 0:
            target = self.instrument.front_contract(self.dedupe.last_ts_recv)
            if target != self.symbol:
                self._begin_roll(target)

    def _ingest_chunks(self, chunks: list[bytes]) -> None:
        if chunks:
            if self._t_first is None:
                self._t_first = time.perf_counter()
            self.ingest(np.frombuffer(b"".join(chunks), dtype=dbn.MBO_DTYPE))
            self._t_last = time.perf_counter()

    # ---- contract roll -----------------------------------------------------------------------------
    def _begin_roll(self, target: str) -> None:
        """The market passed the roll instant: subscribe the next contract (snapshot) on the running session."""
        log.info("roll: %s -> %s (the lock's roll rule); subscribing %s", self.symbol, target, target)
        self._rolling = target
        try:
            self._live.subscribe(dataset=self.dataset, schema="mbo", symbols=[target], snapshot=True)
        except Exception as exc:  # the session is going away: the reconnection subscribes the new contract
            log.warning("roll subscription failed (%s); switching at the reconnection", exc)
            self._complete_roll(target, None)

    def _complete_roll(self, target: str, iid: int | None) -> None:
        """The new contract's mapping arrived: close the old contract's bins (flush), fresh engines for the new
        one (its snapshot follows), and a new runtime_config on every alias stream (clients stay connected)."""
        old = self.symbol
        self._feed(np.zeros(0, dbn.MBO_DTYPE), flush=True)
        if self.silver_sink is not None and self.cfg.silver_out is not None:
            self.silver_sink.close()
            self.silver_sink = SilverSink(self.cfg.silver_out / target)
        self.engines = {k: Engine(rt) for k, rt in self.runtimes.items()}
        self.symbol, self.instrument_id, self._rolling = target, iid, None
        self.dedupe = Dedupe()
        self.last_ts_event = None  # a reconnection before the first record of the new contract: its snapshot
        if self.capture is not None and iid is not None:
            self.capture.add_symbol(target, iid)
        self.rolls.append({"from": old, "to": target, "at_ts_recv": self._last_ts_recv_seen})
        self.publish_configs()
        log.info("rolled %s -> %s", old, target)

    def ingest(self, recs: np.ndarray) -> None:
        """Records of the subscribed contract, in arrival order: dedupe, capture, engines, frames."""
        if self.instrument_id is not None:
            recs = recs[recs["instrument_id"] == self.instrument_id]
        recs = self.dedupe.filter(recs)
        if not len(recs):
            return
        self.dedupe.seen(recs)
        self._last_ts_recv_seen = self.dedupe.last_ts_recv
        self._last_rx = time.time()
        self._publisher_id = int(recs["publisher_id"][0])
        if self._gap is not None:
            self._close_gap(int(recs["ts_recv"][0]))
        days = recs["ts_recv"].view(np.int64) // 86_400_000_000_000
        if days[0] != days[-1]:  # a UTC day boundary inside the batch: each day's records to its file
            for d in np.unique(days):
                self._ingest_day(recs[days == d])
        else:
            self._ingest_day(recs)

    def _ingest_day(self, recs: np.ndarray) -> None:
        day = day_of(int(recs["ts_recv"][0]))
        if self.capture is None or self.capture.day != day:
            if self.capture is not None:
                path = self.capture.close_day()
                log.info("closed the capture of %s: %s", self.capture.day, path)
            self.capture = DayCapture(self.lake, self.instrument, day, self.run_id)
            if self.instrument_id is not None:
                self.capture.add_symbol(self.symbol, self.instrument_id)
            first = self._day is None
            self._day = day
            if not first:
                self.publish_configs()  # a new day: the viewer keeps its history (same version and grid)
        self.capture.append(recs)
        self.records += len(recs)
        self.last_ts_event = int(recs["ts_event"][-1])
        self.last_sequence = int(recs["sequence"][-1])
        self._feed(recs)

    def _feed(self, recs: np.ndarray, *, flush: bool = False) -> None:
        out: list[tuple[str, str, list[tuple[str, bytes]]]] = []
        now = time.time_ns()
        for key, eng in self.engines.items():
            feeds = [f for f in self.feeds if f.engine_key == key]
            it = eng.iter_flush() if flush else eng.iter_feed(recs)
            for chunk in it:
                if key == self.lock_engine_key:
                    self.bins += chunk.n_bins
                    if self.silver_sink is not None:
                        self.silver_sink.write(chunk)
                for f in feeds:
                    frames = f.shaper.frames(chunk)  # before the next chunk: the grid columns are engine views
                    out.append((self.cfg.workspace, f.alias,
                                [(fr.grid_update(now), fr.arrow) for fr in frames]))
        self.publisher.bins(out)

    def _finish(self, status: str) -> None:
        """End of the run: flush (a clean end of data), close or suspend the capture, final state."""
        try:
            if status == "stopped" and self.cfg.at_close == "exit" and not self.stop_event.is_set():
                self._feed(np.zeros(0, dbn.MBO_DTYPE), flush=True)
                if self.capture is not None:
                    path = self.capture.close_day()
                    log.info("closed the capture of %s: %s", self.capture.day, path)
                    self.capture = None
            log.info("ingest: %s", json.dumps(self.ingest_stats()))
            if self.capture is not None:
                self.capture.suspend()
            if self.silver_sink is not None:
                self.silver_sink.close()
        finally:
            self._save_state(status, force=True)
            for f in self.feeds:
                self.publisher.message(self.cfg.workspace, f.alias, {
                    "type": "source_status", "status": "unavailable",
                    "reason": f"the live process stopped ({status})"})
            self.publisher.close()
            self.state.close()

    # ---- state -------------------------------------------------------------------------------------
    def ingest_stats(self) -> dict[str, Any]:
        """Records and seconds from the first to the last ingested batch (callbacks -> engine -> frames)."""
        secs = 0.0 if self._t_first is None else self._t_last - self._t_first
        return {"records": self.records, "seconds": round(secs, 4),
                "records_per_s": round(self.records / secs) if secs > 0 else None}

    def _save_state(self, status: str | None, force: bool = False) -> None:
        now = time.monotonic()
        if self.capture is not None and now - self._last_sync >= 1.0:
            self.capture.sync()
            self._last_sync = now
        if not force and now - self._last_state < 1.0:
            return
        self._last_state = now
        fields: dict[str, Any] = {
            "records": self.records, "bins": self.bins, "reconnects": self.reconnects, "gaps": self.gaps,
            "checkpoint_sequence": self.last_sequence, "checkpoint_ts_event": self.last_ts_event,
            "last_error": self.last_error, "session_id": self.session_id, "symbol": self.symbol,
            "gateway": _gw_name(self.gateways[self.gw_index]),
            "detail": {"gateways": self.cfg.gateways, "gateway_index": self.gw_index,
                       "workspace": self.cfg.workspace, "aliases": [f.alias for f in self.feeds],
                       "redis": {"available": self.publisher.available, "outages": self.publisher.outages,
                                 "published_bins": self.publisher.published_bins,
                                 "dropped_bins": self.publisher.dropped_bins},
                       "capture": None if self.capture is None else str(self.capture.body_path),
                       "heartbeats": self.inbox.heartbeats, "stalls_s": self.stalls[-20:],
                       "ingest": self.ingest_stats(), "symbol": self.symbol, "rolls": self.rolls}}
        if status is not None:
            fields["status"] = status
        try:
            self.state.update(self.run_id, **fields)
        except Exception as exc:  # the database being away must not stop the feed
            log.warning("live_sessions update failed: %s", exc)


def _load_types() -> tuple[type, type, type, type]:
    import databento_dbn as d

    return d.MBOMsg, d.SystemMsg, d.SymbolMappingMsg, d.ErrorMsg


_MBO, _SYSTEM, _MAPPING, _ERROR = _load_types()


def _hostport(text: str) -> tuple[str | None, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--gateway {text!r}: expected HOST:PORT")
    return host, int(port)


def _gw_name(gw: tuple[str | None, int]) -> str:
    return f"{gw[0] or 'databento'}:{gw[1]}"


def _terminate(live: Any) -> None:
    with contextlib.suppress(Exception):
        live.terminate()


def _answers(gw: tuple[str | None, int], key: str, dataset: str) -> bool:
    """Whether a gateway accepts a login now (greeting, CRAM, `success=1`); the probe then hangs up before
    subscribing. A gateway that greets but refuses the key does not count as back."""
    if gw[0] is None:
        return False
    try:
        with socket.create_connection((gw[0], gw[1]), timeout=1.0) as s:
            s.settimeout(1.0)
            f = s.makefile("rb")
            fields: dict[str, str] = {}
            while "cram" not in fields:
                line = f.readline(4096)
                if not line:
                    return False
                fields.update(wire.parse_line(line))
            s.sendall(wire.format_line(auth=wire.cram_response(fields["cram"], key), dataset=dataset,
                                       encoding="dbn", ts_out=0))
            return wire.parse_line(f.readline(4096)).get("success") == "1"
    except OSError:
        return False


# ---- command line ------------------------------------------------------------------------------------


def config_from_args(args: Any) -> LiveConfig:
    return LiveConfig(gateways=args.gateway or [], key=args.key, symbol=args.symbol, workspace=args.workspace,
                      aliases=[] if args.no_publish else args.alias, lake=args.lake, registry_url=args.registry_url,
                      redis_url=args.redis_url or os.environ.get("QMACHINA_LIVE_REDIS_URL", "redis://127.0.0.1:6379/0"),
                      maxlen=args.maxlen, heartbeat_interval_s=args.heartbeat_s, backoff_base_s=args.backoff_base_s,
                      backoff_cap_s=args.backoff_cap_s, failover_after=args.failover_after,
                      primary_probe_s=args.primary_probe_s, max_replay_s=args.max_replay_s, at_close=args.at_close,
                      silver_out=args.silver_out,
                      run_id=args.run_id)


def main_with(args: Any) -> int:
    """`qmachina live` (the CLI parses the arguments)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s live %(levelname)s %(message)s")
    runner = LiveRunner(config_from_args(args))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: runner.stop_event.set())
    print(json.dumps({"event": "started", "run_id": runner.run_id, "symbol": runner.symbol,
                      "gateways": args.gateway or []}), flush=True)
    return runner.run()


def status_main(args: Any) -> int:
    """`qmachina live status`: the recent live_sessions rows (JSON with --json)."""
    store = LiveSessions(args.registry_url, args.lake)
    try:
        rows = store.recent(args.limit)
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no live session yet")
        return 0
    print(f"{'run':<16} {'status':<9} {'symbol':<7} {'gateway':<22} {'records':>10} {'bins':>8} {'recon':>5} "
          f"{'gaps':>4} {'checkpoint ts_event':>20} {'updated':<25} last error")
    for r in rows:
        print(f"{r['run_id']:<16} {r['status']:<9} {r['symbol']:<7} {r['gateway']!s:<22} {r['records']:>10} "
              f"{r['bins']:>8} {r['reconnects']:>5} {r['gaps']:>4} {r['checkpoint_ts_event']!s:>20} "
              f"{r['updated_at']:<25} {r['last_error'] or ''}")
    return 0
