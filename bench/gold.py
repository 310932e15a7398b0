"""Gold benchmark: built-in set (batch on every core, batch on one core, stream path) and DSL graphs over
a day of silver, against the engine's own time for the same day and window, measured in the same run; and
the 20-node example DSL spec streamed one bin per `DslRuntime.step` (the serving path; target >= 10,000 bins/s),
and with --browser the same spec in headless Chromium (web/bench/dsl-bench.mjs; target >= 2,000 bins/s).

Usage: python bench/gold.py FILE [--start HH:MM --end HH:MM] [--skip-dsl] [--browser]   (UTC window; default RTH)
FILE is an MBO day (e.g. `qmachina synth /tmp/day.dbn.zst --events 20000000`). The records are decoded
into memory; the engine is timed on them (records -> silver, as bench/engine.py (b)), then run again to
keep the silver gold reads. `gold_over_engine` is the batch gold's wall time (every core) over the
engine's (the issue-21 goal: <= 2 on this machine, aim <= 1); CPU times are printed beside the wall
times because on a shared machine they move less. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import numba
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


def silver_day(records: np.ndarray, day: dt.date, start: str, end: str,
               columns: list[str]) -> tuple[dict, dict]:
    """The engine's silver for the window, keeping only the columns gold reads."""
    eng = Engine(locked_instrument(), _ns(day, start), _ns(day, end))
    bins: dict[str, list] = {c: [] for c in BIN_INPUTS}
    grid: dict[str, list] = {c: [] for c in ["k", *columns]}
    step = 2_000_000
    for i in range(0, len(records) + 1, step):
        chunks = eng.iter_feed(records[i:i + step]) if i < len(records) else eng.iter_flush()
        for ch in chunks:
            for c in bins:
                bins[c].append(ch.bins[c].copy())
            for c in grid:
                grid[c].append(ch.grid[c].copy())
    return {c: np.concatenate(v) for c, v in bins.items()}, {c: np.concatenate(v) for c, v in grid.items()}


def engine_seconds(records: np.ndarray, day: dt.date, start: str, end: str) -> tuple[float, float]:
    """(wall, CPU) seconds of the engine alone over the in-memory records (bins emitted, nothing kept)."""
    inst = locked_instrument()
    warm = Engine(inst)
    for _ in warm.iter_feed(records[:20_000]):
        pass
    eng = Engine(inst, _ns(day, start), _ns(day, end))
    t, c = time.perf_counter(), time.process_time()
    for i in range(0, len(records), 2_000_000):
        for _ in eng.iter_feed(records[i:i + 2_000_000]):
            pass
    for _ in eng.iter_flush():
        pass
    return time.perf_counter() - t, time.process_time() - c


def load_records(path: Path) -> np.ndarray:
    return np.concatenate(list(dbn.iter_mbo_chunks(path, chunk_records=2_000_000)))


def timed(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def timed_cpu(fn, *args) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call: CPU time is what load from other processes moves least."""
    t, c = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - t, time.process_time() - c


def stream_bins(spec: gold_dsl.GoldDslSpec, bins: dict, grid: dict, r: int, tick: int, cell_width_ms: int,
                n: int) -> None:
    """The serving path: one `DslRuntime.step` per bin, each given that bin's silver views."""
    rt = dsl_runtime.DslRuntime(spec, r, tick, cell_width_ms)
    w = 2 * r + 1
    for b in range(n):
        rt.step({c: v[b:b + 1] for c, v in bins.items()}, {c: v[b * w:(b + 1) * w] for c, v in grid.items()})


def browser_stream(n_bins: int, radius: int) -> dict:
    """web/bench/dsl-bench.mjs: the browser DslRuntime in headless Chromium, one bin per step (its last line)."""
    script = PROJECT_ROOT / "web" / "bench" / "dsl-bench.mjs"
    proc = subprocess.run(["node", str(script), "--bins", str(min(n_bins, 20_000)), "--radius", str(radius)],
                          capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{script}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    print(lines[0] if len(lines) > 1 else "")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", type=Path)
    ap.add_argument("--start", default="13:30")
    ap.add_argument("--end", default="20:00")
    ap.add_argument("--skip-dsl", action="store_true", help="time the built-in set only")
    ap.add_argument("--stream-bins", type=int, default=50_000, help="bins streamed one per step (DSL stream)")
    ap.add_argument("--browser", action="store_true",
                    help="also stream the DSL spec in headless Chromium (web/bench/dsl-bench.mjs)")
    args = ap.parse_args()
    inst = locked_instrument()
    r, tick = inst.grid_radius_ticks, inst.tick_int
    cfg = gold.GoldFeatureConfig.from_instrument(inst)
    dsl_spec = gold_dsl.load_spec(PROJECT_ROOT / "configs" / "gold" / "depth_imbalance.yaml")  # 20 nodes
    builtin_dsl = gold_dsl.builtin_spec(cfg)
    fields = {n.field for sp in (dsl_spec, builtin_dsl) for n in sp.nodes.values() if isinstance(n, gold_dsl.SilverRef)}
    needed = sorted((set(gold.GOLD_INPUTS) | fields) - {"k"})
    day = dbn.read_header(args.file).start_date
    records = load_records(args.file)
    t_engine, c_engine = engine_seconds(records, day, args.start, args.end)
    bins, grid = silver_day(records, day, args.start, args.end, needed)
    del records
    n_bins, cells = len(bins["bin_seq"]), len(grid["k"])
    print(f"engine:          {t_engine:7.2f} s  ({c_engine:.2f} s CPU; records -> silver, {n_bins:,} bins, "
          f"{cells:,} cells)")

    # warm the JIT on a small slice, then time the whole day
    w = 2 * r + 1
    small = ({c: v[:500] for c, v in bins.items()}, {c: v[:500 * w] for c, v in grid.items()})
    gold.compute_gold(*small, cfg, r, tick)
    gold.GoldRuntime(cfg, r, tick).step(*small)
    threads = numba.get_num_threads()
    t_batch, c_batch = timed_cpu(gold.compute_gold, bins, grid, cfg, r, tick)
    print(f"built-in batch ({threads} threads): {t_batch:7.2f} s  ({c_batch:.2f} s CPU)  {cells / t_batch:12,.0f} "
          f"cells/s  {t_batch / t_engine:.2f}x the engine's wall time")
    numba.set_num_threads(1)
    t_one, c_one = timed_cpu(gold.compute_gold, bins, grid, cfg, r, tick)
    numba.set_num_threads(threads)
    print(f"built-in batch (1 thread):  {t_one:7.2f} s  ({c_one:.2f} s CPU)  {cells / t_one:12,.0f} cells/s  "
          f"{c_one / cells * 1e9:.0f} ns CPU/cell, {c_one / c_engine:.2f}x the engine's CPU time")
    t_stream, _ = timed(gold.GoldRuntime(cfg, r, tick).step, bins, grid)
    print(f"built-in stream: {t_stream:7.2f} s  {n_bins / t_stream:12,.0f} bins/s  {cells / t_stream:12,.0f} cells/s")
    fig = {"bins": n_bins, "cells": cells, "threads": threads, "engine_s": round(t_engine, 3),
           "engine_cpu_s": round(c_engine, 3), "builtin_batch_s": round(t_batch, 3),
           "builtin_batch_cpu_s": round(c_batch, 3), "builtin_batch_one_thread_s": round(t_one, 3),
           "builtin_batch_one_thread_cpu_s": round(c_one, 3), "gold_cpu_over_engine_cpu": round(c_one / c_engine, 3),
           "builtin_stream_s": round(t_stream, 3), "gold_over_engine": round(t_batch / t_engine, 3),
           "builtin_cells_per_s": round(cells / t_batch)}
    if not args.skip_dsl:
        dsl_runtime.execute(dsl_spec, *small, r, tick, inst.cell_width_ms)
        dsl_runtime.execute(builtin_dsl, *small, r, tick, inst.cell_width_ms)
        t_dsl, _ = timed(dsl_runtime.execute, dsl_spec, bins, grid, r, tick, inst.cell_width_ms)
        n_nodes = len(dsl_spec.nodes)
        print(f"DSL {dsl_spec.name} ({n_nodes} nodes): {t_dsl:7.2f} s  {n_bins / t_dsl:12,.0f} bins/s  "
              f"{cells / t_dsl:12,.0f} cells/s")
        t_bdsl, _ = timed(dsl_runtime.execute, builtin_dsl, bins, grid, r, tick, inst.cell_width_ms)
        print(f"DSL builtin ({len(builtin_dsl.nodes)} nodes): {t_bdsl:7.2f} s  {n_bins / t_bdsl:12,.0f} bins/s  "
              f"{cells / t_bdsl:12,.0f} cells/s")
        n_stream = min(n_bins, args.stream_bins)
        cpu0 = time.process_time()
        t_step, _ = timed(stream_bins, dsl_spec, bins, grid, r, tick, inst.cell_width_ms, n_stream)
        cpu_step = time.process_time() - cpu0
        print(f"DSL {dsl_spec.name} stream, one bin per step: {n_stream:,} bins in {t_step:.2f} s wall "
              f"({cpu_step:.2f} s CPU)  {n_stream / t_step:12,.0f} bins/s  ({n_stream / cpu_step:,.0f} per CPU "
              "second; target >= 10,000)")
        fig.update({"dsl_nodes": n_nodes, "dsl_s": round(t_dsl, 3), "dsl_builtin_s": round(t_bdsl, 3),
                    "dsl_cells_per_s": round(cells / t_dsl), "dsl_stream_bins": n_stream,
                    "dsl_stream_bins_per_s": round(n_stream / t_step),
                    "dsl_stream_bins_per_cpu_s": round(n_stream / cpu_step)})
        if args.browser:
            fig["browser_dsl"] = browser_stream(args.stream_bins, r)
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
