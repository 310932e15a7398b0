"""The committed gold parity fixtures are reproducible and match the engine a browser must match."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qmachina_assets.core.gold import dsl, dsl_runtime
from qmachina_assets.core.gold.features import GoldFeatureConfig, GoldRuntime, compute_gold
from qmachina_assets.core.gold.fixtures import read_arrow, write_dsl_fixtures, write_parity_fixtures
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


# ---- Gold DSL vectors ---------------------------------------------------------------------------------

DSL_FIXTURES = PROJECT_ROOT / "tests" / "fixtures" / "gold_dsl"


def _dsl_spec_paths() -> list:
    return sorted((PROJECT_ROOT / "configs" / "gold").glob("*.yaml")) + sorted(DSL_FIXTURES.glob("*.yaml"))


def test_dsl_fixtures_cover_every_shipped_spec_and_equal_the_stream() -> None:
    meta = json.loads((DSL_FIXTURES / "config.json").read_text())
    assert meta["runtime_version"] == dsl_runtime.RUNTIME_VERSION
    bins, grid = read_arrow(DSL_FIXTURES / "bins.arrow"), read_arrow(DSL_FIXTURES / "grid.arrow")
    r, w = meta["grid_radius_ticks"], 2 * meta["grid_radius_ticks"] + 1
    assert sorted(meta["specs"]) == sorted(p.stem for p in _dsl_spec_paths())
    for name, info in meta["specs"].items():
        spec = dsl.load_spec(PROJECT_ROOT / info["source"])
        assert spec.spec_hash == info["spec_hash"], f"{name}: the spec changed; run `qmachina gold-fixtures`"
        assert dsl.validate_or_raise(json.loads((DSL_FIXTURES / f"{name}.spec.json").read_text())) == spec
        expected = read_arrow(DSL_FIXTURES / f"{name}.expected.arrow")
        rt = dsl_runtime.DslRuntime(spec, r, meta["tick_int"], meta["cell_width_ms"])  # the browser's shape
        steps = [rt.step({c: v[b:b + 1] for c, v in bins.items()}, {c: v[b * w:(b + 1) * w] for c, v in grid.items()})
                 for b in range(meta["bins"])]
        assert list(expected) == [*info["outputs"], "gold_valid"]
        for col, want in expected.items():
            got = np.concatenate([s[col] for s in steps])
            assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True), (name, col)


@pytest.mark.slow
def test_dsl_fixtures_are_regenerated_identically(tmp_path) -> None:
    write_dsl_fixtures(sample(ESH4_1225), tmp_path, locked_instrument(), _dsl_spec_paths())
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads((DSL_FIXTURES / "config.json").read_text())
    for path in DSL_FIXTURES.glob("*.arrow"):
        fresh, committed = read_arrow(tmp_path / path.name), read_arrow(path)
        assert fresh.keys() == committed.keys()
        for col in fresh:
            assert np.array_equal(fresh[col], committed[col], equal_nan=True), (path.name, col)
    for path in [*DSL_FIXTURES.glob("*.spec.json"), *DSL_FIXTURES.glob("*.state.json")]:
        assert (tmp_path / path.name).read_text() == path.read_text()
