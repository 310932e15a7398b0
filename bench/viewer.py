"""Viewer frame-time benchmark: the stream viewer in headless Chromium on a replay of the real ESH4 sample.

Usage: python bench/viewer.py [--speed 16] [--seconds 15] [--rounds 3] [--history]

Builds the throw-away lake of bench/stream.py (the ESH4 2023-12-25 sample -> bronze, a vp_flow_score version on
the 18:00-19:00 ET Sunday open, alias `bench`, an admin token the browser logs in with), starts
`python -m qmachina_serving` in its own process group (1024-bin client queue), runs web/bench/viewer-bench.mjs
(playwright-core + Debian Chromium; needs `make web-build` and `make browser`) and kills the group at the end.

Per round: the viewer at --speed on the ±50-tick grid with every layer (book heatmap, trades, BBO, overlays,
profiles, legend), frame pacing (rAF), the page's draw time (cache upkeep + draw, p95 over 240 frames) and the
main thread's CPU time per drawn frame from the DevTools Performance domain (not inflated when a loaded machine
deschedules the browser). --history adds 30+ min of history zoomed out to all of it (a 35-min window at 32x).
Goal: 60 fps at 16x, draw p95 < 8 ms. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stream import build_lake, free_port, start_server  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--speed", type=float, default=16)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--history", action="store_true", help="also measure 30+ min of history zoomed out")
    p.add_argument("--chromium", default=os.environ.get("QMACHINA_E2E_CHROMIUM", "/usr/bin/chromium"))
    a = p.parse_args()
    if not (ROOT / "web" / "dist" / "index.html").is_file():
        print("web/dist is missing: run `make web-build`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="viewer-bench-") as tmp:
        alias, token = build_lake(Path(tmp))
        port = free_port()
        server = start_server(Path(tmp) / "lake", port, queue_bins=1024)
        try:
            cmd = ["node", str(ROOT / "web" / "bench" / "viewer-bench.mjs"), "--url", f"http://127.0.0.1:{port}",
                   "--serving", alias, "--token", token, "--speed", f"{a.speed:g}", "--seconds", f"{a.seconds:g}",
                   "--rounds", str(a.rounds), "--chromium", a.chromium] + (["--history"] if a.history else [])
            out = subprocess.run(cmd, cwd=ROOT / "web", capture_output=True, text=True, timeout=900)
            if out.returncode != 0:
                print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
                return 1
            lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    for r in lines[:-1]:
        print(f"{r['scenario']:<18} fps {r['fps']:5.1f}  rAF p95 {r['raf_ms_p95']:5.1f} ms  "
              f"draw mean {r['draw_ms_mean']:5.2f} p95 {r['draw_ms_p95']:5.2f} ms  "
              f"main-thread CPU {r['main_thread_cpu_pct']:5.1f} % "
              f"({r['main_cpu_ms_per_frame']:.2f} ms/frame)  gaps {r['gaps']}")
    summary = {**lines[-1], "load_avg_1m": load}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
