"""Session bookkeeping and one-symbol date-range backfills for the command line.

With one dynamic partition per landed session, Dagster's own `--from/--to` ranges follow insertion order and
would mix symbols; `submit_backfill` picks the session keys of one symbol between two dates and submits a
regular asset backfill (the daemon of `dagster dev` / `dagster-daemon run` runs it, visible under Backfills).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import dagster as dg
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.utils import make_new_backfill_id

from qmachina_assets.core.ingest.lake import discover_raw_files
from qmachina_assets.core.instrument import InstrumentConfig
from qmachina_assets.defs.partitions import register_sessions, session_key, sessions_of


def landed_sessions(lake: Path, instrument: InstrumentConfig) -> list[str]:
    """Session keys of every usable raw file in the lake."""
    files, _ = discover_raw_files(lake, instrument)
    return sorted({session_key(f.date, s) for f in files for s in f.symbols})


def sync_sessions(instance: dg.DagsterInstance, lake: Path, instrument: InstrumentConfig) -> list[str]:
    """Register every landed session in the instance (a fresh or moved instance over an existing lake)."""
    return register_sessions(instance, landed_sessions(lake, instrument))


def submit_backfill(instance: dg.DagsterInstance, defs: dg.Definitions, assets: list[str], symbol: str,
                    start: dt.date, end: dt.date, tags: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Submit an asset backfill of `assets` over the sessions of `symbol` in [start, end]: (backfill id, keys)."""
    keys = sessions_of(instance, symbol, start, end)
    if not keys:
        raise ValueError(f"no landed session of {symbol} between {start} and {end} (land files first: "
                         f"`qmachina ingest`, or `qmachina sessions sync` for a lake landed elsewhere)")
    graph = defs.resolve_asset_graph()
    selection = [dg.AssetKey.from_user_string(a) for a in assets]
    for key in selection:
        if not graph.has(key):
            raise ValueError(f"unknown asset {key.to_user_string()!r}")
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(), asset_graph=graph, partition_names=keys, asset_selection=selection,
        backfill_timestamp=time.time(), tags={"qmachina/trigger": "cli-backfill", **(tags or {})},
        dynamic_partitions_store=instance, all_partitions=False,
        title=f"{','.join(assets)} {symbol} {start}..{end}", description=None, run_config=None)
    instance.add_backfill(backfill)
    return backfill.backfill_id, keys
