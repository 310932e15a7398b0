"""Model Studio in the browser, end to end: Debian Chromium (playwright-core, `web/e2e/studio.e2e.ts`) against one
serving process (pages, REST, stream) and a real `dagster dev` (the jobs run as Dagster runs) over two synthetic
days. From an empty session through data, gold, signal, evaluation, run (with a page reload mid-run), compare and
promote to frames of the new alias in the viewer; no CLI step. Then the registry and the control plane are
checked: the alias points at a version promoted from the session's experiment, the session is `promoted`.

Needs Chromium (`make browser`) and `make web-build`; skips without them, fails under QMACHINA_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from qmachina_assets.core.control import ControlPlane
from qmachina_assets.core.control.studio import list_sessions
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.registry import Registry
from tests.conftest import REQUIRE_SERVICES
from tests.support.dagster import dagster_dev, wait_ready
from tests.support.serving import serve
from tests.support.synth_days import build_synth_days

CHROMIUM = os.environ.get("QMACHINA_E2E_CHROMIUM", "/usr/bin/chromium")
WEB = PROJECT_ROOT / "web"
ALIAS = "studio_e2e"


def _missing(what: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} and QMACHINA_REQUIRE_SERVICES=1")
    pytest.skip(what)


@pytest.mark.slow  # two Dagster-run startups and a sweep on a loaded 2-core machine: ~2-3 min
def test_studio_end_to_end(tmp_path_factory: pytest.TempPathFactory):
    if not Path(CHROMIUM).is_file():
        _missing(f"no browser at {CHROMIUM} (`make browser` installs Debian's chromium)")
    if not (WEB / "dist" / "studio.html").is_file() or not (WEB / "node_modules" / "playwright-core").is_dir():
        _missing("web/dist or web/node_modules is missing (`make web-build`)")
    root = tmp_path_factory.mktemp("studio-e2e")
    w = build_synth_days(root)
    shutil.rmtree(w.lake / "raw")  # bronze is built; no raw-file sensor runs taking the run slots
    artifacts = Path(os.environ.get("QMACHINA_E2E_ARTIFACTS", PROJECT_ROOT / "test-artifacts" / "e2e"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with dagster_dev(root, w.lake, w.configs) as (port, proc):
        wait_ready(port, proc, root / "dagster-dev.log")
        with serve(w.lake, "", QMACHINA_CONFIGS_DIR=str(w.configs),
                   QMACHINA_SERVING_DAGSTER_URL=f"http://127.0.0.1:{port}") as srv:
            env = {**os.environ, "QMACHINA_E2E_URL": srv.http, "QMACHINA_E2E_ARTIFACTS": str(artifacts),
                   "QMACHINA_E2E_CHROMIUM": CHROMIUM, "QMACHINA_E2E_TOKEN": srv.access.tokens["admin"],
                   "QMACHINA_E2E_PIPELINE": "synth_two_days", "QMACHINA_E2E_BASE": "synth_flow",
                   "QMACHINA_E2E_ALIAS": ALIAS}
            out = subprocess.run(["npm", "--prefix", str(WEB), "run", "e2e:studio"], env=env, capture_output=True,
                                 text=True, timeout=600)
            print(out.stdout[-6000:], out.stderr[-3000:])
            assert out.returncode == 0, f"studio browser test failed:\n{out.stdout[-6000:]}\n{out.stderr[-3000:]}\n" \
                                        f"{(root / 'dagster-dev.log').read_text()[-3000:]}"
    with ControlPlane(lake=w.lake) as cp:
        (session,) = list_sessions(cp, "default")
    assert session.status == "promoted" and session.steps["promote"].payload["alias"] == ALIAS
    with Registry(lake=w.lake) as reg:
        version = reg.resolve(ALIAS)
        assert version.version_id == session.steps["promote"].payload["version_id"]
        assert version.lineage.experiment_name == session.steps["evaluation"].payload["experiment"]
    assert (artifacts / "studio-stream.png").stat().st_size > 5_000
