"""The jobs API against a real `dagster dev` (webserver + daemon, queued run coordinator): launch → progress →
completion over SSE and its resumption, cancel, resume after an injected failure, the wall-time budget, an
over-budget refusal, another workspace's job (404) and Dagster down (503).

One `dagster dev` per module (its own process group on a free port, SIGKILLed at the end) over two synthetic
days; the experiment's 3 gold scoring values make 3 groups of parameter sets, so the sweep reports progress
3 times per fold."""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from qmachina_assets.core.control import ControlPlane
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.datasets import build_dataset_day
from qmachina_assets.core.research.specs import resolve_experiment
from qmachina_serving.api import build_router
from qmachina_serving.settings import ServingSettings
from tests.support.auth import seed_access
from tests.support.serving import free_port
from tests.support.synth_days import build_synth_days

EXPERIMENT = """name: {name}
description: jobs API test grid
serving: synth_flow
eval: {{tp_ticks: [4, 8], sl_ticks: [4], max_hold_bins: 600, warmup_bins: 100, cooldown_bins: [10], min_signals: 1}}
sweep:
  scoring: {{tanh_scale: [2.0, 3.0, 4.0]}}
  thresholds: [0.1, 0.2]
walk_forward: {{train_days: 1, test_days: 1}}
promotion: {{min_oos_trades: 1, min_hit_rate: 0.0, min_profit_factor: 0.0, max_drawdown_ticks: 1000}}
tracking: {{backend: none}}
"""
SETS = 3 * 2 * 2  # scoring x thresholds x tp, one test day


def _graphql_ok(port: int) -> bool:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": "{ version }"}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return "version" in json.loads(r.read()).get("data", {})
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    home, faults = root / "dagster_home", root / "faults"
    home.mkdir()
    faults.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    w = build_synth_days(root)
    # bronze is built: without the raw files the raw-file sensor requests no bronze runs that would take the
    # run slots of the jobs under test
    shutil.rmtree(w.lake / "raw")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "QMACHINA_LAKE_DIR": str(w.lake),
           "QMACHINA_CONFIGS_DIR": str(w.configs), "QMACHINA_JOB_FAULT_DIR": str(faults)}
    env.pop("QMACHINA_DAGSTER_PG_URL", None)
    log = (root / "dagster-dev.log").open("w")
    proc = subprocess.Popen([str(PROJECT_ROOT / ".venv/bin/dagster"), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
                             "-h", "127.0.0.1", "-p", str(port)], cwd=PROJECT_ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        for name in ("jobs_flow", "jobs_other", "jobs_wall"):
            (w.configs / "experiments" / f"{name}.yaml").write_text(EXPERIMENT.format(name=name))
        main = seed_access(w.lake, roles=("editor", "viewer"))
        other = seed_access(w.lake, workspace="team_b", roles=("editor",))
        third = seed_access(w.lake, workspace="team_c", roles=("editor", "admin"))
        with ControlPlane(lake=w.lake) as cp:
            cp.register_resource("team_b", "experiment", "jobs_other", actor="tests")
            cp.register_resource("team_c", "experiment", "jobs_wall", actor="tests")
        # while Dagster starts: the datasets the runs need (their datasets step re-uses them; the resumed run
        # shows that step is not executed again)
        _, _, pipeline = resolve_experiment("jobs_flow", configs_dir=w.configs)
        for day in pipeline.days:
            build_dataset_day(w.lake, pipeline, day, pipeline.capture.symbol)
        deadline = time.monotonic() + 120
        while not _graphql_ok(port):
            assert proc.poll() is None, (root / "dagster-dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dagster dev did not answer within 120 s"
            time.sleep(0.5)

        def client(access, role="editor", **settings) -> TestClient:
            app = FastAPI()
            settings.setdefault("dagster_url", f"http://127.0.0.1:{port}")
            app.state.settings = ServingSettings(lake_dir=w.lake, **settings)
            app.include_router(build_router(None, w.lake, w.configs, control_factory=lambda: ControlPlane(lake=w.lake)))
            return access.client(app, role)

        yield {"w": w, "main": main, "other": other, "third": third, "client": client, "faults": faults, "port": port}
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def launched(world):
    """The long jobs, launched together in three workspaces (the per-workspace limit lets them run side by side;
    the global limit of 2 queues the third): a clean one in the default workspace, one in team_b whose sweep
    fails once (injected), one in team_c with a wall-time budget it cannot meet."""
    (world["faults"] / "jobs_other.fail").write_text("once")
    main, other = world["client"](world["main"]), world["client"](world["other"])
    a = main.post("/v1/jobs", json={"experiment": "jobs_flow", "session_id": "s1"})
    assert a.status_code == 201, a.text
    b = other.post("/v1/jobs", json={"experiment": "jobs_other"})
    assert b.status_code == 201, b.text
    third = world["client"](world["third"])
    d = third.post("/v1/jobs", json={"experiment": "jobs_wall", "wall_time_s": 0.001})
    assert d.status_code == 201, d.text
    sid, studio_job = _studio_session_and_run(third)
    return {"main": (main, a.json()), "other": (other, b.json()), "third": (third, d.json()),
            "studio": (third, sid, studio_job)}


EVALUATION = {"thresholds": [0.1, 0.2], "tp_ticks": [4, 8], "sl_ticks": [4], "cooldown_bins": [10],
              "max_hold_bins": 600, "warmup_bins": 100, "min_signals": 1,
              "promotion": {"min_oos_trades": 1, "min_hit_rate": 0.0, "min_profit_factor": 0.0,
                            "max_drawdown_ticks": 1000}}


def _studio_session_and_run(c: TestClient) -> tuple[str, dict]:
    """A Model Studio session built step by step over the API (what the page does), then its run launched."""
    s = c.post("/v1/studio/sessions", json={"title": "api test"}).json()
    sid = s["session_id"]
    assert s["status"] == "draft" and s["next_step"] == "data"
    r = c.post(f"/v1/studio/sessions/{sid}/steps/gold", json={"payload": {}})
    assert r.status_code == 409 and "data" in r.json()["detail"]  # gated
    assert c.post(f"/v1/studio/sessions/{sid}/steps/data", json={"payload": {"pipeline": "nope"}}).status_code == 422
    for step, payload in (("data", {"pipeline": "synth_two_days"}), ("gold", {"scoring": {"tanh_scale": 3.0}}),
                          ("signal", {"name": "flow_score", "base_serving": "synth_flow"}),
                          ("evaluation", EVALUATION)):
        r = c.post(f"/v1/studio/sessions/{sid}/steps/{step}", json={"payload": payload})
        assert r.status_code == 200, (step, r.text)
    ev = r.json()["steps"]["evaluation"]["payload"]
    assert ev["experiment"] == f"studio_{sid}_v1" and ev["sets_per_day"] == 4, ev
    assert ev["dagster_reload"] == "requested"
    job = c.post("/v1/jobs", json={"experiment": ev["experiment"], "session_id": sid})
    assert job.status_code == 201, job.text
    return sid, job.json()


def sse(client: TestClient, job_id: str, after: int | None = None, headers: dict | None = None) -> list[dict]:
    """Every event of the job's stream until it ends (id, event, data)."""
    url = f"/v1/jobs/{job_id}/events" + (f"?after={after}" if after is not None else "")
    out, cur = [], {}
    with client.stream("GET", url, headers=headers or {}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if cur:
                    out.append(cur)
                cur = {}
            elif line.startswith("id: "):
                cur["id"] = int(line[4:])
            elif line.startswith("event: "):
                cur["event"] = line[7:]
            elif line.startswith("data: "):
                cur["data"] = json.loads(line[6:])
    return out


def test_launch_progress_completion_and_sse_resumption(world, launched):
    c, job = launched["main"]
    assert job["status"] == "queued" and job["param_sets"] == SETS and len(job["runs"]) == 1
    events = sse(c, job["job_id"])
    kinds = [e["event"] for e in events]
    assert kinds[0] == "queued" and "started" in kinds and kinds[-2:] == ["completed", "end"], kinds
    prog = [e["data"] for e in events if e["event"] == "progress"]
    dones = [p["done"] for p in prog]
    assert len(prog) >= 3 and dones == sorted(dones) and dones[-1] == SETS and {p["total"] for p in prog} == {SETS}
    assert 0 < dones[1] < SETS  # reported as the sweep ran, not only at the end
    completed = events[-2]["data"]
    assert completed["n_runs"] == SETS and len(set(completed["run_ids"])) == SETS
    table = sweeps.read_results(world["w"].lake, "jobs_flow")
    assert set(completed["run_ids"]) <= set(table.column("run_id").to_pylist())
    ids = [e["id"] for e in events if "id" in e]
    assert ids == list(range(len(ids)))
    # a reload resumes after the last id it saw: the rest only, same ids (query or Last-Event-ID header)
    k = ids[len(ids) // 2]
    tail = sse(c, job["job_id"], after=k)
    assert [e.get("id") for e in tail] == [*ids[k + 1:], None]
    assert sse(c, job["job_id"], headers={"Last-Event-ID": str(k)})[0]["id"] == k + 1
    got = c.get(f"/v1/jobs/{job['job_id']}").json()
    assert got["status"] == "success" and got["progress"]["done"] == SETS and got["cpu_seconds"] > 0
    assert set(got["result_run_ids"]) == set(completed["run_ids"])
    assert [j["job_id"] for j in c.get("/v1/jobs?status=success").json()["jobs"]] == [job["job_id"]]
    # another workspace sees neither the job nor the experiment
    o = world["client"](world["other"])
    assert o.get(f"/v1/jobs/{job['job_id']}").status_code == 404
    assert o.get(f"/v1/jobs/{job['job_id']}/events").status_code == 404
    assert o.post(f"/v1/jobs/{job['job_id']}/cancel").status_code == 404
    assert o.post("/v1/jobs", json={"experiment": "jobs_flow"}).status_code == 404
    # a viewer reads but cannot launch
    viewer = world["client"](world["main"], "viewer")
    assert viewer.post("/v1/jobs", json={"experiment": "jobs_flow"}).status_code == 403


def test_resume_after_injected_failure(world, launched):
    c, job = launched["other"]
    first = sse(c, job["job_id"])
    assert [e["event"] for e in first][-2:] == ["failed", "end"]
    assert "injected failure" in first[-2]["data"]["error"] and first[-2]["data"]["step"] == "experiment_sweep"
    assert c.get(f"/v1/jobs/{job['job_id']}").json()["status"] == "failure"
    r = c.post(f"/v1/jobs/{job['job_id']}/resume")
    assert r.status_code == 200, r.text
    assert len(r.json()["runs"]) == 2 and r.json()["status"] == "queued"
    rest = sse(c, job["job_id"], after=first[-2]["id"])
    kinds = [e["event"] for e in rest]
    assert kinds[0] == "resumed" and kinds[-2:] == ["completed", "end"], kinds
    assert rest[0]["data"]["parent_run_id"] == job["runs"][0]
    assert c.get(f"/v1/jobs/{job['job_id']}").json()["status"] == "success"
    # FROM_FAILURE: the datasets step of the resumed run was not executed again
    q = '{ runOrError(runId: "RUN") { ... on Run { stepStats { stepKey status } } } }'.replace(
        "RUN", rest[0]["data"]["run_id"])
    req = urllib.request.Request(f"http://127.0.0.1:{world['port']}/graphql", data=json.dumps({"query": q}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        steps = {s["stepKey"]: s["status"] for s in json.loads(resp.read())["data"]["runOrError"]["stepStats"]}
    assert steps == {"experiment_sweep": "SUCCESS"}
    assert c.post(f"/v1/jobs/{job['job_id']}/resume").status_code == 409  # nothing to resume


def test_cancel_and_wall_time(world, launched):
    c = world["client"](world["main"])
    job = c.post("/v1/jobs", json={"experiment": "jobs_flow"}).json()
    r = c.post(f"/v1/jobs/{job['job_id']}/cancel")
    assert r.status_code == 200, r.text
    events = sse(c, job["job_id"])
    assert [e["event"] for e in events][-2:] == ["canceled", "end"]
    assert c.get(f"/v1/jobs/{job['job_id']}").json()["status"] == "canceled"
    assert c.post(f"/v1/jobs/{job['job_id']}/cancel").status_code == 409
    # a budget the run cannot meet: it stops between groups of sets and is marked timed_out
    c, job = launched["third"]
    events = sse(c, job["job_id"])
    assert [e["event"] for e in events][-2:] == ["timed_out", "end"], events
    assert "wall-time budget" in events[-2]["data"]["error"]
    assert c.get(f"/v1/jobs/{job['job_id']}").json()["status"] == "timed_out"


def test_over_budget_refused_before_launch(world):
    c = world["client"](world["main"], job_budget_cpu_s=1e-6)
    before = len(c.get("/v1/jobs").json()["jobs"])
    r = c.post("/v1/jobs", json={"experiment": "jobs_flow"})
    assert r.status_code == 409
    d = r.json()["detail"]
    assert "exceeds the budget" in d["message"] and d["estimate"]["param_sets"] == SETS
    assert d["estimate"]["estimated_cpu_seconds"] > 1e-6
    assert len(c.get("/v1/jobs").json()["jobs"]) == before
    est = c.get("/v1/jobs/estimate?experiment=jobs_flow").json()
    assert est["sets_per_day"] == SETS and est["days"] == 1 and est["over_budget"]


def test_dagster_down_answers_503(world):
    c = world["client"](world["main"], dagster_url=f"http://127.0.0.1:{free_port()}")
    r = c.post("/v1/jobs", json={"experiment": "jobs_flow"})
    assert r.status_code == 503 and "Dagster is unavailable" in r.json()["detail"]
    assert c.get("/v1/jobs").status_code in (200, 503)
    assert c.get("/v1/auth/me").status_code == 200  # the rest of the API is unaffected


def test_studio_session_from_steps_to_promoted_alias(world, launched):
    c, sid, job = launched["studio"]
    configs = world["w"].configs
    name = f"studio_{sid}_v1"
    assert (configs / "experiments" / f"{name}.yaml").is_file() and (configs / "serving" / f"{name}.yaml").is_file()
    prev = c.get("/v1/studio/preview?pipeline=synth_two_days").json()
    assert [d["built"] for d in prev["days"]] == [True, True] and prev["days"][0]["n_bins"] > 0
    assert prev["days"][0]["heatmap"] and prev["days"][0]["fields"]
    # manual YAML mode: the same models validate it (an unknown key is named)
    layers = c.get(f"/v1/studio/sessions/{sid}/yaml").json()
    broken = layers["experiment_yaml"] + "bogus: 1\n"
    bad = c.post(f"/v1/studio/sessions/{sid}/yaml?dry_run=true",
                 json={"serving_yaml": layers["serving_yaml"], "experiment_yaml": broken})
    assert bad.json()["ok"] is False and "bogus" in bad.json()["error"]
    ok = c.post(f"/v1/studio/sessions/{sid}/yaml?dry_run=true",
                json={"serving_yaml": layers["serving_yaml"], "experiment_yaml": layers["experiment_yaml"]}).json()
    assert ok == {"ok": True, "error": None, "experiment": name, "serving": name, "sets_per_day": 4}
    # the run step needs the finished job
    events = sse(c, job["job_id"])
    assert [e["event"] for e in events][-2:] == ["completed", "end"]
    r = c.post(f"/v1/studio/sessions/{sid}/steps/run", json={"payload": {"job_id": job["job_id"]}})
    assert r.status_code == 200, r.text
    run_ids = r.json()["steps"]["run"]["payload"]["run_ids"]
    assert len(run_ids) == 4
    assert c.get(f"/v1/experiments/{name}/runs").json()["total"] == 4  # the workspace sees its experiment
    admin = world["client"](world["third"], "admin")
    assert c.post(f"/v1/studio/sessions/{sid}/promote", json={"alias": "studio_model"}).status_code == 403  # admin
    assert admin.post(f"/v1/studio/sessions/{sid}/promote", json={"alias": "studio_model"}).status_code == 409  # gated
    c.post(f"/v1/studio/sessions/{sid}/steps/compare", json={"payload": {"run_id": run_ids[0], "note": "ok"}})
    gate = c.get(f"/v1/studio/sessions/{sid}/gate").json()
    assert gate["candidate"] is not None and {f["rule"] for f in gate["failures"]} <= {"dirty_code"}
    r = admin.post(f"/v1/studio/sessions/{sid}/promote", json={"alias": "studio_model", "allow_dirty": True})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["stream_url"] == "./?serving=studio_model" and got["version_id"].startswith("sv_")
    assert c.get("/v1/serving/aliases/studio_model").json()["version_id"] == got["version_id"]
    s = c.get(f"/v1/studio/sessions/{sid}").json()
    assert s["status"] == "promoted" and s["next_step"] is None
    log = c.get(f"/v1/studio/sessions/{sid}/decisions").json()["decisions"]
    assert [d["step"] for d in log] == ["data", "gold", "signal", "evaluation", "run", "compare", "promote"]
    assert world["client"](world["main"]).get(f"/v1/studio/sessions/{sid}").status_code == 404


def test_studio_dates_and_gold_dsl_make_a_studio_pipeline(world):
    c = world["client"](world["third"])
    sid = c.post("/v1/studio/sessions", json={}).json()["session_id"]
    step = lambda name, payload: c.post(f"/v1/studio/sessions/{sid}/steps/{name}", json={"payload": payload})  # noqa: E731
    r = step("data", {"pipeline": "synth_two_days", "dates": ["2024-03-14", "2024-03-16"]})
    assert r.status_code == 422 and "2024-03-16" in r.text
    assert step("data", {"pipeline": "synth_two_days", "dates": ["2024-03-14", "2024-03-15"]}).status_code == 200
    r = step("gold", {"mode": "dsl", "gold_dsl": "nope"})
    assert r.status_code == 422 and "nope" in r.text
    assert step("gold", {"mode": "dsl", "gold_dsl": "depth_imbalance"}).status_code == 200
    assert step("signal", {"name": "flow_score", "base_serving": "synth_flow"}).status_code == 200
    r = step("evaluation", EVALUATION)
    assert r.status_code == 200, r.text
    ev = r.json()["steps"]["evaluation"]["payload"]
    name = f"studio_{sid}_v1"
    assert ev["pipeline"] == name and ev["serving"] == name
    text = (world["w"].configs / "pipelines" / f"{name}.yaml").read_text()
    assert "gold_dsl: depth_imbalance" in text
    assert name not in [p["name"] for p in c.get("/v1/studio/catalog").json()["pipelines"]]
