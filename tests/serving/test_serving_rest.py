"""The `/v1` REST router (qmachina_serving.api) on a minimal app over a tmp lake: the serving registry
through HTTP (list/show/diff/activate/rollback/history and the state the registry ends in), experiment
results (filters, sort, detail), datasets, error codes, and a schemathesis run over its OpenAPI schema."""

import json
import math

import pyarrow as pa
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from qmachina_assets.core.control import ControlPlane
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.registry import Registry
from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.evaluation import METRIC_NAMES
from qmachina_serving.api import build_router
from tests.support.auth import seed_access

SERVING = PROJECT_ROOT / "configs" / "serving"
EXP = "flow_score_sweep"  # the OpenAPI example of `{name}`: schemathesis reaches real rows


def _rows(sweep_id: str, test_date: str, n: int, signal: str) -> list[dict]:
    rows = []
    for i in range(n):
        param_hash = f"{sweep_id[:4]}{i:04d}"
        row = {
            "sweep_id": sweep_id, "experiment": EXP, "experiment_hash": "e" * 16, "serving": "vp_flow_score",
            "serving_hash": "s" * 16, "pipeline": "demo", "pipeline_hash": "p" * 16, "test_date": test_date,
            "train_dates": "2024-01-01,2024-01-02", "train_dataset_ids": "ds_a,ds_b", "test_dataset_id": "ds_c",
            "code_version": "abc123", "sweep_seconds": 1.5, "created_at": "2026-11-23T00:00:00+00:00",
            "run_id": f"{sweep_id}-{param_hash}", "param_hash": param_hash, "signal": signal,
            "params_json": json.dumps({"threshold": 0.1 * (i + 1), "tp_ticks": 4}, sort_keys=True),
            "signal_config_json": json.dumps({"window": 10}), "gold_config_hash": "g" * 16,
            "threshold": 0.1 * (i + 1), "tp_ticks": 4.0, "sl_ticks": 4.0, "cooldown_bins": 0.0,
        }
        for tag in ("is", "oos"):
            for m in METRIC_NAMES:
                row[f"{tag}_{m}"] = float(i)
        row["oos_total_pnl_ticks"] = 10.0 * i - 15.0
        row["oos_n_trades"] = float(2 * i)
        row["oos_profit_factor"] = math.inf if i == 0 else float("nan") if i == 1 else 1.0 + i
        row["selected"] = i == n - 1
        rows.append(row)
    return rows


@pytest.fixture
def lake(tmp_path):
    lake = tmp_path / "lake"
    with Registry(lake=lake) as reg:
        first = reg.register(SERVING / "vp_flow_score.yaml", alias="live", actor="tester", reason="first",
                             expected_version_id=None).version.version_id
        reg.register(SERVING / "vp_derivative.yaml", alias="live", actor="tester", reason="second",
                     expected_version_id=first)
    sweeps.append_results(lake, pa.Table.from_pylist(_rows("aaaa111122223333", "2024-01-03", 4, "flow_score")))
    sweeps.append_results(lake, pa.Table.from_pylist(_rows("bbbb111122223333", "2024-01-04", 3, "derivative")))
    return lake


def _app(lake) -> FastAPI:
    app = FastAPI()
    app.include_router(build_router(lambda: Registry(lake=lake), lake, control_factory=lambda: ControlPlane(lake=lake)))
    return app


@pytest.fixture
def access(lake):
    return seed_access(lake)


@pytest.fixture
def client(lake, access):
    with access.client(_app(lake), "admin") as c:
        yield c


def test_serving_versions_aliases_diff_activate_rollback(client, lake, access):
    versions = client.get("/v1/serving/versions").json()
    assert len(versions) == 2
    first, second = (v["version_id"] for v in versions)
    assert versions[1]["aliases"] == ["live"] and versions[0]["aliases"] == []

    shown = client.get(f"/v1/serving/versions/{first}").json()
    assert shown["version_id"] == first and shown["lineage"]["kind"] == "register" and shown["runtime_snapshot"]
    assert client.get("/v1/serving/versions/live").json()["version_id"] == second
    assert client.get("/v1/serving/versions/sv_0000000000000000").status_code == 404
    assert client.get("/v1/serving/versions/nope").status_code == 404
    assert client.get("/v1/serving/versions/..%2F..%2Fetc").status_code in (404, 422)

    aliases = client.get("/v1/serving/aliases").json()
    assert [(a["name"], a["version_id"], a["revision"]) for a in aliases] == [("live", second, 2)]
    assert client.get("/v1/serving/aliases/live").json()["version_id"] == second
    assert client.get("/v1/serving/aliases/missing").status_code == 404

    diff = client.post("/v1/serving/diff", json={"a": first, "b": "live"}).json()
    assert diff["version_a"] == first and diff["version_b"] == second
    assert diff["changed"] and "signal" in json.dumps(diff["changed"])
    assert client.post("/v1/serving/diff", json={"a": first, "b": "sv_0000000000000000"}).status_code == 404
    assert client.post("/v1/serving/diff", json={"a": "../x", "b": first}).status_code == 422

    # activate: a new alias, the same version again (no change), an unknown version, invalid bodies
    r = client.post("/v1/serving/aliases/staging/activate",
                    json={"version_id": first, "reason": "try it", "expected_version_id": None})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] and r.json()["event"]["action"] == "activate"
    again = client.post("/v1/serving/aliases/staging/activate",
                        json={"version_id": first, "reason": "again",
                              "expected_version_id": first}).json()
    assert again == {"alias": "staging", "version_id": first, "changed": False, "event": None}
    assert client.post("/v1/serving/aliases/staging/activate",
                       json={"version_id": "sv_0000000000000000", "reason": "x",
                             "expected_version_id": first}).status_code == 404
    assert client.post("/v1/serving/aliases/staging/activate",
                       json={"version_id": first, "reason": " ",
                             "expected_version_id": first}).status_code == 422
    assert client.post("/v1/serving/aliases/staging/activate", json={"version_id": first}).status_code == 422
    assert client.post("/v1/serving/aliases/staging/activate",  # the actor is the token's, not a claim
                       json={"version_id": first, "reason": "x", "actor": "mallory",
                             "expected_version_id": first}).status_code == 422
    assert client.post("/v1/serving/aliases/staging/activate",  # the expected version is required
                       json={"version_id": second, "reason": "x"}).status_code == 422
    assert client.post(f"/v1/serving/aliases/{second}/activate",  # `sv_` is not an alias
                       json={"version_id": first, "reason": "x",
                             "expected_version_id": first}).status_code == 422
    # compare-and-swap: a client that read a stale version gets a conflict and changes nothing
    stale = client.post("/v1/serving/aliases/staging/activate",
                        json={"version_id": second, "reason": "x", "expected_version_id": second})
    assert stale.status_code == 409 and "another writer" in stale.json()["detail"]["message"]
    assert client.get("/v1/serving/aliases/staging").json()["version_id"] == first

    # rollback live: back to the first version; a second rollback has nothing earlier -> 409
    assert client.post("/v1/serving/aliases/live/rollback",  # stale: live points at `second`
                       json={"reason": "bad model", "expected_version_id": first}).status_code == 409
    r = client.post("/v1/serving/aliases/live/rollback",
                    json={"reason": "bad model", "expected_version_id": second})
    assert r.status_code == 200, r.text
    assert r.json()["version_id"] == first and r.json()["event"]["from_version"] == second
    refused = client.post("/v1/serving/aliases/live/rollback",
                          json={"reason": "again", "expected_version_id": first})
    assert refused.status_code == 409 and "roll back" in refused.json()["detail"]["message"]
    assert client.post("/v1/serving/aliases/missing/rollback",
                       json={"reason": "x", "expected_version_id": None}).status_code == 404

    history = client.get("/v1/serving/aliases/live/history").json()
    admin = f"admin [{access.token_ids['admin']}]"
    assert [(e["action"], e["to_version"], e["actor"]) for e in history] == [
        ("register", first, "tester"), ("register", second, "tester"), ("rollback", first, admin)]
    assert client.get("/v1/serving/aliases/missing/history").status_code == 404

    with Registry(lake=lake) as reg:  # the registry's own view agrees
        assert reg.resolve("live").version_id == first
        assert reg.resolve("staging").version_id == first
        assert [e.reason for e in reg.history("staging")] == ["try it"]
        assert reg.verify() == []


def test_activate_refused_by_preflight_is_409(client, lake, monkeypatch):
    from qmachina_assets.core.registry import registry as registry_mod

    first = client.get("/v1/serving/versions").json()[0]["version_id"]
    monkeypatch.setattr(registry_mod, "lock_problems", lambda snap, inst: ["tick_size differs from the lock"])
    live = client.get("/v1/serving/aliases/live").json()["version_id"]
    r = client.post("/v1/serving/aliases/live/activate",
                    json={"version_id": first, "reason": "x", "expected_version_id": live})
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert detail["issues"] == [{"kind": "instrument", "message": "tick_size differs from the lock"}]
    with Registry(lake=lake) as reg:
        assert reg.resolve("live").version_id != first  # nothing written


def test_experiments_runs_filter_sort_detail(client):
    exps = client.get("/v1/experiments").json()
    assert exps == [{"name": EXP, "result_files": 2, "rows": 7, "test_dates": ["2024-01-03", "2024-01-04"]}]

    runs = client.get(f"/v1/experiments/{EXP}/runs").json()
    assert runs["total"] == 7 and len(runs["runs"]) == 7
    pnl = [r["metrics"]["oos_total_pnl_ticks"] for r in runs["runs"]]
    assert pnl == sorted(pnl, reverse=True)
    assert set(runs["runs"][0]["params"]) == {"threshold", "tp_ticks"}

    q = client.get(f"/v1/experiments/{EXP}/runs", params={"test_date": "2024-01-03", "signal": "flow_score",
                                                             "min_oos_trades": 2, "sort": "oos_hit_rate",
                                                             "order": "asc", "limit": 2}).json()
    assert q["total"] == 3 and [r["metrics"]["oos_hit_rate"] for r in q["runs"]] == [1.0, 2.0]
    assert all(r["test_date"] == "2024-01-03" and r["signal"] == "flow_score" for r in q["runs"])
    sel = client.get(f"/v1/experiments/{EXP}/runs", params={"selected": True}).json()
    assert sel["total"] == 2 and all(r["selected"] for r in sel["runs"])
    pf = client.get(f"/v1/experiments/{EXP}/runs", params={"sort": "oos_profit_factor"}).json()["runs"]
    assert [r["metrics"]["oos_profit_factor"] for r in pf][-4:] == [None] * 4  # inf and NaN -> null, last
    assert client.get(f"/v1/experiments/{EXP}/runs", params={"sort": "nope"}).status_code == 422
    assert client.get(f"/v1/experiments/{EXP}/runs", params={"limit": 0}).status_code == 422
    assert client.get(f"/v1/experiments/{EXP}/runs", params={"test_date": "03/01/2024"}).status_code == 422
    assert client.get("/v1/experiments/unknown/runs").status_code == 404
    assert client.get("/v1/experiments/..%2F..%2Fregistry/runs").status_code in (404, 422)

    run_id = "aaaa111122223333-aaaa0001"
    d = client.get(f"/v1/experiments/{EXP}/runs/{run_id}").json()
    assert d["run_id"] == run_id and d["experiment"] == EXP and d["test_dataset_id"] == "ds_c"
    assert d["train_dates"] == ["2024-01-01", "2024-01-02"] and d["train_dataset_ids"] == ["ds_a", "ds_b"]
    assert d["signal_config"] == {"window": 10} and d["tp_ticks"] == 4.0 and d["code_version"] == "abc123"
    assert len(d["metrics"]) == 2 * len(METRIC_NAMES) and d["metrics"]["oos_profit_factor"] is None
    assert d["other"] == {}
    assert client.get(f"/v1/experiments/{EXP}/runs/nope-1").status_code == 404
    eq = client.get(f"/v1/experiments/{EXP}/runs/{run_id}/equity")  # its specs/datasets are not in this lake
    assert eq.status_code == 409 and "cannot replay" in eq.json()["detail"]["message"]
    assert client.get(f"/v1/experiments/{EXP}/runs/nope-1/equity").status_code == 404


def test_datasets(client, lake):
    assert client.get("/v1/datasets").json() == []
    assert client.get("/v1/datasets/esh4_20240103_full__demo__12345678__abcd1234").status_code == 404
    assert client.get("/v1/datasets/..").status_code in (404, 422)
    assert client.get("/v1/datasets/.hidden").status_code == 422
    bad = lake / "research" / "datasets" / "broken_ds"
    bad.mkdir(parents=True)
    (bad / "manifest.json").write_text("{}")
    assert client.get("/v1/datasets").json() == []  # an invalid manifest is skipped in the list
    r = client.get("/v1/datasets/broken_ds")
    assert r.status_code == 409 and "does not validate" in r.json()["detail"]["message"]


def test_openapi_schema_is_complete(client):
    schema = client.get("/openapi.json").json()
    ops = [(p, m, op) for p, item in schema["paths"].items() for m, op in item.items()]
    assert len(ops) == 59  # 22 serving, experiments, datasets, advisor, AutoML; 15 auth, workspace, audit; 8 jobs;
    # 14 studio (the last: a shipped Gold DSL spec's text, GET /v1/studio/gold/specs/{spec})
    # /auth/logout: 204, no body; a job's events: text/event-stream
    ops = [(p, m, op) for p, m, op in ops if p != "/auth/logout" and not p.endswith("/events")]
    for path, method, op in ops:
        ok = (op["responses"].get("200") or op["responses"]["201"])["content"]["application/json"]["schema"]
        ref = ok.get("$ref") or ok.get("items", {}).get("$ref")  # a model, or a list of a model
        assert ref and ref.split("/")[-1] in schema["components"]["schemas"], f"{method} {path}: {ok}"
        if path.startswith(("/v1/serving", "/v1/experiments", "/v1/datasets")) and ("{" in path or method == "post"):
            assert {"404", "422"} <= set(op["responses"]), f"{method} {path}: error responses undocumented"



def test_default_router_reads_the_app_settings(lake, access):
    """`rest.router` (what the serving app includes) takes the lake, registry and control plane from
    `app.state.settings`."""
    from qmachina_serving.api import router
    from qmachina_serving.settings import ServingSettings

    app = FastAPI()
    app.state.settings = ServingSettings(lake_dir=lake)
    app.include_router(router)
    with TestClient(app) as c:
        assert c.get("/v1/serving/aliases").status_code == 401
        c.headers.update(access.headers("viewer"))
        assert [a["name"] for a in c.get("/v1/serving/aliases").json()] == ["live"]
        assert [e["name"] for e in c.get("/v1/experiments").json()] == [EXP]
    app.state.rest_registry.close()
    app.state.auth.close()



def test_unreachable_registry_is_503_not_500(tmp_path):
    app = FastAPI()
    app.include_router(build_router(lambda: Registry(url="postgresql://nobody@127.0.0.1:1/none"), tmp_path,
                                    control_factory=lambda: ControlPlane(lake=tmp_path)))
    with seed_access(tmp_path).client(app, "viewer") as c:
        r = c.get("/v1/serving/aliases")
        assert r.status_code == 503 and "registry unavailable" in r.json()["detail"]
        assert c.get("/v1/experiments").json() == []  # the lake endpoints do not need the registry


# ---- schemathesis ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rest_schema(tmp_path_factory):
    lake = tmp_path_factory.mktemp("st") / "lake"
    with Registry(lake=lake) as reg:
        first = reg.register(SERVING / "vp_flow_score.yaml", alias="live", actor="tester", reason="first",
                             expected_version_id=None).version.version_id
        reg.register(SERVING / "vp_derivative.yaml", alias="live", actor="tester", reason="second",
                     expected_version_id=first)
    sweeps.append_results(lake, pa.Table.from_pylist(_rows("cccc111122223333", "2024-01-03", 3, "flow_score")))
    REST_HEADERS.update(seed_access(lake).headers("admin"))
    return schemathesis.openapi.from_asgi("/openapi.json", _app(lake))


REST_HEADERS: dict[str, str] = {}
schema = schemathesis.pytest.from_fixture("rest_schema")


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_no_server_errors(case):
    case.call_and_validate(headers=REST_HEADERS, checks=[not_a_server_error])
