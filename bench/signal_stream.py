"""What `signals=1` costs the replay producer per bin: the served signal (gold step, rolling-buffer score, Trader)
on top of engine + Arrow encoding, on the real ESH4 Sunday-open window the stream tests serve (3,000 bins of
100 ms, radius 50, flow_score).

    python bench/signal_stream.py [--reps 3] [--workdir DIR]

Builds a throw-away lake (`tests.support.serving.build_served_lake`, needs ../shared/data/databento), registers
`vp_stream_test`, then runs `BinProducer` over the window with and without signals (best of `--reps`, after one
warm-up run) and times the signal stages per bin. The last line printed is a JSON object (with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qmachina_assets.core.registry import Registry
from qmachina_serving.stream.replay import BinProducer, ReplayRequest, plan_replay
from qmachina_serving.stream.source import RegistrySource
from tests.support.serving import build_served_lake


def _timed(obj: object, name: str, into: dict[str, int], key: str) -> None:
    f = getattr(obj, name)

    def wrapped(*a, **k):
        t = time.perf_counter_ns()
        try:
            return f(*a, **k)
        finally:
            into[key] += time.perf_counter_ns() - t

    setattr(obj, name, wrapped)


def run(lake: Path, version, signals: bool) -> dict[str, float]:
    plan = plan_replay(version, ReplayRequest(serving="live", signals=signals), lake)
    p = BinProducer(lake, plan, version)
    p.open()
    stages = {"gold": 0, "score": 0, "trader": 0, "message": 0}
    if p.signal is not None:
        _timed(p.signal.gold, "step", stages, "gold")
        _timed(p.signal.online, "push", stages, "score")
        _timed(p.signal.trader, "step", stages, "trader")
        _timed(p, "_signal_message", stages, "message")
    n, t = 0, time.perf_counter()
    while not p.finished:
        n += len(p.produce(128))
    out = {"bins": n, "produce_us_per_bin": (time.perf_counter() - t) / n * 1e6}
    if signals:
        out.update({f"{k}_us_per_bin": v / n / 1e3 for k, v in stages.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="qmachina_bench_signal_", dir=args.workdir))
    world = build_served_lake(root)
    with Registry(lake=world.lake, instrument=world.instrument) as reg:
        reg.register(world.serving("vp_stream_test"), alias="live", actor="bench", reason="signal stream bench",
                     configs_dir=world.configs, expected_version_id=None)
    version = RegistrySource(lake=world.lake, instrument=world.instrument).resolve("live")
    run(world.lake, version, True)  # numba caches, imports
    best: dict[bool, dict[str, float]] = {}
    for signals in (False, True):
        for _ in range(args.reps):
            r = run(world.lake, version, signals)
            if signals not in best or r["produce_us_per_bin"] < best[signals]["produce_us_per_bin"]:
                best[signals] = r
    plain, sig = best[False], best[True]
    result = {"bins": plain["bins"], "plain_produce_us_per_bin": round(plain["produce_us_per_bin"], 1),
              "signals_produce_us_per_bin": round(sig["produce_us_per_bin"], 1),
              **{k: round(v, 1) for k, v in sig.items() if k.endswith("_us_per_bin") and k != "produce_us_per_bin"},
              "loadavg": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    print(f"plain {result['plain_produce_us_per_bin']} µs/bin, signals=1 {result['signals_produce_us_per_bin']} "
          f"µs/bin (gold {result['gold_us_per_bin']}, score {result['score_us_per_bin']}, trader "
          f"{result['trader_us_per_bin']}, message {result['message_us_per_bin']}); load {result['loadavg']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
