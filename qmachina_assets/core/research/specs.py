"""The configuration chain (SPEC §5.2–§5.4): PipelineSpec ← ServingSpec ← ExperimentSpec, loaded from YAML.

Each layer names the one below it by file name: `configs/experiments/{name}.yaml` names a serving spec,
which names a pipeline spec, which is checked against the instrument lock (`configs/instrument.yaml`).
Every model forbids unknown keys, and every error names the file, the field path (`eval.cooldown_bins[1]`)
and the reason, so a broken config fails in CI (`validate_configs`) instead of on the first streamed bin.

Decisions where this departs from SPEC §5 (and why):
- **What is promoted is what was evaluated** (§10.10/15/16): the serving spec carries the evaluated
  signal, threshold, cooldown and TP/SL; an experiment sweeps only the signal of its serving spec, and
  `apply_params` turns one swept parameter set into the serving spec that would be promoted.
- **Streamable by construction** (§5.6, §10.15): `stream_schema` may list only silver columns, with the
  silver dtype and the column's role; `k` and `last_event_id` are required; a model lists only fields its
  producer emits (EMA: k, fill_mass, rest_depth, last_event_id); the fields a signal or overlay computes
  from (e.g. the gold inputs for `vp_gold` and `flow_score`) must be on the wire; every field the viewer
  draws must be streamed or computed in the browser.
- **One home for defaults**: `scoring` fields and `projection.horizons_ms` default to *inherit* (None)
  from the pipeline's runtime (the instrument lock plus pipeline overrides) instead of repeating the
  instrument's numbers, so a pipeline override is not silently replaced by a serving default.
- **Pipeline overrides live under `engine`** (SPEC: `pipeline`) and `capture` holds several dates (a list
  or a {start, end} range) with an optional ET window (no window = the engine's full span, as for the
  real sample days); `capture.product_type` is dropped (the lock fixes it).
- **Dataset ids survive adding dates**: the hash8 of `dataset_id` covers what shapes one day's data
  (code version, symbol, window, engine overrides, gold DSL name), not the date list or the name;
  `spec_hash` covers the whole spec except `description`. A capture without window has `full` in place
  of `{hhmm}_{hhmm}`.
- **Experiments**: `eval.tp_ticks/sl_ticks/cooldown_bins` default to the serving spec's values;
  `eval.tick_size` is gone (the lock has it); `inline_datasets` are gone (they bypassed lineage);
  walk-forward is the default evaluation; the promotion gate is required.
- Serving specs have no `gold_dsl_spec_id/gold_dsl_hash`: the gold DSL is part of the pipeline.
- Thresholds are > 0 (the evaluator's rule) and ≤ 1 for the signals bounded to [-1, 1].
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib
import importlib.util
import json
import math
import os
import random
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from qmachina_assets.core.engine import silver
from qmachina_assets.core.engine.silver_partition import HHMM, SilverWindow
from qmachina_assets.core.gold import features as gold
from qmachina_assets.core.gold.features import GoldFeatureConfig
from qmachina_assets.core.instrument import InstrumentConfig, InstrumentConfigError, load_instrument, locked_instrument
from qmachina_assets.core.paths import configs_root

NAME_PATTERN = r"^[a-z0-9][a-z0-9_]*$"
MAX_RANGE_DAYS = 366
#: Full sweeps up to this many parameter sets are validated combination by combination.
MAX_CHECKED_COMBINATIONS = 2000

#: SPEC §6.7 statistical signals, §6.8 ML signals, the gold flow score at k = 0 and any named gold column
#: (`gold_column`: a built-in one or an output of the pipeline's Gold DSL, `signal_column_problem`).
KNOWN_SIGNALS: tuple[str, ...] = (
    "ads", "ads_pfp_svac", "derivative", "erd", "iirc", "jad", "msd", "pfp", "spg",
    "gbm_mf", "knn_cl", "lsvm_der", "pca_ad", "svm_sp", "xgb_snap",
    "flow_score", "gold_column",
)
#: Parameter names a signal accepts; None = the `Params` model of the signal registry
#: (`qmachina_assets.core.research.signals`) when importable, else checked by the harness when it runs.
#: `derivative` maps onto the instrument's `state_model_*` fields.
DERIVATIVE_PARAMS: tuple[str, ...] = (
    "center_exclusion_radius", "spatial_decay_power", "zscore_window_bins", "zscore_min_periods",
    "tanh_scale", "d1_weight", "d2_weight", "d3_weight",
)
DERIVATIVE_WEIGHTS: tuple[str, ...] = ("bull_pressure", "bull_vacuum", "bear_pressure", "bear_vacuum", "mixed")
SIGNAL_PARAMS: dict[str, tuple[str, ...] | None] = {
    **{name: None for name in KNOWN_SIGNALS},
    "derivative": DERIVATIVE_PARAMS,
    "flow_score": ("k",),  # the relative tick read (FlowScoreParams; default 0, the spot)
}
#: Signals whose score is clipped to [-1, 1]: a threshold above 1 never fires.
BOUNDED_SIGNALS: tuple[str, ...] = ("flow_score", "derivative")
#: Silver columns a served signal is computed from; they must be on the wire.
SIGNAL_SILVER_INPUTS: dict[str, tuple[str, ...]] = {
    "flow_score": (*gold.GOLD_INPUTS, "ask_reprice_sign", "bid_reprice_sign"),
    "derivative": ("ask_reprice_sign", "bid_reprice_sign", "microstate_id"),
}

ModelId = Literal["vacuum_pressure", "ema_ensemble"]
#: Fields each model's producer emits (SPEC §9: the EMA producer sends one k = 0 row of three columns).
EMA_FIELDS: tuple[str, ...] = ("k", "fill_mass", "rest_depth", "last_event_id")
MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "vacuum_pressure": tuple(name for name, _ in silver.SILVER_COLUMNS),
    "ema_ensemble": EMA_FIELDS,
}

StreamDtype = Literal["int8", "int32", "int64", "float64"]
StreamRole = Literal["grid_index", "force", "velocity", "acceleration", "jerk", "signal", "indicator", "metadata"]


def silver_role(name: str, dtype: str) -> str:
    """The one correct role of a silver column (roles are the column's meaning, not a free choice)."""
    if name == "k":
        return "grid_index"
    if name == "last_event_id":
        return "metadata"
    if dtype != "float64":
        return "indicator"
    return {"v": "velocity", "a": "acceleration", "j": "jerk"}.get(name.split("_", 1)[0], "force")


#: silver column -> (dtype, role)
SILVER_FIELDS: dict[str, tuple[str, str]] = {
    name: (np_dtype.name, silver_role(name, np_dtype.name)) for name, np_dtype in silver.SILVER_COLUMNS
}
REQUIRED_STREAM_FIELDS: tuple[str, ...] = ("k", "last_event_id")
#: Fields the browser's gold runtime computes when an enabled `vp_gold` overlay exists.
GOLD_VIEW_FIELDS: tuple[str, ...] = (*gold.GOLD_FLOAT_COLUMNS, *gold.GOLD_CODE_COLUMNS)
VP_GOLD_INPUTS: tuple[str, ...] = SIGNAL_SILVER_INPUTS["flow_score"]


# ---- errors ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found by `validate_configs`; `severity == "note"` does not fail validation."""

    file: str
    field: str
    reason: str
    severity: Literal["error", "note"] = "error"

    def __str__(self) -> str:
        head = f"{self.file}: {self.field}: " if self.field else f"{self.file}: "
        return head + self.reason + (" (note)" if self.severity == "note" else "")


class ConfigError(ValueError):
    """A config file is invalid; `file`, `field` (dotted path, '' for the whole file) and `reason`.

    `errors` holds every problem found in the file (this error is the first of them)."""

    def __init__(self, file: str, field: str, reason: str, errors: list[ConfigError] | None = None):
        self.file = file
        self.field = field
        self.reason = reason
        self.errors = errors or [self]
        super().__init__(f"{file}: {field}: {reason}" if field else f"{file}: {reason}")

    def issue(self) -> ConfigIssue:
        return ConfigIssue(self.file, self.field, self.reason)


class _FieldError(ValueError):
    """A problem at a field path, before the file is known (raised by spec methods, tagged by loaders)."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


_PATH_PREFIX = re.compile(r"^([A-Za-z_][\w./\[\]]*): (.+)$", re.S)


def _path(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class at `loc` below `model` (to list the allowed keys of an unknown-key error)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            field = tp.model_fields.get(part)
            if field is None:
                return None
            tp = field.annotation
        elif origin is list and isinstance(part, int):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _pydantic_errors(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> list[_FieldError]:
    """Pydantic errors as (field path, reason); `path: reason` messages of our own validators extend the path."""
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        reason = str(err["msg"])
        if err["type"] == "value_error":
            reason = reason.removeprefix("Value error, ")
            m = _PATH_PREFIX.match(reason)
            if m:
                sub, reason = m.groups()
                loc = (*loc, *(x for x in re.split(r"\.|(?=\[)", sub) if x))
        elif err["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = f" (allowed: {', '.join(parent.model_fields)})" if parent is not None else ""
            reason = f"unknown key{allowed}"
        elif err["type"] == "missing":
            reason = "required field missing"
        path = _path([int(x[1:-1]) if isinstance(x, str) and x.startswith("[") else x for x in loc])
        out.append(_FieldError(f"{prefix}{'.' if prefix and path else ''}{path}", reason))
    return out


def _first_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """`path: reason` of a nested validation, for re-raising inside a parent validator."""
    e = _pydantic_errors(exc, model)[0]
    return f"{e.field}: {e.reason}" if e.field else e.reason


# ---- shared field types ----------------------------------------------------------------------------


def _listify(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


def _unique(values: list[Any], what: str) -> list[Any]:
    seen: set[str] = set()
    for i, v in enumerate(values):
        key = json.dumps(v, sort_keys=True, default=str)
        if key in seen:
            raise ValueError(f"[{i}]: {what} {v!r} is listed twice")
        seen.add(key)
    return values


def _hhmm(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        raise ValueError(f"got the number {v}: quote HH:MM times in YAML (\"{v // 60:02d}:{v % 60:02d}\"); "
                         "unquoted, YAML 1.1 reads 10:30 as the base-60 integer 630")
    return v


def _date_item(v: Any) -> Any:
    if isinstance(v, dt.datetime) or not isinstance(v, dt.date | str):
        raise ValueError(f"expected a date YYYY-MM-DD, got {v!r}")
    if isinstance(v, str):
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
            raise ValueError(f"expected a date YYYY-MM-DD, got {v!r}")
        return dt.date.fromisoformat(v)
    return v


def _dates(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) != {"start", "end"}:
            raise ValueError("a date range is {start: YYYY-MM-DD, end: YYYY-MM-DD}")
        start, end = _date_item(v["start"]), _date_item(v["end"])
        if end < start:
            raise ValueError(f"range end {end} is before its start {start}")
        n = (end - start).days + 1
        if n > MAX_RANGE_DAYS:
            raise ValueError(f"range of {n} days exceeds {MAX_RANGE_DAYS}")
        return [start + dt.timedelta(days=i) for i in range(n)]
    if isinstance(v, list):
        return v
    raise ValueError("expected a list of YYYY-MM-DD dates or a {start, end} range")


Name = Annotated[str, Field(pattern=NAME_PATTERN)]
HHMMStr = Annotated[str, BeforeValidator(_hhmm), Field(pattern=HHMM)]
DateItem = Annotated[dt.date, BeforeValidator(_date_item)]
PosInt = Annotated[int, Field(ge=1)]
PosIntList = Annotated[list[PosInt], BeforeValidator(_listify), Field(min_length=1)]
Axis = Annotated[list[Any], BeforeValidator(_listify), Field(min_length=1)]


def _canonical_hash(obj: Any, n: int) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


class StrictSpec(BaseModel):
    """Base of every spec model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _FileSpec(StrictSpec):
    """A top-level spec; `_source` is the file it was loaded from (for error messages)."""

    _source: str | None = PrivateAttr(None)
    _path: Path | None = PrivateAttr(None)

    def _where(self) -> str:
        kind = type(self).__name__
        return self._source or f"<{kind} {getattr(self, 'name', '?')}>"

    def _raise(self, err: _FieldError) -> typing.NoReturn:
        raise ConfigError(self._where(), err.field, err.reason) from err


def _revalidate(base: InstrumentConfig, overrides: dict[str, Any], paths: dict[str, str],
                default_path: str) -> InstrumentConfig:
    """Overrides merged onto `base` and re-validated by InstrumentConfig, so every engine rule applies;
    a failure names the spec field the offending runtime field came from."""
    try:
        return InstrumentConfig.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        err = exc.errors()[0]
        reason = str(err["msg"]).removeprefix("Value error, ")
        if err["loc"]:
            name = str(err["loc"][0])
        else:
            name, _, rest = reason.partition(": ")
            reason = rest or reason
        raise _FieldError(paths.get(name, default_path), f"{reason} (runtime field {name})") from exc


# ---- PipelineSpec ----------------------------------------------------------------------------------


class Capture(StrictSpec):
    """Which days of which contract, and the ET emission window (none = the engine's full span)."""

    symbol: str = Field(min_length=1)
    dates: Annotated[list[DateItem], BeforeValidator(_dates), Field(min_length=1)]
    start_et: HHMMStr | None = None
    end_et: HHMMStr | None = None

    @model_validator(mode="after")
    def _check(self) -> Capture:
        try:
            SilverWindow(start_et=self.start_et, end_et=self.end_et)
        except ValidationError as exc:
            raise ValueError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
        try:
            _unique([d.isoformat() for d in self.dates], "date")
        except ValueError as exc:
            raise ValueError(f"dates{exc}") from None
        return self

    @property
    def window(self) -> SilverWindow:
        return SilverWindow(start_et=self.start_et, end_et=self.end_et)


class EngineOverrides(StrictSpec):
    """Engine and gold parameters overriding the instrument lock (None = the lock's value)."""

    cell_width_ms: int | None = None
    grid_radius_ticks: int | None = None
    n_absolute_ticks: int | None = None
    tau_velocity: float | None = None
    tau_acceleration: float | None = None
    tau_jerk: float | None = None
    tau_rest_decay: float | None = None
    c1: float | None = None
    c2: float | None = None
    c3: float | None = None
    c4: float | None = None
    c5: float | None = None
    c6: float | None = None
    c7: float | None = None
    flow_windows: list[int] | None = None
    flow_rollup_weights: list[float] | None = None
    flow_derivative_weights: list[float] | None = None
    flow_tanh_scale: float | None = None
    flow_neutral_threshold: float | None = None
    flow_zscore_window_bins: int | None = None
    flow_zscore_min_periods: int | None = None


class FeatureStoreConfig(StrictSpec):
    """Feast export (optional extra); enabling it needs the `feast` package."""

    enabled: bool = False
    project: str = "qmachina"

    @model_validator(mode="after")
    def _check(self) -> FeatureStoreConfig:
        if self.enabled and importlib.util.find_spec("feast") is None:
            raise ValueError("enabled: feast is not installed (pip install 'qmachina[feast]')")
        return self


class PipelineSpec(_FileSpec):
    """What data and how to grid it: a capture (contract, days, window) and engine overrides."""

    name: Name
    description: str = ""
    pipeline_code_version: int = Field(1, ge=1)
    capture: Capture
    engine: EngineOverrides = EngineOverrides()
    gold_dsl: Name | None = None
    feature_store: FeatureStoreConfig = FeatureStoreConfig()
    automation: bool = True  # Dagster builds the datasets as sessions land; false: on request only

    def overrides(self) -> dict[str, Any]:
        return self.engine.model_dump(exclude_none=True)

    def runtime(self, instrument: InstrumentConfig | None = None) -> InstrumentConfig:
        """The locked instrument with this pipeline's overrides, re-validated (errors name `engine.<field>`)."""
        inst = instrument or locked_instrument()
        paths = {k: f"engine.{k}" for k in EngineOverrides.model_fields}
        try:
            return _revalidate(inst, self.overrides(), paths, "engine")
        except _FieldError as err:
            self._raise(err)

    def gold_config(self, instrument: InstrumentConfig | None = None) -> GoldFeatureConfig:
        return GoldFeatureConfig.from_instrument(self.runtime(instrument))

    def gold_dsl_path(self, gold_spec_dir: Path | None = None) -> Path | None:
        """The Gold DSL spec file `gold_dsl` names: `<gold_spec_dir>/<name>.yaml`, by default beside the configs
        tree the pipeline was loaded from (`configs/gold/`); None without a Gold DSL."""
        if self.gold_dsl is None:
            return None
        if gold_spec_dir is None:
            src = self._path
            gold_spec_dir = src.parent.parent / "gold" if src is not None else configs_root() / "gold"
        return Path(gold_spec_dir) / f"{self.gold_dsl}.yaml"

    @property
    def days(self) -> list[dt.date]:
        return sorted(self.capture.dates)

    @property
    def spec_hash(self) -> str:
        """16 hex of sha256 over canonical JSON of the spec (all but `description`; unset overrides omitted)."""
        body = self.model_dump(mode="json", exclude={"description", "automation"})
        body["engine"] = self.engine.model_dump(mode="json", exclude_none=True)
        return _canonical_hash(body, 16)

    @property
    def dataset_hash(self) -> str:
        """16 hex over what shapes one day's data; independent of the date list and the name."""
        body = {
            "pipeline_code_version": self.pipeline_code_version,
            "symbol": self.capture.symbol,
            "start_et": self.capture.start_et,
            "end_et": self.capture.end_et,
            "engine": self.engine.model_dump(mode="json", exclude_none=True),
            "gold_dsl": self.gold_dsl,
        }
        return _canonical_hash(body, 16)

    def dataset_id(self, date: dt.date | str) -> str:
        """`{symbol_lower}_{yyyymmdd}_{hhmm}_{hhmm}__{name}__{hash8}` (`full` when there is no window)."""
        day = _date_item(date)
        if day not in self.capture.dates:
            raise ValueError(f"{self._where()}: {day} is not a capture date of pipeline {self.name!r}")
        c = self.capture
        window = "full" if c.start_et is None else f"{c.start_et.replace(':', '')}_{c.end_et.replace(':', '')}"
        return f"{c.symbol.lower()}_{day:%Y%m%d}_{window}__{self.name}__{self.dataset_hash[:8]}"


# ---- ServingSpec -----------------------------------------------------------------------------------


class ScoringConfig(StrictSpec):
    """Gold flow scoring (SPEC §4.4); None inherits the pipeline runtime's `flow_*` value."""

    zscore_window_bins: int | None = Field(None, ge=2)
    zscore_min_periods: int | None = Field(None, ge=2)
    derivative_weights: list[float] | None = Field(None, min_length=3, max_length=3)
    tanh_scale: float | None = Field(None, gt=0)
    neutral_threshold: float | None = Field(None, gt=0, lt=1)


SCORING_RUNTIME: dict[str, str] = {
    "zscore_window_bins": "flow_zscore_window_bins",
    "zscore_min_periods": "flow_zscore_min_periods",
    "derivative_weights": "flow_derivative_weights",
    "tanh_scale": "flow_tanh_scale",
    "neutral_threshold": "flow_neutral_threshold",
}


class SignalSpec(StrictSpec):
    """The evaluated and served signal: a KNOWN_SIGNALS name with its parameters."""

    name: str
    params: dict[str, Any] = {}
    weights: dict[str, float] = {}

    @model_validator(mode="after")
    def _check(self) -> SignalSpec:
        if self.name not in KNOWN_SIGNALS:
            raise ValueError(f"name: unknown signal {self.name!r} (known: {', '.join(KNOWN_SIGNALS)})")
        allowed = SIGNAL_PARAMS[self.name]
        if allowed is None:
            params_model = registry_params(self.name)
            if params_model is not None:
                try:
                    params_model.model_validate(self.params)
                except ValidationError as exc:
                    raise ValueError(f"params.{_first_error(exc, params_model)}") from None
        else:
            for key in self.params:
                if key not in allowed:
                    known = ", ".join(allowed) or "none"
                    raise ValueError(f"params.{key}: unknown parameter of signal {self.name!r} (allowed: {known})")
        for key, value in self.params.items():
            ok = _scalar(value) or (isinstance(value, list) and all(_scalar(x) for x in value))
            if not ok:
                raise ValueError(f"params.{key}: expected a number, string, bool or a list of them")
        wallowed = DERIVATIVE_WEIGHTS if self.name == "derivative" else ()
        for key in self.weights:
            if key not in wallowed:
                raise ValueError(f"weights.{key}: unknown weight of signal {self.name!r} "
                                 f"(allowed: {', '.join(wallowed) or 'none'})")
        return self

    def kwargs(self) -> dict[str, Any]:
        """Constructor parameters of the signal implementation (weights map to `<key>_weight`)."""
        return {**self.params, **{f"{k}_weight": v for k, v in self.weights.items()}}

    def runtime_fields(self) -> dict[str, Any]:
        """`derivative` params/weights as the instrument's `state_model_*` fields; {} for other signals."""
        if self.name != "derivative":
            return {}
        return {**{f"state_model_{k}": v for k, v in self.params.items()},
                **{f"state_model_{k}_weight": v for k, v in self.weights.items()}}


def signal_column_problem(serving: ServingSpec, dsl_name: str | None, dsl_outputs: typing.Sequence[str]
                          ) -> str | None:
    """Why a `gold_column` signal's column is not a gold column of the pipeline (a built-in one, or an output of
    its Gold DSL `dsl_name` with `dsl_outputs`); None when it is, or for another signal."""
    sig = serving.signal
    col = sig.params.get("column") if sig is not None and sig.name == "gold_column" else None
    if not isinstance(col, str) or col in GOLD_VIEW_FIELDS or col in dsl_outputs:
        return None
    builtin = f"not a built-in gold column ({', '.join(GOLD_VIEW_FIELDS)})"
    if dsl_name is None:
        return f"{col!r} is {builtin}, and pipeline {serving.pipeline!r} has no Gold DSL (gold_dsl) to define it"
    return (f"{col!r} is {builtin}, nor an output of pipeline {serving.pipeline!r}'s Gold DSL {dsl_name!r} "
            f"(outputs: {', '.join(dsl_outputs) or 'none'})")


def registry_params(signal: str) -> type[BaseModel] | None:
    """The `Params` model of a signal in `qmachina_assets.core.research.signals` (imported lazily), or None when
    that package or the signal is unavailable: then the harness checks the parameters when it runs."""
    try:
        base = importlib.import_module("qmachina_assets.core.research.signals.base")
        for module in ("statistical", "ml"):
            with contextlib.suppress(ImportError):
                importlib.import_module(f"qmachina_assets.core.research.signals.{module}")
        cls = base.REGISTRY.get(signal)
        params = getattr(cls, "Params", None)
    except Exception:  # another package in progress must not break config validation
        return None
    return params if isinstance(params, type) and issubclass(params, BaseModel) else None


def _scalar(v: Any) -> bool:
    return isinstance(v, int | float | str | bool)


class ProjectionConfig(StrictSpec):
    """Score projection (SPEC §4.7); `horizons_ms` None inherits the runtime's horizons."""

    horizons_ms: list[PosInt] | None = Field(None, min_length=1)
    use_cubic: bool = False
    cubic_scale: float = Field(1 / 6, gt=0)
    damping_lambda: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ProjectionConfig:
        if self.horizons_ms is not None:
            try:
                _unique(self.horizons_ms, "horizon")
            except ValueError as exc:
                raise ValueError(f"horizons_ms{exc}") from None
        return self


class StreamFieldSpec(StrictSpec):
    """One column of the streamed Arrow grid: a silver column with its silver dtype and role."""

    name: str
    dtype: StreamDtype
    role: StreamRole
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> StreamFieldSpec:
        if self.name not in SILVER_FIELDS:
            raise ValueError(f"name: {self.name!r} is not a silver column; the producer emits only the silver "
                             "allow-list (gold fields are computed from it in the browser or offline)")
        dtype, role = SILVER_FIELDS[self.name]
        if self.dtype != dtype:
            raise ValueError(f"dtype: {self.name} is {dtype} in silver, not {self.dtype}")
        if self.role != role:
            raise ValueError(f"role: {self.name} has role {role}, not {self.role}")
        return self


class CellShaderConfig(StrictSpec):
    signal_field: str = "flow_score"
    depth_field: str = "rest_depth"
    color_scheme: Literal["pressure_vacuum", "thermal", "mono_green", "mono_red"] = "pressure_vacuum"
    normalization: Literal["adaptive_running_max", "zscore_clamp", "identity_clamp"] = "adaptive_running_max"
    gamma: float = Field(0.7, gt=0, le=5)


class NoParams(StrictSpec):
    pass


class ProjectionBandsParams(StrictSpec):
    signal_field: str
    composite_scale: float = Field(8.0, gt=0)


class EmaLinesParams(StrictSpec):
    """EMA ensemble lines and signal (SPEC §9); the four numeric lists are required when enabled."""

    periods: list[PosInt] | None = Field(None, min_length=2)
    weights: list[Annotated[float, Field(ge=0)]] | None = None
    sma_periods: list[PosInt] | None = None
    signal_tanh_scale: float | None = Field(None, gt=0)
    line_width: float | None = Field(None, gt=0)
    lines_label: str | None = None
    sma_label: str | None = None

    @model_validator(mode="after")
    def _check(self) -> EmaLinesParams:
        if self.periods is not None:
            try:
                _unique(self.periods, "period")
            except ValueError as exc:
                raise ValueError(f"periods{exc}") from None
            if self.weights is not None:
                n = len(self.periods)
                if len(self.weights) not in (n - 1, n):
                    raise ValueError(f"weights: {n} periods need {n - 1} pair weights (or {n}, the last unused)")
                if sum(self.weights[: n - 1]) <= 0:
                    raise ValueError("weights: the pair weights must not all be 0")
        return self


class SmaLinesParams(StrictSpec):
    periods: list[PosInt] | None = None
    line_width: float | None = Field(None, gt=0)


OverlayType = Literal["vp_gold", "spot_trail", "bbo_spread", "bbo_trail", "projection_bands", "ema_lines", "sma_lines"]
OVERLAY_PARAMS: dict[str, type[StrictSpec]] = {
    "vp_gold": NoParams, "spot_trail": NoParams, "bbo_spread": NoParams, "bbo_trail": NoParams,
    "projection_bands": ProjectionBandsParams, "ema_lines": EmaLinesParams, "sma_lines": SmaLinesParams,
}
REQUIRED_WHEN_ENABLED: dict[str, tuple[str, ...]] = {
    "ema_lines": ("periods", "weights", "sma_periods", "signal_tanh_scale"),
}


class OverlaySpec(StrictSpec):
    """A viewer layer; `params` are checked against the type's parameter model."""

    id: Name
    type: OverlayType
    label: str = ""
    enabled: bool = True
    z_order: int = 0
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check(self) -> OverlaySpec:
        model = OVERLAY_PARAMS[self.type]
        try:
            typed = model.model_validate(self.params)
        except ValidationError as exc:
            raise ValueError(f"params.{_first_error(exc, model)}") from None
        if self.enabled:
            for key in REQUIRED_WHEN_ENABLED.get(self.type, ()):
                if getattr(typed, key) is None:
                    raise ValueError(f"params.{key}: required by an enabled {self.type} overlay")
        return self

    def typed_params(self) -> BaseModel:
        return OVERLAY_PARAMS[self.type].model_validate(self.params)


def default_overlays() -> list[OverlaySpec]:
    """SPEC §5.3 default heatmap overlays."""
    return [
        OverlaySpec(id="vp_gold", type="vp_gold", label="Gold features", z_order=0),
        OverlaySpec(id="spot_trail", type="spot_trail", label="Spot", z_order=10),
        OverlaySpec(id="bbo_spread", type="bbo_spread", label="Spread", z_order=15),
        OverlaySpec(id="bbo_trail", type="bbo_trail", label="BBO", z_order=20),
        OverlaySpec(id="projection_bands", type="projection_bands", label="Projection", z_order=30,
                    params={"signal_field": "flow_score", "composite_scale": 8.0}),
    ]


class VisualizationConfig(StrictSpec):
    display_mode: Literal["heatmap", "candle"] = "heatmap"
    cell_shader: CellShaderConfig | None = None
    overlays: list[OverlaySpec] = []

    @model_validator(mode="after")
    def _check(self) -> VisualizationConfig:
        if self.display_mode == "heatmap" and self.cell_shader is None:
            raise ValueError("cell_shader: heatmap display needs a cell_shader")
        if self.display_mode != "heatmap" and self.cell_shader is not None:
            raise ValueError(f"cell_shader: only used by the heatmap display, not {self.display_mode}")
        ids: set[str] = set()
        zs: dict[int, str] = {}
        for i, ov in enumerate(self.overlays):
            if ov.id in ids:
                raise ValueError(f"overlays[{i}].id: duplicate overlay id {ov.id!r}")
            if ov.z_order in zs:
                raise ValueError(f"overlays[{i}].z_order: {ov.z_order} is also the z_order of {zs[ov.z_order]!r}")
            ids.add(ov.id)
            zs[ov.z_order] = ov.id
        return self

    def enabled(self, overlay_type: str) -> bool:
        return any(ov.enabled and ov.type == overlay_type for ov in self.overlays)


def default_visualization() -> VisualizationConfig:
    return VisualizationConfig(display_mode="heatmap", cell_shader=CellShaderConfig(), overlays=default_overlays())


class ServingSpec(_FileSpec):
    """What is served: model, signal with its threshold/cooldown/TP-SL, wire schema and viewer layout."""

    name: Name
    description: str = ""
    display_name: str = Field(min_length=1)
    model_id: ModelId = "vacuum_pressure"
    pipeline: Name
    scoring: ScoringConfig = ScoringConfig()
    signal: SignalSpec | None = None
    threshold: float | None = Field(None, gt=0)
    cooldown_bins: int | None = Field(None, ge=1)
    tp_ticks: int | None = Field(None, ge=1)
    sl_ticks: int | None = Field(None, ge=1)
    projection: ProjectionConfig = ProjectionConfig()
    stream_schema: list[StreamFieldSpec] = Field(min_length=1)
    visualization: VisualizationConfig = Field(default_factory=default_visualization)

    @model_validator(mode="after")
    def _check(self) -> ServingSpec:
        trading = {"threshold": self.threshold, "cooldown_bins": self.cooldown_bins,
                   "tp_ticks": self.tp_ticks, "sl_ticks": self.sl_ticks}
        if self.signal is None:
            for key, value in trading.items():
                if value is not None:
                    raise ValueError(f"{key}: only meaningful with a signal (signal is null)")
        else:
            if self.model_id == "ema_ensemble":
                raise ValueError("signal: the ema_ensemble model has no offline counterpart to evaluate; "
                                 "use signal: null (its signal is drawn by the ema_lines overlay)")
            for key, value in trading.items():
                if value is None:
                    raise ValueError(f"{key}: required with a signal (what is promoted is what was evaluated)")
            if self.signal.name in BOUNDED_SIGNALS and self.threshold > 1:
                raise ValueError(f"threshold: {self.signal.name} is clipped to [-1, 1]; "
                                 f"a threshold of {self.threshold} never fires")
        names = [f.name for f in self.stream_schema]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"stream_schema[{i}].name: duplicate field {name!r}")
        for req in REQUIRED_STREAM_FIELDS:
            if req not in names:
                dtype, role = SILVER_FIELDS[req]
                raise ValueError(f"stream_schema: required field {req}:{dtype}:{role} is missing")
        emitted = MODEL_FIELDS[self.model_id]
        for i, name in enumerate(names):
            if name not in emitted:
                raise ValueError(f"stream_schema[{i}].name: the {self.model_id} producer does not emit {name!r} "
                                 f"(it emits {', '.join(emitted)})")
        streamed = set(names)
        if self.signal is not None:
            missing = [c for c in SIGNAL_SILVER_INPUTS.get(self.signal.name, ()) if c not in streamed]
            if missing:
                raise ValueError(f"stream_schema: signal {self.signal.name} is computed from {', '.join(missing)}, "
                                 "which must be streamed")
        self._check_view(streamed)
        return self

    def _check_view(self, streamed: set[str]) -> None:
        vis = self.visualization
        viewable = set(streamed)
        if vis.enabled("vp_gold"):
            missing = [c for c in VP_GOLD_INPUTS if c not in streamed]
            if missing:
                raise ValueError(f"stream_schema: the enabled vp_gold overlay computes gold from "
                                 f"{', '.join(missing)}, which must be streamed")
            viewable.update(GOLD_VIEW_FIELDS)
        if vis.enabled("ema_lines"):
            viewable.add("ema_signal")
        hint = "a streamed field, a gold field with an enabled vp_gold overlay, or ema_signal with ema_lines"
        if vis.cell_shader is not None:
            if vis.cell_shader.signal_field not in viewable:
                raise ValueError(f"visualization.cell_shader.signal_field: {vis.cell_shader.signal_field!r} is not "
                                 f"available to the viewer ({hint})")
            if vis.cell_shader.depth_field not in streamed:
                raise ValueError(f"visualization.cell_shader.depth_field: {vis.cell_shader.depth_field!r} is "
                                 "not streamed")
        for i, ov in enumerate(vis.overlays):
            if ov.enabled and ov.type == "projection_bands" and ov.params["signal_field"] not in viewable:
                raise ValueError(f"visualization.overlays[{i}].params.signal_field: "
                                 f"{ov.params['signal_field']!r} is not available to the viewer ({hint})")

    def runtime_overrides(self, cell_width_ms: int) -> dict[str, Any]:
        """Serving fields as runtime (InstrumentConfig) fields (SPEC §5.3 `to_runtime_fields`)."""
        out: dict[str, Any] = {"model_id": self.model_id}
        for key, value in self.scoring.model_dump(exclude_none=True).items():
            out[SCORING_RUNTIME[key]] = value
        if self.signal is not None:
            out.update(self.signal.runtime_fields())
        if self.projection.horizons_ms is not None:
            for i, h in enumerate(self.projection.horizons_ms):
                if h % cell_width_ms:
                    raise _FieldError(f"projection.horizons_ms[{i}]", f"{h} ms is not a multiple of the pipeline's "
                                                                      f"cell_width_ms {cell_width_ms}")
            out["projection_horizons_bins"] = [h // cell_width_ms for h in self.projection.horizons_ms]
        return out

    def _runtime_paths(self) -> dict[str, str]:
        paths = {rt: f"scoring.{key}" for key, rt in SCORING_RUNTIME.items()}
        paths.update({f"state_model_{k}": f"signal.params.{k}" for k in DERIVATIVE_PARAMS})
        paths.update({f"state_model_{k}_weight": f"signal.weights.{k}" for k in DERIVATIVE_WEIGHTS})
        paths["projection_horizons_bins"] = "projection.horizons_ms"
        paths["model_id"] = "model_id"
        return paths

    def runtime(self, pipeline: PipelineSpec, instrument: InstrumentConfig | None = None) -> InstrumentConfig:
        """Pipeline runtime + serving fields, re-validated; the `runtime_snapshot` base of a published spec."""
        base = pipeline.runtime(instrument)
        try:
            return _revalidate(base, self.runtime_overrides(base.cell_width_ms), self._runtime_paths(), "signal")
        except _FieldError as err:
            self._raise(err)

    def gold_config(self, pipeline: PipelineSpec, instrument: InstrumentConfig | None = None) -> GoldFeatureConfig:
        return GoldFeatureConfig.from_instrument(self.runtime(pipeline, instrument))

    @property
    def spec_hash(self) -> str:
        """16 hex of sha256 over canonical JSON of the spec (all but `description`)."""
        return _canonical_hash(self.model_dump(mode="json", exclude={"description"}), 16)


# ---- ExperimentSpec --------------------------------------------------------------------------------


class EvalConfig(StrictSpec):
    """TP/SL evaluation (SPEC §6.4, evaluation.EvalParams); None tp/sl/cooldown = the serving spec's value."""

    tp_ticks: PosIntList | None = None
    sl_ticks: PosIntList | None = None
    max_hold_bins: int = Field(1200, ge=1)
    warmup_bins: int = Field(300, ge=0)
    cooldown_bins: PosIntList | None = None
    min_signals: int = Field(5, ge=1)
    entry_mode: Literal["mid", "cross"] = "cross"
    cost_ticks_per_trade: float = Field(0.0, ge=0)
    #: Bins from the signal's bin close to the fill (evaluation.EvalParams.latency_bins).
    latency_bins: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        for key in ("tp_ticks", "sl_ticks", "cooldown_bins"):
            values = getattr(self, key)
            if values is not None:
                try:
                    _unique(values, "value")
                except ValueError as exc:
                    raise ValueError(f"{key}{exc}") from None
        return self


class SearchConfig(StrictSpec):
    """How parameter sets are chosen: every combination (grid), a seeded sample of them (random), or a seeded
    TPE sampler (Optuna) that picks `n_samples` sets one after another from the in-sample results of the fold
    (`search.py`; numeric axes become ranges between their lowest and highest value, others categorical)."""

    method: Literal["grid", "random", "tpe"] = "grid"
    n_samples: int | None = Field(None, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if self.method != "grid" and self.n_samples is None:
            raise ValueError(f"n_samples: required by {self.method} search (the budget of parameter sets)")
        if self.method == "grid" and self.n_samples is not None:
            raise ValueError("n_samples: only used by random and tpe search (grid evaluates every combination)")
        return self


class SweepConfig(StrictSpec):
    """Sweep axes: scoring fields, the serving signal's parameters, thresholds; grid or random search."""

    scoring: dict[str, Axis] = {}
    per_signal: dict[str, dict[str, Axis]] = {}
    thresholds: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=1)
    search: SearchConfig = SearchConfig()

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        for key, values in self.scoring.items():
            if key not in ScoringConfig.model_fields:
                known = ", ".join(ScoringConfig.model_fields)
                raise ValueError(f"scoring.{key}: unknown scoring axis (known: {known})")
            try:
                _unique(values, "value")
            except ValueError as exc:
                raise ValueError(f"scoring.{key}{exc}") from None
        for sig, axes in self.per_signal.items():
            if sig not in KNOWN_SIGNALS:
                raise ValueError(f"per_signal.{sig}: unknown signal {sig!r} (known: {', '.join(KNOWN_SIGNALS)})")
            allowed = SIGNAL_PARAMS[sig]
            if allowed is not None and sig == "derivative":
                allowed = (*allowed, *DERIVATIVE_WEIGHTS)
            elif allowed is None and (params_model := registry_params(sig)) is not None:
                allowed = tuple(params_model.model_fields)
            for key, values in axes.items():
                if allowed is not None and key not in allowed:
                    raise ValueError(f"per_signal.{sig}.{key}: unknown parameter of signal {sig!r} "
                                     f"(allowed: {', '.join(allowed) or 'none'})")
                try:
                    _unique(values, "value")
                except ValueError as exc:
                    raise ValueError(f"per_signal.{sig}.{key}{exc}") from None
        if self.thresholds is not None:
            try:
                _unique(self.thresholds, "threshold")
            except ValueError as exc:
                raise ValueError(f"thresholds{exc}") from None
        return self


class WalkForward(StrictSpec):
    """Rolling day folds: train on `train_days`, test on the next `test_days`, step `step_days`."""

    train_days: int = Field(1, ge=1)
    test_days: int = Field(1, ge=1)
    step_days: int | None = Field(None, ge=1)


class PromotionGate(StrictSpec):
    """Out-of-sample thresholds a run must pass before the promotion sensor may promote it."""

    min_oos_trades: int = Field(ge=1)
    min_hit_rate: float = Field(ge=0, le=1)
    min_profit_factor: float = Field(ge=0)
    max_drawdown_ticks: float = Field(gt=0)


class TrackingConfig(StrictSpec):
    backend: Literal["mlflow", "none"] = "mlflow"
    experiment_name: str = Field(min_length=1)
    run_name_prefix: str | None = None
    tags: dict[str, str] = {}


class ParallelConfig(StrictSpec):
    max_workers: int = Field(3, ge=1)
    timeout_seconds: float = Field(7200, gt=0)


TRADING_AXES: tuple[str, ...] = ("threshold", "cooldown_bins", "tp_ticks", "sl_ticks")


class ExperimentSpec(_FileSpec):
    """A sweep of one serving spec's signal, evaluated walk-forward, with the gate for promotion."""

    name: Name
    description: str = ""
    serving: Name
    eval: EvalConfig = EvalConfig()
    sweep: SweepConfig = SweepConfig()
    walk_forward: WalkForward = WalkForward()
    promotion: PromotionGate
    tracking: TrackingConfig
    parallel: ParallelConfig = ParallelConfig()
    feature_store: FeatureStoreConfig = FeatureStoreConfig()
    automation: bool = True  # Dagster sweeps, evaluates the gate and publishes on its own; false: on request only

    @model_validator(mode="before")
    @classmethod
    def _tracking_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            tracking = data.get("tracking", {})
            if isinstance(tracking, dict) and tracking.get("experiment_name") is None:
                data = {**data, "tracking": {**tracking, "experiment_name": f"qmachina/{data['name']}"}}
        return data

    def axes(self, serving: ServingSpec) -> dict[str, list[Any]]:
        """Every swept key (dotted: `scoring.x`, `signal.params.x`, `signal.weights.x`) with its values."""
        if serving.signal is None:
            raise _FieldError("serving", f"serving spec {serving.name!r} has no signal to evaluate")
        sig = serving.signal.name
        out: dict[str, list[Any]] = {
            "threshold": list(self.sweep.thresholds or [serving.threshold]),
            "cooldown_bins": list(self.eval.cooldown_bins or [serving.cooldown_bins]),
            "tp_ticks": list(self.eval.tp_ticks or [serving.tp_ticks]),
            "sl_ticks": list(self.eval.sl_ticks or [serving.sl_ticks]),
        }
        for key, values in self.sweep.scoring.items():
            out[f"scoring.{key}"] = list(values)
        for name, axes in self.sweep.per_signal.items():
            if name != sig:
                raise _FieldError(f"sweep.per_signal.{name}", f"the experiment evaluates the serving spec's signal "
                                                              f"{sig!r} only (what is promoted is what was evaluated)")
            for key, values in axes.items():
                group = "weights" if sig == "derivative" and key in DERIVATIVE_WEIGHTS else "params"
                out[f"signal.{group}.{key}"] = list(values)
        return out

    def _axis_field(self, key: str, signal: str) -> str:
        """The experiment field a swept key came from (for error messages)."""
        if key == "threshold":
            return "sweep.thresholds"
        if key in TRADING_AXES:
            return f"eval.{key}"
        if key.startswith("scoring."):
            return f"sweep.{key}"
        return f"sweep.per_signal.{signal}.{key.rsplit('.', 1)[1]}"

    def n_combinations(self, serving: ServingSpec) -> int:
        return math.prod(len(v) for v in self.axes(serving).values())

    def n_sets(self, serving: ServingSpec) -> int:
        """Parameter sets evaluated per test day: the grid's size, or the random/TPE budget."""
        search = self.sweep.search
        if search.method == "grid":
            return self.n_combinations(serving)
        assert search.n_samples is not None
        return min(search.n_samples, self.n_combinations(serving)) if search.method == "random" else search.n_samples

    def expand(self, serving: ServingSpec | None = None, *, full_grid: bool = False) -> list[dict[str, Any]]:
        """Parameter sets: grid = cartesian product over sorted keys (last key fastest); random = a seeded
        sample without replacement. Each dict maps swept keys to values plus a stable `param_hash`. A TPE
        search has no fixed list (its sets depend on the results: `search.py`); `full_grid` gives the
        product of the listed values whatever the method."""
        if serving is None:
            cdir = self._path.parent.parent if self._path is not None else None
            serving = load_serving(self.serving, configs_dir=cdir)
        try:
            axes = self.axes(serving)
        except _FieldError as err:
            self._raise(err)
        keys = sorted(axes)
        sizes = [len(axes[k]) for k in keys]
        total = math.prod(sizes)
        if self.sweep.search.method == "tpe" and not full_grid:
            self._raise(_FieldError("sweep.search.method", "a TPE search chooses its sets during the sweep "
                                                            "(search.TpeSampler), not up front"))
        if self.sweep.search.method != "random" or full_grid:
            indices: Any = range(total)
        else:
            rng = random.Random(self.sweep.search.seed)
            indices = sorted(rng.sample(range(total), min(self.sweep.search.n_samples, total)))
        out = []
        for idx in indices:
            values: dict[str, Any] = {}
            for key, size in zip(reversed(keys), reversed(sizes), strict=True):
                idx, r = divmod(idx, size)
                values[key] = axes[key][r]
            values = dict(sorted(values.items()))
            out.append({**values, "param_hash": param_hash(serving.signal.name, values)})
        return out


def param_hash(signal: str, values: dict[str, Any]) -> str:
    """16 hex of sha256 over canonical JSON of the signal name and the parameter values."""
    body = {k: v for k, v in values.items() if k != "param_hash"}
    return _canonical_hash({"signal": signal, "params": body}, 16)


def apply_params(serving: ServingSpec, values: dict[str, Any]) -> ServingSpec:
    """The serving spec with one parameter set applied: the spec a promotion of that set would publish.
    Raises ConfigError (named after the serving file and the swept key) when the result is invalid."""
    data = serving.model_dump(mode="json")
    for key, value in values.items():
        if key == "param_hash":
            continue
        if key in TRADING_AXES:
            data[key] = value
        elif key.startswith("scoring."):
            data["scoring"][key.split(".", 1)[1]] = value
        elif key.startswith(("signal.params.", "signal.weights.")) and data["signal"] is not None:
            _, group, name = key.split(".", 2)
            data["signal"][group][name] = value
        else:
            raise ConfigError(serving._where(), key, "not a sweepable serving field")
    try:
        out = ServingSpec.model_validate(data)
    except ValidationError as exc:
        errs = _pydantic_errors(exc, ServingSpec)
        raise ConfigError(serving._where(), errs[0].field, errs[0].reason) from exc
    out._source = serving._source
    out._path = serving._path
    return out


# ---- loading ---------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {first + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

KIND_DIRS: dict[str, type[_FileSpec]] = {
    "pipelines": PipelineSpec,
    "serving": ServingSpec,
    "experiments": ExperimentSpec,
}
_KIND_WORD = {"pipelines": "pipeline", "serving": "serving", "experiments": "experiment"}


def read_yaml(path: Path, display: str) -> Any:
    """Parsed YAML (duplicate keys refused); syntax errors name the file, line and column."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(display, "", f"cannot read ({exc.strerror or exc})") from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(display, "", f"invalid YAML{where}: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(display, "", f"invalid YAML: {exc}") from exc



class _Loader:
    """Loads specs of one configs tree with their cross-layer checks; caches each file's outcome."""

    def __init__(self, configs_dir: Path, instrument: InstrumentConfig | None = None, use_lock: bool = True):
        self.configs_dir = configs_dir.resolve()
        self._instrument = instrument
        self._use_lock = use_lock
        self._cache: dict[Path, tuple[_FileSpec | None, list[ConfigError]]] = {}

    def instrument(self) -> InstrumentConfig | None:
        if self._instrument is None and self._use_lock:
            self._instrument = locked_instrument()
        return self._instrument

    def display(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.configs_dir.parent))
        except ValueError:
            return str(path)

    def path_for(self, kind: str, name: str) -> Path:
        return self.configs_dir / kind / f"{name}.yaml"

    def load(self, kind: str, path: Path) -> tuple[_FileSpec | None, list[ConfigError]]:
        path = path.resolve()
        if path not in self._cache:
            self._cache[path] = (None, [])  # a reference cycle cannot recurse
            self._cache[path] = self._load(kind, path)
        return self._cache[path]

    def _load(self, kind: str, path: Path) -> tuple[_FileSpec | None, list[ConfigError]]:
        shown = self.display(path)
        model = KIND_DIRS[kind]
        if not path.is_file():
            return None, [ConfigError(shown, "", "file not found")]
        try:
            raw = read_yaml(path, shown)
        except ConfigError as err:
            return None, [err]
        if not isinstance(raw, dict):
            got = "an empty file" if raw is None else type(raw).__name__
            return None, [ConfigError(shown, "", f"expected a mapping of {model.__name__} fields, got {got}")]
        try:
            spec = model.model_validate(raw)
        except ValidationError as exc:
            return None, [ConfigError(shown, e.field, e.reason) for e in _pydantic_errors(exc, model)]
        spec._source = shown
        spec._path = path
        errors: list[ConfigError] = []
        if spec.name != path.stem:
            errors.append(ConfigError(shown, "name", f"{spec.name!r} must equal the file name {path.stem!r}"))
        check = {"pipelines": self._check_pipeline, "serving": self._check_serving,
                 "experiments": self._check_experiment}[kind]
        try:
            check(spec)  # type: ignore[operator]
        except ConfigError as err:
            errors.append(err)
        except _FieldError as err:
            errors.append(ConfigError(shown, err.field, err.reason))
        return (None if errors else spec), errors

    def _ref(self, kind: str, name: str, field: str) -> _FileSpec:
        """A referenced spec of the layer below; a dangling or invalid one fails at `field`."""
        path = self.path_for(kind, name)
        word = _KIND_WORD[kind]
        if not path.is_file():
            raise _FieldError(field, f"dangling reference: no {word} spec {name!r} ({self.display(path)} not found)")
        spec, errors = self.load(kind, path)
        if spec is None:
            first = errors[0] if errors else None
            raise _FieldError(field, f"{word} spec {name!r} is invalid ({first})" if first
                              else f"{word} spec {name!r} is part of a reference cycle")
        return spec

    def _check_pipeline(self, spec: PipelineSpec) -> None:
        if spec.gold_dsl is not None:
            path = self.configs_dir / "gold" / f"{spec.gold_dsl}.yaml"
            if not path.is_file():
                raise _FieldError("gold_dsl", f"dangling reference: {self.display(path)} not found")
        inst = self.instrument()
        if inst is None:
            return
        sym = spec.capture.symbol
        if not inst.symbol_matches_root(sym):
            raise _FieldError("capture.symbol", f"{sym!r} is not an outright contract of the locked root "
                                                f"{inst.symbol_root!r} ({inst.product_type}, {inst.dataset})")
        spec.runtime(inst)

    def _check_serving(self, spec: ServingSpec) -> None:
        pipeline = self._ref("pipelines", spec.pipeline, "pipeline")
        inst = self.instrument()
        if inst is not None:
            spec.runtime(pipeline, inst)  # type: ignore[arg-type]
        self._check_signal_column(spec, pipeline)  # type: ignore[arg-type]

    def _check_signal_column(self, spec: ServingSpec, pipeline: PipelineSpec) -> None:
        """A `gold_column` signal must name a built-in gold column or an output of the pipeline's Gold DSL."""
        if signal_column_problem(spec, None, ()) is None:
            return
        outputs: list[str] = []
        if pipeline.gold_dsl is not None:
            try:
                gold_dsl = importlib.import_module("qmachina_assets.core.gold.dsl")
                dsl_spec = gold_dsl.load_spec(self.configs_dir / "gold" / f"{pipeline.gold_dsl}.yaml")
                outputs = [dsl_spec.nodes[o].name for o in dsl_spec.outputs]
            except Exception as exc:  # a missing/invalid gold file is reported at the pipeline / gold file
                raise _FieldError("signal.params.column", f"cannot be checked: pipeline {pipeline.name!r}'s Gold "
                                                          f"DSL {pipeline.gold_dsl!r} does not load ({exc})") from exc
        problem = signal_column_problem(spec, pipeline.gold_dsl, outputs)
        if problem is not None:
            raise _FieldError("signal.params.column", problem)

    def _check_experiment(self, spec: ExperimentSpec) -> None:
        serving: ServingSpec = self._ref("serving", spec.serving, "serving")  # type: ignore[assignment]
        pipeline: PipelineSpec = self._ref("pipelines", serving.pipeline, "serving")  # type: ignore[assignment]
        _check_experiment_chain(spec, serving, pipeline, self.instrument())


def _check_experiment_chain(spec: ExperimentSpec, serving: ServingSpec, pipeline: PipelineSpec,
                            inst: InstrumentConfig | None) -> None:
    """Cross-layer checks of an experiment against its serving spec and pipeline (raises _FieldError)."""
    axes = spec.axes(serving)
    wf = spec.walk_forward
    need = wf.train_days + wf.test_days
    if len(pipeline.days) < need:
        raise _FieldError("walk_forward", f"one fold needs train_days + test_days = {need} days; pipeline "
                                          f"{pipeline.name!r} captures {len(pipeline.days)}")
    sig = serving.signal.name  # type: ignore[union-attr]
    if sig in BOUNDED_SIGNALS:
        for i, thr in enumerate(axes["threshold"]):
            if thr > 1:
                raise _FieldError(f"sweep.thresholds[{i}]", f"{sig} is clipped to [-1, 1]; {thr} never fires")

    def check(values: dict[str, Any], field: str) -> None:
        try:
            candidate = apply_params(serving, values)
            if inst is not None:
                candidate.runtime(pipeline, inst)
        except ConfigError as err:
            raise _FieldError(field, f"gives an invalid serving spec ({err.field}: {err.reason})") from err

    for key, values in axes.items():
        for i, value in enumerate(values):
            check({key: value}, f"{spec._axis_field(key, sig)}[{i}]")
    if spec.n_combinations(serving) <= MAX_CHECKED_COMBINATIONS:
        for combo in spec.expand(serving, full_grid=True):
            values = {k: v for k, v in combo.items() if k != "param_hash"}
            check(values, f"sweep (combination {json.dumps(values, sort_keys=True)})")


def validate_experiment(spec: ExperimentSpec, serving: ServingSpec, pipeline: PipelineSpec,
                        instrument: InstrumentConfig | None = None) -> None:
    """The checks `load_experiment` runs on a file, for a spec built in code (a suggested follow-up sweep, an
    AutoML template's experiment): ConfigError naming the experiment, the field and the reason."""
    if spec.serving != serving.name or serving.pipeline != pipeline.name:
        raise ConfigError(f"experiment {spec.name!r}", "serving", f"names {spec.serving!r}, not the given "
                                                                  f"serving spec {serving.name!r} on {pipeline.name!r}")
    try:
        _check_experiment_chain(spec, serving, pipeline, instrument if instrument is not None else locked_instrument())
    except _FieldError as err:
        raise ConfigError(f"experiment {spec.name!r}", err.field, err.reason) from err


def _resolve(kind: str, name_or_path: str | os.PathLike[str], configs_dir: Path | None) -> tuple[Path, Path]:
    """(configs dir, file) for a spec name or a path to its YAML file."""
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or "/" in text or text.endswith((".yaml", ".yml")):
        path = Path(text).resolve()
        if configs_dir is None:
            configs_dir = path.parent.parent if path.parent.name == kind else configs_root()
        return Path(configs_dir), path
    base = Path(configs_dir) if configs_dir is not None else configs_root()
    return base, base / kind / f"{text}.yaml"


def _load_one(kind: str, name_or_path: str | os.PathLike[str], configs_dir: Path | None,
              instrument: InstrumentConfig | None) -> tuple[_FileSpec, _Loader]:
    base, path = _resolve(kind, name_or_path, configs_dir)
    loader = _Loader(base, instrument)
    spec, errors = loader.load(kind, path)
    if spec is None:
        first = errors[0]
        raise ConfigError(first.file, first.field, first.reason, errors)
    return spec, loader


def load_pipeline(name_or_path: str | os.PathLike[str], *, configs_dir: Path | None = None,
                  instrument: InstrumentConfig | None = None) -> PipelineSpec:
    """A validated PipelineSpec (`configs/pipelines/{name}.yaml` or a path); ConfigError names file and field."""
    return _load_one("pipelines", name_or_path, configs_dir, instrument)[0]  # type: ignore[return-value]


def load_serving(name_or_path: str | os.PathLike[str], *, configs_dir: Path | None = None,
                 instrument: InstrumentConfig | None = None) -> ServingSpec:
    """A validated ServingSpec, its pipeline reference resolved and checked."""
    return _load_one("serving", name_or_path, configs_dir, instrument)[0]  # type: ignore[return-value]


def load_experiment(name_or_path: str | os.PathLike[str], *, configs_dir: Path | None = None,
                    instrument: InstrumentConfig | None = None) -> ExperimentSpec:
    """A validated ExperimentSpec, its serving and pipeline references resolved and checked."""
    return _load_one("experiments", name_or_path, configs_dir, instrument)[0]  # type: ignore[return-value]


def resolve_serving(name_or_path: str | os.PathLike[str], *, configs_dir: Path | None = None,
                    instrument: InstrumentConfig | None = None) -> tuple[ServingSpec, PipelineSpec]:
    spec, loader = _load_one("serving", name_or_path, configs_dir, instrument)
    pipeline = loader._ref("pipelines", spec.pipeline, "pipeline")  # type: ignore[attr-defined]
    return spec, pipeline  # type: ignore[return-value]


def resolve_experiment(name_or_path: str | os.PathLike[str], *, configs_dir: Path | None = None,
                       instrument: InstrumentConfig | None = None,
                       ) -> tuple[ExperimentSpec, ServingSpec, PipelineSpec]:
    """The experiment and the chain below it: (ExperimentSpec, ServingSpec, PipelineSpec)."""
    spec, loader = _load_one("experiments", name_or_path, configs_dir, instrument)
    serving = loader._ref("serving", spec.serving, "serving")  # type: ignore[attr-defined]
    pipeline = loader._ref("pipelines", serving.pipeline, "pipeline")  # type: ignore[attr-defined]
    return spec, serving, pipeline  # type: ignore[return-value]


# ---- validate-configs ------------------------------------------------------------------------------


def _instrument_issue(err: InstrumentConfigError, shown: str) -> ConfigIssue:
    text = str(err).split(": ", 1)[1] if ": " in str(err) else str(err)
    m = re.match(r"field '([^']*)': (.*)", text, re.S)
    return ConfigIssue(shown, m.group(1), m.group(2)) if m else ConfigIssue(shown, "", text)


def _gold_issues(files: list[Path], loader: _Loader) -> list[ConfigIssue]:
    if not files:
        return []
    try:
        gold_dsl = importlib.import_module("qmachina_assets.core.gold.dsl")
    except Exception as exc:  # another module; its absence must not hide the other configs' results
        return [ConfigIssue(loader.display(p), "", f"not checked: qmachina_assets.core.gold.dsl is not importable "
                                                   f"({type(exc).__name__}: {exc})", "note") for p in files]
    out = []
    for p in files:
        shown = loader.display(p)
        try:
            spec = gold_dsl.load_spec(p)
            errors = gold_dsl.validate(spec)
        except gold_dsl.DslValidationError as exc:
            errors = exc.errors
        except Exception as exc:
            out.append(ConfigIssue(shown, "", f"{type(exc).__name__}: {exc}"))
            continue
        out += [ConfigIssue(shown, f"nodes.{e.node}" if e.node else "", e.message) for e in errors]
        if not errors and spec.name != p.stem:  # pipelines reference gold specs by file name
            out.append(ConfigIssue(shown, "name", f"{spec.name!r} must equal the file name {p.stem!r}"))
    return out


def validate_configs(root: Path) -> list[ConfigIssue]:
    """Every YAML under `root/configs`, with cross-layer references; [] when all is valid.

    The tree's own `configs/instrument.yaml` is the lock its pipelines are checked against. Issues with
    severity "note" (gold files when the gold DSL module is unavailable) do not fail validation."""
    cdir = Path(root) / "configs"
    if not cdir.is_dir():
        return [ConfigIssue(str(cdir), "", "no configs directory")]
    files = sorted(p for p in cdir.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))
    issues: list[ConfigIssue] = []
    inst_path = cdir / "instrument.yaml"
    inst: InstrumentConfig | None = None
    if inst_path.is_file():
        try:
            inst = load_instrument(inst_path)
        except InstrumentConfigError as err:
            issues.append(_instrument_issue(err, "configs/instrument.yaml"))
    else:
        issues.append(ConfigIssue("configs/instrument.yaml", "", "missing: the instrument lock is required"))
    loader = _Loader(cdir, inst, use_lock=False)  # without a valid lock, lock-dependent checks are skipped
    if not files:
        return [*issues, ConfigIssue("configs", "", "no YAML config files found")]
    gold_files = []
    for p in files:
        parts = p.relative_to(cdir).parts
        shown = loader.display(p)
        if parts == ("instrument.yaml",):
            continue
        if parts == ("silver.yaml",):  # silver_grid's window policy (core/engine/silver_window.py)
            from qmachina_assets.core.engine.silver_window import load_window_policy

            try:
                load_window_policy(p)
            except ValueError as exc:
                issues.append(ConfigIssue(shown, "", str(exc)))
            continue
        if len(parts) == 2 and parts[0] == "gold" and p.suffix == ".yaml":
            gold_files.append(p)
        elif len(parts) == 2 and parts[0] in KIND_DIRS:
            if p.suffix != ".yaml":
                issues.append(ConfigIssue(shown, "", "use the .yaml extension (references resolve {name}.yaml)"))
                continue
            issues += [e.issue() for e in loader.load(parts[0], p)[1]]
        else:
            issues.append(ConfigIssue(shown, "", "unknown config location (expected configs/instrument.yaml, "
                                                 "configs/silver.yaml or "
                                                 "configs/{pipelines,serving,experiments,gold}/<name>.yaml)"))
    issues += _gold_issues(gold_files, loader)
    return issues


__all__ = [
    "KNOWN_SIGNALS", "ConfigError", "ConfigIssue", "ExperimentSpec", "PipelineSpec", "ServingSpec",
    "apply_params", "load_experiment", "load_pipeline", "load_serving", "param_hash", "read_yaml",
    "resolve_experiment", "resolve_serving", "validate_configs", "validate_experiment",
]
