"""The demo experiment's walk-forward sweep on freshly generated synthetic days, outside Dagster: synth ->
bronze -> research datasets -> `sweeps.run_fold`, in a throw-away lake. Prints one line per parameter set
(in-sample and out-of-sample trades, pnl, profit factor, hit rate; the selected set starred) and the gate's
verdict; last line JSON. `make demo` runs the same experiment through Dagster.

    .venv/bin/python bench/demo_sweep.py [--records 2000000] [--seed 7] [--dir /tmp/demo_sweep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from qmachina_assets.cli import DEMO_DATES, DEMO_EXPERIMENT
from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.ingest.bronze import build_bronze
from qmachina_assets.core.ingest.synth import SynthParams, write_synthetic_day
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.datasets import build_dataset_day
from qmachina_assets.core.research.specs import resolve_experiment


def _gate(g, r: dict) -> list[str]:
    """The promotion gate's metric rules (registry.candidates.metric_failures) on one results row."""
    out = []
    pf = r["oos_profit_factor"]
    if r["oos_n_trades"] < g.min_oos_trades:
        out.append(f"oos_n_trades {r['oos_n_trades']:.0f} < {g.min_oos_trades}")
    if not r["oos_hit_rate"] >= g.min_hit_rate:
        out.append(f"oos_hit_rate {r['oos_hit_rate']} < {g.min_hit_rate}")
    if (pf != pf and not r["oos_total_pnl_ticks"] > 0) or pf < g.min_profit_factor:
        out.append(f"oos_profit_factor {pf} < {g.min_profit_factor}")
    if not r["oos_max_drawdown_ticks"] <= g.max_drawdown_ticks:
        out.append(f"oos_max_drawdown_ticks {r['oos_max_drawdown_ticks']} > {g.max_drawdown_ticks}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/demo_sweep"))
    ap.add_argument("--keep", action="store_true", help="re-use the lake of an earlier run")
    args = ap.parse_args()
    if args.dir.exists() and not args.keep:
        shutil.rmtree(args.dir)
    lake = args.dir / "lake"
    inst = locked_instrument()
    exp, srv, pipe = resolve_experiment(PROJECT_ROOT / "configs" / "experiments" / f"{DEMO_EXPERIMENT}.yaml")
    t0 = time.perf_counter()
    for i, day in enumerate(DEMO_DATES):
        if (lake / "bronze").exists() and args.keep:
            break
        src = write_synthetic_day(args.dir / f"synth-{day}.dbn.zst",
                                  SynthParams(n_records=args.records, seed=args.seed + i, date=day,
                                              symbol=inst.symbol), inst)
        f = lakemod.land_raw_file(src, lake, inst)
        build_bronze([f.path], date=f.date, symbol=inst.symbol, lake=lake, instrument=inst)
    for day in DEMO_DATES:
        build_dataset_day(lake, pipe, day)
    t1 = time.perf_counter()
    fold = sweeps.folds(pipe, exp)[0]
    rows = sweeps.run_fold(lake, exp, srv, pipe, fold).to_pylist()
    t2 = time.perf_counter()

    def f(x):
        return "-" if x is None or x != x else f"{x:.2f}"

    print(f"{'thr':>5} {'cd':>3} {'tp':>3} | {'IS n':>5} {'pnl':>7} {'pf':>5} {'hit':>5} | "
          f"{'OOS n':>5} {'pnl':>7} {'pf':>5} {'hit':>5}")
    for r in sorted(rows, key=lambda r: (r["threshold"], r["cooldown_bins"], r["tp_ticks"])):
        print(f"{r['threshold']:>5.2f} {r['cooldown_bins']:>3.0f} {r['tp_ticks']:>3.0f} | "
              f"{r['is_n_trades']:>5.0f} {r['is_total_pnl_ticks']:>7.1f} {f(r['is_profit_factor']):>5} "
              f"{f(r['is_hit_rate']):>5} | {r['oos_n_trades']:>5.0f} {r['oos_total_pnl_ticks']:>7.1f} "
              f"{f(r['oos_profit_factor']):>5} {f(r['oos_hit_rate']):>5}{'  *' if r['selected'] else ''}")
    sel = next((r for r in rows if r["selected"]), None)
    problems = _gate(exp.promotion, sel) if sel else ["no set selected"]
    print(f"gate: {'passed' if not problems else 'failed: ' + '; '.join(map(str, problems))}")
    print(json.dumps({"build_s": round(t1 - t0, 1), "sweep_s": round(t2 - t1, 2), "n_sets": len(rows),
                      "selected": sel and {k: sel[k] for k in ("threshold", "cooldown_bins", "tp_ticks",
                                                                "oos_n_trades", "oos_total_pnl_ticks",
                                                                "oos_profit_factor", "oos_hit_rate")},
                      "gate_passed": not problems}))


if __name__ == "__main__":
    main()
