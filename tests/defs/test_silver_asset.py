"""Silver as a Dagster asset (bronze -> engine -> Parquet), its checks, immutability, and the CLI twin."""

import datetime as dt

import dagster as dg
import pyarrow.parquet as pq
import pytest

from qmachina_assets.cli import main
from qmachina_assets.core.engine import silver
from qmachina_assets.core.engine.silver_partition import (
    SilverWindow,
    build_silver,
    read_silver_manifest,
    silver_dir,
)
from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.defs.bronze.assets import bronze_mbo
from qmachina_assets.defs.partitions import register_sessions, session_key
from qmachina_assets.defs.resources import LakeResource
from qmachina_assets.defs.silver.assets import silver_grid
from tests.conftest import ESM4_0508, sample


def test_bronze_then_silver_in_one_run(lake, instrument, tmp_path):
    lakemod.land_raw_file(sample(ESM4_0508), lake, instrument)
    with dg.instance_for_test() as instance:
        register_sessions(instance, [session_key("2024-05-08", "ESM4")])
        res = dg.materialize([bronze_mbo, silver_grid], partition_key=session_key("2024-05-08", "ESM4"),
                             instance=instance, resources={"lake_res": LakeResource(root=str(lake))})
        assert res.success
        mat = res.asset_materializations_for_node("silver_grid")[0]
        assert mat.metadata["bins"].value == 20  # 00:00:00.0598 -> 00:00:01.996 at 100 ms
        assert mat.metadata["grid_rows"].value == 20 * (2 * instrument.grid_radius_ticks + 1)
        assert mat.metadata["depth_heatmap"].value.startswith("![rest_depth heatmap](data:image/png;base64,")
        checks = {c.check_name: c for c in res.get_asset_check_evaluations() if c.asset_key.path == ["silver_grid"]}
        assert set(checks) == {"no_nan_inf", "k_in_range", "bbo_not_crossed_unless_flagged", "row_counts_consistent"}
        assert all(c.passed for c in checks.values())
    grid = pq.read_table(silver_dir(lake, "ESM4", "2024-05-08") / "grid.parquet")
    assert grid.schema.remove_metadata().equals(silver.grid_schema().remove_metadata())
    bins = pq.read_table(silver_dir(lake, "ESM4", "2024-05-08") / "bins.parquet").to_pandas()
    last = bins.iloc[-1]  # PROVENANCE.md: final BBO 5214.00 / 5214.25
    assert (last.best_bid_price_int, last.best_ask_price_int) == (5_214_000_000_000, 5_214_250_000_000)
    assert (bins.bin_start_ns % 100_000_000 == 0).all()

    # the CLI twin on the raw file gives the same bins
    out = tmp_path / "adhoc"
    assert main(["silver", str(sample(ESM4_0508)), "--out", str(out)]) == 0
    adhoc = pq.read_table(out / "bins.parquet").to_pandas()
    assert adhoc[["bin_start_ns", "best_bid_price_int", "best_ask_price_int"]].equals(
        bins[["bin_start_ns", "best_bid_price_int", "best_ask_price_int"]])


def test_silver_partition_is_versioned_per_window(lake, instrument):
    f = lakemod.land_raw_file(sample(ESM4_0508), lake, instrument)
    from qmachina_assets.core.ingest.bronze import build_bronze

    build_bronze([f.path], date=f.date, symbol="ESM4", lake=lake, instrument=instrument)
    day = dt.date(2024, 5, 8)
    m, created = build_silver(lake=lake, symbol="ESM4", date=day, instrument=instrument)
    again, created2 = build_silver(lake=lake, symbol="ESM4", date=day, instrument=instrument)
    assert created and not created2 and again == m
    current = silver_dir(lake, "ESM4", day)
    first = current.resolve()
    assert current.is_symlink() and first.name.startswith("2024-05-08@")
    # another window is another version beside the first (never an error, nothing overwritten)
    w = SilverWindow(start_et="20:00", end_et="20:01")  # 00:00-00:01 UTC on the 8th is 20:00 ET the 7th
    other, created3 = build_silver(lake=lake, symbol="ESM4", date=day, instrument=instrument, window=w)
    assert created3 and other.window == w and current.resolve() != first and first.is_dir()
    assert read_silver_manifest(lake, "ESM4", day).window == w
    # back to the first window: the stored version is re-used, the link repointed
    back, created4 = build_silver(lake=lake, symbol="ESM4", date=day, instrument=instrument)
    assert not created4 and back == m and current.resolve() == first


def test_silver_window_validation():
    with pytest.raises(ValueError, match="both or neither"):
        SilverWindow(start_et="09:30")
    with pytest.raises(ValueError, match="must be after"):
        SilverWindow(start_et="10:30", end_et="09:30")
    start, end = SilverWindow(start_et="09:30", end_et="16:00").bounds_ns(dt.date(2024, 3, 15))
    assert start == 1710509400 * 10**9 and end - start == int(6.5 * 3600) * 10**9  # EDT, UTC-4


def test_silver_cli_missing_file_exits_2(tmp_path, capsys):
    assert main(["silver", str(tmp_path / "nope.dbn"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.dbn: no such file" in capsys.readouterr().err
