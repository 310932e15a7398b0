"""Gold benchmark: built-in set (batch and stream paths) and DSL graphs (batch, and the 20-node example
spec streamed one bin per `DslRuntime.step`, the serving path) over a day of silver.

Usage: python bench/gold.py FILE [--start HH:MM --end HH:MM]   (UTC window; default 13:30-20:00, RTH)
FILE is an MBO day (e.g. `qmachina synth /tmp/day.dbn.zst --events 20000000`); the engine turns it into
silver first (not timed here, see bench/engine.py). The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qmachina_assets.core.engine.engine import Engine
from qmachina_assets.core.gold import dsl as gold_dsl
from qmachina_assets.core.gold import dsl_runtime
from qmachina_assets.core.gold import features as gold
from qmachina_assets.core.gold.partition import BIN_INPUTS
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.core.paths import PROJECT_ROOT


def _ns(day: dt.date, hhmm: str) -> int:
    h, m = (int(x) for x in hhmm.split(":"))
    return int(dt.datetime(day.year, day.month, day.day, h, m, tzinfo=dt.UTC).timestamp()) * 10**9


def silver_day(path: Path, start: str, end: str, columns: list[str]) -> tuple[dict, dict]:
    """The engine's silver for the window, keeping only the columns gold reads."""
    inst = locked_instrument()
    day = dbn.read_header(path).start_date
    eng = Engine(inst, _ns(day, start), _ns(day, end))
    bins: dict[str, list] = {c: [] for c in BIN_INPUTS}
    grid: dict[str, list] = {c: [] for c in ["k", *columns]}
    chunks = []
    for recs in dbn.iter_mbo_chunks(path, chunk_records=2_000_000):
        chunks.extend(eng.iter_feed(recs))
        for ch in chunks:
            for c in bins:
                bins[c].append(ch.bins[c].copy())
            for c in grid:
                grid[c].append(ch.grid[c].copy())
        chunks.clear()
    for ch in eng.iter_flush():
        for c in bins:
            bins[c].append(ch.bins[c].copy())
        for c in grid:
            grid[c].append(ch.grid[c].copy())
    return {c: np.concatenate(v) for c, v in bins.items()}, {c: np.concatenate(v) for c, v in grid.items()}


def timed(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def stream_bins(spec: gold_dsl.GoldDslSpec, bins: dict, grid: dict, r: int, tick: int, cell_width_ms: int,
                n: int) -> None:
    """The serving path: one `DslRuntime.step` per bin, each given that bin's silver views."""
    rt = dsl_runtime.DslRuntime(spec, r, tick, cell_width_ms)
    w = 2 * r + 1
    for b in range(n):
        rt.step({c: v[b:b + 1] for c, v in bins.items()}, {c: v[b * w:(b + 1) * w] for c, v in grid.items()})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", type=Path)
    ap.add_argument("--start", default="13:30")
    ap.add_argument("--end", default="20:00")
    ap.add_argument("--stream-bins", type=int, default=50_000, help="bins streamed one per step (DSL stream)")
    args = ap.parse_args()
    inst = locked_instrument()
    r, tick = inst.grid_radius_ticks, inst.tick_int
    cfg = gold.GoldFeatureConfig.from_instrument(inst)
    dsl_spec = gold_dsl.load_spec(PROJECT_ROOT / "configs" / "gold" / "depth_imbalance.yaml")  # 20 nodes
    builtin_dsl = gold_dsl.builtin_spec(cfg)
    fields = {n.field for sp in (dsl_spec, builtin_dsl) for n in sp.nodes.values() if isinstance(n, gold_dsl.SilverRef)}
    needed = sorted((set(gold.GOLD_INPUTS) | fields) - {"k"})
    t0 = time.perf_counter()
    bins, grid = silver_day(args.file, args.start, args.end, needed)
    n_bins, cells = len(bins["bin_seq"]), len(grid["k"])
    print(f"silver: {n_bins:,} bins, {cells:,} cells ({time.perf_counter() - t0:.1f} s engine)")

    # warm the JIT on a small slice, then time the whole day
    w = 2 * r + 1
    small = ({c: v[:500] for c, v in bins.items()}, {c: v[:500 * w] for c, v in grid.items()})
    gold.compute_gold(*small, cfg, r, tick)
    gold.GoldRuntime(cfg, r, tick).step(*small)
    dsl_runtime.execute(dsl_spec, *small, r, tick, inst.cell_width_ms)
    dsl_runtime.execute(builtin_dsl, *small, r, tick, inst.cell_width_ms)

    t_batch, _ = timed(gold.compute_gold, bins, grid, cfg, r, tick)
    print(f"built-in batch:  {t_batch:7.2f} s  {n_bins / t_batch:12,.0f} bins/s  {cells / t_batch:12,.0f} cells/s")
    t_stream, _ = timed(gold.GoldRuntime(cfg, r, tick).step, bins, grid)
    print(f"built-in stream: {t_stream:7.2f} s  {n_bins / t_stream:12,.0f} bins/s  {cells / t_stream:12,.0f} cells/s")
    t_dsl, _ = timed(dsl_runtime.execute, dsl_spec, bins, grid, r, tick, inst.cell_width_ms)
    n_nodes = len(dsl_spec.nodes)
    print(f"DSL {dsl_spec.name} ({n_nodes} nodes): {t_dsl:7.2f} s  {n_bins / t_dsl:12,.0f} bins/s  "
          f"{cells / t_dsl:12,.0f} cells/s")
    t_bdsl, _ = timed(dsl_runtime.execute, builtin_dsl, bins, grid, r, tick, inst.cell_width_ms)
    print(f"DSL builtin ({len(builtin_dsl.nodes)} nodes): {t_bdsl:7.2f} s  {n_bins / t_bdsl:12,.0f} bins/s  "
          f"{cells / t_bdsl:12,.0f} cells/s")
    n_stream = min(n_bins, args.stream_bins)
    t_step, _ = timed(stream_bins, dsl_spec, bins, grid, r, tick, inst.cell_width_ms, n_stream)
    print(f"DSL {dsl_spec.name} stream, one bin per step: {n_stream:,} bins in {t_step:.2f} s  "
          f"{n_stream / t_step:12,.0f} bins/s  (target >= 10,000)")
    print(json.dumps({"bins": n_bins, "cells": cells, "builtin_batch_s": round(t_batch, 3),
                      "builtin_stream_s": round(t_stream, 3), "dsl_nodes": n_nodes, "dsl_s": round(t_dsl, 3),
                      "dsl_builtin_s": round(t_bdsl, 3), "builtin_cells_per_s": round(cells / t_batch),
                      "dsl_cells_per_s": round(cells / t_dsl), "dsl_stream_bins": n_stream,
                      "dsl_stream_bins_per_s": round(n_stream / t_step)}))


if __name__ == "__main__":
    main()
