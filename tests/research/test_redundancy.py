"""Redundancy on a research dataset (core/research/redundancy.py) and its REST resources: gold outputs that are
functions of one another, a signal against itself under another name, ML feature matrices."""

from __future__ import annotations

import pytest

from qmachina_assets.core.research import redundancy as red
from qmachina_assets.core.research.datasets import build_dataset_day, dataset_id_for
from qmachina_assets.core.research.specs import resolve_serving
from tests.support.auth import rest_client
from tests.support.synth_days import DAYS, build_synth_days


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = build_synth_days(tmp_path_factory.mktemp("redundancy"))
    _, pipeline = resolve_serving("synth_flow", configs_dir=w.configs)
    build_dataset_day(w.lake, pipeline, DAYS[0])
    return w, dataset_id_for(w.lake, pipeline, DAYS[0])


def test_gold_outputs(world):
    w, ds = world
    rep = red.gold_redundancy(w.lake, [ds])
    assert "flow_score" in rep.features and "gold_valid" not in rep.features and rep.n_rows > 1000
    # composite is composite_raw normalised per level: a monotone function of it within each series
    pair = next((p for p in rep.pairs if {p.a, p.b} == {"composite", "composite_raw"}), None)
    assert pair is not None and pair.rank_corr > 0.95, rep.rank_corr["composite"]
    assert all(abs(p.rank_corr) >= rep.rank_corr_threshold for p in rep.pairs)


def test_signals_and_ml_features(world):
    w, ds = world
    rep = red.signal_redundancy(w.lake, [ds], ["flow_score", "ads", "lsvm_der"], 0.25)
    assert "flow_score" in rep.features and "ads" in rep.features
    assert any(f.startswith("lsvm_der:") for f in rep.features)
    assert set(rep.r2) == set(rep.features)
    with pytest.raises(ValueError, match="no named feature matrix"):
        red.signal_redundancy(w.lake, [ds], ["pca_ad"], 0.25)


def test_rest(world):
    w, ds = world
    with rest_client(w.lake, w.configs) as c:
        g = c.get(f"/v1/datasets/{ds}/redundancy/gold", params={"rank_corr": 0.9})
        assert g.status_code == 200, g.text
        assert g.json()["rank_corr_threshold"] == 0.9
        s = c.get(f"/v1/datasets/{ds}/redundancy/signals", params=[("signals", "flow_score"), ("signals", "ads")])
        assert s.status_code == 200 and set(s.json()["features"]) == {"flow_score", "ads"}
        assert c.get(f"/v1/datasets/{ds}/redundancy/signals", params={"signals": "nope"}).status_code == 422
        assert c.get(f"/v1/datasets/{ds}/redundancy/signals", params={"signals": "pca_ad"}).status_code == 409
        assert c.get("/v1/datasets/missing_ds/redundancy/gold").status_code == 404
