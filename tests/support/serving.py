"""A served lake and a serving process for tests that talk to `python -m qmachina_serving` over loopback.

`serve` seeds the lake's control plane with the default workspace and one real token per role
(`tests.support.auth`); `Server.get` sends the owner's, `server.access.ws_headers(role)` are the stream's.

`build_served_lake` lands the real ESH4 2023-12-25 sample into a throw-away lake, builds bronze and the
18:00-18:05 ET silver window and writes serving configs of that window (`vp_stream_test`,
`ema_stream_test`) beside a pipeline `esh4_sunday_open`; callers register what they need. `serve` runs
the server on a free port in its own process group and SIGKILLs the group at the end (a background
process here may ignore SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qmachina_assets.core.engine.silver_partition import SilverWindow, build_silver
from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.ingest.bronze import build_bronze
from qmachina_assets.core.instrument import InstrumentConfig, load_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from tests.conftest import ESH4_1225, sample
from tests.support.auth import Access, seed_access

DATE = "2023-12-25"
PIPELINE = """name: esh4_sunday_open
description: Sunday open of the real ESH4 sample day, 18:00-18:05 ET.
pipeline_code_version: 1
capture:
  symbol: ESH4
  dates: [2023-12-25]
  start_et: "18:00"
  end_et: "18:05"
engine: {}
"""


@dataclass(frozen=True)
class ServedLake:
    lake: Path
    configs: Path  # pipelines/ and serving/ of the window
    instrument: InstrumentConfig

    def serving(self, name: str) -> Path:
        return self.configs / "serving" / f"{name}.yaml"


def build_served_lake(root: Path, *, with_silver: bool = True) -> ServedLake:
    lake = root / "lake"
    lake.mkdir()
    inst = load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml")
    f = lakemod.land_raw_file(sample(ESH4_1225), lake, inst)
    build_bronze([f.path], date=f.date, symbol="ESH4", lake=lake, instrument=inst)
    if with_silver:
        build_silver(lake=lake, symbol="ESH4", date=f.date, instrument=inst,
                     window=SilverWindow(start_et="18:00", end_et="18:05"))
    cfg = root / "configs"
    (cfg / "pipelines").mkdir(parents=True)
    (cfg / "serving").mkdir()
    (cfg / "pipelines" / "esh4_sunday_open.yaml").write_text(PIPELINE)
    spec = (PROJECT_ROOT / "configs" / "serving" / "vp_flow_score.yaml").read_text()
    (cfg / "serving" / "vp_stream_test.yaml").write_text(
        spec.replace("pipeline: es_sample_days", "pipeline: esh4_sunday_open").replace("name: vp_flow_score",
                                                                                     "name: vp_stream_test"))
    ema = (PROJECT_ROOT / "configs" / "serving" / "ema_ensemble.yaml").read_text()
    (cfg / "serving" / "ema_stream_test.yaml").write_text(
        ema.replace("pipeline: es_rth_1h", "pipeline: esh4_sunday_open").replace("name: ema_ensemble",
                                                                               "name: ema_stream_test"))
    return ServedLake(lake, cfg, inst)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running server; `get` sends the owner's token unless `headers` say otherwise (`auth=False`: none)."""

    def __init__(self, port: int, lake: Path, version_id: str, access: Access):
        self.port = port
        self.lake = lake
        self.version_id = version_id
        self.access = access
        self.ws = f"ws://127.0.0.1:{port}/v1/stream"
        self.http = f"http://127.0.0.1:{port}"

    def get(self, path: str, headers: dict[str, str] | None = None, *, auth: bool = True) -> tuple[int, dict, dict]:
        req = urllib.request.Request(self.http + path, headers={**(self.access.headers() if auth else {}),
                                                                **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), json.loads(e.read() or b"{}")


@contextlib.contextmanager
def serve(lake: Path, version_id: str, *, access: Access | None = None, **env_extra: str) -> Iterator[Server]:
    """`python -m qmachina_serving` on a free port, in its own process group (SIGKILLed at the end). The lake's
    control plane gets the default workspace and a token per role (`seed_access`) unless `access` is given."""
    access = access or seed_access(lake)
    port = free_port()
    env = {**os.environ, "QMACHINA_LAKE_DIR": str(lake), "QMACHINA_SERVING_LOG_LEVEL": "warning", **env_extra}
    env.pop("QMACHINA_REGISTRY_URL", None)
    env.pop("QMACHINA_CONTROL_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "qmachina_serving", "--port", str(port)], cwd=PROJECT_ROOT,
                            env=env, start_new_session=True)
    srv = Server(port, lake, version_id, access)
    try:
        deadline = time.time() + 240  # a stale numba cache recompiles the engine on first use
        while True:
            assert proc.poll() is None, f"server exited with {proc.returncode}"
            try:
                if srv.get("/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "server not ready"
            time.sleep(0.2)
        yield srv
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
