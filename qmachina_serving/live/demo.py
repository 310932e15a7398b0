"""`qmachina live demo` (`make live-demo`): the loopback gateway + `qmachina live` + `qmachina serve` at once.

The market is the real ESH4 2023-12-25 sample from the Sunday open (18:00 ET) at real time (`--speed`);
`qmachina live` publishes every alias of the lake's registry (run `make demo` first) to Redis; the serving
process streams them at `/?serving=<alias>&source=live`. Each process runs in its own process group; Ctrl-C
(or SIGTERM) stops all three.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from qmachina_assets.core.paths import PROJECT_ROOT, lake_root, shared_data_root

SAMPLE = "nautilus_trader/esh4-glbx-mdp3-20231225.mbo.dbn.zst"
SUNDAY_OPEN = "1703545200000000000"  # 2023-12-25 23:00 UTC
QM = [sys.executable, "-m", "qmachina_assets.cli"]


def main_with(args: Any) -> int:
    from qmachina_assets.core.registry import Registry
    from qmachina_serving.live.gateway import DEMO_KEY

    lake = args.lake or lake_root()
    with Registry(url=args.registry_url, lake=lake) as reg:
        aliases = [a.name for a in reg.list_aliases(args.workspace)]
    if not aliases:
        print(f"qmachina live demo: no serving alias in {lake} (run `make demo` first)", file=sys.stderr)
        return 2
    redis_url = args.redis_url or os.environ.get("QMACHINA_LIVE_REDIS_URL", "redis://127.0.0.1:6379/0")
    port = int(os.environ.get("QMACHINA_SERVING_PORT", "8002"))
    procs: list[subprocess.Popen] = []

    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # `timeout`, service managers: stop the three as for Ctrl-C

    def spawn(cmd: list[str], **kw: Any) -> subprocess.Popen:
        p = subprocess.Popen(cmd, cwd=PROJECT_ROOT, start_new_session=True, **kw)
        procs.append(p)
        return p

    try:
        gw = spawn([*QM, "live-gateway", str(shared_data_root() / SAMPLE), "--speed", str(args.speed or 1.0),
                    "--start", SUNDAY_OPEN, "--at-end", "idle"], stdout=subprocess.PIPE)
        info = json.loads(gw.stdout.readline() if gw.stdout else b"{}")
        spawn([*QM, "live", "--gateway", f"127.0.0.1:{info['port']}", "--key", DEMO_KEY, "--lake", str(lake),
               "--redis-url", redis_url, "--workspace", args.workspace, "--symbol", "ESH4"])
        spawn([*QM, "serve", "--port", str(port)], env={**os.environ, "QMACHINA_LAKE_DIR": str(lake),
                                                          "QMACHINA_SERVING_REDIS_URL": redis_url})
        print(f"live demo: gateway 127.0.0.1:{info['port']} (control {info['control_port']}), redis {redis_url}")
        for a in aliases:
            print(f"  http://127.0.0.1:{port}/?serving={a}&source=live")
        print(f"  token: {lake / 'control' / 'demo_owner.token'} (paste it at /login.html); Ctrl-C stops all three",
              flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        bad = next(p for p in procs if p.poll() is not None)
        print(f"live demo: {' '.join(map(str, bad.args[2:4]))} exited with {bad.returncode}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                continue
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
