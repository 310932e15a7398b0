"""Online-simulation benchmark (SPEC §6.9): replay an RTH hour bin by bin through engine -> gold -> signal
and print the per-bin latency budget (p50/p95/p99/max per stage).

    python bench/online_sim.py [--serving vp_flow_score [FILE]] [--start 09:30 --end 10:30]
                               [--records 5000000] [--seed 1] [--workdir /tmp/qmachina_bench_online]

The serving spec supplies the signal, its parameters and the runtime/gold config; its pipeline's dates are
not used, so any MBO file works. Without FILE a synthetic ESH4 day of `--records` records on 2024-03-15 is
generated (cached in `--workdir`); its RTH is 09:30-16:00 ET. The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qmachina_assets.core.ingest.synth import SynthParams, write_synthetic_day
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.core.research.online_sim import format_report, run_online_sim

DATE = dt.date(2024, 3, 15)


def synthetic_day(workdir: Path, records: int, seed: int) -> tuple[Path, float]:
    """A generated day (reused when already written); seconds spent generating (0 when cached)."""
    path = workdir / f"esh4_{DATE:%Y%m%d}_{records}_{seed}.dbn"
    if path.is_file():
        return path, 0.0
    workdir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    tmp = path.with_suffix(".partial.dbn")
    write_synthetic_day(tmp, SynthParams(n_records=records, seed=seed, date=DATE, symbol="ESH4"), locked_instrument())
    tmp.replace(path)
    return path, time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serving", nargs="+", metavar=("NAME", "FILE"), default=["vp_flow_score"],
                    help="serving spec name or path, optionally followed by an MBO file")
    ap.add_argument("--start", default="09:30", help="window start HH:MM ET")
    ap.add_argument("--end", default="10:30", help="window end HH:MM ET")
    ap.add_argument("--records", type=int, default=5_000_000, help="records of the generated day")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/qmachina_bench_online"))
    ap.add_argument("--warmup-bins", type=int, default=None, help="untimed bins (default: the signal's lookback)")
    ap.add_argument("--budget-ms", type=float, default=None, help="per-bin budget (default: cell_width_ms)")
    ap.add_argument("--signal-threads", type=int, default=1, help="numba threads while scoring (0: numba default)")
    args = ap.parse_args(argv)
    if len(args.serving) > 2:
        ap.error("--serving takes NAME [FILE]")
    serving = args.serving[0]
    gen_s = 0.0
    if len(args.serving) == 2:
        path = Path(args.serving[1])
    else:
        path, gen_s = synthetic_day(args.workdir, args.records, args.seed)
        if gen_s:
            print(f"generated {args.records:,} records in {gen_s:.1f} s -> {path}")
    report = run_online_sim(path, serving, start_et=args.start, end_et=args.end, warmup_bins=args.warmup_bins,
                            bin_budget_ms=args.budget_ms, signal_threads=args.signal_threads or None)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(format_report(report))
    out = report.model_dump(mode="json")
    out["generate_seconds"] = round(gen_s, 2)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
