"""`dagster dev` for tests that launch real runs: its own DAGSTER_HOME (the repo's dagster.yaml: queued run
coordinator, tag concurrency limits), lake and configs tree, a free port, its own process group SIGKILLed at
the end (background processes here may ignore SIGTERM)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from qmachina_assets.core.paths import PROJECT_ROOT
from tests.support.serving import free_port


def graphql_ok(port: int) -> bool:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": "{ version }"}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return "version" in json.loads(r.read()).get("data", {})
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def dagster_dev(root: Path, lake: Path, configs: Path, **env_extra: str) -> Iterator[tuple[int, subprocess.Popen]]:
    """Start it (returns at once: call `wait_ready`); yields (port, process)."""
    home = root / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "QMACHINA_LAKE_DIR": str(lake),
           "QMACHINA_CONFIGS_DIR": str(configs),
           **env_extra}
    env.pop("QMACHINA_DAGSTER_PG_URL", None)
    log = (root / "dagster-dev.log").open("w")
    proc = subprocess.Popen([str(PROJECT_ROOT / ".venv/bin/dagster"), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
                             "-h", "127.0.0.1", "-p", str(port)], cwd=PROJECT_ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield port, proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()


def wait_ready(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not graphql_ok(port):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"dagster dev did not answer within {timeout_s:.0f} s"
        time.sleep(0.5)
