"""Search beyond grids: a seeded TPE sampler of parameter sets, and named AutoML templates.

**Sampler.** An experiment with `sweep.search: {method: tpe, n_samples: N, seed: S}` evaluates N parameter
sets per walk-forward fold, chosen one batch after another by Optuna's TPE from the in-sample results of that
fold's earlier sets (the objective is the sweep's own selection metric, in-sample total pnl among sets with at
least `eval.min_signals` trades; out-of-sample figures are never told to it, so the walk-forward stays honest).
The space comes from the experiment's axes: a numeric axis with several values becomes the range between its
lowest and highest value (integers stay integers; a range spanning a factor of 10 or more of positive values
is searched on a log scale; floats are drawn to 4 significant digits), any other axis is categorical, an axis
with one value is fixed. `sweeps.run_fold` evaluates each batch exactly as a grid (same costs, same
evaluation, the same results store and MLflow runs). Same seed and same results: the same sets.

**Templates.** `TEMPLATES` name a family of signals and a parameter regime; `expand_template` turns one into
ordinary (ServingSpec, ExperimentSpec) pairs on a base serving spec, each checked like a YAML file would be.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field

from qmachina_assets.core.research.signals.catalog import REGISTRY, make_signal
from qmachina_assets.core.research.specs import (
    ConfigError,
    ExperimentSpec,
    PipelineSpec,
    ServingSpec,
    apply_params,
    param_hash,
    validate_experiment,
)

SELECTION_METRIC = "is_total_pnl_ticks"
BATCH = 8  # sets asked per batch (TPE's constant liar keeps a batch spread out); sets sharing a signal config
# within a batch share one fit, as in a grid
FAILED_VALUE = -1e18  # the objective of a set with too few in-sample trades (TPE ranks; the size is irrelevant)
MAX_REPEATS = 50  # asks per budgeted set before a small discrete space counts as exhausted
LOG_SPAN = 10.0


class Sampler(Protocol):
    """What `sweeps.run_fold` needs: the budget, batches of sets (with `param_hash`) and their rows back."""

    budget: int

    def ask(self) -> list[dict[str, Any]]: ...

    def tell(self, rows: list[dict[str, Any]]) -> None: ...


@dataclass(frozen=True)
class Dimension:
    """One searched axis: an int or float range, or categorical choices (canonical JSON)."""

    key: str
    kind: Literal["int", "float", "categorical"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[str, ...] = ()

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log)
        return CategoricalDistribution(list(self.choices))

    def value(self, raw: Any) -> Any:
        if self.kind == "int":
            return int(raw)
        if self.kind == "float":
            return float(f"{float(raw):.4g}")
        return json.loads(raw)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def search_space(exp: ExperimentSpec, serving: ServingSpec) -> tuple[dict[str, Any], list[Dimension]]:
    """(fixed axis values, searched dimensions) of an experiment (see the module doc)."""
    fixed: dict[str, Any] = {}
    dims: list[Dimension] = []
    for key, values in sorted(exp.axes(serving).items()):
        if len(values) == 1:
            fixed[key] = values[0]
        elif all(_number(v) for v in values):
            lo, hi = min(values), max(values)
            kind: Literal["int", "float"] = "int" if all(isinstance(v, int) for v in values) else "float"
            dims.append(Dimension(key, kind, float(lo), float(hi), log=lo > 0 and hi / lo >= LOG_SPAN))
        else:
            dims.append(Dimension(key, "categorical", choices=tuple(json.dumps(v, sort_keys=True) for v in values)))
    return fixed, dims


class TpeSampler:
    """Seeded Optuna TPE over one fold (see the module doc); `budget` distinct sets at most."""

    def __init__(self, exp: ExperimentSpec, serving: ServingSpec, pipeline: PipelineSpec | None = None,
                 batch: int = BATCH):
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        search = exp.sweep.search
        assert search.n_samples is not None
        self.signal = serving.signal.name if serving.signal is not None else ""
        self.fixed, self.dims = search_space(exp, serving)
        self.budget = search.n_samples
        self.batch = batch
        self.min_signals = exp.eval.min_signals
        sampler = optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=min(10, self.budget),
                                             multivariate=True)
        self.study = optuna.create_study(direction="maximize", sampler=sampler)
        self.distributions = {d.key: d.distribution() for d in self.dims}
        self.values: dict[str, float] = {}  # param_hash -> objective, of every set told
        self.pending: dict[str, list[Any]] = {}  # param_hash -> trials waiting for that set's row
        self.asked = 0
        self.invalid = 0  # sets refused by the specs' checks (told as failures, not evaluated, not budgeted)
        self.exhausted = False
        self.serving = serving
        self.pipeline = pipeline

    def _valid(self, values: dict[str, Any]) -> bool:
        """The set gives a serving spec the sweep can run: valid, valid on its pipeline's runtime, and a signal
        its implementation accepts (e.g. no z-score window below its min_periods)."""
        try:
            applied = apply_params(self.serving, {k: v for k, v in values.items() if k != "param_hash"})
            if self.pipeline is not None:
                applied.runtime(self.pipeline)
            if applied.signal is not None:
                make_signal(applied.signal.name, applied.signal.kwargs())
        except (ConfigError, ValueError):  # ValueError: pydantic's, the instrument's, the signal's
            return False
        return True

    def _set(self, trial: Any) -> dict[str, Any]:
        values = {**self.fixed, **{d.key: d.value(trial.params[d.key]) for d in self.dims}}
        values = dict(sorted(values.items()))
        return {**values, "param_hash": param_hash(self.signal, values)}

    def ask(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        room = min(self.batch, self.budget - (len(self.values) - self.invalid) - len(self.pending))
        while len(out) < room and not self.exhausted:
            if not self.dims:  # nothing to search: the one fixed set
                self.exhausted = True
                if not self.values:
                    vals = dict(sorted(self.fixed.items()))
                    out.append({**vals, "param_hash": param_hash(self.signal, vals)})
                    self.pending[out[-1]["param_hash"]] = []
                break
            trial = self.study.ask(self.distributions)
            self.asked += 1
            s = self._set(trial)
            h = s["param_hash"]
            if h not in self.values and h not in self.pending and not self._valid(s):
                self.values[h] = FAILED_VALUE  # e.g. a z-score window below its min_periods: never evaluated
                self.invalid += 1
            if h in self.values:  # drawn before (or invalid): its result is known, no evaluation
                self.study.tell(trial, self.values[h])
            elif h in self.pending:
                self.pending[h].append(trial)
            else:
                self.pending[h] = [trial]
                out.append(s)
            if self.asked >= MAX_REPEATS * self.budget:
                self.exhausted = True
        return out

    def tell(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            h = r["param_hash"]
            x = r.get(SELECTION_METRIC)
            ok = r.get("is_n_trades", 0) >= self.min_signals and x is not None and math.isfinite(float(x))
            self.values[h] = float(x) if ok else FAILED_VALUE
            for trial in self.pending.pop(h, []):
                self.study.tell(trial, self.values[h])


def sampler_for(exp: ExperimentSpec, serving: ServingSpec, pipeline: PipelineSpec | None = None) -> Sampler | None:
    """The experiment's sampler, or None when its sets are a fixed list (grid, random: `expand`)."""
    return TpeSampler(exp, serving, pipeline) if exp.sweep.search.method == "tpe" else None


# ---- AutoML templates --------------------------------------------------------------------------------


#: The parameters a template searches per signal (the ones that shape the score; windows, scales, model
#: capacity), each over [default / span, default x span] clipped to the parameter's own bounds.
TUNABLE: dict[str, tuple[str, ...]] = {
    "ads": ("zscore_window", "tanh_scale"),
    "ads_pfp_svac": ("ads_blend_scale", "pfp_ema_alpha"),
    "derivative": ("zscore_window_bins", "tanh_scale"),
    "erd": ("zscore_window", "spike_floor"),
    "flow_score": (),
    "iirc": ("fast_window", "slow_window"),
    "jad": ("zscore_window", "tanh_scale"),
    "msd": (),
    "pfp": ("lag_bins", "ema_alpha"),
    "spg": ("fast_span", "slow_span"),
    "gbm_mf": ("num_leaves", "learning_rate"),
    "xgb_snap": ("max_depth", "learning_rate"),
    "knn_cl": ("n_neighbors",),
    "lsvm_der": ("alpha",),
    "svm_sp": ("C",),
    "pca_ad": ("n_components",),
}


class AutoMLTemplate(BaseModel):
    """A family of signals and a parameter regime; expands to one ordinary experiment per signal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$")
    description: str
    family: Literal["statistical", "ml", "all"]
    span: float | None = Field(description="parameter ranges: default / span .. default x span; None: defaults")
    method: Literal["grid", "tpe"]
    n_samples: int | None = Field(None, ge=1, description="TPE budget of sets per signal and fold")
    seed: int = 0


TEMPLATES: dict[str, AutoMLTemplate] = {t.name: t for t in (
    AutoMLTemplate(name="statistical_default", family="statistical", span=2.0, method="tpe", n_samples=200,
                   description="every statistical signal, its tunable parameters from half to twice their "
                               "default and its default threshold range, 200 TPE sets each"),
    AutoMLTemplate(name="statistical_wide", family="statistical", span=4.0, method="tpe", n_samples=400,
                   description="every statistical signal, tunable parameters from a quarter to four times their "
                               "default, 400 TPE sets each"),
    AutoMLTemplate(name="ml_default", family="ml", span=2.0, method="tpe", n_samples=40,
                   description="every ML signal, model capacity and learning rate (or its one key parameter) from half "
                               "to twice their default, 40 TPE sets each (each set is a fit)"),
    AutoMLTemplate(name="thresholds_grid", family="all", span=None, method="grid",
                   description="every signal at its default parameters over its own default thresholds: a grid"),
)}


def _signals(family: str) -> list[str]:
    return [n for n, cls in sorted(REGISTRY.items()) if n in TUNABLE and (family == "all" or cls.kind == family)]


def param_range(signal: str, param: str, span: float) -> list[Any] | None:
    """[low, high] around the parameter's default (ints stay ints), inside its pydantic bounds; None when the
    default is not a positive number or the range collapses."""
    from annotated_types import Ge, Gt, Le, Lt

    info = REGISTRY[signal].Params.model_fields[param]
    d = info.default
    if not _number(d) or d <= 0:
        return None
    lo, hi = d / span, d * span
    for m in info.metadata:
        if isinstance(m, Ge | Gt):
            lo = max(lo, float(m.ge if isinstance(m, Ge) else m.gt))
        if isinstance(m, Le | Lt):
            hi = min(hi, float(m.le if isinstance(m, Le) else m.lt))
    if isinstance(d, int):
        lo, hi = math.ceil(lo), math.floor(hi)
        if any(isinstance(m, Gt) for m in info.metadata) and lo <= 0:
            lo = 1
    else:
        lo, hi = float(f"{lo:.4g}"), float(f"{hi:.4g}")
    return [lo, hi] if lo < hi else None


def _admissible(serving: ServingSpec, signal: str, param: str, rng: list[Any] | None) -> list[Any] | None:
    """The range with each end moved halfway to the default until the signal accepts it (another parameter's
    default may bound it: a z-score window cannot fall below its min_periods); None if it collapses."""
    if rng is None:
        return None
    default = REGISTRY[signal].Params.model_fields[param].default
    ends = []
    for end in rng:
        for _ in range(12):
            try:
                apply_params(serving, {f"signal.params.{param}": end})
                break
            except ConfigError:
                end = (end + default) / 2
                end = round(end) if isinstance(default, int) else float(f"{end:.4g}")
        else:
            end = default
        ends.append(end)
    return ends if ends[0] < ends[1] else None


class Expanded(BaseModel):
    """One experiment of a template, with the serving spec it evaluates (both validated)."""

    signal: str
    serving: dict[str, Any]
    experiment: dict[str, Any]
    serving_yaml: str
    experiment_yaml: str
    n_sets: int = Field(description="parameter sets per test day")


def expand_template(template: AutoMLTemplate, like: ExperimentSpec, base: ServingSpec,
                    pipeline: PipelineSpec) -> list[Expanded]:
    """One (serving, experiment) pair per signal of the family on `base`'s pipeline and view, evaluated like
    `like` (its eval settings, walk-forward, promotion gate). Each pair passes the checks a YAML file would."""
    out = []
    for sig in _signals(template.family):
        cls = REGISTRY[sig]
        name = f"{template.name}_{sig}"
        thresholds = sorted(cls.default_thresholds)
        sdata = base.model_dump(mode="json")
        sdata.update(name=name, description=f"{sig} from AutoML template {template.name} on {base.name}",
                     signal={"name": sig, "params": {}, "weights": {}},
                     threshold=thresholds[len(thresholds) // 2])
        serving = ServingSpec.model_validate(sdata)
        serving.runtime(pipeline)
        ranges = {p: r for p in TUNABLE[sig]
                  if template.span and (r := _admissible(serving, sig, p, param_range(sig, p, template.span)))}
        search: dict[str, Any] = {"method": template.method, "seed": template.seed}
        if template.method == "tpe":
            search["n_samples"] = template.n_samples
        edata = like.model_dump(mode="json")
        edata.update(name=name, serving=name, description=f"AutoML template {template.name}: {template.description}",
                     sweep={"thresholds": [thresholds[0], thresholds[-1]] if template.method == "tpe" else thresholds,
                            "per_signal": {sig: ranges} if ranges else {}, "search": search})
        edata["tracking"] = {**edata["tracking"], "experiment_name": f"qmachina/{name}"}
        exp = ExperimentSpec.model_validate(edata)
        validate_experiment(exp, serving, pipeline)
        sbody = serving.model_dump(mode="json", exclude_none=True)
        ebody = exp.model_dump(mode="json", exclude_none=True)
        out.append(Expanded(signal=sig, serving=sbody, experiment=ebody, n_sets=exp.n_sets(serving),
                            serving_yaml=yaml.safe_dump(sbody, sort_keys=False),
                            experiment_yaml=yaml.safe_dump(ebody, sort_keys=False)))
    return out


def write_specs(configs_dir: Path, files: list[tuple[str, str, str]]) -> list[Path]:
    """Write (kind, name, YAML text) as configs/<kind>/<name>.yaml (temp then rename). A file that exists with
    other content is refused before anything is written; one with the same content is left as it is."""
    plan = []
    for kind, name, text in files:
        path = configs_dir / kind / f"{name}.yaml"
        if path.exists() and path.read_text() != text:
            raise FileExistsError(f"{path}: exists with other content (remove it or choose another name)")
        plan.append((path, text))
    for path, text in plan:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.rename(path)
    return [p for p, _ in plan]
