"""Benchmark the synthetic MBO day generator: generate N records and write them as DBN (zstd).

    python bench/synth.py [--records 20000000] [--out /tmp/synth.dbn.zst] [--seed 1] [--cold]

`--cold` compiles the numba kernels from scratch (a fresh, temporary NUMBA_CACHE_DIR) so the JIT cost
is part of the figures; without it the on-disk cache is used when present. The last line printed is a
JSON object with every figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000_000)
    ap.add_argument("--out", default=None, help="output path (.dbn.zst compresses); default: a temp file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--date", default="2024-03-01")
    ap.add_argument("--symbol", default=None, help="default: the instrument's default contract")
    ap.add_argument("--cold", action="store_true", help="compile the kernels from scratch")
    ap.add_argument("--keep", action="store_true", help="keep the default temp output file")
    args = ap.parse_args(argv)

    tmpdir = tempfile.TemporaryDirectory(prefix="qm_synth_bench_")
    if args.cold:
        os.environ["NUMBA_CACHE_DIR"] = str(Path(tmpdir.name) / "numba_cache")
    out = Path(args.out) if args.out else Path(tmpdir.name) / f"synth_{args.records}.dbn.zst"

    t0 = time.perf_counter()
    from qmachina_assets.core.ingest import synth
    from qmachina_assets.core.instrument import load_instrument

    instrument = load_instrument()
    symbol = args.symbol or instrument.symbol
    date = dt.date.fromisoformat(args.date)
    synth.generate_records(synth.SynthParams(n_records=1_000, seed=0, date=date, symbol=symbol), instrument)
    t_jit = time.perf_counter() - t0

    params = synth.SynthParams(n_records=args.records, seed=args.seed, date=date, symbol=symbol)
    t1 = time.perf_counter()
    records = synth.generate_records(params, instrument)
    t_gen = time.perf_counter() - t1

    t2 = time.perf_counter()
    synth.write_records(out, records, params, instrument)
    t_write = time.perf_counter() - t2
    size = out.stat().st_size

    fig = {
        "records": len(records),
        "seed": args.seed,
        "cold_jit": bool(args.cold),
        "import_and_jit_s": round(t_jit, 3),
        "generate_s": round(t_gen, 3),
        "write_s": round(t_write, 3),
        "total_s": round(t_jit + t_gen + t_write, 3),
        "generate_records_per_s": round(len(records) / t_gen),
        "end_to_end_records_per_s": round(len(records) / (t_gen + t_write)),
        "file_bytes": size,
        "raw_bytes": int(records.nbytes),
        "compression_ratio": round(records.nbytes / size, 2),
        "out": str(out),
        "cpu_count": os.cpu_count(),
    }
    print(f"import + JIT warm-up : {t_jit:8.2f} s ({'cold compile' if args.cold else 'cache if present'})")
    print(f"generation           : {t_gen:8.2f} s  ({fig['generate_records_per_s'] / 1e6:.2f} M records/s)")
    ratio = fig["compression_ratio"]
    print(f"write (DBN v3)       : {t_write:8.2f} s  -> {out} ({size / 1e6:.1f} MB, {ratio}x)")
    print(f"total                : {fig['total_s']:8.2f} s for {len(records):,} records")
    if args.out is None and args.keep:
        kept = Path(tempfile.gettempdir()) / out.name
        out.replace(kept)
        fig["out"] = str(kept)
    print(json.dumps(fig))
    tmpdir.cleanup()
    return fig


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
