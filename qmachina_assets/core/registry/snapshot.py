"""The runtime snapshot of a published serving version: every parameter the stream and the browser need.

Built once, at publication, from the ServingSpec, its PipelineSpec and the instrument lock; the serving
process reads only the snapshot (SPEC §5.5: runtime behaviour comes only from `runtime_snapshot`), so a
later edit of a YAML file or of the lock never changes what a published version serves.

Sections (all JSON):
- `runtime_config`: `InstrumentConfig.to_dict()` of the pipeline runtime + serving fields (instrument
  identity, grid geometry, engine and gold parameters, state-model fields, projection horizons, model id,
  config_version) — the body of the stream's `runtime_config` message (SPEC §7.2).
- `instrument`: the lock the version was published under (product type, dataset, root, tick, scale).
- `grid`: radius, rows (2R+1), cell width, tick; `gold_config` (+ hash) for the browser's gold runtime.
- `stream`: format, symbol, capture dates and ET window of the pipeline; `stream_schema`: the wire columns
  in order with dtype, role and Arrow type (the exact Arrow schema the server sends, `arrow_schema`).
- `model_id`, `model_config` (SPEC §7.2), `signal` (name, params, weights, threshold, cooldown, TP/SL:
  what was evaluated is what is served), `projection` (bins and ms), `visualization`, `display_name`.
- `serving` and `pipeline`: names and spec hashes.
- `gold_dsl` (null without one): the pipeline's Gold DSL spec itself (name, spec_hash, the validated spec,
  its outputs, the executor's runtime version): the stream's `DslRuntime` and the browser run this copy, so a
  later edit of `configs/gold/<name>.yaml` never changes what a published version serves.
- `model` (ML signals only; absent otherwise, so other versions keep their ids): the fitted model the version
  scores with, added by the preflight's `artifact` rule (`model_artifact.model_entry`: path in the lake,
  sha256, bytes, signal, params, train days and dataset ids, labels, library versions).
"""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from qmachina_assets.core.engine import silver
from qmachina_assets.core.gold import dsl, dsl_runtime
from qmachina_assets.core.gold.features import GoldFeatureConfig
from qmachina_assets.core.instrument import InstrumentConfig, locked_instrument
from qmachina_assets.core.research.specs import PipelineSpec, ServingSpec

SNAPSHOT_VERSION = 1
STREAM_FORMAT = "dense_grid"
ARROW_TYPES: dict[str, pa.DataType] = {
    "int8": pa.int8(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64(),
}
#: Instrument fields a served snapshot must share with the serving process's lock.
LOCK_FIELDS: tuple[str, ...] = ("product_type", "dataset", "symbol_root", "tick_size", "price_scale")
STATE_MODEL_FIELDS: tuple[str, ...] = (
    "center_exclusion_radius", "spatial_decay_power", "zscore_window_bins", "zscore_min_periods", "tanh_scale",
    "d1_weight", "d2_weight", "d3_weight", "bull_pressure_weight", "bull_vacuum_weight", "bear_pressure_weight",
    "bear_vacuum_weight", "mixed_weight",
)


def model_config(runtime: InstrumentConfig) -> dict[str, Any]:
    """SPEC §7.2 `model_config` of the stream's runtime_config message."""
    if runtime.model_id == "ema_ensemble":
        return {"model": "ema_ensemble"}
    return {"model": runtime.model_id, "state_model": {
        "name": "derivative", **{k: getattr(runtime, f"state_model_{k}") for k in STATE_MODEL_FIELDS}}}


def gold_dsl_section(pipeline: PipelineSpec) -> dict[str, Any] | None:
    """The snapshot's `gold_dsl`: the pipeline's spec loaded and validated (dsl.DslValidationError otherwise)."""
    path = pipeline.gold_dsl_path()
    if path is None:
        return None
    spec = dsl.load_spec(path)
    return {"name": pipeline.gold_dsl, "spec_hash": spec.spec_hash, "spec": spec.model_dump(mode="json"),
            "outputs": [spec.nodes[o].name for o in spec.outputs],  # type: ignore[union-attr]
            "runtime_version": dsl_runtime.RUNTIME_VERSION}


def runtime_snapshot(serving: ServingSpec, pipeline: PipelineSpec,
                     instrument: InstrumentConfig | None = None) -> dict[str, Any]:
    """The snapshot of `serving` on `pipeline` under the lock (`instrument`, default the process lock).
    Raises specs.ConfigError (naming the serving file and field) when the runtime does not validate, and
    dsl.DslValidationError (naming the file and node) when the pipeline's Gold DSL spec does not."""
    inst = instrument or locked_instrument()
    runtime = serving.runtime(pipeline, inst)
    gold_cfg = GoldFeatureConfig.from_instrument(runtime)
    radius = int(runtime.grid_radius_ticks)
    cap = pipeline.capture
    sig = serving.signal
    return {
        "snapshot_version": SNAPSHOT_VERSION,
        "serving": {"name": serving.name, "spec_hash": serving.spec_hash},
        "display_name": serving.display_name,
        "model_id": serving.model_id,
        "runtime_config": runtime.to_dict(),
        "instrument": {**{k: getattr(inst, k) for k in LOCK_FIELDS}, "lock_config_version": inst.config_version},
        "grid": {"radius_ticks": radius, "rows": 2 * radius + 1, "cell_width_ms": runtime.cell_width_ms,
                 "tick_size": runtime.tick_size, "tick_int": runtime.tick_int},
        "gold_config": gold_cfg.model_dump(mode="json"),
        "gold_config_hash": gold_cfg.config_hash,
        "stream": {"format": STREAM_FORMAT, "symbol": cap.symbol, "dates": [d.isoformat() for d in pipeline.days],
                   "start_et": cap.start_et, "end_et": cap.end_et},
        "stream_schema": [{"name": f.name, "dtype": f.dtype, "role": f.role,
                           "arrow_type": str(ARROW_TYPES[f.dtype]) if f.dtype in ARROW_TYPES else None}
                          for f in serving.stream_schema],
        "model_config": model_config(runtime),
        "signal": None if sig is None else {
            "name": sig.name, "params": dict(sig.params), "weights": dict(sig.weights),
            "threshold": serving.threshold, "cooldown_bins": serving.cooldown_bins,
            "tp_ticks": serving.tp_ticks, "sl_ticks": serving.sl_ticks},
        "projection": {"horizons_bins": list(runtime.projection_horizons_bins),
                       "horizons_ms": list(runtime.projection_horizons_ms),
                       "use_cubic": serving.projection.use_cubic, "cubic_scale": serving.projection.cubic_scale,
                       "damping_lambda": serving.projection.damping_lambda},
        "visualization": serving.visualization.model_dump(mode="json"),
        "pipeline": {"name": pipeline.name, "spec_hash": pipeline.spec_hash, "dataset_hash": pipeline.dataset_hash,
                     "gold_dsl": pipeline.gold_dsl},
        "gold_dsl": gold_dsl_section(pipeline),
    }


# ---- the wire schema -------------------------------------------------------------------------------


def arrow_schema(snapshot: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of the stream's binary frames: the snapshot's `stream_schema` in order, each field
    exactly as in `silver.silver_schema()` (type and nullability). KeyError/ValueError if a field is not."""
    wire = silver.silver_schema()
    fields = []
    for f in snapshot["stream_schema"]:
        ref = wire.field(f["name"])
        if ARROW_TYPES.get(f["dtype"]) != ref.type:
            raise ValueError(f"stream_schema: {f['name']} is {ref.type} on the wire, not {f['dtype']}")
        fields.append(ref)
    return pa.schema(fields)


def stream_schema_problems(fields: list[dict[str, Any]]) -> list[str]:
    """Every way `fields` ([{name, dtype, ...}]) differs from the silver wire schema; [] when it matches."""
    wire = silver.silver_schema()
    problems = []
    seen: set[str] = set()
    for i, f in enumerate(fields):
        name, dtype = f.get("name"), f.get("dtype")
        if name in seen:
            problems.append(f"stream_schema[{i}]: field {name!r} is listed twice")
        seen.add(name)
        if name not in wire.names:
            problems.append(f"stream_schema[{i}]: {name!r} is not in the silver allow-list (the wire carries only "
                            f"silver columns: {', '.join(wire.names)})")
            continue
        want = wire.field(name).type
        got = ARROW_TYPES.get(dtype)
        if got is None:
            problems.append(f"stream_schema[{i}]: {name} has dtype {dtype!r}; known: {', '.join(ARROW_TYPES)}")
        elif got != want:
            problems.append(f"stream_schema[{i}]: {name} is Arrow {want} in the silver schema, the spec says {dtype} "
                            f"(Arrow {got})")
    return problems


def lock_problems(snapshot: dict[str, Any], instrument: InstrumentConfig) -> list[str]:
    """How a snapshot's instrument differs from a lock (the serving process checks this before streaming)."""
    rt = snapshot["runtime_config"]
    out = [f"{k}: the version has {rt.get(k)!r}, the instrument lock {getattr(instrument, k)!r}"
           for k in LOCK_FIELDS if rt.get(k) != getattr(instrument, k)]
    sym = snapshot.get("stream", {}).get("symbol")
    if sym is not None and not instrument.symbol_matches_root(sym):
        out.append(f"symbol: {sym!r} is not an outright contract of the locked root {instrument.symbol_root!r}")
    return out


def runtime_config_message(snapshot: dict[str, Any], *, version_id: str, alias: str | None = None,
                           source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stream's first message (SPEC §7.2 `runtime_config`), built from the snapshot alone."""
    out = {"type": "runtime_config", **snapshot["runtime_config"], "stream_format": snapshot["stream"]["format"],
           "grid_schema_fields": [{k: f[k] for k in ("name", "dtype", "role")} for f in snapshot["stream_schema"]],
           "grid_rows": snapshot["grid"]["rows"], "model_config": snapshot["model_config"],
           "serving": {"serving_name": snapshot["serving"]["name"], "serving_id": version_id, "alias": alias,
                       "source": source or {}},
           "gold_config": snapshot["gold_config"], "display_name": snapshot["display_name"],
           "visualization": snapshot["visualization"], "signal": snapshot["signal"],
           "projection": snapshot["projection"], "gold_dsl": snapshot.get("gold_dsl")}
    return out


# ---- diff ------------------------------------------------------------------------------------------


def _list_key(items: list[Any]) -> str | None:
    """The identity key of a list of mappings (`name` or `id`) when every item has a distinct one."""
    for key in ("name", "id"):
        if items and all(isinstance(x, dict) and isinstance(x.get(key), str) for x in items):
            values = [x[key] for x in items]
            if len(set(values)) == len(values):
                return key
    return None


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys of nested mappings. Lists of mappings with a unique `name`/`id` are keyed by it
    (`stream_schema[k].dtype`) plus an `…#order` leaf with the key order; other lists are leaves."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict) and obj:
        for k in sorted(obj):
            out.update(flatten(obj[k], f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list) and (key := _list_key(obj)) is not None:
        out[f"{prefix}#order"] = [x[key] for x in obj]
        for x in obj:
            out.update(flatten(x, f"{prefix}[{x[key]}]"))
    else:
        out[prefix] = obj
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal values (1 == 1.0, NaN == NaN) of the same kind (True is not 1)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and isinstance(a, bool) == isinstance(b, bool)


class ChangedValue(BaseModel):
    model_config = ConfigDict(frozen=True)

    a: Any
    b: Any


class SnapshotDiff(BaseModel):
    """Field-by-field comparison of two versions' runtime snapshots (flat dotted keys)."""

    model_config = ConfigDict(frozen=True)

    version_a: str
    version_b: str
    added: dict[str, Any]  # key: value in b
    removed: dict[str, Any]  # key: value in a
    changed: dict[str, ChangedValue]
    unchanged_count: int
    summary: str

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def text(self) -> str:
        lines = [self.summary]
        lines += [f"+ {k} = {v!r}" for k, v in self.added.items()]
        lines += [f"- {k} = {v!r}" for k, v in self.removed.items()]
        lines += [f"~ {k}: {c.a!r} -> {c.b!r}" for k, c in self.changed.items()]
        return "\n".join(lines)


def diff_snapshots(a: dict[str, Any], b: dict[str, Any], *, version_a: str = "a", version_b: str = "b",
                   ) -> SnapshotDiff:
    fa, fb = flatten(a), flatten(b)
    added = {k: fb[k] for k in sorted(fb.keys() - fa.keys())}
    removed = {k: fa[k] for k in sorted(fa.keys() - fb.keys())}
    common = sorted(fa.keys() & fb.keys())
    changed = {k: ChangedValue(a=fa[k], b=fb[k]) for k in common if not _same(fa[k], fb[k])}
    same = len(common) - len(changed)
    summary = (f"{version_a} vs {version_b}: {len(added)} added, {len(removed)} removed, {len(changed)} changed, "
               f"{same} unchanged")
    return SnapshotDiff(version_a=version_a, version_b=version_b, added=added, removed=removed, changed=changed,
                        unchanged_count=same, summary=summary)
