"""Model Studio's gold step with a typed Gold DSL spec, over the API on one synthetic day (its research dataset
built once): validate (a good spec; bad ones located at their node and line), preview (NaN share, a quantile and
the correlation with the built-in gold equal to the core's runtime and to the dataset's stored gold, computed
here directly), bad input named by field, roles and workspaces, the committed spec written as a versioned
`configs/gold` file that the session's pipeline and the Dagster code location pick up; the data preview's price
range. No Dagster: the reload the studio requests fails quietly in the background."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from qmachina_assets.core.control import ControlPlane
from qmachina_assets.core.gold import dsl
from qmachina_assets.core.gold.dsl_runtime import DslRuntime
from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.ingest.bronze import build_bronze
from qmachina_assets.core.ingest.synth import SynthParams, write_synthetic_day
from qmachina_assets.core.instrument import load_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.research import datasets as dsets
from qmachina_assets.core.research.specs import load_pipeline
from qmachina_serving.api import build_router
from qmachina_serving.settings import ServingSettings
from tests.support.auth import seed_access
from tests.support.serving import free_port

DAY, UNBUILT = dt.date(2024, 3, 14), dt.date(2024, 3, 15)
PIPELINE = f"""name: gold_day
description: one synthetic day, ten minutes after the open
capture: {{symbol: ESH4, dates: [{DAY}, {UNBUILT}], start_et: "09:30", end_et: "09:40"}}
"""
SPEC = """version: 1
name: studio_tilt
description: depth tilt and its 5-sample change (NaN while a series warms up)
nodes:
  bid_depth: {type: silver_ref, field: bid_depth}
  ask_depth: {type: silver_ref, field: ask_depth}
  tilt:
    type: expr
    inputs: {b: bid_depth, a: ask_depth}
    expr: where(b + a > 0, (b - a) / (b + a), 0)
  tilt_diff: {type: temporal_window, source: tilt, agg: diff, lag_bins: 5}
  out_tilt: {type: output, source: tilt, name: tilt, dtype: float64}
  out_diff: {type: output, source: tilt_diff, name: tilt_diff5, dtype: float64}
"""
N_BINS = 1500


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio_gold")
    lake, configs = root / "lake", root / "configs"
    inst = load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml")
    src = write_synthetic_day(root / "synth.dbn.zst", SynthParams(n_records=120_000, seed=5, date=DAY, symbol="ESH4"),
                              inst)
    f = lakemod.land_raw_file(src, lake, inst)
    build_bronze([f.path], date=f.date, symbol="ESH4", lake=lake, instrument=inst)
    shutil.copytree(PROJECT_ROOT / "configs", configs)
    (configs / "pipelines" / "gold_day.yaml").write_text(PIPELINE)
    pipeline = load_pipeline("gold_day", configs_dir=configs)
    manifest, _ = dsets.build_dataset_day(lake, pipeline, DAY)
    main = seed_access(lake, roles=("editor", "viewer"))
    other = seed_access(lake, workspace="team_g", roles=("editor",))
    dead = f"http://127.0.0.1:{free_port()}"  # no Dagster: the background reload fails quietly

    def client(access, role="editor") -> TestClient:
        app = FastAPI()
        app.state.settings = ServingSettings(lake_dir=lake, dagster_url=dead)
        app.include_router(build_router(None, lake, configs, control_factory=lambda: ControlPlane(lake=lake)))
        return access.client(app, role)

    c = client(main)
    sid = c.post("/v1/studio/sessions", json={"title": "gold editor"}).json()["session_id"]
    return {"lake": lake, "configs": configs, "pipeline": pipeline,
            "dataset": dsets.dataset_dir(lake, manifest.dataset_id), "client": client, "main": main,
            "other": other, "c": c, "sid": sid}


def _line(text: str, start: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.lstrip().startswith(start))


def test_validate_a_good_spec_and_bad_ones_at_their_node(world):
    c, sid = world["c"], world["sid"]
    url = f"/v1/studio/sessions/{sid}/gold/validate"
    ok = c.post(url, json={"spec_yaml": SPEC}).json()
    assert ok["ok"] and ok["errors"] == [] and ok["outputs"] == ["tilt", "tilt_diff5"]
    assert ok["spec_hash"] == dsl.validate_or_raise(yaml.safe_load(SPEC)).spec_hash
    assert ok["node_lines"]["tilt_diff"] == _line(SPEC, "tilt_diff:")

    bad = SPEC.replace("field: ask_depth", "field: ask_dept").replace("lag_bins: 5", "lag_bins: -2")
    r = c.post(url, json={"spec_yaml": bad}).json()
    assert not r["ok"]
    by_node = {e["node"]: e for e in r["errors"]}
    assert by_node["ask_depth"]["kind"] == "unknown_field" and "ask_dept" in by_node["ask_depth"]["message"]
    assert by_node["ask_depth"]["line"] == _line(bad, "ask_depth:")
    assert by_node["tilt_diff"]["kind"] == "lookahead" and by_node["tilt_diff"]["line"] == _line(bad, "tilt_diff:")

    # a field error points at the field's own line; a dangling reference at its node
    multi = SPEC.replace("    expr: where(b + a > 0, (b - a) / (b + a), 0)\n",
                         "    expr: where(b + a > 0, (b - a) / (b + a), 0)\n    dtype: int16\n")
    (e,) = c.post(url, json={"spec_yaml": multi}).json()["errors"]
    assert e["node"] == "tilt" and e["field"] == "dtype" and e["line"] == _line(multi, "dtype: int16")
    (e,) = c.post(url, json={"spec_yaml": SPEC.replace("source: tilt, agg", "source: tiltt, agg")}).json()["errors"]
    assert e["node"] == "tilt_diff" and e["kind"] == "dangling_ref"
    # a dataset refuses an output named like a built-in gold column: so does the editor
    (e,) = c.post(url, json={"spec_yaml": SPEC.replace("name: tilt,", "name: composite,")}).json()["errors"]
    assert e["node"] == "out_tilt" and e["kind"] == "output" and "built-in" in e["message"]
    (e,) = c.post(url, json={"spec_yaml": "version: 1\nnodes: [a,\n"}).json()["errors"]
    assert e["kind"] == "parse" and e["node"] is None and e["line"] == 3
    assert c.post(url, json={"spec_yaml": "x" * 100_001}).status_code == 422  # bounded
    r = c.post(url, json={})
    assert r.status_code == 422 and "spec_yaml" in r.text


def test_preview_equals_the_core_on_the_day(world):
    c, sid = world["c"], world["sid"]
    url = f"/v1/studio/sessions/{sid}/gold/preview"
    r = c.post(url, json={"spec_yaml": SPEC})
    assert r.status_code == 409 and "data step" in r.json()["detail"]  # no day chosen yet
    r = c.post(f"/v1/studio/sessions/{sid}/steps/data", json={"payload": {"pipeline": "gold_day"}})
    assert r.status_code == 200, r.text
    r = c.post(url, json={"spec_yaml": SPEC, "sample_bins": N_BINS})  # default day: the first one built
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["date"] == DAY.isoformat() and p["source"].startswith("dataset ") and p["n_bins_sampled"] == N_BINS

    # the core, computed here directly on the same rows of the dataset's silver
    rt_inst = world["pipeline"].runtime()
    radius, w = rt_inst.grid_radius_ticks, 2 * rt_inst.grid_radius_ticks + 1
    d = world["dataset"]
    bins = pq.read_table(d / "bins.parquet").slice(0, N_BINS)
    grid = pq.read_table(d / "grid.parquet").slice(0, N_BINS * w)
    spec = dsl.validate_or_raise(yaml.safe_load(SPEC))
    rt = DslRuntime(spec, radius, rt_inst.tick_int, rt_inst.cell_width_ms)
    out = rt.step({c_: bins[c_].to_numpy() for c_ in bins.column_names},
                  {c_: grid[c_].to_numpy() for c_ in grid.column_names})
    valid = out["gold_valid"]
    stored = pq.read_table(d / "gold.parquet", columns=["composite"]).slice(0, N_BINS * w)["composite"].to_numpy()
    got = {o["preview"]["name"]: o for o in p["outputs"]}
    assert p["n_rows"] == N_BINS * w
    for i, name in enumerate(("tilt", "tilt_diff5")):
        o, x = got[name]["preview"], out[name][valid]
        assert o["n"] == valid.sum() and o["nan_share"] == rt.nan_counts[i] / valid.sum()
        fin = x[np.isfinite(x)]
        assert o["p50"] == pytest.approx(float(np.quantile(fin, 0.5)), abs=1e-12)
        assert o["p25"] == pytest.approx(float(np.quantile(fin, 0.25)), abs=1e-12)
        y = stored[valid]
        ok = np.isfinite(x) & np.isfinite(y)
        assert o["corr_with_builtin"]["composite"] == pytest.approx(float(np.corrcoef(x[ok], y[ok])[0, 1]), abs=1e-9)
        h = got[name]["histogram"]
        assert len(h["counts"]) == 24 and sum(h["counts"]) == fin.size and h["edges"][0] == o["p01"]
    assert got["tilt_diff5"]["preview"]["nan_share"] > 0  # the diff warms up on every series

    # a later window of the day, then bad input named by field, bounded
    later = c.post(url, json={"spec_yaml": SPEC, "date": DAY.isoformat(), "sample_bins": 200, "start_bin": 3000}).json()
    assert later["start_bin"] == 3000 and later["n_bins_sampled"] == 200
    for body, field, code in (({"sample_bins": 0}, "sample_bins", 422), ({"sample_bins": 5001}, "sample_bins", 422),
                              ({"start_bin": -1}, "start_bin", 422), ({"start_bin": 10**9}, "start_bin", 422),
                              ({"date": "2024-03-16"}, "date", 422), ({"date": "not a date"}, "date", 422),
                              ({"date": UNBUILT.isoformat()}, "date", 409)):
        r = c.post(url, json={"spec_yaml": SPEC, **body})
        assert r.status_code == code and field in r.text, (body, r.status_code, r.text)
    r = c.post(url, json={"spec_yaml": SPEC.replace("field: ask_depth", "field: nope")})
    assert r.status_code == 422
    assert r.json()["detail"]["errors"][0]["node"] == "ask_depth" and "spec_yaml" in r.json()["detail"]["message"]


def test_roles_and_workspaces(world):
    sid, body = world["sid"], {"spec_yaml": SPEC}
    viewer = world["client"](world["main"], "viewer")
    for route in ("validate", "preview"):
        r = viewer.post(f"/v1/studio/sessions/{sid}/gold/{route}", json=body)
        assert r.status_code == 403 and r.json()["detail"]["role"] == "viewer", r.text
        assert world["client"](world["other"]).post(f"/v1/studio/sessions/{sid}/gold/{route}",
                                                    json=body).status_code == 404  # not its session
    r = viewer.post(f"/v1/studio/sessions/{sid}/steps/gold", json={"payload": {"dsl_yaml": SPEC}})
    assert r.status_code == 403


def test_a_shipped_spec_loads_as_its_exact_text(world):
    """The editor's Load: the file's exact text (comments and all) with its hash; viewers read it too; a name that
    is not a plain spec name or no file is refused; no credential is a 401."""
    path = world["configs"] / "gold" / "depth_imbalance.yaml"
    original = path.read_text()
    text = original + "# a trailing comment the editor must keep\n"
    path.write_text(text)
    for role in ("editor", "viewer"):
        r = world["client"](world["main"], role).get("/v1/studio/gold/specs/depth_imbalance")
        assert r.status_code == 200, r.text
        assert r.json() == {"name": "depth_imbalance", "yaml": text,
                            "spec_hash": dsl.load_spec(path).spec_hash}
    c = world["c"]
    (world["configs"] / "gold" / "broken_one.yaml").write_text("version: 1\nnodes: 3\n")
    r = c.get("/v1/studio/gold/specs/broken_one")  # loads so the editor shows why; no hash
    assert r.status_code == 200 and r.json()["spec_hash"] is None and r.json()["yaml"] == "version: 1\nnodes: 3\n"
    r = c.get("/v1/studio/gold/specs/no_such_spec")
    assert r.status_code == 404 and "no_such_spec" in r.json()["detail"], r.text
    (world["configs"] / "secret.yaml").write_text("version: 1\n")  # one folder up: never reachable
    for bad in ("..%2Fsecret", "%2E%2E", "Depth_Imbalance", "depth_imbalance.yaml", "..", "x" * 65):
        r = c.get(f"/v1/studio/gold/specs/{bad}")
        assert r.status_code in (404, 422), (bad, r.status_code, r.text)
        assert "version: 1" not in r.text
    r = c.get("/v1/studio/gold/specs/depth_imbalance.yaml")
    assert r.status_code == 422 and "pattern" in r.text  # the name's pattern is the message
    (world["configs"] / "gold" / "broken_one.yaml").unlink()  # the later tests load every spec of the folder
    (world["configs"] / "secret.yaml").unlink()
    path.write_text(original)
    anon = TestClient(c.app)
    r = anon.get("/v1/studio/gold/specs/depth_imbalance")
    assert r.status_code == 401 and "gold_reach" not in r.text and "nodes" not in r.text


def test_the_committed_spec_is_a_versioned_file_the_session_and_dagster_use(world):
    from qmachina_assets.defs.gold.assets import gold_assets

    c, configs = world["c"], world["configs"]
    sid = c.post("/v1/studio/sessions", json={}).json()["session_id"]
    step = lambda name, payload: c.post(f"/v1/studio/sessions/{sid}/steps/{name}", json={"payload": payload})  # noqa: E731
    assert step("data", {"pipeline": "gold_day"}).status_code == 200  # two days: one walk-forward fold
    r = step("gold", {"mode": "dsl", "dsl_yaml": SPEC.replace("field: bid_depth", "field: bid_dept")})
    assert r.status_code == 422 and r.json()["detail"]["errors"][0]["node"] == "bid_depth"
    assert not list((configs / "gold").glob(f"studio_{sid}_*"))  # nothing written for an invalid spec
    r = step("gold", {"mode": "dsl", "dsl_yaml": SPEC, "scoring": {"tanh_scale": 3.0}})
    assert r.status_code == 200, r.text
    gold = r.json()["steps"]["gold"]["payload"]
    name = f"studio_{sid}_g1"
    assert gold["gold_dsl"] == name and gold["dsl_yaml"] is None and gold["mode"] == "dsl"
    path = configs / "gold" / f"{name}.yaml"
    assert dsl.load_spec(path).spec_hash == gold["spec_hash"]
    assert step("gold", {"mode": "dsl", "dsl_yaml": SPEC}).json()["steps"]["gold"]["payload"]["gold_dsl"] == name
    other = SPEC.replace("lag_bins: 5", "lag_bins: 7")
    assert step("gold", {"mode": "dsl", "dsl_yaml": other}).json()["steps"]["gold"]["payload"]["gold_dsl"] == \
        f"studio_{sid}_g2"
    assert dsl.load_spec(path).spec_hash == gold["spec_hash"]  # g1 never rewritten
    assert step("gold", {"mode": "dsl", "dsl_yaml": SPEC}).status_code == 200  # back to g1
    # the session's pipeline names it; the code location's gold assets include it (a new asset, no code change)
    assert step("signal", {"name": "flow_score", "base_serving": "vp_flow_score"}).status_code == 200
    ev = {"thresholds": [0.1], "tp_ticks": [4], "sl_ticks": [4], "cooldown_bins": [10], "max_hold_bins": 600,
          "warmup_bins": 100, "min_signals": 1}
    r = step("evaluation", ev)
    assert r.status_code == 200, r.text
    pipe = load_pipeline(r.json()["steps"]["evaluation"]["payload"]["pipeline"], configs_dir=configs)
    assert pipe.gold_dsl == name and pipe.gold_dsl_path() == path
    assert f"gold_dsl_{name}" in {a.key.to_user_string() for a in gold_assets(configs / "gold")}


def test_data_preview_has_the_price_range_and_is_bounded(world):
    c = world["c"]
    p = c.get("/v1/studio/preview?pipeline=gold_day").json()
    day, unbuilt = p["days"]
    assert day["built"] and not unbuilt["built"] and p["more_days"] == 0
    mid = pq.read_table(world["dataset"] / "bins.parquet", columns=["mid_price"])["mid_price"].to_numpy()
    mid = mid[np.isfinite(mid) & (mid > 0)]
    assert (day["price_min"], day["price_max"]) == (mid.min(), mid.max())
    assert day["heatmap"] and day["n_bins"] > N_BINS
    one = c.get(f"/v1/studio/preview?pipeline=gold_day&date={DAY}").json()
    assert [d["date"] for d in one["days"]] == [DAY.isoformat()]
    r = c.get("/v1/studio/preview?pipeline=gold_day&date=2024-01-01")
    assert r.status_code == 422 and "date" in r.text


def test_the_editor_in_chromium(world, tmp_path):
    """web/e2e/studio-gold.e2e.ts: a bad spec's error at its node and line, a good one's preview, then commit."""
    import os
    import subprocess
    from pathlib import Path

    from tests.conftest import REQUIRE_SERVICES
    from tests.support.serving import serve

    chromium = os.environ.get("QMACHINA_E2E_CHROMIUM", "/usr/bin/chromium")
    web = PROJECT_ROOT / "web"
    if not Path(chromium).is_file() or not (web / "dist" / "studio.html").is_file() \
            or not (web / "node_modules" / "playwright-core").is_dir():
        if REQUIRE_SERVICES:
            pytest.fail("Chromium, web/dist or web/node_modules is missing and QMACHINA_REQUIRE_SERVICES=1")
        pytest.skip("Chromium, web/dist or web/node_modules is missing (`make browser`, `make web-build`)")
    artifacts = Path(os.environ.get("QMACHINA_E2E_ARTIFACTS", PROJECT_ROOT / "test-artifacts" / "e2e"))
    with serve(world["lake"], "", QMACHINA_CONFIGS_DIR=str(world["configs"]),
               QMACHINA_SERVING_DAGSTER_URL=f"http://127.0.0.1:{free_port()}") as srv:
        env = {**os.environ, "QMACHINA_E2E_URL": srv.http, "QMACHINA_E2E_ARTIFACTS": str(artifacts),
               "QMACHINA_E2E_CHROMIUM": chromium, "QMACHINA_E2E_TOKEN": srv.access.tokens["editor"],
               "QMACHINA_E2E_PIPELINE": "gold_day"}
        out = subprocess.run(["npm", "--prefix", str(web), "run", "e2e:studio-gold"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert out.returncode == 0, f"gold editor browser test failed:\n{out.stdout[-6000:]}\n{out.stderr[-3000:]}"
