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
from typing import Any, Literal, Protocol

from qmachina_assets.core.research.specs import ExperimentSpec, ServingSpec, param_hash

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

    def __init__(self, exp: ExperimentSpec, serving: ServingSpec, batch: int = BATCH):
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
        self.exhausted = False

    def _set(self, trial: Any) -> dict[str, Any]:
        values = {**self.fixed, **{d.key: d.value(trial.params[d.key]) for d in self.dims}}
        values = dict(sorted(values.items()))
        return {**values, "param_hash": param_hash(self.signal, values)}

    def ask(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        room = min(self.batch, self.budget - len(self.values) - len(self.pending))
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
            if h in self.values:  # drawn before: its result is known, no evaluation
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


def sampler_for(exp: ExperimentSpec, serving: ServingSpec) -> Sampler | None:
    """The experiment's sampler, or None when its sets are a fixed list (grid, random: `expand`)."""
    return TpeSampler(exp, serving) if exp.sweep.search.method == "tpe" else None
