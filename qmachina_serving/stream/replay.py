"""Replay: stream parameters -> a plan -> bins from the engine the assets use -> encoded frames.

- `parse_query` validates the WebSocket query (`serving`, `date`, `start`, `end`, `speed`, `signals`;
  anything else is refused, 4400).
- `plan_replay` resolves them against the version's snapshot (default window: the pipeline capture's ET
  window) and the lake's bronze partitions: without a date it picks the latest day of the symbol with live
  records in that window (`days_with_data`); a day without them is refused with 4410, naming the days that
  have some (also sent to every client as `replay.dates_with_data`).
- `BinProducer` runs `qmachina_assets.core.engine.engine.Engine` with the snapshot's runtime over the bronze
  records and encodes every emitted bin once: a `grid_update` JSON prefix and the Arrow IPC bytes.
  A start time begins from an engine checkpoint (`checkpoints.engine_at`, cached in the lake), so a
  mid-day start does not replay from midnight; records are fed `feed_records` at a time so one engine
  call (which holds the GIL) stays short while the event loop fans frames out.
- A version whose pipeline has a Gold DSL (`snapshot.gold_dsl`) streams it: `DslFollower` advances the
  spec's `DslRuntime` (the batch executor's kernel) on every emitted bin, and each `Frame` carries the bin's
  DSL outputs (`gold`, not on the wire: the browser computes them from the same silver). At a mid-day start
  its state joins the engine checkpoint, warmed from the capture window's start, so the outputs equal a
  replay from the session start.
- `signals=1`: `SignalStream` (`core/research/served_signal.py`: the evaluation's gold, signal and `Trader`
  one bin at a time) follows the same silver and each `Frame` carries the bin's `signal` message (score and
  entry/exit events), sent right after the bin; the session's end adds a `final` one (`final_signal`). Like
  the DSL, it follows the silver from the capture window's start, so at a mid-day start its state is warmed
  to the boundary and stored with the engine checkpoint (`Followers` when both run). A signal that reads Gold
  DSL outputs (`gold_column` on one) is fed the DSL follower's per-bin outputs: the DSL runs once per bin.
- Frame shapers are per model (`SHAPERS`): `vacuum_pressure` sends the dense ±R grid; `ema_ensemble`
  (SPEC §9) sends one k = 0 row per bin, the spot tick's row of the same engine grid (zeros while the
  spot is invalid). Both share the grid_update scalars and the one-encode-per-bin framing.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import multiprocessing
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from qmachina_assets.core.engine.checkpoints import checkpoint_path, checkpoint_source, engine_at
from qmachina_assets.core.engine.engine import Engine, SilverChunk, checkpoint_key
from qmachina_assets.core.gold.dsl import GoldDslSpec
from qmachina_assets.core.gold.dsl_runtime import DslRuntime
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.bronze import load_bronze, read_manifest
from qmachina_assets.core.ingest.lake import bronze_dir
from qmachina_assets.core.instrument import InstrumentConfig
from qmachina_assets.core.research.evaluation import OUTCOME_NAMES, TradeEvent
from qmachina_assets.core.research.served_signal import (
    MLSignalUnavailable,
    SignalSetup,
    SignalStream,
    SignalUnavailable,
    score_json,
)
from qmachina_serving.stream.protocol import CloseCode, StreamError, dumps
from qmachina_serving.stream.source import ServedVersion

ET = ZoneInfo("America/New_York")
PARAMS = ("serving", "date", "start", "end", "speed", "signals")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # Arrow IPC end-of-stream marker


# ---- request ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayRequest:
    serving: str
    date: dt.date | None = None
    start: dt.time | None = None
    end: dt.time | None = None
    speed: float = 1.0
    signals: bool = False  # `signals=1`: the served signal's score and trade events after every bin


def parse_query(items: list[tuple[str, str]], max_speed: float) -> ReplayRequest:
    """The stream's query parameters; StreamError(4400) naming the first problem."""

    def bad(msg: str) -> StreamError:
        return StreamError(CloseCode.BAD_REQUEST, msg)

    seen: dict[str, str] = {}
    for k, v in items:
        if k not in PARAMS:
            raise bad(f"unknown parameter {k!r} (allowed: {', '.join(PARAMS)})")
        if k in seen:
            raise bad(f"parameter {k!r} given twice")
        seen[k] = v
    serving = seen.get("serving", "").strip()
    if not serving:
        raise bad("missing parameter 'serving' (an alias or a version id)")
    date = start = end = None
    if "date" in seen:
        try:
            date = dt.date.fromisoformat(seen["date"])
        except ValueError:
            raise bad(f"date {seen['date']!r}: expected YYYY-MM-DD") from None
    for name in ("start", "end"):
        if name in seen:
            if not _TIME.match(seen[name]):
                raise bad(f"{name} {seen[name]!r}: expected HH:MM or HH:MM:SS (ET)")
            t = dt.time.fromisoformat(seen[name])
            start, end = (t, end) if name == "start" else (start, t)
    speed = 1.0
    if "speed" in seen:
        try:
            speed = float(seen["speed"])
        except ValueError:
            raise bad(f"speed {seen['speed']!r}: expected a number") from None
        if not (0 < speed <= max_speed):
            raise bad(f"speed {speed:g}: must be > 0 and <= {max_speed:g}")
    signals = False
    if "signals" in seen:
        if seen["signals"] not in ("0", "1"):
            raise bad(f"signals {seen['signals']!r}: expected 1 (stream the served signal) or 0")
        signals = seen["signals"] == "1"
    return ReplayRequest(serving=serving, date=date, start=start, end=end, speed=speed, signals=signals)


# ---- plan -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayPlan:
    """What one replay session streams: (symbol, date) of the lake, emission window, speed."""

    symbol: str
    date: dt.date
    start_ns: int | None  # emission start; None: from the first record
    end_ns: int | None  # emission end; None: to the end of the data
    speed: float
    cell_ns: int
    #: Days of the symbol with live records in the same ET window, newest first (for the viewer's day picker).
    dates_with_data: tuple[str, ...] = ()
    #: Stream the served signal (score + trade events per bin, `signal` messages).
    signals: bool = False

    def describe(self) -> dict[str, Any]:
        def et(ns: int | None) -> str | None:
            return None if ns is None else dt.datetime.fromtimestamp(ns / 1e9, ET).isoformat()

        return {"symbol": self.symbol, "date": self.date.isoformat(), "speed": self.speed,
                "start_ns": None if self.start_ns is None else str(self.start_ns),
                "end_ns": None if self.end_ns is None else str(self.end_ns),
                "start_et": et(self.start_ns), "end_et": et(self.end_ns), "end": "window" if self.end_ns else "data",
                "dates_with_data": list(self.dates_with_data)}


def _et_ns(date: dt.date, t: dt.time) -> int:
    return int(dt.datetime.combine(date, t, tzinfo=ET).timestamp() * 1_000_000) * 1000


#: (symbol, date, start, end) -> whether the partition has a live record in the window. Bronze partitions are
#: immutable once written, so an answer stays true; the cache is bounded by the lake's partitions.
_HAS_DATA: dict[tuple[str, str, dt.time | None, dt.time | None], bool] = {}
_SCAN = 65_536


def has_live_records(lake: Path, symbol: str, date: dt.date, start_t: dt.time | None, end_t: dt.time | None) -> bool:
    """Whether a replay of the ET window on this bronze partition emits bins: a record that is not a snapshot
    record comes before the window's end, and the data lasts into the window (the engine emits a bin per
    cell from the window's start while records remain, so a quiet window after live events still has bins).

    A snapshot-only day (the real 2023-12-24 sample: 8,725 snapshot Adds) yields no bins; a window outside the
    day's records neither. Reads the memory-mapped records from the start and stops at the first live one,
    so a full day costs a few pages."""
    key = (symbol, date.isoformat(), start_t, end_t)
    hit = _HAS_DATA.get(key)
    if hit is not None:
        return hit
    manifest = read_manifest(lake, symbol, date)
    found = False
    if manifest is not None and manifest.record_count > manifest.snapshot_records:
        last = manifest.last_ts_recv
        if start_t is None or last is None or last >= _et_ns(date, start_t):
            _, records = load_bronze(lake, symbol, date)
            end_ns = None if end_t is None else _et_ns(date, end_t)
            flags, ts = records["flags"], records["ts_recv"].view(np.int64)
            for i in range(0, len(records), _SCAN):
                live = np.flatnonzero((flags[i:i + _SCAN] & dbn.F_SNAPSHOT) == 0)
                if len(live):
                    found = end_ns is None or int(ts[i + live[0]]) < end_ns
                    break
    if len(_HAS_DATA) >= 8192:  # many distinct seek windows: start over rather than grow without bound
        _HAS_DATA.clear()
    _HAS_DATA[key] = found
    return found


def days_with_data(lake: Path, symbol: str, start_t: dt.time | None, end_t: dt.time | None,
                   limit: int = 60) -> list[dt.date]:
    """The symbol's bronze days with live records in the ET window, newest first (at most `limit`)."""
    root = bronze_dir(lake, symbol, "x").parent
    days = []
    for d in sorted((p.name for p in root.iterdir() if p.is_dir()), reverse=True) if root.is_dir() else []:
        try:
            date = dt.date.fromisoformat(d)
        except ValueError:
            continue
        if has_live_records(lake, symbol, date, start_t, end_t):
            days.append(date)
            if len(days) >= limit:
                break
    return days


def plan_replay(version: ServedVersion, req: ReplayRequest, lake: Path) -> ReplayPlan:
    """Default date: the latest day with data in the window; 4400/4410 on a bad or empty window."""
    start_t = req.start or (dt.time.fromisoformat(version.start_et) if version.start_et else None)
    end_t = req.end or (dt.time.fromisoformat(version.end_et) if version.end_et else None)
    if start_t is not None and end_t is not None and start_t >= end_t:
        raise StreamError(CloseCode.BAD_REQUEST, f"start {start_t} must be before end {end_t} (ET)")
    symbol = version.symbol
    window = f"between {start_t or 'the start'} and {end_t or 'the end'} ET"
    days = days_with_data(lake, symbol, start_t, end_t)
    offer = {"dates_with_data": [d.isoformat() for d in days]}
    listed = f"days with data: {', '.join(offer['dates_with_data'][:10])}" if days else "no day has any"
    date = req.date
    if date is None:
        if not days:
            raise StreamError(CloseCode.NO_DATA, f"no data: no bronze day of {symbol} in the lake has records "
                                                 f"{window}", detail=offer)
        date = days[0]
    elif date not in days:
        if read_manifest(lake, symbol, date) is None:
            raise StreamError(CloseCode.NO_DATA, f"no data: bronze partition {date}|{symbol} is not in the lake "
                                                 f"({listed})", detail=offer)
        raise StreamError(CloseCode.NO_DATA, f"no data for {symbol} on {date} {window} ({listed})", detail=offer)
    start_ns = None if start_t is None else _et_ns(date, start_t)
    end_ns = None if end_t is None else _et_ns(date, end_t)
    return ReplayPlan(symbol=symbol, date=date, start_ns=start_ns, end_ns=end_ns, speed=req.speed,
                      cell_ns=int(version.runtime.cell_width_ms) * 1_000_000,
                      dates_with_data=tuple(offer["dates_with_data"]), signals=req.signals)


# ---- frames -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Frame:
    """One bin, encoded once for every subscriber: grid_update JSON (without its closing `due_unix_ns`
    and brace) and the Arrow IPC stream bytes."""

    bin_seq: int
    bin_end_ns: int
    json_prefix: str
    arrow: bytes
    gold: dict[str, np.ndarray] | None = None  # the bin's Gold DSL outputs (2R+1 rows), when the version has one
    dsl_in: tuple[np.ndarray, ...] | None = None  # its DslRuntime.step_raw input (the session's per-client state)
    signal: str | None = None  # with signals=1: the bin's `signal` message (JSON text), sent right after the bin

    def grid_update(self, due_unix_ns: int) -> str:
        return f'{self.json_prefix},"due_unix_ns":"{due_unix_ns}"}}'


def grid_update_prefixes(bins: dict[str, np.ndarray]) -> list[str]:
    """SPEC §7.2 grid_update bodies of a chunk's bins (big ints as strings), without the closing brace."""
    c = {k: bins[k].tolist() for k in ("ts_ns", "bin_seq", "bin_start_ns", "bin_end_ns", "bin_event_count",
                                       "event_id", "mid_price", "spot_ref_price_int", "best_bid_price_int",
                                       "best_ask_price_int", "book_valid", "crossed")}
    out = []
    for i in range(len(c["bin_seq"])):
        body = {"type": "grid_update", "ts_ns": str(c["ts_ns"][i]), "bin_seq": c["bin_seq"][i],
                "bin_start_ns": str(c["bin_start_ns"][i]), "bin_end_ns": str(c["bin_end_ns"][i]),
                "bin_event_count": c["bin_event_count"][i], "event_id": c["event_id"][i],
                "mid_price": c["mid_price"][i], "spot_ref_price_int": str(c["spot_ref_price_int"][i]),
                "best_bid_price_int": str(c["best_bid_price_int"][i]),
                "best_ask_price_int": str(c["best_ask_price_int"][i]), "book_valid": c["book_valid"][i],
                "crossed": c["crossed"][i]}
        out.append(json.dumps(body, separators=(",", ":"), allow_nan=False)[:-1])
    return out


class _ShaperBase:
    """Encodes `rows_per_bin` consecutive rows of one record batch per bin (schema message + batch + EOS)."""

    rows_per_bin = 1

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self._schema_msg = schema.serialize().to_pybytes()

    def columns(self, chunk: SilverChunk) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def frames(self, chunk: SilverChunk) -> list[Frame]:
        n = chunk.n_bins
        if not n:
            return []
        w = self.rows_per_bin
        cols = self.columns(chunk)
        arrays = [pa.array(np.ascontiguousarray(cols[f.name]), type=f.type) for f in self.schema]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        prefixes = grid_update_prefixes(chunk.bins)
        seqs = chunk.bins["bin_seq"].tolist()
        ends = chunk.bins["bin_end_ns"].tolist()
        out = []
        for b in range(n):
            body = batch.slice(b * w, w).serialize().to_pybytes()
            out.append(Frame(seqs[b], ends[b], prefixes[b], b"".join((self._schema_msg, body, _EOS))))
        return out


class DenseGridShaper(_ShaperBase):
    """`vacuum_pressure`: every bin's 2R+1 rows (k ascending) with the version's wire columns."""

    def __init__(self, schema: pa.Schema, radius: int):
        super().__init__(schema)
        self.rows_per_bin = 2 * radius + 1

    def columns(self, chunk: SilverChunk) -> dict[str, np.ndarray]:
        return chunk.grid


class SpotRowShaper(_ShaperBase):
    """`ema_ensemble` (SPEC §9): one row per bin, k = 0, the spot tick's cells of the engine grid; every
    column is zero on a bin whose spot is invalid (`spot_ref_price_int` 0), so no stale level leaks."""

    def __init__(self, schema: pa.Schema, radius: int):
        super().__init__(schema)
        self.radius = radius

    def columns(self, chunk: SilverChunk) -> dict[str, np.ndarray]:
        w = 2 * self.radius + 1
        rows = np.arange(chunk.n_bins) * w + self.radius  # k = 0 of each bin
        valid = chunk.bins["spot_ref_price_int"] != 0
        out = {}
        for f in self.schema:
            col = chunk.grid[f.name][rows]
            out[f.name] = np.where(valid, col, np.zeros(1, dtype=col.dtype))
        return out


#: model_id -> shaper class, built with the version's wire schema and grid radius. A model without one is
#: refused with 4501.
SHAPERS: dict[str, Callable[[pa.Schema, int], Any]] = {"vacuum_pressure": DenseGridShaper,
                                                       "ema_ensemble": SpotRowShaper}


def shaper_for(version: ServedVersion) -> Any:
    shaper = SHAPERS.get(version.model_id)
    if shaper is None:
        raise StreamError(CloseCode.NOT_IMPLEMENTED, f"model {version.model_id!r} has no stream producer in this "
                                                     f"server (streamed: {', '.join(SHAPERS)})")
    return shaper(version.schema, int(version.runtime.grid_radius_ticks))


# ---- producer ---------------------------------------------------------------------------------------


class DslFollower:
    """The Gold DSL a version serves, computed as the stream goes (`checkpoints.SilverFollower`).

    The runtime is fed bin_seq = bin_start_ns // cell (an absolute bin index): an engine started mid-day
    numbers its bins from 0, and the series must continue the warm-up's bins across that restart.
    """

    def __init__(self, section: dict[str, Any], runtime: InstrumentConfig, start_ns: int | None):
        spec = GoldDslSpec.model_validate(section["spec"])
        self.runtime = DslRuntime(spec, int(runtime.grid_radius_ticks), int(runtime.tick_int),
                                  int(runtime.cell_width_ms))
        self.cell_ns = int(runtime.cell_width_ms) * 1_000_000
        self._start_ns = start_ns
        self.bins = 0

    @property
    def identity(self) -> str:
        return self.runtime.state_key()

    @property
    def start_ns(self) -> int | None:
        return self._start_ns

    def raw_inputs(self, bins: dict[str, np.ndarray], grid: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        """(bin_seq, valid, spot tick, inputs) as `DslRuntime.step_raw` takes them (copies, not engine views)."""
        p = self.runtime.program
        spot = np.asarray(bins["spot_ref_price_int"], np.int64)
        valid = np.asarray(bins["book_valid"], np.bool_) & (spot > 0)
        inp = np.empty((len(p.fields), len(grid["k"])), np.float64)
        for i, f in enumerate(p.fields):
            inp[i] = grid[f]
        return np.asarray(bins["bin_start_ns"], np.int64) // self.cell_ns, valid, spot // p.tick_int, inp

    def feed(self, bins: dict[str, np.ndarray], grid: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seq = np.asarray(bins["bin_start_ns"], np.int64) // self.cell_ns
        self.bins += len(seq)
        return self.runtime.step({"bin_seq": seq, "spot_ref_price_int": bins["spot_ref_price_int"],
                                  "book_valid": bins["book_valid"]}, grid)

    def checkpoint(self) -> bytes:
        return self.runtime.checkpoint()

    def restore(self, blob: bytes) -> None:
        self.runtime.restore(blob)


def dsl_follower(version: ServedVersion, plan: ReplayPlan) -> DslFollower | None:
    """The version's Gold DSL, following the silver from the capture window's start on the plan's date (the
    silver the evaluation computed it on; the first record without a window)."""
    section = version.snapshot.get("gold_dsl")
    if section is None:
        return None
    start = None if version.start_et is None else _et_ns(plan.date, dt.time.fromisoformat(version.start_et))
    return DslFollower(section, version.runtime, start)


class Followers:
    """Several followers of one silver (the Gold DSL and the served signal) as one `SilverFollower`: they share
    the start (the capture window's) and one engine checkpoint. A signal reading Gold DSL outputs gets the DSL
    follower's (which comes first), as in `BinProducer.produce`."""

    def __init__(self, parts: list[Any]):
        if len({p.start_ns for p in parts}) != 1:
            raise ValueError("Followers: every part must follow the silver from the same start")
        self.parts = parts

    @property
    def identity(self) -> str:
        return "+".join(p.identity for p in self.parts)

    @property
    def start_ns(self) -> int | None:
        return self.parts[0].start_ns

    def feed(self, bins: dict[str, np.ndarray], grid: dict[str, np.ndarray]) -> None:
        dsl = None
        for p in self.parts:
            if isinstance(p, DslFollower):
                dsl = p.feed(bins, grid)
            elif isinstance(p, SignalStream) and p.reads_dsl:
                p.feed(bins, grid, dsl)
            else:
                p.feed(bins, grid)

    def checkpoint(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **{f"p{i}": np.frombuffer(p.checkpoint(), np.uint8) for i, p in enumerate(self.parts)})
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        z = np.load(io.BytesIO(blob), allow_pickle=False)
        for i, p in enumerate(self.parts):
            p.restore(z[f"p{i}"].tobytes())


def signal_setup(version: ServedVersion) -> SignalSetup:
    """What `signals=1` trades for this version; StreamError when it cannot (module docstring of
    served_signal): 4422 without a signal, 4501 for an ML signal whose fitted model cannot be loaded (none in
    the version, or its file missing or altered: the message names it)."""
    try:
        return SignalSetup.from_published(version.serving_spec, version.experiment_eval, version.runtime,
                                          version.snapshot["gold_config"], version.snapshot.get("gold_dsl"),
                                          model=version.snapshot.get("model"), lake=version.lake)
    except SignalUnavailable as exc:
        code = CloseCode.NOT_IMPLEMENTED if isinstance(exc, MLSignalUnavailable) else CloseCode.NOT_SERVABLE
        raise StreamError(code, f"signals=1: {exc} (version {version.version_id})") from exc


def _capture_start(version: ServedVersion, date: dt.date) -> int | None:
    return None if version.start_et is None else _et_ns(date, dt.time.fromisoformat(version.start_et))


def signal_follower(version: ServedVersion, plan: ReplayPlan) -> SignalStream | None:
    """With signals=1: the served signal's stream, following the silver from the capture window's start (where
    the evaluated dataset starts), so a mid-day start resumes the evaluation's state."""
    if not plan.signals:
        return None
    return SignalStream(signal_setup(version), _capture_start(version, plan.date))


def _warm_checkpoint(lake: str, symbol: str, date: str, runtime: dict[str, Any], boundary_ns: int,
                     start_ns: int | None, end_ns: int | None,
                     dsl: tuple[dict[str, Any], int | None] | None = None,
                     signal: tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any], int | None,
                                   dict[str, Any] | None, dict[str, Any] | None, str | None] | None = None) -> bool:
    """Worker-process side of a large checkpoint miss: build and store it (returns loaded_from_cache). `signal`:
    serving spec, experiment eval, gold config, start, Gold DSL section, model entry, the model's lake."""
    inst = InstrumentConfig.model_validate(runtime)
    parts: list[Any] = [] if dsl is None else [DslFollower(dsl[0], inst, dsl[1])]
    if signal is not None:
        parts.append(SignalStream(SignalSetup.from_published(signal[0], signal[1], inst, signal[2], signal[4],
                                                             model=signal[5], lake=signal[6]), signal[3]))
    follower = None if not parts else (parts[0] if len(parts) == 1 else Followers(parts))
    return engine_at(Path(lake), symbol, date, inst, boundary_ns, start_ns, end_ns, follower)[2]


def checkpoint_cached(lake: Path, plan: ReplayPlan, runtime: InstrumentConfig, data_sha256: str,
                      boundary_ns: int, follower: Any = None) -> bool:
    """Whether `engine_at` will find its checkpoint (the same key it builds; a mismatch only costs time)."""
    key = checkpoint_key(runtime, checkpoint_source(data_sha256, plan.start_ns, plan.end_ns, follower), boundary_ns)
    return checkpoint_path(lake, plan.symbol, plan.date, key).is_file()


def spawn_pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


class BinProducer:
    """Engine + shaper for one replay session. Not thread-safe: one call at a time (the session's)."""

    def __init__(self, lake: Path, plan: ReplayPlan, version: ServedVersion, *, feed_records: int = 4096,
                 inline_warmup_records: int = 250_000, pool: Callable[[], Executor] | None = None):
        self.lake = lake
        self.plan = plan
        self.version = version
        self.shaper = shaper_for(version)
        self.feed_records = int(feed_records)
        self.inline_warmup_records = int(inline_warmup_records)
        self._pool = pool
        self.engine: Engine | None = None
        self.dsl: DslFollower | None = None
        self.signal: SignalStream | None = None
        self.final_signal: str | None = None  # signals=1: the session end's `signal` message (final: true)
        self._last_bin: tuple[int, int] | None = None  # (bin_seq, ts_ns) of the last produced bin
        self._chunks: Iterator[SilverChunk] | None = None
        self.finished = False
        self.bins = 0
        self.open_info: dict[str, Any] = {}

    def open(self) -> dict[str, Any]:
        """Position the engine at the emission start: from a checkpoint when there is a start time."""
        t0 = time.perf_counter()
        plan, runtime = self.plan, self.version.runtime
        manifest, records = load_bronze(self.lake, plan.symbol, plan.date)
        checkpoint = "none"
        self.dsl = dsl_follower(self.version, plan)
        self.signal = signal_follower(self.version, plan)
        dsl_warm = signal_warm = "fresh"
        if plan.start_ns is None:
            engine, rest = Engine(runtime, None, plan.end_ns), records
        else:
            boundary = plan.start_ns // plan.cell_ns * plan.cell_ns
            cut = int(np.searchsorted(records["ts_recv"].view(np.int64), boundary, side="left"))
            if cut == 0:
                engine, rest = Engine(runtime, plan.start_ns, plan.end_ns), records
            else:
                # followers that started before the boundary are warmed from their start to it and stored
                # with the engine's checkpoint
                warm = [f for f in (self.dsl, self.signal)
                        if f is not None and (f.start_ns is None or f.start_ns < boundary)]
                dsl_warm = "checkpoint" if self.dsl is not None and self.dsl in warm else dsl_warm
                signal_warm = "checkpoint" if self.signal is not None and self.signal in warm else signal_warm
                follower = None if not warm else (warm[0] if len(warm) == 1 else Followers(warm))
                built = (cut > self.inline_warmup_records and self._pool is not None
                         and not checkpoint_cached(self.lake, plan, runtime, manifest.data_sha256, boundary,
                                                   follower))
                if built:  # a long warm-up holds the GIL for its whole engine call: build it in a worker process
                    v = self.version
                    dsl = (v.snapshot["gold_dsl"], self.dsl.start_ns) if self.dsl in warm else None
                    sig = ((v.serving_spec, v.experiment_eval, v.snapshot["gold_config"], self.signal.start_ns,
                            v.snapshot.get("gold_dsl"), v.snapshot.get("model"),
                            None if v.lake is None else str(v.lake))
                           if self.signal is not None and self.signal in warm else None)
                    try:
                        self._pool().submit(_warm_checkpoint, str(self.lake), plan.symbol, plan.date.isoformat(),
                                            runtime.model_dump(), boundary, plan.start_ns, plan.end_ns,
                                            dsl, sig).result()
                    except BrokenExecutor:  # the worker died: build it here (the hub respawns the pool)
                        built = False
                engine, rest, hit = engine_at(self.lake, plan.symbol, plan.date, runtime, boundary, plan.start_ns,
                                              plan.end_ns, follower)
                checkpoint = "built_in_worker" if built else ("hit" if hit else "miss")
        self.engine = engine
        self._chunks = self._iter_chunks(engine, rest)
        self.open_info = {"checkpoint": checkpoint, "records": len(rest),
                          "open_s": round(time.perf_counter() - t0, 4)}
        if self.dsl is not None:
            self.open_info["gold_dsl"] = {"spec_hash": self.version.snapshot["gold_dsl"]["spec_hash"],
                                          "state": dsl_warm}
        if self.signal is not None:
            self.open_info["signal"] = {"identity": self.signal.identity, "state": signal_warm}
        return self.open_info

    def _iter_chunks(self, engine: Engine, records: np.ndarray) -> Iterator[SilverChunk]:
        n, step, i = len(records), self.feed_records, 0
        end = self.plan.end_ns
        while i < n:
            yield from engine.iter_feed(records[i:i + step])
            i += step
            if end is not None and engine.bin_boundary_ns >= engine.flush_through() > 0:
                break  # every bin of the window is closed: the rest of the day is not needed
        yield from engine.iter_flush()

    def produce(self, min_bins: int) -> list[Frame]:
        """Encode at least `min_bins` more bins (fewer at the end; `finished` then turns True)."""
        if self._chunks is None:
            raise RuntimeError("BinProducer.open() first")
        out: list[Frame] = []
        while len(out) < min_bins:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.finished = True
                if self.signal is not None and self._last_bin is not None:
                    self.final_signal = self._signal_message(*self._last_bin, None, self.signal.finish(), True)
                break
            frames = self.shaper.frames(chunk)  # chunk views are valid until the next chunk is requested
            gold = None
            if self.dsl is not None:
                gold = self.dsl.feed(chunk.bins, chunk.grid)
                w = self.shaper.rows_per_bin
                names = [c for c in gold if c not in ("bin_seq", "k")]
                seq, valid, spot, inp = self.dsl.raw_inputs(chunk.bins, chunk.grid)
                for b, f in enumerate(frames):
                    f.gold = {c: gold[c][b * w:(b + 1) * w] for c in names}
                    f.dsl_in = (seq[b:b + 1], valid[b:b + 1], spot[b:b + 1], inp[:, b * w:(b + 1) * w])
            if self.signal is not None:
                for f, s in zip(frames, self.signal.feed(chunk.bins, chunk.grid, gold), strict=True):
                    f.signal = self._signal_message(f.bin_seq, s.ts_ns, s.score, s.events)
            if frames:
                self._last_bin = (frames[-1].bin_seq, int(chunk.bins["ts_ns"][-1]))
            out.extend(frames)
        self.bins += len(out)
        return out


    def _signal_message(self, bin_seq: int, ts_ns: int, score: float | None, events: list[TradeEvent],
                        final: bool = False) -> str:
        """The `signal` message of a bin (web/src/viewer/signals.ts): the score and the events its close made
        known, each at its own bin (bin_seq in this stream's numbering, bin close, dollars, ticks)."""
        sig = self.signal
        assert sig is not None
        cell = self.plan.cell_ns
        evs = []
        for e in events:
            t = sig.event_ts(e)
            d: dict[str, Any] = {"event": e.event, "bin_seq": bin_seq + (t - ts_ns) // cell, "ts_ns": str(t),
                                 "direction": int(e.direction), "price": float(e.price)}
            if e.event == "exit":
                d["outcome"] = OUTCOME_NAMES[int(e.outcome)]
                d["pnl_ticks"] = float(e.pnl_ticks)
            evs.append(d)
        body: dict[str, Any] = {"type": "signal", "bin_seq": bin_seq, "ts_ns": str(ts_ns),
                                "score": None if score is None else score_json(score), "events": evs}
        if final:
            body["final"] = True
        return dumps(body)


def warm_kernels(runtime: InstrumentConfig) -> None:
    """Load the engine's compiled kernels (feed, flush, checkpoint/restore) before the first client."""
    eng = Engine(runtime)
    for _ in eng.iter_feed(np.zeros(0, dtype=dbn.MBO_DTYPE)):
        pass
    Engine.restore(runtime, eng.checkpoint())


def plan_key(version: ServedVersion, plan: ReplayPlan) -> tuple[Any, ...]:
    """Sessions are shared per (version, symbol, date, window, speed[, signals]). A signals=1 client gets its
    own session (the key, and so the session id, of a plain stream is what it was before signals existed)."""
    key = (version.version_id, plan.symbol, plan.date.isoformat(), plan.start_ns, plan.end_ns, plan.speed)
    return (*key, "signals") if plan.signals else key
