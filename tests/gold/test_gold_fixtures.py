"""The committed gold parity fixtures are reproducible and match the engine a browser must match."""

from __future__ import annotations

import json

import numpy as np

from qmachina_assets.core.gold.features import GoldFeatureConfig, GoldRuntime, compute_gold
from qmachina_assets.core.gold.fixtures import read_arrow, write_parity_fixtures
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from tests.conftest import ESH4_1225, sample

FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "gold_parity"


def _load():
    meta = json.loads((FIXTURES / "config.json").read_text())
    return meta, read_arrow(FIXTURES / "bins.arrow"), read_arrow(FIXTURES / "grid.arrow"), \
        read_arrow(FIXTURES / "expected.arrow")


def test_fixture_expected_equals_gold_one_bin_at_a_time() -> None:
    meta, bins, grid, expected = _load()
    cfg = GoldFeatureConfig(**meta["gold_config"])
    assert cfg.config_hash == meta["config_hash"]
    r = meta["grid_radius_ticks"]
    w = 2 * r + 1
    batch = compute_gold(bins, grid, cfg, r, meta["tick_int"])
    rt = GoldRuntime(cfg, r, meta["tick_int"])  # the browser's shape: one bin per call
    steps = [rt.step({c: v[b:b + 1] for c, v in bins.items()}, {c: v[b * w:(b + 1) * w] for c, v in grid.items()})
             for b in range(meta["bins"])]
    for name, col in expected.items():
        assert np.array_equal(batch[name], col), name
        assert np.array_equal(np.concatenate([s[name] for s in steps]), col), name
    assert (expected["flow_state_code"] != 0).mean() > 0.05  # the window exercises the z-scores


def test_fixtures_are_regenerated_identically(tmp_path) -> None:
    write_parity_fixtures(sample(ESH4_1225), tmp_path, locked_instrument())
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads((FIXTURES / "config.json").read_text())
    for name in ("bins.arrow", "grid.arrow", "expected.arrow"):
        fresh, committed = read_arrow(tmp_path / name), read_arrow(FIXTURES / name)
        assert fresh.keys() == committed.keys()
        for col in fresh:
            assert np.array_equal(fresh[col], committed[col]), (name, col)
