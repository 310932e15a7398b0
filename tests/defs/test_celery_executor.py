"""QMACHINA_EXECUTOR=celery: the same partition through two `qmachina worker` processes on Redis gives the
same bronze and silver as the in-process executor (manifest and file checksums), even when the worker that
took the first step is SIGKILLed while running it (its task is redelivered to the other worker)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.paths import PROJECT_ROOT, lake_root, parse_lake_uri
from qmachina_assets.defs.executor import CelerySettings, ExecutorSettings, select_executor
from qmachina_assets.defs.partitions import register_sessions, session_key
from tests.conftest import ESM4_0508, sample

KEY = session_key("2024-05-08", "ESM4")


def _bronze_silver_job(executor: str) -> dg.JobDefinition:
    """Bronze + silver of a partition on the lake of the environment (a worker reconstructs the job by its
    module path, in its own environment)."""
    from qmachina_assets.defs.bronze.assets import bronze_mbo
    from qmachina_assets.defs.resources import default_resources
    from qmachina_assets.defs.silver.assets import silver_grid

    job = dg.define_asset_job("bronze_silver", selection=["bronze_mbo", "silver_grid"])
    defs = dg.Definitions(assets=[bronze_mbo, silver_grid], jobs=[job], resources=default_resources(),
                          executor=select_executor(ExecutorSettings(executor=executor)))
    return defs.resolve_job_def("bronze_silver")


def in_process_job() -> dg.JobDefinition:
    return _bronze_silver_job("in_process")


def celery_job() -> dg.JobDefinition:
    return _bronze_silver_job("celery")


def _checksums(lake: Path) -> dict[str, str]:
    """Bronze manifest's data checksum + sha256 of every silver data file (the manifests' timestamps differ)."""
    out = {}
    bronze = json.loads(next(lake.glob("bronze/*/*/manifest.json")).read_text())
    out["bronze.data_sha256"] = bronze["data_sha256"]
    for f in sorted(lake.glob("silver/*/*/*.parquet")):
        out[f"silver/{f.name}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    silver = json.loads(next(lake.glob("silver/*/*/manifest.json")).read_text())
    out["silver.bronze_sha256"] = silver["bronze_sha256"]
    out["silver.grid_rows"] = str(silver["grid_rows"])
    return out


def _kill_first_taker(instance, workers: list[subprocess.Popen], killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the worker (whole process group) that reports executing the first step of the celery run."""
    by_pid = {w.pid: w for w in workers}
    while not stop.is_set():
        for run in instance.get_runs():
            for e in instance.all_logs(run.run_id):
                engine = e.is_dagster_event and e.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
                data = e.dagster_event.engine_event_data if engine else None
                host = (data.metadata.get("Celery worker") if data else None)
                if host is not None:
                    pid = int(str(host.value).split("@")[0].rsplit("-", 1)[1])
                    os.killpg(by_pid[pid].pid, signal.SIGKILL)
                    killed.append(pid)
                    return
        time.sleep(0.2)


def _run(instance, monkeypatch, lake: Path, executor: str) -> dg.ExecuteJobResult:
    monkeypatch.setenv("QMACHINA_LAKE_DIR", str(lake))
    job = in_process_job if executor == "in_process" else celery_job
    with dg.execute_job(dg.reconstructable(job), instance=instance,
                        tags={"dagster/partition": KEY}) as result:
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        return result


def test_executor_is_chosen_by_configuration(monkeypatch):
    assert select_executor(ExecutorSettings()).name == "multiprocess"
    assert select_executor(ExecutorSettings(executor="in_process")).name == "in_process"
    monkeypatch.setenv("QMACHINA_CELERY_BROKER", "redis://127.0.0.1:6379/0")
    assert select_executor(ExecutorSettings(executor="celery")).name == "celery"
    monkeypatch.setenv("QMACHINA_EXECUTOR", "dask")
    with pytest.raises(ValueError, match="executor"):
        ExecutorSettings()


def test_lake_is_addressed_by_a_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("QMACHINA_LAKE_DIR", raising=False)
    monkeypatch.setenv("QMACHINA_LAKE_URI", f"file://{tmp_path}/shared%20lake")
    assert lake_root() == tmp_path / "shared lake"
    assert parse_lake_uri(str(tmp_path)) == tmp_path
    with pytest.raises(ValueError, match=r"'s3://bucket/lake': scheme 's3' is not supported.*mount the bucket"):
        parse_lake_uri("s3://bucket/lake")
    with pytest.raises(ValueError, match="not host 'nas'"):
        parse_lake_uri("file://nas/lake")


@pytest.mark.timeout(400)
def test_two_celery_workers_write_the_same_partition_as_in_process_despite_a_killed_worker(
        tmp_path, instrument, redis_url, monkeypatch):
    lakes = {name: tmp_path / f"lake_{name}" for name in ("in_process", "celery")}
    for lake in lakes.values():
        lake.mkdir()
        lakemod.land_raw_file(sample(ESM4_0508), lake, instrument)
    prefix = f"qm-test-{uuid.uuid4().hex[:8]}:"
    monkeypatch.setenv("QMACHINA_CELERY_BROKER", redis_url)
    monkeypatch.setenv("QMACHINA_CELERY_KEY_PREFIX", prefix)
    monkeypatch.setenv("QMACHINA_CELERY_VISIBILITY_TIMEOUT_S", "5")  # a dead worker's task comes back soon
    env = {**os.environ, "QMACHINA_EXECUTOR": "celery", "QMACHINA_LAKE_DIR": str(lakes["celery"])}
    workers = []
    for i in range(2):
        with (tmp_path / f"worker{i}.log").open("wb") as log:  # the child keeps its own copy of the fd
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "qmachina_assets.cli", "worker", "--name", f"w{i}", "--loglevel", "WARNING"],
                cwd=PROJECT_ROOT, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT))
    try:
        (tmp_path / "dagster_home").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
            register_sessions(instance, [KEY])
            _run(instance, monkeypatch, lakes["in_process"], "in_process")
            from dagster_celery.make_app import make_app

            cfg = CelerySettings().executor_config()
            app = make_app({"broker": cfg["broker"], "backend": cfg["backend"],
                            "config_source": type("C", (), cfg["config_source"])})
            deadline = time.time() + 180
            while len(app.control.ping(timeout=1.0)) < 2:
                assert time.time() < deadline, "two workers did not answer a ping within 180 s"
                assert all(w.poll() is None for w in workers), "a worker exited"
            killed: list[int] = []
            stop = threading.Event()
            killer = threading.Thread(target=_kill_first_taker, args=(instance, workers, killed, stop), daemon=True)
            killer.start()
            try:
                result = _run(instance, monkeypatch, lakes["celery"], "celery")
            finally:
                stop.set()
                killer.join()
            assert len(killed) == 1
            in_worker = [e.dagster_event.message for e in instance.all_logs(result.run_id)  # the killed one too
                         if e.is_dagster_event and e.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
                         and "in celery worker" in (e.dagster_event.message or "")]
            # bronze started on the killed worker and again on the live one, then silver
            assert [m.split()[3] for m in in_worker] == ["bronze_mbo", "bronze_mbo", "silver_grid"], in_worker
            (survivor,) = [w for w in workers if w.pid not in killed]
            assert survivor.poll() is None
    finally:
        for w in workers:
            os.killpg(w.pid, signal.SIGKILL)
            w.wait()
    assert _checksums(lakes["celery"]) == _checksums(lakes["in_process"])
    # written once, whole: one partition directory per layer; the killed writer's temp directory (if it got
    # that far) is named after its dead pid, and `qmachina lake gc` removes it
    assert [p.name for p in (lakes["celery"] / "bronze" / "ESM4").iterdir() if not p.name.startswith(".")] == [
        "2024-05-08"]
