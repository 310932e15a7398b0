"""Sweep benchmark: >= 1,000 parameter sets evaluated walk-forward on a full synthetic RTH day.

Usage: python bench/sweep.py [--records N] [--workdir DIR]
Two synthetic ESH4 days (train 2024-03-14, test 2024-03-15) are generated, landed, turned into research
datasets (09:30-16:00 ET; not timed), then one walk-forward fold of an `ads` experiment is timed: 3 signal
configs x 8 thresholds x 4 TP x 4 SL x 3 cooldowns = 1,152 parameter sets, each evaluated in-sample on the
training day and out-of-sample on the test day. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.ingest.bronze import build_bronze, read_manifest
from qmachina_assets.core.ingest.synth import SynthParams, write_synthetic_day
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.datasets import build_dataset_day
from qmachina_assets.core.research.specs import resolve_experiment

DAYS = (dt.date(2024, 3, 14), dt.date(2024, 3, 15))
PIPELINE = """name: bench_rth
description: two synthetic RTH days
capture: {symbol: ESH4, dates: [2024-03-14, 2024-03-15], start_et: "09:30", end_et: "16:00"}
"""
EXPERIMENT = """name: bench_ads
description: 1,152 parameter sets
serving: bench_ads
eval: {tp_ticks: [4, 6, 8, 12], sl_ticks: [4, 6, 8, 12], max_hold_bins: 1200, warmup_bins: 300,
       cooldown_bins: [10, 20, 40], min_signals: 5}
sweep:
  per_signal: {ads: {zscore_window: [100, 200, 400]}}
  thresholds: [0.02, 0.05, 0.08, 0.10, 0.15, 0.20, 0.30, 0.50]
walk_forward: {train_days: 1, test_days: 1}
promotion: {min_oos_trades: 20, min_hit_rate: 0.4, min_profit_factor: 1.1, max_drawdown_ticks: 80}
tracking: {backend: none}
"""


def prepare(work: Path, records: int) -> Path:
    inst = locked_instrument()
    lake = work / "lake"
    for i, day in enumerate(DAYS):
        if read_manifest(lake, "ESH4", day) is None:
            src = work / f"synth-{day}-{records}.dbn.zst"
            if not src.exists():
                print(f"generating {records:,} records for {day} ...", flush=True)
                write_synthetic_day(src, SynthParams(n_records=records, seed=21 + i, date=day, symbol="ESH4"), inst)
            f = lakemod.land_raw_file(src, lake, inst)
            build_bronze([f.path], date=f.date, symbol="ESH4", lake=lake, instrument=inst)
    configs = work / "configs"
    if configs.exists():
        shutil.rmtree(configs)
    shutil.copytree(PROJECT_ROOT / "configs", configs)
    (configs / "pipelines" / "bench_rth.yaml").write_text(PIPELINE)
    serving = (configs / "serving" / "vp_flow_score.yaml").read_text()
    serving = (serving.replace("name: vp_flow_score", "name: bench_ads")
               .replace("pipeline: es_sample_days", "pipeline: bench_rth")
               .replace("signal:\n  name: flow_score", "signal:\n  name: ads"))
    (configs / "serving" / "bench_ads.yaml").write_text(serving)
    (configs / "experiments" / "bench_ads.yaml").write_text(EXPERIMENT)
    return configs / "experiments" / "bench_ads.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000_000)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/qmachina_bench_sweep"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    exp_path = prepare(args.workdir, args.records)
    lake = args.workdir / "lake"
    exp, serving, pipeline = resolve_experiment(exp_path)
    for day in DAYS:
        t = time.perf_counter()
        m, created = build_dataset_day(lake, pipeline, day)
        print(f"dataset {m.dataset_id}: {m.n_bins:,} bins ({'built' if created else 'reused'} in "
              f"{time.perf_counter() - t:.1f} s)", flush=True)
    fold = sweeps.folds(pipeline, exp)[0]
    sets = exp.expand(serving)
    sweeps.run_fold(lake, exp, serving, pipeline, fold, param_sets=sets[:2])  # JIT warm-up
    t = time.perf_counter()
    table = sweeps.run_fold(lake, exp, serving, pipeline, fold, param_sets=sets)
    seconds = time.perf_counter() - t
    best = next(r for r in table.to_pylist() if r["selected"]) if any(table["selected"].to_pylist()) else None
    print(f"{len(sets):,} parameter sets x (train day + test day) in {seconds:.1f} s "
          f"({len(sets) / seconds:,.0f} sets/s)")
    if best:
        print(f"selected in-sample: {best['params_json']}  oos trades {best['oos_n_trades']:.0f}, "
              f"oos pnl {best['oos_total_pnl_ticks']:.1f} ticks")
    print(json.dumps({"parameter_sets": len(sets), "seconds": round(seconds, 2),
                      "sets_per_s": round(len(sets) / seconds, 1), "signal_configs": 3}))


if __name__ == "__main__":
    main()
