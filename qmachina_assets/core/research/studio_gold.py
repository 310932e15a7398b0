"""Model Studio's gold step with a Gold DSL spec typed in the browser: validation located at the node and the
YAML line, a preview of the spec's outputs on a bounded sample of one day's silver, and the versioned file the
session then uses.

- **Validate** = `dsl.validate` (the same pydantic models and checks as a spec file) plus the one rule a dataset
  adds (an output named like a built-in gold column is refused by `datasets._Plan`), each error with the line of
  its node (and field, when the message names one) in the text, so the editor can mark it.
- **Preview** = `dsl_runtime.preview` (the batch kernel, `execute` in 2048-bin chunks) on at most
  `MAX_SAMPLE_BINS` bins of one capture day: the silver the session's dataset holds for that day (the grid the
  DSL runs on in the sweep, with the pipeline's engine geometry), else the lake's silver partition of the day
  (the locked instrument's geometry). Only the sampled rows and the needed columns are read.
- **Versioned files**: an accepted spec is written as `configs/gold/studio_<sid>_g<n>.yaml` (never rewritten; the
  same spec again re-uses its file), where the Dagster code location finds every Gold DSL spec (`gold_dsl_<name>`
  assets on its next load) and where `PipelineSpec.gold_dsl` resolves the session's pipeline.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel

from qmachina_assets.core.engine.silver_partition import read_silver_manifest, silver_dir
from qmachina_assets.core.gold import dsl, dsl_runtime
from qmachina_assets.core.gold import features as gold
from qmachina_assets.core.gold.partition import BIN_INPUTS, builtin_schema
from qmachina_assets.core.ingest.tempfiles import atomic_path
from qmachina_assets.core.research import datasets as dsets
from qmachina_assets.core.research.specs import PipelineSpec

#: The most bins a preview computes (x (2R+1) grid rows: 500k rows at R = 50): what one request may cost.
MAX_SAMPLE_BINS = 5000
MAX_SPEC_CHARS = 100_000
HIST_BINS = 24
_FIELD = re.compile(r": field '([A-Za-z0-9_.]+)'")


class LocatedError(BaseModel):
    """A `dsl.DslError` with where it is in the text: 1-based line (None when the text has no such place)."""

    node: str | None
    kind: str
    message: str
    line: int | None = None
    field: str | None = None


class SpecCheck(BaseModel):
    ok: bool
    errors: list[LocatedError]
    name: str | None = None
    spec_hash: str | None = None
    outputs: list[str] = []
    node_lines: dict[str, int] = {}  # node -> 1-based line of its key in the text


class SampleError(ValueError):
    """No silver to preview on (outside the capture, bad range); the message names the field."""


class DayNotBuilt(SampleError):
    """The day has neither a dataset of the pipeline nor a silver partition yet."""


# ---- validation -------------------------------------------------------------------------------------


def _node_lines(text: str) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Lines of each node's key and of each (node, field) key under `nodes:` (1-based), from the YAML tree."""
    nodes: dict[str, int] = {}
    fields: dict[tuple[str, str], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return nodes, fields
    if not isinstance(root, yaml.MappingNode):
        return nodes, fields
    for k, v in root.value:
        if isinstance(k, yaml.ScalarNode) and k.value == "nodes" and isinstance(v, yaml.MappingNode):
            for nk, nv in v.value:
                if not isinstance(nk, yaml.ScalarNode):
                    continue
                nodes[nk.value] = nk.start_mark.line + 1
                if isinstance(nv, yaml.MappingNode):
                    for fk, _ in nv.value:
                        if isinstance(fk, yaml.ScalarNode):
                            fields[(nk.value, fk.value)] = fk.start_mark.line + 1
    return nodes, fields


def check_spec_text(text: str) -> tuple[dsl.GoldDslSpec | None, SpecCheck]:
    """(the spec or None, every problem located): YAML, `dsl.validate`, and output names a dataset refuses."""
    nodes, fields = _node_lines(text)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, SpecCheck(ok=False, errors=[LocatedError(
            node=None, kind="parse", message=f"spec: not valid YAML ({exc})",
            line=mark.line + 1 if mark is not None else None)])
    errors = dsl.validate(raw)  # a non-mapping is a `parse` error of the spec
    spec = None
    if not errors:
        spec = dsl.GoldDslSpec.model_validate(raw)
        taken = set(builtin_schema().names)
        errors = [dsl.DslError(node=n, kind="output", message=f"node '{n}': output name '{spec.nodes[n].name}' "
                               f"is a built-in gold column of the dataset; rename the output")
                  for n in spec.outputs if spec.nodes[n].name in taken]  # type: ignore[union-attr]
    located = []
    for e in errors:
        m = _FIELD.search(e.message)
        field = m.group(1).split(".")[0] if m else None
        line = fields.get((e.node, field)) if e.node and field else None
        located.append(LocatedError(node=e.node, kind=e.kind, message=e.message, field=field,
                                    line=line or (nodes.get(e.node) if e.node else None)))
    if located:
        return None, SpecCheck(ok=False, errors=located, node_lines=nodes)
    assert spec is not None
    return spec, SpecCheck(ok=True, errors=[], name=spec.name, spec_hash=spec.spec_hash,
                           outputs=[spec.nodes[o].name for o in spec.outputs], node_lines=nodes)  # type: ignore[union-attr]


# ---- the versioned file -----------------------------------------------------------------------------


def gold_spec_name(session_id: str, version: int) -> str:
    return f"studio_{re.sub(r'[^a-z0-9]', '', session_id.lower())[:12]}_g{version}"


def write_gold_spec(configs: Path, session_id: str, text: str) -> tuple[str, dsl.GoldDslSpec]:
    """Validate `text` and write it as the session's next `configs/gold/studio_<sid>_g<n>.yaml` (atomic; an
    existing file of the session with the same spec hash is re-used): (file stem, spec). Invalid text raises
    `dsl.DslValidationError` listing every problem."""
    spec, check = check_spec_text(text)
    if spec is None:
        raise dsl.DslValidationError([dsl.DslError(node=e.node, kind=e.kind, message=e.message)  # type: ignore[arg-type]
                                      for e in check.errors], "gold step")
    gold_dir = configs / "gold"
    gold_dir.mkdir(parents=True, exist_ok=True)
    n = 1
    while (path := gold_dir / f"{gold_spec_name(session_id, n)}.yaml").exists():
        try:
            if dsl.load_spec(path).spec_hash == spec.spec_hash:
                return path.stem, spec
        except dsl.DslValidationError:
            pass
        n += 1
    header = f"# Model Studio session {session_id}: Gold DSL spec {path.stem} (spec_hash {spec.spec_hash})\n"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(header + text)
    return path.stem, spec


# ---- a bounded sample of one day's silver -----------------------------------------------------------


@dataclass(frozen=True)
class DaySample:
    bins: dict[str, np.ndarray]
    grid: dict[str, np.ndarray]
    radius: int
    tick_int: int
    cell_width_ms: int
    source: str  # "dataset <id>" or "silver <path>"
    n_bins_day: int
    start_bin: int


def _read_rows(path: Path, columns: list[str], r0: int, r1: int) -> dict[str, np.ndarray]:
    """Rows [r0, r1) of `columns`, reading only the row groups that overlap them."""
    f = pq.ParquetFile(path)
    missing = [c for c in columns if c not in f.schema_arrow.names]
    if missing:
        raise SampleError(f"{path}: no column(s) {', '.join(missing)}")
    parts, start = [], 0
    for i in range(f.num_row_groups):
        n = f.metadata.row_group(i).num_rows
        if start < r1 and start + n > r0:
            t = f.read_row_group(i, columns=columns)
            parts.append(t.slice(max(0, r0 - start), min(n, r1 - start) - max(0, r0 - start)))
        start += n
    t = pa.concat_tables(parts) if parts else pa.table({c: [] for c in columns})
    return {c: t[c].to_numpy(zero_copy_only=False) for c in columns}


def day_sample(lake: Path, pipeline: PipelineSpec, date: dt.date, grid_fields: list[str], sample_bins: int,
               start_bin: int = 0) -> DaySample:
    """`sample_bins` bins (<= MAX_SAMPLE_BINS) from `start_bin` of `date`: the pipeline's dataset of the day if built,
    else the lake's silver partition; SampleError naming what is missing."""
    if not 1 <= sample_bins <= MAX_SAMPLE_BINS:
        raise SampleError(f"sample_bins: {sample_bins} is not in 1..{MAX_SAMPLE_BINS}")
    if date not in pipeline.capture.dates:
        raise SampleError(f"date: {date} is not a capture date of pipeline {pipeline.name!r}")
    symbol = pipeline.capture.symbol
    d: Path | None = None
    try:
        ds_id = dsets.dataset_id_for(lake, pipeline, date, symbol)
        if (dsets.dataset_dir(lake, ds_id) / dsets.GRID_NAME).is_file():
            d = dsets.dataset_dir(lake, ds_id)
            inst = pipeline.runtime()
            radius, tick_int, cw = inst.grid_radius_ticks, inst.tick_int, inst.cell_width_ms
            source = f"dataset {ds_id}"
    except (OSError, ValueError, LookupError):
        pass
    if d is None:
        man = read_silver_manifest(lake, symbol, date)
        if man is None:
            raise DayNotBuilt(f"date: {date} has no dataset of {pipeline.name} and no silver partition "
                              f"({silver_dir(lake, symbol, date)}): build the day first (the run or Dagster's "
                              f"silver asset builds it)")
        from qmachina_assets.core.instrument import locked_instrument

        d, radius, cw = silver_dir(lake, symbol, date), man.grid_radius_ticks, man.cell_width_ms
        tick_int, source = locked_instrument().tick_int, f"silver {silver_dir(lake, symbol, date)}"
    n_day = pq.ParquetFile(d / dsets.BINS_NAME).metadata.num_rows
    if start_bin < 0 or (n_day and start_bin >= n_day):
        raise SampleError(f"start_bin: {start_bin} is outside the day's {n_day} bins")
    b1 = min(n_day, start_bin + sample_bins)
    w = 2 * radius + 1
    bins = _read_rows(d / dsets.BINS_NAME, list(BIN_INPUTS), start_bin, b1)
    cols = sorted({"k", *gold.GOLD_INPUTS, *grid_fields})
    grid = _read_rows(d / dsets.GRID_NAME, cols, start_bin * w, b1 * w)
    return DaySample(bins, grid, radius, tick_int, cw, source, n_day, start_bin)


# ---- the preview ------------------------------------------------------------------------------------


class Histogram(BaseModel):
    edges: list[float]  # HIST_BINS + 1 edges over [p01, p99] of the defined values
    counts: list[int]  # values outside the edges are counted in the first / last bin


class OutputSummary(BaseModel):
    """dsl_runtime.OutputPreview (quantiles, NaN share, correlations with the built-in set) + a histogram."""

    preview: dsl_runtime.OutputPreview
    histogram: Histogram | None


class GoldPreview(BaseModel):
    pipeline: str
    date: str
    source: str
    n_bins_day: int
    start_bin: int
    spec_hash: str
    n_bins_sampled: int
    n_rows: int
    execution_time_ms: float
    outputs: list[OutputSummary]


def _histogram(values: np.ndarray, lo: float | None, hi: float | None) -> Histogram | None:
    v = values[np.isfinite(values)]
    if not v.size or lo is None or hi is None:
        return None
    if hi <= lo:
        hi = lo + 1e-9
    edges = np.linspace(lo, hi, HIST_BINS + 1)
    counts = np.bincount(np.clip(np.searchsorted(edges, v, side="right") - 1, 0, HIST_BINS - 1),
                         minlength=HIST_BINS)
    return Histogram(edges=edges.tolist(), counts=counts.tolist())


def preview_spec(spec: dsl.GoldDslSpec, lake: Path, pipeline: PipelineSpec, date: dt.date,
                 sample_bins: int = 2000, start_bin: int = 0) -> GoldPreview:
    """Run `spec` on a bounded sample of one day (`day_sample`) with `dsl_runtime.preview`, correlated with the
    built-in set under the pipeline's gold config; one histogram per output."""
    fields = sorted({n.field for n in spec.nodes.values() if isinstance(n, dsl.SilverRef)})
    s = day_sample(lake, pipeline, date, fields, sample_bins, start_bin)
    config = gold.GoldFeatureConfig.from_instrument(pipeline.runtime(), cell_width_ms=s.cell_width_ms)
    res = dsl_runtime.preview(spec, s.bins, s.grid, s.radius, s.tick_int, s.cell_width_ms,
                              sample_bins=len(s.bins["bin_seq"]), start_bin=0, config=config)
    out = dsl_runtime.execute(spec, s.bins, s.grid, s.radius, s.tick_int, s.cell_width_ms) if res.outputs else {}
    valid = out.get("gold_valid")
    summaries = []
    for o in res.outputs:
        x = out[o.name][valid].astype(np.float64) if valid is not None else np.empty(0)
        summaries.append(OutputSummary(preview=o, histogram=_histogram(x, o.p01, o.p99)))
    return GoldPreview(pipeline=pipeline.name, date=date.isoformat(), source=s.source, n_bins_day=s.n_bins_day,
                       start_bin=s.start_bin, spec_hash=res.spec_hash, n_bins_sampled=res.n_bins_sampled,
                       n_rows=res.n_rows, execution_time_ms=res.execution_time_ms, outputs=summaries)
