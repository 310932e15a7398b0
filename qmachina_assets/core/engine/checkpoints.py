"""Engine checkpoints in the lake: start a replay mid-day without replaying from midnight.

`lake/cache/checkpoints/{symbol}/{date}/{key}.ckpt`, where the key (engine.checkpoint_key) hashes the
engine version, the instrument config version, the bronze data sha256 plus emission window, and the
bin boundary: any change to code, config or data misses the cache instead of loading stale state.

A `SilverFollower` (state computed from the emitted silver, e.g. a Gold DSL runtime serving a version) joins
the checkpoint: it is warmed on the silver from its own start (the session start the evaluation used, e.g.
the capture window's start) up to the boundary, its state is stored in the same file and its identity joins
the key, so a mid-day start resumes it exactly where a replay from its start would be at the boundary.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Protocol

import numpy as np

from qmachina_assets.core.engine.engine import Engine, checkpoint_key
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.bronze import load_bronze
from qmachina_assets.core.instrument import InstrumentConfig


def checkpoint_path(lake: Path, symbol: str, date: dt.date | str, key: str) -> Path:
    return lake / "cache" / "checkpoints" / symbol / str(date) / f"{key}.ckpt"


class SilverFollower(Protocol):
    """State advanced on the engine's silver, stored with an engine checkpoint (see the module docstring)."""

    @property
    def identity(self) -> str:
        """What the state depends on besides the data (e.g. spec hash and runtime version)."""

    @property
    def start_ns(self) -> int | None:
        """The silver it follows starts here (an emission start; None: the first record)."""

    def feed(self, bins: dict[str, np.ndarray], grid: dict[str, np.ndarray]) -> None: ...

    def checkpoint(self) -> bytes: ...

    def restore(self, blob: bytes) -> None: ...


def checkpoint_source(data_sha256: str, start_ns: int | None, end_ns: int | None,
                      follower: SilverFollower | None = None) -> str:
    """The source identity of a checkpoint key: the data, the emission window and the follower, if any."""
    text = f"{data_sha256}:{start_ns}:{end_ns}"
    return text if follower is None else f"{text}:{follower.identity}:{follower.start_ns}"


def engine_at(
    lake: Path, symbol: str, date: dt.date | str, instrument: InstrumentConfig, boundary_ns: int,
    start_ns: int | None = None, end_ns: int | None = None, follower: SilverFollower | None = None,
) -> tuple[Engine, np.ndarray, bool]:
    """An engine holding the state after every bronze record with ts_recv < `boundary_ns`, and `follower`
    (when given) restored or warmed to the same boundary.

    Returns (engine, the remaining records to feed, loaded_from_cache). On a miss the partition is
    replayed up to the boundary and the checkpoint is stored (temp file, then rename).
    """
    manifest, records = load_bronze(lake, symbol, date)
    ts = records["ts_recv"].view(np.int64)
    cut = int(np.searchsorted(ts, boundary_ns, side="left"))
    key = checkpoint_key(instrument, checkpoint_source(manifest.data_sha256, start_ns, end_ns, follower), boundary_ns)
    path = checkpoint_path(lake, symbol, date, key)
    if path.is_file():
        blob = path.read_bytes()
        if follower is None:
            return Engine.restore(instrument, blob), records[cut:], True
        z = np.load(io.BytesIO(blob))
        follower.restore(z["follower"].tobytes())
        return Engine.restore(instrument, z["engine"].tobytes()), records[cut:], True
    engine = Engine(instrument, start_ns, end_ns)
    for _ in engine.iter_feed(records[:cut]):
        pass  # silver before the boundary is not needed here
    blob = engine.checkpoint()
    if follower is not None:
        warm = Engine(instrument, follower.start_ns, boundary_ns)  # the follower's silver, up to the boundary
        for chunk in warm.iter_feed(records[:cut]):  # chunk views are valid until the next one is requested
            follower.feed(chunk.bins, chunk.grid)
        for chunk in warm.iter_flush():
            follower.feed(chunk.bins, chunk.grid)
        buf = io.BytesIO()
        np.savez(buf, engine=np.frombuffer(blob, np.uint8), follower=np.frombuffer(follower.checkpoint(), np.uint8))
        blob = buf.getvalue()
    with dbn.atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return engine, records[cut:], False
