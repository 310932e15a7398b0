"""Gold as Dagster assets: built-in and DSL variants over a real silver partition, checks and metadata."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pyarrow.parquet as pq
import pytest

from qmachina_assets.core.engine.silver_partition import silver_dir
from qmachina_assets.core.gold.features import GoldFeatureConfig, compute_gold
from qmachina_assets.core.gold.partition import build_gold, gold_dir
from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.defs.bronze.assets import bronze_mbo
from qmachina_assets.defs.gold.assets import gold_assets
from qmachina_assets.defs.partitions import register_sessions, session_key
from qmachina_assets.defs.resources import LakeResource
from qmachina_assets.defs.silver.assets import silver_grid
from tests.conftest import ESH4_1225, sample

DATE = "2023-12-25"
WINDOW = {"ops": {"silver_grid": {"config": {"start_et": "18:00", "end_et": "18:20"}}}}  # the Sunday open


def test_gold_assets_builtin_and_dsl(lake, instrument):
    lakemod.land_raw_file(sample(ESH4_1225), lake, instrument)
    assets = {a.key.to_user_string(): a for a in gold_assets()}
    assert {"gold_builtin", "gold_dsl_builtin", "gold_dsl_depth_imbalance"} <= set(assets)
    chosen = [bronze_mbo, silver_grid, assets["gold_builtin"], assets["gold_dsl_builtin"]]
    with dg.instance_for_test() as instance:
        register_sessions(instance, [session_key(DATE, "ESH4")])
        res = dg.materialize(chosen, partition_key=session_key(DATE, "ESH4"), instance=instance,
                             resources={"lake_res": LakeResource(root=str(lake))}, run_config=WINDOW)
        assert res.success
        meta = res.asset_materializations_for_node("gold_builtin")[0].metadata
        checks = [c for c in res.get_asset_check_evaluations() if c.asset_key.path[0].startswith("gold_")]
        assert {c.check_name for c in checks} == {"no_nan_inf", "values_in_range", "row_counts_match_silver"}
        assert all(c.passed for c in checks), [c.metadata for c in checks if not c.passed]
    cfg = GoldFeatureConfig.from_instrument(instrument)
    assert meta["config_hash"].value == cfg.config_hash and meta["config"].value["c5"] == instrument.c5
    assert "| flow_score |" in meta["summary"].value
    assert meta["distributions"].value.startswith("![distributions](data:image/png;base64,")

    s = silver_dir(lake, "ESH4", DATE)
    bins = pq.read_table(s / "bins.parquet").to_pydict()
    grid_t = pq.read_table(s / "grid.parquet")
    bins = {c: np.asarray(v) for c, v in bins.items()}
    grid = {c: grid_t[c].to_numpy() for c in grid_t.column_names}
    expected = compute_gold(bins, grid, cfg, instrument.grid_radius_ticks, instrument.tick_int)
    assert len(bins["bin_seq"]) == 12_000 and bins["book_valid"].all()
    assert (expected["flow_state_code"] != 0).any()
    stored = pq.read_table(gold_dir(lake, "builtin", "ESH4", DATE) / "gold.parquet")
    dsl = pq.read_table(gold_dir(lake, "dsl_builtin", "ESH4", DATE) / "gold.parquet")
    for name, col in expected.items():
        assert np.array_equal(stored[name].to_numpy(), col), name  # streamed by row group = batch
        assert np.allclose(dsl[name].to_numpy(), col, rtol=0, atol=1e-9), name  # DSL twin of the built-in


def test_gold_partition_is_versioned_per_config(lake, instrument):
    lakemod.land_raw_file(sample(ESH4_1225), lake, instrument)
    with dg.instance_for_test() as instance:
        register_sessions(instance, [session_key(DATE, "ESH4")])
        res = {"lake_res": LakeResource(root=str(lake))}
        other = {"ops": {"silver_grid": {"config": {"start_et": "18:20", "end_et": "18:22"}}}}
        # a different silver window materializes (a new version: another data version), then back to the first
        versions = []
        for rc in (WINDOW, other, WINDOW):
            out = dg.materialize([bronze_mbo, silver_grid] if not versions else [silver_grid],
                                 partition_key=session_key(DATE, "ESH4"), instance=instance, resources=res,
                                 run_config=rc)
            assert out.success
            versions.append(out.asset_materializations_for_node("silver_grid")[0].metadata["version"].value)
        assert versions[0] == versions[2] != versions[1]
        event = instance.get_latest_materialization_event(dg.AssetKey("silver_grid"))
        assert event.asset_materialization.tags["dagster/data_version"] == versions[0]
    cfg = GoldFeatureConfig.from_instrument(instrument)
    kw = dict(lake=lake, symbol="ESH4", date=DATE, feature_set="builtin", radius=instrument.grid_radius_ticks,
              tick_int=instrument.tick_int)
    m1, created = build_gold(config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash, builtin_config=cfg, **kw)
    m2, again = build_gold(config=cfg.model_dump(mode="json"), config_hash=cfg.config_hash, builtin_config=cfg, **kw)
    assert created and not again and m1 == m2
    other = GoldFeatureConfig.from_instrument(instrument, c1=2.0)  # another config: another version, no error
    first = gold_dir(lake, "builtin", "ESH4", DATE).resolve()
    m3, created3 = build_gold(config=other.model_dump(mode="json"), config_hash=other.config_hash,
                              builtin_config=other, **kw)
    assert created3 and m3.config_hash == other.config_hash and first.is_dir()
    assert gold_dir(lake, "builtin", "ESH4", DATE).resolve() != first
    with pytest.raises(FileNotFoundError, match="silver partition"):
        build_gold(config={}, config_hash="x", builtin_config=cfg, **{**kw, "date": "2023-12-24"})
