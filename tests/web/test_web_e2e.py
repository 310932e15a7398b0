"""The browser client end to end: Debian Chromium, driven by playwright-core (web/e2e/), against a real
serving process that serves the built client (web/dist), the stream and the REST API on one loopback port.

The lake holds the real ESH4 samples' bronze (2023-12-25, and 2023-12-24 which is only a snapshot: a day
without bins); alias `live` first points at one vacuum-pressure version, then at a second (a different display
name), so the registry page's rollback must bring back the first; alias `ema` is an EMA-ensemble version (no
signal: `signals=1` falls back to the plain stream). Both `live` versions trade flow_score at threshold 0.15,
which enters first at 18:00:30.1 on the sample window (6 trades in its 5 minutes), so the viewer's signal markers
have something to draw. The browser logs in once through login.html with a real admin token of the lake's control
plane (the session cookie), then every page and the stream use that session. Screenshots and the viewer's
frame-time figures go to `test-artifacts/e2e/` (QMACHINA_E2E_ARTIFACTS overrides).

Needs Chromium (`make browser` installs Debian's package) and `make web-build`; without them the test
skips, and fails under QMACHINA_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.ingest.bronze import build_bronze
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.registry import Registry
from tests.conftest import ESH4_1224, REQUIRE_SERVICES, sample
from tests.support.serving import build_served_lake, serve

CHROMIUM = os.environ.get("QMACHINA_E2E_CHROMIUM", "/usr/bin/chromium")
WEB = PROJECT_ROOT / "web"


def _missing(what: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} and QMACHINA_REQUIRE_SERVICES=1")
    pytest.skip(what)


@pytest.fixture(scope="module")
def e2e_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | Path]:
    if not Path(CHROMIUM).is_file():
        _missing(f"no browser at {CHROMIUM} (`make browser` installs Debian's chromium)")
    if not (WEB / "dist" / "registry.html").is_file() or not (WEB / "node_modules" / "playwright-core").is_dir():
        _missing("web/dist or web/node_modules is missing (`make web-build`)")
    if shutil.which("npm") is None:
        _missing("npm is not installed")
    world = build_served_lake(tmp_path_factory.mktemp("e2e"), with_silver=False)
    # the snapshot-only 2023-12-24 sample: a day in the lake without bins (the viewer offers 2023-12-25 instead)
    snap = lakemod.land_raw_file(sample(ESH4_1224), world.lake, world.instrument)
    build_bronze([snap.path], date=snap.date, symbol="ESH4", lake=world.lake, instrument=world.instrument)
    second = world.serving("vp_stream_test").read_text().replace("display_name:", "display_name: v2 of", 1)
    world.serving("vp_stream_v2").write_text(second.replace("name: vp_stream_test", "name: vp_stream_v2", 1))
    with Registry(lake=world.lake, instrument=world.instrument) as reg:
        first = reg.register(world.serving("vp_stream_test"), alias="live", actor="tests", reason="e2e v1",
                             configs_dir=world.configs, expected_version_id=None).version.version_id
        current = reg.register(world.serving("vp_stream_v2"), alias="live", actor="tests", reason="e2e v2",
                               configs_dir=world.configs, expected_version_id=first).version.version_id
        reg.register(world.serving("ema_stream_test"), alias="ema", actor="tests", reason="e2e ema",
                     configs_dir=world.configs, expected_version_id=None)
        assert reg.resolve("live").version_id == current != first
    return {"lake": world.lake, "first": first, "current": current}


@pytest.mark.slow  # ~3.5 min: the viewer's 30-minute history replay at 32x is about 70 s of it
def test_browser_end_to_end(e2e_world):
    artifacts = Path(os.environ.get("QMACHINA_E2E_ARTIFACTS", PROJECT_ROOT / "test-artifacts" / "e2e"))
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob("*"):
        old.unlink()
    # a 1024-bin client queue: at 32x (history test) a short stall of the loaded browser must not skip bins
    with serve(e2e_world["lake"], str(e2e_world["current"]), QMACHINA_SERVING_CLIENT_QUEUE_BINS="1024") as srv:
        with urllib.request.urlopen(srv.http + "/", timeout=10) as r:  # the same process serves the client
            assert r.status == 200 and b'id="viewer-canvas"' in r.read()
        env = {**os.environ, "QMACHINA_E2E_URL": srv.http, "QMACHINA_E2E_ARTIFACTS": str(artifacts),
               "QMACHINA_E2E_CHROMIUM": CHROMIUM, "QMACHINA_E2E_LIVE_FROM": str(e2e_world["current"]),
               "QMACHINA_E2E_LIVE_TO": str(e2e_world["first"]), "QMACHINA_E2E_EMA": "ema",
               "QMACHINA_E2E_TOKEN": srv.access.tokens["admin"]}
        proc = subprocess.run(["npm", "--prefix", str(WEB), "run", "e2e"], env=env, capture_output=True, text=True,
                              timeout=600)
        print(proc.stdout[-6000:], proc.stderr[-3000:])
        assert proc.returncode == 0, f"browser tests failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        # The rollback went through the registry: the alias and its audit say so, not only the page.
        with Registry(lake=e2e_world["lake"]) as reg:
            assert reg.resolve("live").version_id == e2e_world["first"]
            # ...by the logged-in admin: the audit names the token's user, not a claim of the page
            assert reg.history("live")[-1].actor == f"admin [{srv.access.token_ids['admin']}]"
    figures = json.loads((artifacts / "viewer-frame-time.json").read_text())
    assert figures["frames"] > 5 and figures["painted_share"] > 0.3
    history = json.loads((artifacts / "viewer-history.json").read_text())
    assert history["held_min"] >= 30 and history["gaps"] == 0
    signals = json.loads((artifacts / "viewer-signals.json").read_text())
    assert signals["markers"] >= 2 and signals["markers_painted"] >= 1
    print("viewer frame time at 16x:", json.dumps(figures))
    print("viewer with signal markers at 16x:", json.dumps(signals))
    print("viewer over 30 min of history:", json.dumps(history))
    for shot in ("viewer-heatmap.png", "viewer-tooltip.png", "viewer-history.png", "viewer-history-30min.png",
                 "viewer-candles.png", "viewer-help.png", "viewer-no-data.png", "viewer-unknown-alias.png",
                 "viewer-ema-candles.png", "viewer-signals.png", "registry-before.png", "registry-after.png"):
        assert (artifacts / shot).stat().st_size > 5_000, shot
