"""Immutable research datasets: built from bronze per PipelineSpec, content-addressed, checksummed, loaded
as one GridData; and the Dagster `dataset_<name>` assets. Real data: ESH4 2023-12-25, the Sunday open
(18:00 ET) of the Databento sample day."""

import datetime as dt
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qmachina_assets.core.engine.silver_partition import SilverWindow, build_silver, silver_dir
from qmachina_assets.core.gold import dsl as gold_dsl
from qmachina_assets.core.gold import dsl_runtime
from qmachina_assets.core.gold import features as gold
from qmachina_assets.core.gold.partition import BIN_INPUTS, builtin_schema
from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.ingest.bronze import build_bronze, read_manifest
from qmachina_assets.core.instrument import load_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.research.datasets import (
    BINS_NAME,
    GOLD_NAME,
    GRID_NAME,
    DatasetError,
    DatasetIntegrityError,
    build_dataset_day,
    check_dataset,
    dataset_dir,
    dataset_id_for,
    load_grid_data,
    read_dataset_manifest,
    verify_dataset,
)
from qmachina_assets.core.research.specs import load_pipeline
from qmachina_assets.defs.bronze.assets import BRONZE_KEY, bronze_mbo
from qmachina_assets.defs.datasets.assets import dataset_assets
from qmachina_assets.defs.partitions import register_sessions, session_key
from qmachina_assets.defs.resources import LakeResource, default_resources
from tests.conftest import ESH4_1225, sample

DATE = dt.date(2023, 12, 25)
R = 50
W = 2 * R + 1
N_BINS = 12_000  # 20 minutes of 100 ms bins

PIPELINES = {
    "ds_a": "",
    "ds_c1": "engine: {c1: 2.0}\n",
    "ds_dsl": "gold_dsl: depth_imbalance\n",
}
WINDOWS = {"ds_a": ("18:00", "18:20"), "ds_c1": ("18:00", "18:20"), "ds_dsl": ("18:20", "18:40")}


def _write_configs(root: Path) -> Path:
    (root / "pipelines").mkdir(parents=True)
    (root / "gold").mkdir()
    shutil.copy(PROJECT_ROOT / "configs" / "gold" / "depth_imbalance.yaml", root / "gold")
    for name, extra in PIPELINES.items():
        start, end = WINDOWS[name]
        (root / "pipelines" / f"{name}.yaml").write_text(
            f"name: {name}\ncapture:\n  symbol: ESH4\n  dates: [2023-12-25]\n"
            f"  start_et: \"{start}\"\n  end_et: \"{end}\"\n{extra}")
    return root / "pipelines"


def _land(lake: Path) -> None:
    inst = load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml")
    f = lakemod.land_raw_file(sample(ESH4_1225), lake, inst)
    build_bronze([f.path], date=f.date, symbol="ESH4", lake=lake, instrument=inst)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    lake = root / "lake"
    lake.mkdir()
    _land(lake)
    pdir = _write_configs(root / "configs")
    return {"lake": lake, "pipelines": pdir, **{n: load_pipeline(pdir / f"{n}.yaml") for n in PIPELINES}}


@pytest.fixture(scope="module")
def built(world):
    """Each pipeline's dataset, built once: name -> (manifest, created)."""
    return {n: build_dataset_day(world["lake"], world[n], DATE) for n in PIPELINES}


def _read(path: Path, name: str, columns=None) -> dict[str, np.ndarray]:
    t = pq.read_table(path / name, columns=columns)
    return {c: t[c].to_numpy() for c in t.column_names}


def test_built_once_then_reused(world, built):
    m, created = built["ds_a"]
    assert created and m.n_bins == N_BINS and m.grid_rows == N_BINS * W
    path = dataset_dir(world["lake"], m.dataset_id)
    stamps = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    again, created2 = build_dataset_day(world["lake"], world["ds_a"], "2023-12-25", "ESH4")
    assert not created2 and again == m
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == stamps  # nothing rewritten
    assert sorted(stamps) == ["bins.parquet", "checksums.json", "gold.parquet", "grid.parquet", "manifest.json"]
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the temp build directories were renamed into place


def test_id_is_content_derived(world, built):
    a, c1 = built["ds_a"][0], built["ds_c1"][0]
    assert re.fullmatch(r"esh4_20231225_1800_1820__ds_a__[0-9a-f]{8}__[0-9a-f]{8}", a.dataset_id)
    assert a.dataset_id.startswith(world["ds_a"].dataset_id(DATE) + "__")
    assert c1.dataset_id != a.dataset_id and c1.content_hash != a.content_hash
    assert c1.gold_config["c1"] == 2.0 and a.gold_config["c1"] == 1.0
    assert c1.runtime_config_version != a.runtime_config_version
    assert dataset_id_for(world["lake"], world["ds_a"], DATE) == a.dataset_id
    # the id's hash covers the input data and the semantics versions
    assert a.identity["bronze_sha256"] == a.bronze.sha256
    assert {"engine_version", "gold_version", "gold_config_hash", "runtime_config_version"} <= set(a.identity)


def test_other_bronze_bytes_get_another_id(world, built, tmp_path):
    """Same pipeline and date, different bronze sha256 (a re-delivered file): another id; and a bronze
    file that no longer matches its own manifest is refused before the engine runs."""
    other = tmp_path / "lake"
    shutil.copytree(world["lake"] / "bronze", other / "bronze", copy_function=os.link)
    mfile = other / "bronze" / "ESH4" / "2023-12-25" / "manifest.json"
    body = json.loads(mfile.read_text())
    body["data_sha256"] = "0" * 64
    mfile.unlink()  # replace, never write through the hard link
    mfile.write_text(json.dumps(body))
    other_id = dataset_id_for(other, world["ds_a"], DATE)
    assert other_id != built["ds_a"][0].dataset_id
    assert other_id.rsplit("__", 1)[0] == built["ds_a"][0].dataset_id.rsplit("__", 1)[0]
    with pytest.raises(DatasetError, match=r"mbo\.dbn: sha256 .* differs from its bronze manifest"):
        build_dataset_day(other, world["ds_a"], DATE)
    assert not (other / "research" / "datasets" / other_id).exists()
    assert [p.name for p in (other / "research" / "datasets").iterdir()] == []  # temp dir removed


def test_date_outside_capture_and_symbol_mismatch(world):
    with pytest.raises(ValueError, match=r"2023-12-24 is not a capture date of pipeline 'ds_a'"):
        build_dataset_day(world["lake"], world["ds_a"], "2023-12-24")
    with pytest.raises(DatasetError, match="captures ESH4, not ESM4"):
        build_dataset_day(world["lake"], world["ds_a"], DATE, "ESM4")


def test_checksums_verify_and_tampering_is_detected(world, built, tmp_path):
    m = built["ds_a"][0]
    path = dataset_dir(world["lake"], m.dataset_id)
    assert verify_dataset(path) == []
    sums = json.loads((path / "checksums.json").read_text())["files"]
    assert set(sums) == {BINS_NAME, GRID_NAME, GOLD_NAME, "manifest.json"}

    copy = tmp_path / "lake"  # hard links: cheap, and the tampered file is replaced, never written through
    shutil.copytree(world["lake"] / "bronze", copy / "bronze", copy_function=os.link)
    shutil.copytree(path, dataset_dir(copy, m.dataset_id), copy_function=os.link)
    tampered = dataset_dir(copy, m.dataset_id)
    bins = pq.read_table(tampered / BINS_NAME)
    mid = bins["mid_price"].to_numpy().copy()
    mid[123] += 0.25  # a valid Parquet file with one changed value
    (tampered / BINS_NAME).unlink()
    pq.write_table(bins.set_column(bins.schema.get_field_index("mid_price"), "mid_price", pa.array(mid)),
                   tampered / BINS_NAME)
    problems = verify_dataset(tampered)
    assert len(problems) == 1 and problems[0].startswith("bins.parquet: sha256")
    with pytest.raises(DatasetIntegrityError, match=r"bins\.parquet: sha256 .* does not match"):
        build_dataset_day(copy, world["ds_a"], DATE)
    assert check_dataset(tampered)["checksums_verify"][0] is False
    (tampered / GOLD_NAME).unlink()
    assert "gold.parquet: missing" in verify_dataset(tampered)
    assert verify_dataset(path) == []  # the original is untouched


def test_rows_complete_and_gold_is_compute_gold(world, built):
    inst = load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml")
    grids = {}
    for name in ("ds_a", "ds_c1"):
        m = built[name][0]
        path = dataset_dir(world["lake"], m.dataset_id)
        bins = _read(path, BINS_NAME)
        grid = _read(path, GRID_NAME, ["bin_seq", "k", "rest_depth", *gold.GOLD_INPUTS])
        assert len(grid["k"]) == len(bins["bin_seq"]) * W == m.grid_rows  # no (bin, k) row dropped
        assert (grid["k"].reshape(-1, W) == np.arange(-R, R + 1)).all()
        assert np.array_equal(grid["bin_seq"], np.repeat(bins["bin_seq"], W))
        expected = gold.compute_gold({c: bins[c] for c in BIN_INPUTS}, grid, world[name].gold_config(), R,
                                     inst.tick_int)
        stored = _read(path, GOLD_NAME)
        assert list(stored) == builtin_schema().names
        for col, values in expected.items():
            assert np.array_equal(stored[col], values), col
        grids[name] = (grid, stored)
    # c1 is a gold parameter: same grid, different gold
    assert np.array_equal(grids["ds_a"][0]["rest_depth"], grids["ds_c1"][0]["rest_depth"])
    assert not np.array_equal(grids["ds_a"][1]["pressure_variant"], grids["ds_c1"][1]["pressure_variant"])
    # without overrides the dataset's grid is the silver partition of the same window
    build_silver(lake=world["lake"], symbol="ESH4", date=DATE, instrument=inst,
                 window=SilverWindow(start_et="18:00", end_et="18:20"))
    silver_grid = pq.ParquetFile(silver_dir(world["lake"], "ESH4", DATE) / GRID_NAME)
    ours = pq.ParquetFile(dataset_dir(world["lake"], built["ds_a"][0].dataset_id) / GRID_NAME)
    assert silver_grid.schema_arrow.names == ours.schema_arrow.names
    assert silver_grid.metadata.num_rows == ours.metadata.num_rows
    for batch, mine in zip(silver_grid.iter_batches(200_000), ours.iter_batches(200_000), strict=True):
        assert batch.equals(mine)


def test_manifest_lineage(world, built):
    m = built["ds_a"][0]
    stored = read_dataset_manifest(dataset_dir(world["lake"], m.dataset_id))
    assert stored == m
    bronze = read_manifest(world["lake"], "ESH4", DATE)
    assert m.bronze.sha256 == bronze.data_sha256 and m.bronze.partition == "2023-12-25|ESH4"
    assert m.bronze.sources[0]["sha256"] == bronze.sources[0].sha256
    p = world["ds_a"]
    assert (m.pipeline_name, m.pipeline_spec_hash) == ("ds_a", p.spec_hash)
    assert m.pipeline_spec == p.model_dump(mode="json")
    assert m.runtime_config_version == p.runtime().config_version
    assert m.gold_config_hash == p.gold_config().config_hash and m.gold_dsl is None
    assert (m.engine_version, m.gold_version) == ("engine-2", gold.GOLD_VERSION)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout
    assert m.code_version.source == "git" and m.code_version.commit == head.strip()
    assert isinstance(m.code_version.dirty, bool)
    assert m.window == SilverWindow(start_et="18:00", end_et="18:20")
    assert m.window_ns[1] - m.window_ns[0] == 20 * 60 * 10**9
    assert m.first_ts_ns == m.window_ns[0] + 100_000_000 and m.last_ts_ns == m.window_ns[1]
    assert m.valid_bins == N_BINS and m.radius == R and m.cell_width_ms == 100 and m.created_at


def test_gold_dsl_outputs_are_gold_columns(world, built):
    m = built["ds_dsl"][0]
    assert m.gold_dsl is not None and m.gold_dsl.name == "depth_imbalance"
    path = dataset_dir(world["lake"], m.dataset_id)
    stored = _read(path, GOLD_NAME)
    assert list(stored) == [*builtin_schema().names, *m.gold_dsl.outputs]
    spec = gold_dsl.load_spec(world["pipelines"].parent / "gold" / "depth_imbalance.yaml")
    inst = load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml")
    expected = dsl_runtime.execute(spec, _read(path, BINS_NAME, list(BIN_INPUTS)), _read(path, GRID_NAME), R,
                                inst.tick_int, inst.cell_width_ms)
    for col in m.gold_dsl.outputs:
        assert np.array_equal(stored[col], expected[col]), col
    assert all(ok for ok, _ in check_dataset(path).values())


def test_load_grid_data(world, built):
    a, later = built["ds_a"][0], built["ds_dsl"][0]  # 18:00-18:20 and 18:20-18:40
    one = load_grid_data(world["lake"], [a.dataset_id], ["rest_depth", "flow_score", "state5_code"])
    assert one.n_bins == N_BINS and one.radius == R and one.cell_width_ms == 100
    assert {k: v.shape for k, v in one.columns.items()} == {c: (N_BINS, W) for c in
                                                           ("rest_depth", "flow_score", "state5_code")}
    assert all(v.dtype == np.float64 for v in one.columns.values())
    path = dataset_dir(world["lake"], a.dataset_id)
    bins = _read(path, BINS_NAME)
    assert np.array_equal(one.mid, bins["mid_price"]) and one.valid.all() and (one.day == 0).all()
    assert np.array_equal(one.best_bid, bins["best_bid_price_int"] * 1e-9)
    assert 4000 < one.mid[-1] < 6000  # dollars
    assert np.array_equal(one.columns["rest_depth"].ravel(), _read(path, GRID_NAME, ["rest_depth"])["rest_depth"])

    both = load_grid_data(world["lake"], [later.dataset_id, a.dataset_id], ["rest_depth", "flow_score"])
    assert both.n_bins == 2 * N_BINS
    assert (both.day[:N_BINS] == 0).all() and (both.day[N_BINS:] == 1).all()
    assert (np.diff(both.ts_ns) > 0).all()  # date order, then window start
    assert np.array_equal(both.columns["flow_score"][:N_BINS], one.columns["flow_score"])
    assert both.slice(N_BINS, 2 * N_BINS).columns["rest_depth"].shape == (N_BINS, W)

    with pytest.raises(DatasetError, match=rf"dataset '{a.dataset_id}': unknown column\(s\) 'local_depth_imbalance'"):
        load_grid_data(world["lake"], [later.dataset_id, a.dataset_id], ["rest_depth", "local_depth_imbalance"])
    with pytest.raises(DatasetError, match="'no_such_column'"):
        load_grid_data(world["lake"], [a.dataset_id], ["no_such_column"])
    with pytest.raises(FileNotFoundError, match="research dataset 'nope' not found"):
        load_grid_data(world["lake"], ["nope"], ["rest_depth"])


def test_dagster_dataset_asset_materializes_with_checks(world, lake):
    lakemod.land_raw_file(sample(ESH4_1225), lake, load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml"))
    assets = {a.key.to_user_string(): a for a in dataset_assets(world["pipelines"])}
    assert set(assets) == {"dataset_ds_a", "dataset_ds_c1", "dataset_ds_dsl"}
    asset = assets["dataset_ds_a"]
    assert asset.group_names_by_key[asset.key] == "datasets"
    assert BRONZE_KEY in asset.asset_deps[asset.key]
    resources = {"lake_res": LakeResource(root=str(lake))}
    with dg.instance_for_test() as instance:
        register_sessions(instance, [session_key("2023-12-25", "ESH4")])
        assert dg.materialize([bronze_mbo], partition_key=session_key("2023-12-25", "ESH4"), instance=instance,
                              resources=resources).success
        res = dg.materialize([asset], partition_key=session_key("2023-12-25", "ESH4"), instance=instance,
                             resources=resources)
        assert res.success
        meta = res.asset_materializations_for_node("dataset_ds_a")[0].metadata
        ds_id = meta["dataset_id"].value
        assert ds_id == dataset_id_for(lake, world["ds_a"], DATE)
        assert meta["n_bins"].value == N_BINS and meta["valid_share"].value == 1.0
        assert meta["newly_written"].value is True
        assert meta["path"].value == str(dataset_dir(lake, ds_id))
        assert "| bronze sha256 |" in meta["lineage"].value
        checks = {c.check_name: c for c in res.get_asset_check_evaluations()
                  if c.asset_key == asset.key}
        assert set(checks) == {"checksums_verify", "rows_consistent", "no_nan_inf"}
        assert all(c.passed for c in checks.values())

    # only the pipeline's capture sessions are partitions: another day cannot even be requested
    assert asset.partitions_def.get_partition_keys() == ["2023-12-25|ESH4"]


def test_dataset_assets_cover_the_pipeline_configs():
    assets = dataset_assets()
    keys = {a.key.to_user_string() for a in assets}
    assert keys == {f"dataset_{p.stem}" for p in (PROJECT_ROOT / "configs" / "pipelines").glob("*.yaml")}
    dg.Definitions.validate_loadable(dg.Definitions(assets=[bronze_mbo, *assets], resources=default_resources()))

