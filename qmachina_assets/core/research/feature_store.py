"""Feast feature store over research datasets (optional `feast` extra; opt-in per spec, SPEC §5.2/§5.4).

Silver/gold columns of one or more immutable research datasets (`core.datasets`) are exported as one
Feast-friendly Parquet offline table, registered as a Feast feature view over the file (dask) offline
store, and read back as training frames with point-in-time joins.

Layout, one self-contained Feast repo per table (deleting the directory removes the table entirely and
no two tables share a registry file, so concurrent exports of different tables never race):

    {lake}/feature_store/{name}/features.parquet   the offline table (written by `export_feature_table`)
    {lake}/feature_store/{name}/registry.db        Feast file registry  (written by `feature_store`)
    {lake}/feature_store/{name}/online.db          Feast sqlite online store (only if materialized)

The table has one row per (bin, k) for the chosen k values:
- `grid_cell` (string, the entity join key) = f"{symbol}:{k}". One string key rather than two join keys
  (symbol, k): k is a coordinate relative to the spot and only means something together with the
  instrument, so the pair *is* the entity; a single key keeps the entity_df, the Feast entity and the
  online-store key simple and lets tables with several symbols share one entity. `symbol` and `k` are
  kept as plain columns for filtering (they are not features).
- `event_timestamp` = the bin close (`bins.ts_ns`, timestamp[ns, UTC]): a bin's state is "as of bin close",
  so a feature row becomes visible exactly at its close, never before.
- `created_timestamp` = the dataset's `manifest.created_at` (when the features were computed). Feast only
  uses it to break ties between rows with the same entity and event timestamp (and, with
  `filter_by_created_timestamp`, to hide rows built after the query time). Export refuses datasets whose
  bins overlap in time for one symbol, so ties cannot occur.
- the selected columns with invalid bins zeroed exactly as `datasets.load_grid_data` does (the values the
  experiment harness sees), plus `bin_valid` (book_valid & mid > 0), `bin_seq` and `dataset_id`.

Point-in-time rule (Feast's, with the ttl chosen here): for an entity row (grid_cell, t) the join takes the
feature row of that grid_cell with the greatest event_timestamp `e` such that `t - ttl <= e <= t`; none ->
nulls. ttl = `ttl_bins` x the bin width (default 1 bin): datasets emit every bin (nothing is dropped), so a
query between two closes always finds the previous close (< 1 bin old), a query exactly at a close gets
that bin, and a query past the end of a dataset (or in a gap between datasets) gets nulls instead of a
stale row. A later bin is never returned.

Scale: Feast 0.67's file (dask) offline store joins each entity row with *every* feature row of its
grid_cell and only then applies the ttl, so cost is (entity rows x bins) per cell: 2k x 2k took 4 s,
8k x 8k 96 s and 6.6 GB RSS (measured here). Use it for sampled entity_dfs over day-sized tables; full
per-bin training grids belong to `datasets.load_grid_data`.

Feast is imported lazily (it takes seconds to import): importing this module, exporting a table and
`feature_store_enabled` do not need it. Nothing in the platform should call `feature_store` /
`training_frame` unless `feature_store_enabled(spec)` is true.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qmachina_assets.core.ingest.tempfiles import atomic_path
from qmachina_assets.core.research.datasets import BINS_NAME, GOLD_NAME, GRID_NAME, MANIFEST_NAME, dataset_dir

if TYPE_CHECKING:
    import feast

FEATURE_TABLE_VERSION = "feature-table-1"
TABLE_NAME = "features.parquet"
REGISTRY_NAME = "registry.db"
ONLINE_NAME = "online.db"
#: Parquet schema-metadata key holding the table's description (one file = one atomic write).
META_KEY = b"qmachina.feature_table"
ENTITY = "grid_cell"
TIMESTAMP = "event_timestamp"
CREATED = "created_timestamp"
#: Columns of the table that are keys / lineage, never features.
KEY_COLUMNS: tuple[str, ...] = (ENTITY, TIMESTAMP, CREATED, "symbol", "k", "bin_seq", "dataset_id")
#: Features always exported.
EXTRA_FEATURES: tuple[str, ...] = ("bin_valid",)
DEFAULT_TTL_BINS = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
#: Arrow type of a stored column -> (Arrow type in the table, Feast type name). Feast has no int8.
_TYPES: dict[pa.DataType, tuple[pa.DataType, str]] = {
    pa.float64(): (pa.float64(), "Float64"),
    pa.float32(): (pa.float64(), "Float64"),
    pa.int64(): (pa.int64(), "Int64"),
    pa.int32(): (pa.int32(), "Int32"),
    pa.int16(): (pa.int32(), "Int32"),
    pa.int8(): (pa.int32(), "Int32"),
    pa.bool_(): (pa.bool_(), "Bool"),
}


class FeatureStoreError(ValueError):
    """A feature table cannot be exported or opened as asked; the message names the table / dataset."""


# ---- opt-in ----------------------------------------------------------------------------------------


def feature_store_enabled(spec: Any) -> bool:
    """True iff the PipelineSpec / ExperimentSpec (anything with `.feature_store.enabled`) opts into Feast."""
    cfg = getattr(spec, "feature_store", None)
    return bool(getattr(cfg, "enabled", False))


def feature_store_project(spec: Any) -> str:
    """The Feast project named by the spec's `feature_store.project` (default "qmachina")."""
    cfg = getattr(spec, "feature_store", None)
    return str(getattr(cfg, "project", None) or "qmachina")


# ---- export ----------------------------------------------------------------------------------------


def feature_table_dir(lake: Path, name: str) -> Path:
    if not _NAME.match(name):
        raise FeatureStoreError(f"feature table name {name!r} must match {_NAME.pattern}")
    return Path(lake) / "feature_store" / name


def _manifest(lake: Path, ds: str) -> tuple[Path, dict[str, Any]]:
    path = dataset_dir(lake, ds)
    file = path / MANIFEST_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{path}: research dataset {ds!r} not found (no {MANIFEST_NAME})")
    m = json.loads(file.read_text())
    missing = [k for k in ("dataset_id", "symbol", "radius", "cell_width_ms", "created_at") if k not in m]
    if missing:
        raise FeatureStoreError(f"{file}: manifest lacks {', '.join(missing)}")
    return path, m


def _utc(text: str) -> pd.Timestamp:
    ts = pd.Timestamp(text)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _dataset_table(lake: Path, ds: str, columns: Sequence[str], k_values: list[int] | None,
                   ) -> tuple[pa.Table, dict[str, Any]]:
    path, m = _manifest(lake, ds)
    radius = int(m["radius"])
    ks = list(range(-radius, radius + 1)) if k_values is None else k_values
    bad = [k for k in ks if abs(k) > radius]
    if bad:
        raise FeatureStoreError(f"dataset {ds!r}: k value(s) {bad} outside its radius {radius}")
    grid_names = set(pq.read_schema(path / GRID_NAME).names) - {"bin_seq", "k"}
    gold_names = set(pq.read_schema(path / GOLD_NAME).names) - {"bin_seq", "k"}
    unknown = [c for c in columns if c not in grid_names and c not in gold_names]
    if unknown:
        raise FeatureStoreError(f"dataset {ds!r}: unknown column(s) {', '.join(map(repr, unknown))} "
                                f"(silver: {', '.join(sorted(grid_names))}; gold: {', '.join(sorted(gold_names))})")
    bins = pq.read_table(path / BINS_NAME, columns=["bin_seq", "ts_ns", "mid_price", "book_valid"])
    seq = bins["bin_seq"].to_numpy()
    if len(seq) > 1 and not (np.diff(seq) > 0).all():
        raise FeatureStoreError(f"{path / BINS_NAME}: bin_seq is not strictly increasing")
    valid = bins["book_valid"].to_numpy().astype(bool) & (bins["mid_price"].to_numpy() > 0)
    ts = bins["ts_ns"].to_numpy().astype(np.int64)
    k_filter = [("k", "in", ks)]
    parts: dict[str, np.ndarray] = {}
    types: dict[str, pa.DataType] = {}
    key_seq = key_k = None
    for file, names in ((GRID_NAME, [c for c in columns if c in grid_names]),
                        (GOLD_NAME, [c for c in columns if c not in grid_names])):
        if not names:
            continue
        t = pq.read_table(path / file, columns=["bin_seq", "k", *names], filters=k_filter)
        fseq, fk = t["bin_seq"].to_numpy(), t["k"].to_numpy()
        if key_seq is None:
            key_seq, key_k = fseq, fk
        elif not (np.array_equal(fseq, key_seq) and np.array_equal(fk, key_k)):
            raise FeatureStoreError(f"dataset {ds!r}: {GRID_NAME} and {GOLD_NAME} rows are not in the same order")
        for c in names:
            types[c] = t.schema.field(c).type
            parts[c] = t[c].to_numpy()
    assert key_seq is not None and key_k is not None
    if len(key_seq) != len(seq) * len(ks):
        raise FeatureStoreError(f"dataset {ds!r}: {len(key_seq)} rows for k in {ks}, expected {len(seq)} bins x "
                                f"{len(ks)}")
    pos = np.searchsorted(seq, key_seq)
    if not np.array_equal(seq[np.minimum(pos, len(seq) - 1)], key_seq):
        raise FeatureStoreError(f"dataset {ds!r}: grid rows name bins missing from {BINS_NAME}")
    row_valid = valid[pos]
    symbol = str(m["symbol"])
    created = _utc(str(m["created_at"]))
    n = len(key_seq)
    cells = np.array([f"{symbol}:{k}" for k in range(-radius, radius + 1)], dtype=object)
    arrays: dict[str, pa.Array] = {
        ENTITY: pa.array(cells[key_k.astype(np.int64) + radius], pa.string()),
        TIMESTAMP: pa.array(ts[pos], pa.timestamp("ns", tz="UTC")),
        CREATED: pa.array(np.full(n, created.value, np.int64), pa.timestamp("ns", tz="UTC")),
        "symbol": pa.array(np.full(n, symbol, dtype=object), pa.string()),
        "k": pa.array(key_k.astype(np.int32)),
        "bin_seq": pa.array(key_seq.astype(np.int64)),
        "dataset_id": pa.array(np.full(n, str(m["dataset_id"]), dtype=object), pa.string()),
        "bin_valid": pa.array(row_valid),
    }
    for c in columns:
        if types[c] not in _TYPES:
            raise FeatureStoreError(f"dataset {ds!r}: column {c!r} has type {types[c]}, which has no Feast type")
        x = parts[c]
        if pa.types.is_floating(types[c]):
            x = np.where(row_valid, x, 0.0)  # as load_grid_data: invalid bins hold zeros
        arrays[c] = pa.array(x).cast(_TYPES[types[c]][0])
    info = {"dataset_id": str(m["dataset_id"]), "symbol": symbol, "radius": radius,
            "cell_width_ms": int(m["cell_width_ms"]), "date": m.get("date"), "n_bins": len(seq),
            "first_ts_ns": int(ts[0]) if len(ts) else None, "last_ts_ns": int(ts[-1]) if len(ts) else None,
            "created_at": created.isoformat(), "feast_types": {c: _TYPES[types[c]][1] for c in columns}}
    return pa.table(arrays), info


def export_feature_table(lake: Path, dataset_ids: Sequence[str], columns: Sequence[str],
                         k_values: Iterable[int] | None, *, name: str | None = None) -> Path:
    """Write `{lake}/feature_store/{name}/features.parquet` (one row per (bin, k in k_values) of every
    dataset, see the module docstring) and return its path. `k_values` None = every k of the grid.

    `name` defaults to "features". The file is written to a temporary file and renamed into place, so
    readers see the old table or the new one, never a partial one; its description (datasets, columns,
    Feast types, bin width) is in the Parquet schema metadata, in the same atomic write."""
    name = name or "features"
    out_dir = feature_table_dir(lake, name)
    ids = list(dataset_ids)
    cols = list(columns)
    if not ids:
        raise FeatureStoreError(f"feature table {name!r}: no dataset ids given")
    if not cols:
        raise FeatureStoreError(f"feature table {name!r}: no columns given")
    for what, seq in (("dataset", ids), ("column", cols)):
        twice = sorted({x for x in seq if seq.count(x) > 1})
        if twice:
            raise FeatureStoreError(f"feature table {name!r}: {what}(s) listed twice: {', '.join(twice)}")
    reserved = [c for c in cols if c in (*KEY_COLUMNS, *EXTRA_FEATURES)]
    if reserved:
        raise FeatureStoreError(f"feature table {name!r}: column(s) {', '.join(reserved)} are keys of the table")
    ks = None if k_values is None else sorted({int(k) for k in k_values})
    if ks is not None and not ks:
        raise FeatureStoreError(f"feature table {name!r}: empty k_values")
    built = [_dataset_table(Path(lake), ds, cols, ks) for ds in ids]
    built.sort(key=lambda ti: (ti[1]["first_ts_ns"] or 0, ti[1]["symbol"], ti[1]["dataset_id"]))
    infos = [info for _, info in built]
    widths = {i["cell_width_ms"] for i in infos}
    if len(widths) > 1:
        raise FeatureStoreError(f"feature table {name!r}: datasets have different bin widths {sorted(widths)} ms "
                                f"(one ttl per feature view)")
    ftypes = {c: {i["feast_types"][c] for i in infos} for c in cols}
    mixed = {c: sorted(t) for c, t in ftypes.items() if len(t) > 1}
    if mixed:
        raise FeatureStoreError(f"feature table {name!r}: column types differ between datasets: {mixed}")
    spans = sorted((i["symbol"], i["first_ts_ns"], i["last_ts_ns"], i["dataset_id"]) for i in infos
                   if i["first_ts_ns"] is not None)
    for a, b in itertools.pairwise(spans):
        if a[0] == b[0] and b[1] <= a[2]:
            raise FeatureStoreError(f"feature table {name!r}: datasets {a[3]!r} and {b[3]!r} overlap in time for "
                                    f"{a[0]} (one feature row per grid cell and bin close)")
    table = pa.concat_tables([t for t, _ in built])
    meta = {
        "version": FEATURE_TABLE_VERSION, "name": name, "datasets": infos,
        "features": {c: next(iter(ftypes[c])) for c in cols} | {"bin_valid": "Bool"},
        "k_values": ks, "cell_width_ms": widths.pop(), "rows": table.num_rows,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / TABLE_NAME
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp, compression="zstd", compression_level=1)
    return final


def read_table_meta(lake: Path, name: str) -> dict[str, Any]:
    """The description `export_feature_table` stored in the table's Parquet schema metadata."""
    file = feature_table_dir(lake, name) / TABLE_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{file}: feature table {name!r} not exported (run export_feature_table)")
    meta = pq.read_schema(file).metadata or {}
    if META_KEY not in meta:
        raise FeatureStoreError(f"{file}: not a qmachina feature table (no {META_KEY.decode()} metadata)")
    return json.loads(meta[META_KEY])


# ---- Feast -----------------------------------------------------------------------------------------


def feature_store(lake: Path, name: str, *, project: str = "qmachina", ttl_bins: int = DEFAULT_TTL_BINS,
                  ) -> feast.FeatureStore:
    """A Feast FeatureStore (built programmatically, no feature_store.yaml) over the exported table `name`,
    with the `grid_cell` entity, a FileSource on features.parquet and a feature view `name` applied.

    ttl = ttl_bins x bin width (module docstring: the point-in-time rule). Re-applying is idempotent, so
    this can be called on every use; a re-exported table with other columns updates the view."""
    if ttl_bins < 1:
        raise FeatureStoreError(f"ttl_bins must be >= 1, not {ttl_bins}")
    if not _NAME.match(project):
        raise FeatureStoreError(f"Feast project {project!r} must match {_NAME.pattern}")
    meta = read_table_meta(lake, name)
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
    from feast import types as ft
    from feast.repo_config import RegistryConfig

    root = feature_table_dir(lake, name).resolve()
    config = RepoConfig(
        project=project,
        provider="local",
        registry=RegistryConfig(registry_type="file", path=str(root / REGISTRY_NAME), cache_ttl_seconds=0),
        offline_store={"type": "file"},
        online_store={"type": "sqlite", "path": str(root / ONLINE_NAME)},
        entity_key_serialization_version=3,
        repo_path=root,
    )
    store = FeatureStore(config=config)
    entity = Entity(name=ENTITY, join_keys=[ENTITY], value_type=ValueType.STRING,
                    description="one grid cell: f'{symbol}:{k}', k ticks from the spot")
    source = FileSource(name=f"{name}_source", path=str(root / TABLE_NAME), timestamp_field=TIMESTAMP,
                        created_timestamp_column=CREATED)
    view = FeatureView(
        name=name, entities=[entity], source=source, online=True,
        ttl=dt.timedelta(milliseconds=int(meta["cell_width_ms"]) * ttl_bins),
        schema=[Field(name=c, dtype=getattr(ft, t)) for c, t in meta["features"].items()],
        tags={"qmachina_table_version": meta["version"],
              "datasets": ",".join(d["dataset_id"] for d in meta["datasets"])},
    )
    store.apply([entity, view])
    return store


def entity_frame(symbol: str, k_values: Iterable[int], timestamps: Any) -> pd.DataFrame:
    """The cross product of grid cells (symbol, k) and timestamps (datetimes, or int64 ns since epoch = UTC)
    as an entity_df: columns grid_cell, event_timestamp (UTC), in (timestamp, k) order."""
    ts = pd.DatetimeIndex(pd.to_datetime(np.asarray(timestamps), utc=True))
    ks = list(k_values)
    return pd.DataFrame({
        ENTITY: [f"{symbol}:{int(k)}" for _ in range(len(ts)) for k in ks],
        TIMESTAMP: np.repeat(ts, len(ks)),
    })


#: Feast type name -> pandas dtype of the training frame (nullable: rows without a feature in the ttl are NA).
_PANDAS_DTYPES: dict[str, str] = {"Float64": "float64", "Int32": "Int32", "Int64": "Int64", "Bool": "boolean"}


def training_frame(store: feast.FeatureStore, entity_df: pd.DataFrame, features: Sequence[str] | None = None,
                   ) -> pd.DataFrame:
    """Point-in-time joined training frame: `entity_df` (grid_cell, event_timestamp, any extra columns) with
    the features appended, one output row per input row, in the input's order. `features` are
    "view:feature" references (default: every feature of every view in the store).

    Feast gets only the unique (grid_cell, event_timestamp) pairs and its answer is left-joined back onto
    `entity_df`: Feast 0.67's file (dask) offline store drops an entity row whose grid_cell has feature rows
    but none within [t - ttl, t] (rows of unknown cells survive as nulls), and collapses duplicate entity
    rows. Here every input row is kept and gets nulls when the point-in-time rule finds nothing. Feature
    columns are nullable (float64 NaN, Int32/Int64, boolean)."""
    for col in (ENTITY, TIMESTAMP):
        if col not in entity_df.columns:
            raise FeatureStoreError(f"entity_df needs a {col!r} column (has {list(entity_df.columns)})")
    views = {v.name: v for v in store.list_feature_views()}
    if features is None:
        features = [f"{name}:{f.name}" for name, v in views.items() for f in v.features]
    if not features:
        raise FeatureStoreError("training_frame: the store has no features")
    dtypes: dict[str, str] = {}
    for ref in features:
        view_name, _, feat = ref.partition(":")
        fields = {f.name: f for f in views[view_name].features} if view_name in views else {}
        if feat not in fields:
            raise FeatureStoreError(f"training_frame: unknown feature {ref!r} (views: {', '.join(sorted(views))})")
        if feat in entity_df.columns or feat in dtypes:
            raise FeatureStoreError(f"training_frame: feature name {feat!r} clashes with another column")
        dtypes[feat] = _PANDAS_DTYPES.get(str(fields[feat].dtype), "object")
    edf = entity_df.copy()
    ts = pd.to_datetime(edf[TIMESTAMP])
    edf[TIMESTAMP] = (ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")).astype(
        "datetime64[ns, UTC]")
    if edf[ENTITY].isna().any() or edf[TIMESTAMP].isna().any():
        raise FeatureStoreError(f"entity_df: null {ENTITY} or {TIMESTAMP}")
    keys = edf[[ENTITY, TIMESTAMP]].drop_duplicates(ignore_index=True)
    with warnings.catch_warnings():
        # Feast computes the entity_df's min/max timestamps as datetime (µs) for retrieval metadata only;
        # the join itself compares nanosecond timestamps.
        warnings.filterwarnings("ignore", "Discarding nonzero nanoseconds", UserWarning)
        got = store.get_historical_features(entity_df=keys, features=list(features)).to_df()
    got = got[[ENTITY, TIMESTAMP, *dtypes]].copy()
    got[TIMESTAMP] = got[TIMESTAMP].astype("datetime64[ns, UTC]")
    if got.duplicated([ENTITY, TIMESTAMP]).any():
        raise FeatureStoreError("training_frame: Feast returned several rows for one (grid_cell, timestamp)")
    out = edf.merge(got, on=[ENTITY, TIMESTAMP], how="left", validate="many_to_one", sort=False)
    for feat, dtype in dtypes.items():
        out[feat] = out[feat].astype(dtype)
    out.index = entity_df.index
    return out


__all__ = [
    "FeatureStoreError", "entity_frame", "export_feature_table", "feature_store", "feature_store_enabled",
    "feature_store_project", "feature_table_dir", "read_table_meta", "training_frame",
]
