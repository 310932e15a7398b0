"""`/v1/experiments/{name}/{sensitivity,heatmap,robustness,suggestions}` over a results store of planted
synthetic days (tests/support/planted.py): what the studio's compare step draws, errors for unknown names."""

import datetime as dt
import itertools
import json
import shutil

import pyarrow as pa
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from qmachina_assets.cli import main
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.specs import ExperimentSpec, resolve_experiment, validate_experiment
from qmachina_serving.api import build_router
from tests.support.planted import BROAD, fold_rows, planted_day

EXPERIMENT = {
    "name": "planted", "serving": "vp_flow_score",
    "eval": {"tp_ticks": [4], "sl_ticks": [4], "max_hold_bins": 30, "warmup_bins": 0, "cooldown_bins": [10, 20],
             "min_signals": 5, "entry_mode": "mid"},
    "sweep": {"thresholds": [0.1, 0.2, 0.3, 0.4]},
    "promotion": {"min_oos_trades": 1, "min_hit_rate": 0.0, "min_profit_factor": 0.0, "max_drawdown_ticks": 1e6},
    "tracking": {"backend": "none"}}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("advisor_rest")
    configs = root / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", configs)
    (configs / "experiments" / "planted.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    exp, serving, _ = resolve_experiment("planted", configs_dir=configs)
    lake = root / "lake"
    days = [dt.date(2024, 3, 13), dt.date(2024, 3, 14), dt.date(2024, 3, 15)]
    data = {d: planted_day(d, BROAD, 4, 4, seed=i) for i, d in enumerate(days)}
    for train, test in itertools.pairwise(days):
        sweeps.append_results(lake, pa.Table.from_pylist(fold_rows(exp, serving, data[train], data[test], test)))
    app = FastAPI()
    app.include_router(build_router(None, lake, configs))
    with TestClient(app) as c:
        yield c, configs, lake


def test_sensitivity_and_heatmap(client):
    c, *_ = client
    r = c.get("/v1/experiments/planted/sensitivity")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["swept_axes"] == {"cooldown_bins": 2, "threshold": 4} and body["n_rows"] == 16
    thr = next(a for a in body["axes"] if a["axis"] == "threshold")
    assert [p["value"] for p in thr["points"]] == [0.1, 0.2, 0.3, 0.4] and thr["selected_value"] == 0.4
    assert all(p["n_rows"] == 4 and len(p["fold_medians"]) == 2 for p in thr["points"])
    one = c.get("/v1/experiments/planted/sensitivity", params={"axis": "cooldown_bins", "metric": "oos_hit_rate"})
    assert [a["axis"] for a in one.json()["axes"]] == ["cooldown_bins"] and one.json()["axes"][0]["flat"] is True
    h = c.get("/v1/experiments/planted/heatmap", params={"x": "threshold", "y": "cooldown_bins"}).json()
    assert len(h["median"]) == 2 and len(h["median"][0]) == 4 and h["selected"][0] == 0.4
    assert c.get("/v1/experiments/planted/heatmap", params={"x": "threshold", "y": "nope"}).status_code == 422
    assert c.get("/v1/experiments/planted/sensitivity", params={"metric": "bogus"}).status_code == 422
    assert c.get("/v1/experiments/missing/sensitivity").status_code == 404


def test_robustness_flags_with_figures(client):
    c, *_ = client
    body = c.get("/v1/experiments/planted/robustness").json()
    flags = {(f["name"], f["axis"]): f for f in body["flags"]}
    edge = flags[("edge", "threshold")]
    assert edge["fired"] is True and edge["figure"] == 0.4 and edge["threshold"] == 0.4
    assert flags[("is_vs_oos", None)]["fired"] is False
    assert body["trades_replayed"] is False and "not replayed" in body["note"]  # rows without datasets
    assert body["sets_tried"] == 8
    strict = c.get("/v1/experiments/planted/robustness", params={"min_trades": 10_000, "replay": False}).json()
    few = next(f for f in strict["flags"] if f["name"] == "few_trades")
    assert few["fired"] is True and few["threshold"] == 10_000
    assert c.get("/v1/experiments/planted/robustness", params={"peak_keep": 2}).status_code == 422


def test_suggestions_are_valid_experiments(client):
    c, configs, _ = client
    body = c.get("/v1/experiments/planted/suggestions").json()
    kinds = {(s["kind"], s["axis"]) for s in body["suggestions"]}
    assert ("extend_edge", "threshold") in kinds and ("drop_flat_axis", "cooldown_bins") in kinds
    _, serving, pipeline = resolve_experiment("planted", configs_dir=configs)
    for s in body["suggestions"]:
        spec = ExperimentSpec.model_validate(yaml.safe_load(s["yaml"]))
        validate_experiment(spec, serving, pipeline)
        assert s["reason"] and spec.n_sets(serving) == s["n_sets"]
    (configs / "experiments" / "planted.yaml").rename(configs / "planted.yaml.bak")
    try:
        assert c.get("/v1/experiments/planted/suggestions").status_code == 409
    finally:
        (configs / "planted.yaml.bak").rename(configs / "experiments" / "planted.yaml")


def test_advise_cli(client, capsys):
    _, configs, lake = client
    assert main(["advise", "planted", "--lake", str(lake), "--configs-dir", str(configs), "--no-replay"]) == 0
    out = capsys.readouterr().out
    assert "[FIRED] edge (threshold)" in out and "suggest extend_edge threshold" in out
    assert main(["advise", "planted", "--lake", str(lake), "--configs-dir", str(configs), "--json", "--write"]) == 0
    body, _, wrote = capsys.readouterr().out.partition("\nwrote ")
    assert wrote
    names = [s["spec"]["name"] for s in json.loads(body)["suggestions"]]
    try:
        for name in names:
            exp, serving, _ = resolve_experiment(name, configs_dir=configs)  # a loadable experiment file
            assert exp.name == name and serving.name == "vp_flow_score"
    finally:
        for name in names:
            (configs / "experiments" / f"{name}.yaml").unlink()
    assert main(["advise", "missing", "--lake", str(lake)]) == 2


def test_automl_templates(client):
    c, *_ = client
    names = [t["name"] for t in c.get("/v1/automl/templates").json()]
    assert {"statistical_default", "ml_default", "thresholds_grid"} <= set(names)
    r = c.get("/v1/automl/templates/ml_default/expand", params={"like": "planted"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {e["signal"] for e in body} >= {"gbm_mf", "knn_cl"} and all(e["n_sets"] == 40 for e in body)
    assert all(yaml.safe_load(e["experiment_yaml"])["serving"] == e["serving"]["name"] for e in body)
    assert c.get("/v1/automl/templates/nope/expand", params={"like": "planted"}).status_code == 404
    assert c.get("/v1/automl/templates/ml_default/expand", params={"like": "missing"}).status_code == 404
