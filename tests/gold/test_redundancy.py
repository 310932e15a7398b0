"""Near-duplicate features (core/gold/redundancy.py) and their report in the Gold DSL preview: a monotone
transform is caught by rank correlation where Pearson misses it, a weighted sum by R², independent features
stay silent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qmachina_assets.core.gold import dsl, dsl_runtime
from qmachina_assets.core.gold.features import GoldFeatureConfig
from qmachina_assets.core.gold.fixtures import read_arrow
from qmachina_assets.core.gold.redundancy import average_ranks, redundancy
from qmachina_assets.core.paths import PROJECT_ROOT

FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "gold_parity"


def test_average_ranks_share_ties():
    assert average_ranks(np.array([3.0, 1.0, 2.0, 2.0])).tolist() == [3.0, 0.0, 1.5, 1.5]


def test_monotone_transform_weighted_sum_and_independent_columns():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 5000))
    cols = {"a": a, "exp_a": np.exp(3 * a), "mix": 0.6 * a + 0.8 * b, "b": b, "c": c, "flat": np.ones(5000)}
    cols["a"][:3] = np.nan  # rows with a non-finite value are left out
    rep = redundancy(cols)
    assert rep.n_rows == 4997 and rep.constant == ["flat"]
    pair = next(p for p in rep.pairs if {p.a, p.b} == {"a", "exp_a"})
    assert pair.rank_corr == pytest.approx(1.0) and pair.pearson < 0.8  # Pearson alone would miss it
    assert all({p.a, p.b} != {"a", "mix"} for p in rep.pairs)  # correlated, not a duplicate
    mix = next(e for e in rep.explained if e.name == "mix")
    assert mix.r2 == pytest.approx(1.0) and set(mix.by[:2]) == {"a", "b"} and "R²" in mix.message
    assert rep.r2["c"] < 0.01 and "c" not in {e.name for e in rep.explained}
    assert rep.rank_corr["c"]["flat"] is None
    only = redundancy(cols, targets=["c"])
    assert only.pairs == [] and list(only.rank_corr) == ["c"]
    with pytest.raises(KeyError, match="nope"):
        redundancy(cols, targets=["nope"])


def test_dsl_preview_flags_duplicates_of_the_builtins():
    bins, grid = read_arrow(FIXTURES / "bins.arrow"), read_arrow(FIXTURES / "grid.arrow")
    meta = json.loads((FIXTURES / "config.json").read_text())
    cfg = GoldFeatureConfig(**meta["gold_config"])
    spec = dsl.validate_or_raise({"version": 1, "name": "dupes", "nodes": {
        "x": {"type": "silver_ref", "field": "v_rest_depth"},
        "fresh": {"type": "temporal_window", "source": "x", "agg": "diff", "lag_bins": 3},
        "m": {"type": "expr", "inputs": {"x": "x"}, "expr": "exp(0.01 * x)"},
        "o_depth": {"type": "output", "source": "x", "name": "depth"},
        "o_exp": {"type": "output", "source": "m", "name": "depth_exp"},
        "o_fresh": {"type": "output", "source": "fresh", "name": "depth_diff", "fill_nan": 0.0},
    }})
    res = dsl_runtime.preview(spec, bins, grid, meta["grid_radius_ticks"], meta["tick_int"], cfg.cell_width_ms,
                      sample_bins=700, config=cfg)
    red = res.redundancy
    assert red is not None and red.features[:3] == ["depth", "depth_exp", "depth_diff"]
    assert any({p.a, p.b} == {"depth", "depth_exp"} and p.rank_corr == pytest.approx(1.0) for p in red.pairs)
    out = {o.name: o for o in res.outputs}
    assert out["depth_exp"].rank_corr_with_builtin.keys() == out["depth_exp"].corr_with_builtin.keys()
    assert out["depth_diff"].explained_r2 is not None and out["depth_diff"].explained_r2 < 0.95
    assert all(not p.a.startswith("builtin:") or not p.b.startswith("builtin:") for p in red.pairs)
