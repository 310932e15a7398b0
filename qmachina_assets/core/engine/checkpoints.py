"""Engine checkpoints in the lake: start a replay mid-day without replaying from midnight.

`lake/cache/checkpoints/{symbol}/{date}/{key}.ckpt`, where the key (engine.checkpoint_key) hashes the
engine version, the instrument config version, the bronze data sha256 plus emission window, and the
bin boundary: any change to code, config or data misses the cache instead of loading stale state.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from qmachina_assets.core.engine.engine import Engine, checkpoint_key
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.bronze import load_bronze
from qmachina_assets.core.instrument import InstrumentConfig


def checkpoint_path(lake: Path, symbol: str, date: dt.date | str, key: str) -> Path:
    return lake / "cache" / "checkpoints" / symbol / str(date) / f"{key}.ckpt"


def engine_at(
    lake: Path, symbol: str, date: dt.date | str, instrument: InstrumentConfig, boundary_ns: int,
    start_ns: int | None = None, end_ns: int | None = None,
) -> tuple[Engine, np.ndarray, bool]:
    """An engine holding the state after every bronze record with ts_recv < `boundary_ns`.

    Returns (engine, the remaining records to feed, loaded_from_cache). On a miss the partition is
    replayed up to the boundary and the checkpoint is stored (temp file, then rename).
    """
    manifest, records = load_bronze(lake, symbol, date)
    ts = records["ts_recv"].view(np.int64)
    cut = int(np.searchsorted(ts, boundary_ns, side="left"))
    key = checkpoint_key(instrument, f"{manifest.data_sha256}:{start_ns}:{end_ns}", boundary_ns)
    path = checkpoint_path(lake, symbol, date, key)
    if path.is_file():
        return Engine.restore(instrument, path.read_bytes()), records[cut:], True
    engine = Engine(instrument, start_ns, end_ns)
    for _ in engine.iter_feed(records[:cut]):
        pass  # silver before the boundary is not needed here
    with dbn.atomic_path(path) as tmp:
        tmp.write_bytes(engine.checkpoint())
    return engine, records[cut:], False
