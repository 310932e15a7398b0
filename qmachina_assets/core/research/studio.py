"""Model Studio's specs: the guided steps' choices become a serving spec and an experiment spec, written as new
versioned files of the configs tree (`serving/studio_<sid>_v<n>.yaml`, `experiments/studio_<sid>_v<n>.yaml`),
validated by the same loaders as hand-written ones (`specs.resolve_experiment`). A file is never rewritten:
each commit of the evaluation step (or of a manual YAML edit) is a new version, so a sweep's results always
name the spec they ran. Dagster's `experiment_job` reads the experiment at run time, so nothing restarts.
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from qmachina_assets.core.ingest.tempfiles import atomic_path
from qmachina_assets.core.research.specs import ConfigError, resolve_experiment

DEFAULT_BASE = "demo_flow_score"  # the serving spec whose wire schema and layout a studio model starts from


class DataChoice(BaseModel):
    """A pipeline, optionally restricted to some of its capture dates (then the studio writes its own pipeline)."""

    model_config = ConfigDict(extra="forbid")
    pipeline: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$", max_length=64)
    dates: list[str] | None = Field(None, max_length=400)


class GoldChoice(BaseModel):
    """The built-in gold set (its scoring values), optionally plus a Gold DSL spec of `configs/gold/`."""

    model_config = ConfigDict(extra="forbid")
    mode: str = Field("builtin", pattern=r"^(builtin|dsl)$")
    gold_dsl: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_]*$", max_length=64)
    scoring: dict[str, Any] = {}  # specs.ScoringConfig keys
    # a spec typed in the studio's editor: the API writes it as `configs/gold/studio_<sid>_g<n>.yaml`
    # (`studio_gold.write_gold_spec`) and commits its name as `gold_dsl` (the text itself is not kept here)
    dsl_yaml: str | None = Field(None, max_length=100_000)
    spec_hash: str | None = Field(None, pattern=r"^[0-9a-f]{16}$")


class SignalChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64)
    params: dict[str, Any] = {}
    base_serving: str = Field(DEFAULT_BASE, pattern=r"^[a-z0-9][a-z0-9_]*$", max_length=64)


class EvalChoice(BaseModel):
    """The evaluation and the parameter space: every list is a swept axis."""

    model_config = ConfigDict(extra="forbid")
    thresholds: list[float] = Field(min_length=1, max_length=50)
    tp_ticks: list[int] = Field(min_length=1, max_length=50)
    sl_ticks: list[int] = Field(min_length=1, max_length=50)
    cooldown_bins: list[int] = Field(min_length=1, max_length=50)
    scoring: dict[str, list[Any]] = {}  # swept gold scoring values
    max_hold_bins: int = Field(1200, ge=1)
    warmup_bins: int = Field(300, ge=0)
    min_signals: int = Field(3, ge=1)
    cost_ticks_per_trade: float = Field(0.0, ge=0)
    train_days: int = Field(1, ge=1)
    promotion: dict[str, float] = {"min_oos_trades": 5, "min_hit_rate": 0.3, "min_profit_factor": 0.5,
                                   "max_drawdown_ticks": 400}


def spec_name(session_id: str, version: int) -> str:
    return f"studio_{re.sub(r'[^a-z0-9]', '', session_id.lower())[:12]}_v{version}"


def build_pipeline(name: str, data: DataChoice, gold: GoldChoice, configs: Path) -> dict[str, Any] | None:
    """The studio's own pipeline when the choices differ from the picked one (some dates, a Gold DSL), else None."""
    if not data.dates and not (gold.mode == "dsl" and gold.gold_dsl):
        return None
    base = yaml.safe_load((configs / "pipelines" / f"{data.pipeline}.yaml").read_text())
    base["name"] = name
    base["description"] = f"Model Studio pipeline {name} (from {data.pipeline})"
    if data.dates:
        base["capture"] = {**base["capture"], "dates": list(data.dates)}
    if gold.mode == "dsl" and gold.gold_dsl:
        base["gold_dsl"] = gold.gold_dsl
    return base


def build_specs(name: str, data: DataChoice, gold: GoldChoice, signal: SignalChoice, ev: EvalChoice,
                configs: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(serving dict, experiment dict) of the choices; the serving spec starts from `signal.base_serving`. When
    `build_pipeline` gives a pipeline, the serving spec names it (`name`): write it with `write_specs`."""
    base_path = configs / "serving" / f"{signal.base_serving}.yaml"
    if not base_path.is_file():
        raise ConfigError(f"{base_path}: no base serving spec {signal.base_serving!r}")
    serving = copy.deepcopy(yaml.safe_load(base_path.read_text()))
    serving.update({
        "name": name, "description": f"Model Studio model {name} ({signal.name} on {data.pipeline})",
        "display_name": f"{name} (studio)",
        "pipeline": name if build_pipeline(name, data, gold, configs) is not None else data.pipeline,
        "scoring": {**(serving.get("scoring") or {}), **gold.scoring},
        "signal": {"name": signal.name, **({"params": signal.params} if signal.params else {})},
        "threshold": ev.thresholds[0], "cooldown_bins": ev.cooldown_bins[0], "tp_ticks": ev.tp_ticks[0],
        "sl_ticks": ev.sl_ticks[0],
    })
    experiment = {
        "name": name, "description": f"Model Studio sweep of {name}", "serving": name,
        "eval": {"tp_ticks": ev.tp_ticks, "sl_ticks": ev.sl_ticks, "cooldown_bins": ev.cooldown_bins,
                 "max_hold_bins": ev.max_hold_bins, "warmup_bins": ev.warmup_bins, "min_signals": ev.min_signals,
                 "cost_ticks_per_trade": ev.cost_ticks_per_trade},
        "sweep": {"thresholds": ev.thresholds, **({"scoring": ev.scoring} if ev.scoring else {}),
                  "search": {"method": "grid"}},
        "walk_forward": {"train_days": ev.train_days, "test_days": 1},
        "promotion": ev.promotion,
        "tracking": {"backend": "none"},
    }
    return serving, experiment


def validate_texts(serving_yaml: str, experiment_yaml: str, configs: Path,
                   pipeline_yaml: str | None = None) -> tuple[Any, Any, Any]:
    """Validate a serving + experiment pair (YAML texts) against the configs tree's pipelines and instrument,
    without writing into it: (ExperimentSpec, ServingSpec, PipelineSpec); ConfigError names file and field."""
    try:
        s, e = yaml.safe_load(serving_yaml), yaml.safe_load(experiment_yaml)
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {err}") from err
    if not isinstance(s, dict) or not isinstance(e, dict):
        raise ConfigError("each layer must be a YAML mapping")
    if e.get("serving") != s.get("name"):
        raise ConfigError(f"experiment.serving: must name the serving spec {s.get('name')!r}")
    with tempfile.TemporaryDirectory(prefix="qm-studio-") as tmp:
        root = Path(tmp)
        (root / "serving").mkdir()
        (root / "experiments").mkdir()
        (root / "pipelines").mkdir()
        for f in (configs / "pipelines").glob("*.yaml"):
            (root / "pipelines" / f.name).symlink_to(f)
        if pipeline_yaml is not None:
            p = yaml.safe_load(pipeline_yaml)
            if not isinstance(p, dict):
                raise ConfigError("the pipeline layer must be a YAML mapping")
            target = root / "pipelines" / f"{p.get('name')}.yaml"
            target.unlink(missing_ok=True)
            target.write_text(pipeline_yaml)
        for extra in ("gold", "instrument.yaml"):
            if (configs / extra).exists():
                (root / extra).symlink_to(configs / extra)
        (root / "serving" / f"{s.get('name')}.yaml").write_text(serving_yaml)
        path = root / "experiments" / f"{e.get('name')}.yaml"
        path.write_text(experiment_yaml)
        return resolve_experiment(path, configs_dir=root)


def write_specs(serving_yaml: str, experiment_yaml: str, configs: Path,
                pipeline_yaml: str | None = None) -> list[Path]:
    """Validate, then write the files (never over an existing one: a new name is a new version)."""
    exp, serving, pipeline = validate_texts(serving_yaml, experiment_yaml, configs, pipeline_yaml)
    out = [configs / "serving" / f"{serving.name}.yaml", configs / "experiments" / f"{exp.name}.yaml"]
    texts = [serving_yaml, experiment_yaml]
    if pipeline_yaml is not None:
        out.insert(0, configs / "pipelines" / f"{pipeline.name}.yaml")
        texts.insert(0, pipeline_yaml)
    for p in out:
        if p.exists():
            raise ConfigError(f"{p}: already exists (studio specs are versioned, never rewritten)")
    for p, text in zip(out, texts, strict=True):
        with atomic_path(p) as tmp:
            Path(tmp).write_text(text)
    return out


def dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False, default_flow_style=None, width=110)
