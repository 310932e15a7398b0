"""Gold partitions: a silver partition -> `gold.parquet` + manifest, per feature set.

A feature set is either the hand-written built-in set (`builtin`, `gold.GoldRuntime.batch`, streamed over
silver row groups so memory stays bounded on any partition) or a Gold DSL spec (a YAML under
`configs/gold/`, executed on the whole partition). Layout: `{lake}/gold/{feature_set}/{symbol}/{date}/`.
Each version (config hash + the silver version it reads) is an immutable directory `{date}@{tag}`;
`{date}` is a symlink to the current one, repointed atomically when silver or the config changes.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from qmachina_assets.core.engine.silver_partition import (
    point_to,
    read_silver_manifest,
    silver_dir,
    version_dir,
    version_tag,
)
from qmachina_assets.core.gold import features as gold
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.bronze import code_version

MANIFEST_NAME = "manifest.json"
DATA_NAME = "gold.parquet"
BUILTIN = "builtin"
BIN_INPUTS = ("bin_seq", "spot_ref_price_int", "book_valid", "ask_reprice_sign", "bid_reprice_sign")

#: Value ranges the checks enforce on the built-in set.
BUILTIN_RANGES: dict[str, tuple[float, float]] = {
    "composite_raw": (-1.0, 1.0), "composite": (-1.0, 1.0), "flow_score": (-1.0, 1.0),
    "pressure_variant": (0.0, np.inf), "vacuum_variant": (0.0, np.inf),
    "state5_code": (-2, 2), "flow_state_code": (-1, 1),
}


class GoldManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    date: str
    symbol: str
    feature_set: str
    config: dict
    config_hash: str
    gold_version: str
    silver_engine_version: str
    silver_bronze_sha256: str
    silver_window: dict
    bins: int
    rows: int
    valid_bins: int
    columns: list[str]
    seconds: float
    cells_per_s: float
    code_version: str
    created_at: str


def gold_dir(lake: Path, feature_set: str, symbol: str, date: dt.date | str) -> Path:
    return lake / "gold" / feature_set / symbol / str(date)


def read_gold_manifest(path: Path) -> GoldManifest | None:
    file = path / MANIFEST_NAME
    return GoldManifest.model_validate_json(file.read_text()) if file.is_file() else None


def builtin_schema() -> pa.Schema:
    """The built-in gold table: (bin_seq, k) + features + gold_valid, defined once here."""
    fields = [pa.field("bin_seq", pa.int64()), pa.field("k", pa.int32())]
    fields += [pa.field(n, pa.float64()) for n in gold.GOLD_FLOAT_COLUMNS]
    fields += [pa.field(n, pa.int8()) for n in gold.GOLD_CODE_COLUMNS]
    fields.append(pa.field("gold_valid", pa.bool_()))
    return pa.schema([f.with_nullable(False) for f in fields])


def _silver_batches(path: Path, w: int) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
    """(bins, grid) column dicts, one grid row group at a time (row groups hold whole bins)."""
    bins = pq.read_table(path / "bins.parquet", columns=list(BIN_INPUTS))
    bcols = {c: bins[c].to_numpy() for c in BIN_INPUTS}
    grid = pq.ParquetFile(path / "grid.parquet")
    b0 = 0
    for i in range(grid.num_row_groups):
        rg = grid.read_row_group(i, columns=["k", *gold.GOLD_INPUTS])
        if rg.num_rows % w:
            raise ValueError(f"{path / 'grid.parquet'}: row group {i} holds {rg.num_rows} rows, not whole bins of {w}")
        nb = rg.num_rows // w
        yield {c: v[b0:b0 + nb] for c, v in bcols.items()}, {c: rg[c].to_numpy() for c in rg.column_names}
        b0 += nb


def _read_silver(path: Path, columns: list[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    bins = pq.read_table(path / "bins.parquet", columns=list(BIN_INPUTS))
    grid = pq.read_table(path / "grid.parquet", columns=["k", *(c for c in columns if c != "k")])
    return ({c: bins[c].to_numpy() for c in BIN_INPUTS}, {c: grid[c].to_numpy() for c in grid.column_names})


#: A DSL executor: (bins, grid) -> output columns per grid row.
DslRunner = Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], dict[str, np.ndarray]]


def build_gold(
    *, lake: Path, symbol: str, date: dt.date | str, feature_set: str, config: dict, config_hash: str,
    radius: int, tick_int: int, builtin_config: gold.GoldFeatureConfig | None = None,
    dsl: tuple[DslRunner, list[str]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[GoldManifest, bool]:
    """Compute one gold partition from its silver partition: (manifest, created).

    Exactly one of `builtin_config` (the hand-written set) or `dsl` (runner, silver columns it reads)."""
    if (builtin_config is None) == (dsl is None):
        raise ValueError("build_gold: give exactly one of builtin_config or dsl")
    silver = read_silver_manifest(lake, symbol, date)
    src = silver_dir(lake, symbol, date)
    if silver is None:
        raise FileNotFoundError(f"{src}: silver partition {date}|{symbol} is missing; materialize silver_grid first")
    final = gold_dir(lake, feature_set, symbol, date)
    tag = gold_tag(config_hash, gold.GOLD_VERSION, silver.engine_version, silver.bronze_sha256,
                   silver.window.model_dump())
    existing = read_gold_manifest(final)
    old_tag = None if existing is None else gold_tag(
        existing.config_hash, existing.gold_version, existing.silver_engine_version, existing.silver_bronze_sha256,
        existing.silver_window)
    if existing is not None and old_tag == tag:
        return existing, False
    version = version_dir(final, tag)
    built = read_gold_manifest(version)
    if built is not None:  # this version exists already (e.g. silver switched back): point at it
        point_to(final, version, old_tag)
        return built, False
    manifest = _compute(silver, src, version, date, symbol, feature_set, config, config_hash, radius, tick_int,
                        builtin_config, dsl, progress)
    point_to(final, version, old_tag)
    return manifest, True


def gold_tag(config_hash: str, gold_version: str, silver_engine: str, silver_bronze: str, silver_window: dict) -> str:
    """Version of a gold partition: its config and the silver version it was computed from."""
    return version_tag(config=config_hash, gold=gold_version, silver_engine=silver_engine, silver_bronze=silver_bronze,
                       silver_window=silver_window)


def _compute(silver, src: Path, version: Path, date, symbol: str, feature_set: str, config: dict, config_hash: str,
             radius: int, tick_int: int, builtin_config, dsl, progress) -> GoldManifest:
    w = 2 * radius + 1
    with dbn.atomic_dir(version) as tmp:
        t0 = time.perf_counter()
        bins = rows = valid = 0
        with _LazyWriter(tmp / DATA_NAME) as writer:
            if builtin_config is not None:
                runtime = gold.GoldRuntime(builtin_config, radius, tick_int)
                for b, g in _silver_batches(src, w):
                    out = runtime.batch(b, g)
                    writer.write_table(pa.Table.from_pydict(out, schema=builtin_schema()))
                    bins += len(b["bin_seq"])
                    rows += len(g["k"])
                    valid += int(out["gold_valid"][::w].sum())
                    if progress:
                        progress(bins, silver.bins)
                if bins == 0:
                    writer.write_table(builtin_schema().empty_table())
                columns = builtin_schema().names
            else:
                runner, needed = dsl
                b, g = _read_silver(src, needed)
                table = pa.Table.from_pydict(runner(b, g))  # bin_seq, k, outputs, gold_valid
                writer.write_table(table)
                bins, rows = len(b["bin_seq"]), len(g["k"])
                valid = int((np.asarray(b["book_valid"], bool) & (b["spot_ref_price_int"] > 0)).sum())
                columns = table.column_names
        seconds = time.perf_counter() - t0
        manifest = GoldManifest(
            date=str(date), symbol=symbol, feature_set=feature_set, config=config, config_hash=config_hash,
            gold_version=gold.GOLD_VERSION, silver_engine_version=silver.engine_version,
            silver_bronze_sha256=silver.bronze_sha256, silver_window=silver.window.model_dump(), bins=bins,
            rows=rows, valid_bins=valid, columns=columns, seconds=round(seconds, 3),
            cells_per_s=round(rows / max(seconds, 1e-9), 1), code_version=code_version(),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest.model_dump(), indent=2))
    return manifest


class _LazyWriter:
    """A Parquet writer that takes its schema from the first table (DSL outputs are spec-defined)."""

    def __init__(self, path: Path):
        self.path = path
        self.writer: pq.ParquetWriter | None = None

    def write_table(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)

    def __enter__(self) -> _LazyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()


# ---- checks and summaries -------------------------------------------------------------------------
GOLD_RULES: dict[str, str] = {
    "no_nan_inf": "every float feature is finite",
    "values_in_range": "bounded features stay in their documented ranges; codes in their sets",
    "row_counts_match_silver": "gold rows = silver grid rows, in the same (bin_seq, k) order",
}


def feature_columns(path: Path) -> list[str]:
    return [n for n in pq.read_schema(path / DATA_NAME).names if n not in ("bin_seq", "k", "gold_valid")]


def check_gold(path: Path, silver_path: Path) -> dict[str, tuple[bool, dict]]:
    """Evaluate the gold rules on the stored file, one row group at a time."""
    pf = pq.ParquetFile(path / DATA_NAME)
    feats = feature_columns(path)
    nonfinite: dict[str, int] = {}
    out_of_range: dict[str, int] = {}
    rows = 0
    for i in range(pf.num_row_groups):
        rg = pf.read_row_group(i)
        rows += rg.num_rows
        for name in feats:
            x = rg[name].to_numpy()
            if x.dtype.kind == "f":
                bad = int((~np.isfinite(x)).sum())
                if bad:
                    nonfinite[name] = nonfinite.get(name, 0) + bad
            if name in BUILTIN_RANGES:
                lo, hi = BUILTIN_RANGES[name]
                bad = int(((x < lo) | (x > hi)).sum())
                if bad:
                    out_of_range[name] = out_of_range.get(name, 0) + bad
    silver_rows = pq.ParquetFile(silver_path / "grid.parquet").metadata.num_rows
    return {
        "no_nan_inf": (not nonfinite, {"non_finite_by_column": nonfinite}),
        "values_in_range": (not out_of_range, {"out_of_range_by_column": out_of_range,
                                               "ranges": {k: list(v) for k, v in BUILTIN_RANGES.items()}}),
        "row_counts_match_silver": (rows == silver_rows, {"gold_rows": rows, "silver_rows": silver_rows}),
    }


def summary(path: Path, max_rows: int = 2_000_000) -> tuple[str, bytes]:
    """(Markdown table of per-feature statistics over valid rows, PNG of their distributions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pf = pq.ParquetFile(path / DATA_NAME)
    feats = feature_columns(path)
    step = max(1, pf.metadata.num_rows // max_rows)
    cols: dict[str, list[np.ndarray]] = {n: [] for n in feats}
    for i in range(pf.num_row_groups):
        rg = pf.read_row_group(i)
        keep = rg["gold_valid"].to_numpy() if "gold_valid" in rg.column_names else np.ones(rg.num_rows, bool)
        for n in feats:
            cols[n].append(rg[n].to_numpy()[keep][::step])
    lines = ["| feature | mean | std | p01 | p50 | p99 | non-zero |", "|---|---|---|---|---|---|---|"]
    ncol = 4
    nrow = (len(feats) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(12, 2.2 * nrow), dpi=70, squeeze=False)
    for ax, n in zip(axes.flat, feats, strict=False):
        x = np.concatenate(cols[n]).astype(np.float64) if cols[n] else np.zeros(0)
        x = x[np.isfinite(x)]
        if x.size:
            p01, p50, p99 = np.percentile(x, [1, 50, 99])
            lines.append(f"| {n} | {x.mean():.4g} | {x.std():.4g} | {p01:.4g} | {p50:.4g} | {p99:.4g} | "
                         f"{np.mean(x != 0):.1%} |")
            lo, hi = (p01, p99) if p99 > p01 else (x.min(), x.max() + 1e-12)
            ax.hist(np.clip(x, lo, hi), bins=60, color="#3b6ea8")
        ax.set_title(n, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(feats):]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "\n".join(lines), buf.getvalue()
