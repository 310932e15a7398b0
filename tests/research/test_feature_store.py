"""Feast feature store (core.feature_store): export of hand-built datasets, point-in-time joins, opt-in.

feast is in the `dev` extra, so it is imported for real here (no importorskip): CI must run these."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import feast  # noqa: F401  (the dev extra installs it; a missing feast must fail, not skip)
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qmachina_assets.core.research import feature_store as fs
from qmachina_assets.core.research.datasets import dataset_dir
from qmachina_assets.core.research.specs import FeatureStoreConfig, load_experiment, load_pipeline

SYMBOL = "ESZ6"
RADIUS = 2
WIDTH_MS = 100
WIDTH_NS = WIDTH_MS * 1_000_000
T0 = pd.Timestamp("2026-03-02 14:30:00", tz="UTC").value  # first bin close of dataset A
GAP_NS = 10 * WIDTH_NS  # dataset B starts 10 bins after A's last close
N_A, N_B = 6, 4
INVALID = (2, 0)  # (dataset A bin 2) has book_valid false
K_EXPORT = [-1, 0, 2]
COLUMNS = ["rest_depth", "pressure", "state5_code", "gold_valid"]


def _value(ds: int, i: int, k: int) -> float:
    return 1000.0 * ds + 10.0 * i + k


def _write_dataset(lake: Path, ds_id: str, ds: int, first_close: int, n: int, invalid: set[int]) -> None:
    path = dataset_dir(lake, ds_id)
    path.mkdir(parents=True)
    seq = np.arange(100 * ds, 100 * ds + n, dtype=np.int64)
    closes = first_close + WIDTH_NS * np.arange(n, dtype=np.int64)
    valid = np.array([i not in invalid for i in range(n)])
    pq.write_table(pa.table({
        "bin_seq": seq, "ts_ns": closes, "bin_start_ns": closes - WIDTH_NS, "bin_end_ns": closes,
        "mid_price": np.full(n, 5000.0), "book_valid": valid,
    }), path / "bins.parquet")
    ks = np.arange(-RADIUS, RADIUS + 1, dtype=np.int32)
    w = len(ks)
    bin_of_row = np.repeat(np.arange(n), w)
    k_of_row = np.tile(ks, n)
    vals = 1000.0 * ds + 10.0 * bin_of_row + k_of_row
    pq.write_table(pa.table({"bin_seq": np.repeat(seq, w), "k": k_of_row, "rest_depth": vals + 0.5,
                             "add_mass": vals * 0}), path / "grid.parquet")
    pq.write_table(pa.table({
        "bin_seq": np.repeat(seq, w), "k": k_of_row, "pressure": vals,
        "state5_code": pa.array((bin_of_row % 5).astype(np.int8)), "gold_valid": np.repeat(valid, w),
    }), path / "gold.parquet")
    (path / "manifest.json").write_text(json.dumps({
        "dataset_id": ds_id, "symbol": SYMBOL, "radius": RADIUS, "cell_width_ms": WIDTH_MS,
        "created_at": "2026-03-03T00:00:00+00:00", "date": "2026-03-02",
    }))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("lake")
    _write_dataset(lake, "ds_a", 1, T0, N_A, {INVALID[0]})
    _write_dataset(lake, "ds_b", 2, T0 + (N_A - 1) * WIDTH_NS + GAP_NS, N_B, set())
    return lake


@pytest.fixture(scope="module")
def table(lake: Path) -> Path:
    # B listed first: export orders datasets by time
    return fs.export_feature_table(lake, ["ds_b", "ds_a"], COLUMNS, K_EXPORT, name="gold_cells")


@pytest.fixture(scope="module")
def store(lake: Path, table: Path):
    return fs.feature_store(lake, "gold_cells")


def _closes() -> list[tuple[int, int, int]]:
    """(close ts_ns, dataset, bin index) of every exported bin."""
    a = [(T0 + i * WIDTH_NS, 1, i) for i in range(N_A)]
    b0 = T0 + (N_A - 1) * WIDTH_NS + GAP_NS
    return a + [(b0 + i * WIDTH_NS, 2, i) for i in range(N_B)]


def _expected(t: int, ttl_ns: int) -> tuple[int, int] | None:
    """The PIT rule, independently: the latest close e with t - ttl <= e <= t."""
    best = None
    for close, ds, i in _closes():
        if t - ttl_ns <= close <= t:
            best = (ds, i)
    return best


def _queries() -> list[int]:
    out = [T0 - 1, T0 - WIDTH_NS // 2]  # before the first close
    for close, _, _ in _closes():
        out += [close, close - 1, close + 1, close + 37_000_000, close + WIDTH_NS - 1]
    last_a = T0 + (N_A - 1) * WIDTH_NS
    out += [last_a + WIDTH_NS, last_a + WIDTH_NS + 1, last_a + 3 * WIDTH_NS, last_a + 5 * WIDTH_NS + 123]
    last = _closes()[-1][0]
    out += [last + WIDTH_NS, last + WIDTH_NS + 1, last + 50 * WIDTH_NS]
    return sorted(set(out))


def _check(frame: pd.DataFrame, entity_df: pd.DataFrame, ttl_ns: int) -> int:
    assert len(frame) == len(entity_df)
    assert list(frame["grid_cell"]) == list(entity_df["grid_cell"])  # input order kept
    assert (frame["event_timestamp"].to_numpy() == entity_df["event_timestamp"].to_numpy()).all()
    hits = 0
    for row in frame.itertuples(index=False):
        t = pd.Timestamp(row.event_timestamp).value
        k = int(row.grid_cell.split(":")[1])
        exp = _expected(t, ttl_ns) if k in K_EXPORT else None
        if exp is None:
            assert pd.isna(row.pressure) and pd.isna(row.rest_depth) and pd.isna(row.bin_valid), row
            continue
        hits += 1
        ds, i = exp
        valid = (ds, i) != (1, INVALID[0])
        want = _value(ds, i, k) if valid else 0.0
        assert row.pressure == want, (row, exp)
        assert row.rest_depth == (want + 0.5 if valid else 0.0), (row, exp)
        assert int(row.state5_code) == i % 5
        assert bool(row.gold_valid) is valid and bool(row.bin_valid) is valid
    return hits


def test_export_table(table: Path, lake: Path) -> None:
    assert table == lake / "feature_store" / "gold_cells" / "features.parquet"
    assert [p.name for p in table.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left
    t = pq.read_table(table)
    assert t.num_rows == (N_A + N_B) * len(K_EXPORT)
    assert t.schema.field("event_timestamp").type == pa.timestamp("ns", tz="UTC")
    assert t.schema.field("state5_code").type == pa.int32()  # Feast has no int8
    df = t.to_pandas()
    assert set(df["grid_cell"]) == {f"{SYMBOL}:{k}" for k in K_EXPORT}
    assert df["event_timestamp"].is_monotonic_increasing  # datasets ordered by time
    assert (df["created_timestamp"] == pd.Timestamp("2026-03-03", tz="UTC")).all()
    # bin close = event timestamp; invalid bin zeroed like load_grid_data
    row = df[(df["dataset_id"] == "ds_a") & (df["bin_seq"] == 103) & (df["k"] == 2)].iloc[0]
    assert row["event_timestamp"].value == T0 + 3 * WIDTH_NS and row["pressure"] == _value(1, 3, 2)
    bad = df[(df["dataset_id"] == "ds_a") & (df["bin_seq"] == 100 + INVALID[0])]
    assert (bad["pressure"] == 0).all() and not bad["bin_valid"].any()
    meta = fs.read_table_meta(lake, "gold_cells")
    assert meta["cell_width_ms"] == WIDTH_MS and meta["k_values"] == K_EXPORT
    assert [d["dataset_id"] for d in meta["datasets"]] == ["ds_a", "ds_b"]
    assert meta["features"] == {"rest_depth": "Float64", "pressure": "Float64", "state5_code": "Int32",
                                "gold_valid": "Bool", "bin_valid": "Bool"}


def test_point_in_time_join(store, lake: Path) -> None:
    view = store.get_feature_view("gold_cells")
    assert view.ttl == pd.Timedelta(milliseconds=WIDTH_MS)
    assert store.config.entity_key_serialization_version == 3
    assert Path(store.config.registry.path) == (lake / "feature_store" / "gold_cells" / "registry.db").resolve()
    queries = _queries()
    entity_df = fs.entity_frame(SYMBOL, [*K_EXPORT, 1], queries)  # k=1 was not exported: always null
    entity_df = entity_df.sample(frac=1.0, random_state=7).reset_index(drop=True)  # order must be kept
    entity_df["label"] = np.arange(len(entity_df))  # extra columns pass through
    frame = fs.training_frame(store, entity_df)
    assert list(frame["label"]) == list(entity_df["label"])
    hits = _check(frame, entity_df, WIDTH_NS)
    assert hits > 100
    # spot checks of the rule itself
    def one(t: int, k: int = 0) -> float:
        sel = (frame["event_timestamp"] == pd.Timestamp(t, tz="UTC")) & (frame["grid_cell"] == f"{SYMBOL}:{k}")
        return frame.loc[sel, "pressure"].iloc[0]
    assert one(T0 + WIDTH_NS) == _value(1, 1, 0)  # exactly at a close: that bin
    assert one(T0 + WIDTH_NS - 1) == _value(1, 0, 0)  # 1 ns before the close: the previous bin, never the later
    assert one(T0 + WIDTH_NS + 37_000_000) == _value(1, 1, 0)  # between closes: the latest at or before
    assert pd.isna(one(T0 - 1))  # before any close
    last_a = T0 + (N_A - 1) * WIDTH_NS
    assert one(last_a + WIDTH_NS) == _value(1, N_A - 1, 0)  # exactly ttl old: still in (inclusive)
    assert pd.isna(one(last_a + WIDTH_NS + 1))  # beyond the ttl (gap between datasets): null, not stale


def test_longer_ttl(lake: Path, table: Path) -> None:
    store3 = fs.feature_store(lake, "gold_cells", ttl_bins=3)
    assert store3.get_feature_view("gold_cells").ttl == pd.Timedelta(milliseconds=3 * WIDTH_MS)
    last_a = T0 + (N_A - 1) * WIDTH_NS
    qs = [last_a + 2 * WIDTH_NS + 5, last_a + 3 * WIDTH_NS, last_a + 3 * WIDTH_NS + 1, T0 + 3 * WIDTH_NS - 1]
    entity_df = fs.entity_frame(SYMBOL, K_EXPORT, qs)
    frame = fs.training_frame(store3, entity_df, ["gold_cells:pressure", "gold_cells:rest_depth",
                                                  "gold_cells:state5_code", "gold_cells:gold_valid",
                                                  "gold_cells:bin_valid"])
    _check(frame, entity_df, 3 * WIDTH_NS)
    fs.feature_store(lake, "gold_cells")  # back to the default for other tests


def test_export_errors(lake: Path) -> None:
    with pytest.raises(fs.FeatureStoreError, match="unknown column"):
        fs.export_feature_table(lake, ["ds_a"], ["nope"], [0], name="bad")
    with pytest.raises(fs.FeatureStoreError, match="outside its radius"):
        fs.export_feature_table(lake, ["ds_a"], ["pressure"], [RADIUS + 1], name="bad")
    _copy_dataset(lake, "ds_a", "ds_a_copy")
    with pytest.raises(fs.FeatureStoreError, match="overlap in time"):
        fs.export_feature_table(lake, ["ds_a", "ds_a_copy"], ["pressure"], [0], name="bad")
    with pytest.raises(fs.FeatureStoreError, match="keys of the table"):
        fs.export_feature_table(lake, ["ds_a"], ["bin_valid"], [0], name="bad")
    with pytest.raises(fs.FeatureStoreError, match="must match"):
        fs.export_feature_table(lake, ["ds_a"], ["pressure"], [0], name="../escape")
    with pytest.raises(FileNotFoundError, match="not found"):
        fs.export_feature_table(lake, ["missing"], ["pressure"], [0], name="bad")
    assert not (lake / "feature_store" / "bad" / "features.parquet").exists()


def _copy_dataset(lake: Path, src_id: str, dst_id: str) -> None:
    src, dst = dataset_dir(lake, src_id), dataset_dir(lake, dst_id)
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    m = json.loads((dst / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps({**m, "dataset_id": dst_id}))


def test_all_k_and_silver_only(lake: Path) -> None:
    path = fs.export_feature_table(lake, ["ds_b"], ["rest_depth"], None, name="silver_all_k")
    df = pq.read_table(path).to_pandas()
    assert len(df) == N_B * (2 * RADIUS + 1)
    assert sorted(df["k"].unique()) == list(range(-RADIUS, RADIUS + 1))
    want = [_value(2, b - 200, k) + 0.5 for b, k in zip(df["bin_seq"], df["k"], strict=True)]
    assert (df["rest_depth"] == want).all()


def test_opt_in() -> None:
    pipeline = load_pipeline("es_rth_1h")
    experiment = load_experiment("derivative_sweep")
    assert not fs.feature_store_enabled(pipeline) and not fs.feature_store_enabled(experiment)
    on = FeatureStoreConfig(enabled=True, project="qm_research")
    assert fs.feature_store_enabled(experiment.model_copy(update={"feature_store": on}))
    assert fs.feature_store_enabled(pipeline.model_copy(update={"feature_store": on}))
    assert fs.feature_store_project(experiment.model_copy(update={"feature_store": on})) == "qm_research"
    assert fs.feature_store_project(pipeline) == "qmachina"
    assert not fs.feature_store_enabled(object())


def test_module_does_not_import_feast() -> None:
    code = ("import sys, qmachina_assets.core.research.feature_store as f; "
            "assert f.feature_store_enabled(object()) is False; print('feast' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"
