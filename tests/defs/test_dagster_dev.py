"""`dagster dev` on the workspace serves the code location and shows the bronze asset (real webserver)."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

from qmachina_assets.core.paths import PROJECT_ROOT

QUERY = ("{ assetNodes { assetKey { path } partitionDefinition { description } automationCondition { label } "
         "hasAssetChecks } }")

SENSORS = ('{ sensorsOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: '
           '"qmachina"}) { ... on Sensors { results { name sensorState { status } } } } }')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_dagster_dev_shows_the_assets(dagster_home, lake, tmp_path):
    port = _free_port()
    exe = PROJECT_ROOT / ".venv/bin/dagster"
    log = (tmp_path / "dagster-dev.log").open("w")
    proc = subprocess.Popen(
        [str(exe), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "DAGSTER_HOME": str(dagster_home)},
    )
    try:
        deadline = time.monotonic() + 120
        nodes = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
            try:
                data = _graphql(port, QUERY)
                nodes = data.get("data", {}).get("assetNodes")
                if nodes:
                    break
            except OSError:
                pass
            time.sleep(1)
        assert nodes, "dagster dev did not serve asset nodes within 120 s"
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert "bronze_mbo" in keys
        bronze = next(n for n in nodes if n["assetKey"]["path"] == ["bronze_mbo"])
        assert "sessions" in bronze["partitionDefinition"]["description"]  # date|symbol of what landed
        # the automation is visible per asset: data layers eager, publishing gated by the promotion check
        labels = {"/".join(n["assetKey"]["path"]): (n["automationCondition"] or {}).get("label") for n in nodes}
        assert labels["silver_grid"] == labels["gold_builtin"] == labels["dataset_es_rth_1h"] == "eager"
        assert labels["sweep_demo_flow_score_sweep"] == "eager"
        assert labels["serving_alias_demo_flow_score_sweep"] == "when the promotion gate passed"
        assert labels["bronze_mbo"] is None  # requested by raw_file_sensor
        sweep_keys = next(n for n in nodes if n["assetKey"]["path"] == ["sweep_demo_flow_score_sweep"])
        assert "2024-03-15|ESH4" in sweep_keys["partitionDefinition"]["description"]  # only the valid test day
        sensors = _graphql(port, SENSORS)["data"]["sensorsOrError"]["results"]
        status = {x["name"]: x["sensorState"]["status"] for x in sensors}
        assert status["qmachina_automation"] == status["raw_file_sensor"] == "RUNNING"
        assert status["published_versions_sensor"] == "RUNNING" and "promotion_sensor" not in status
        log_text = (tmp_path / "dagster-dev.log").read_text()
        assert "MultiAssetSensorDefinition" not in log_text and "DeprecationWarning" not in log_text
    finally:
        # background processes here may ignore SIGTERM: kill the whole process group
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
