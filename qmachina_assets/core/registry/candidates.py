"""Promotion candidates: which parameter set of an experiment would be promoted, and does it pass the gate.

The candidate is the parameter set the walk-forward selected (best in-sample) on the latest test day; its
evidence is its out-of-sample row on every test day (the latest sweep of each day). The gate is the
ExperimentSpec's `promotion` block, checked per fold by the registry's own `gate_problems` (the registry
checks it again inside `promote_run`: this module only decides whether to ask).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from qmachina_assets.core.registry.lineage import RunLineage
from qmachina_assets.core.registry.preflight import gate_problems
from qmachina_assets.core.research.specs import ExperimentSpec
from qmachina_assets.core.research.sweeps import read_results


class Candidate(BaseModel):
    experiment: str
    param_hash: str
    params: dict
    run_ids: list[str]  # one per test day, oldest first
    test_dates: list[str]
    oos: list[dict[str, float | None]]  # per fold: n_trades, hit_rate, total_pnl_ticks, profit_factor, drawdown
    problems: list[str]  # gate failures, empty when it passes

    @property
    def passes(self) -> bool:
        return not self.problems

    @property
    def key(self) -> str:
        """Identity of this evidence: a new sweep or a new test day makes a new key (a new sensor run key)."""
        return f"{self.experiment}:{self.param_hash}:{'+'.join(self.run_ids)}"


def candidate(lake: Path, exp: ExperimentSpec) -> Candidate | None:
    """The experiment's current promotion candidate, or None before any sweep has selected a set."""
    table = read_results(lake, exp.name)
    if table is None:
        return None
    rows = table.to_pylist()
    latest_sweep: dict[str, tuple[str, str]] = {}
    for r in rows:  # the latest sweep of each test day
        seen = latest_sweep.get(r["test_date"])
        if seen is None or (r["created_at"], r["sweep_id"]) > seen:
            latest_sweep[r["test_date"]] = (r["created_at"], r["sweep_id"])
    current = [r for r in rows if latest_sweep[r["test_date"]][1] == r["sweep_id"]]
    last_day = max(latest_sweep)
    chosen = next((r for r in current if r["test_date"] == last_day and r["selected"]), None)
    if chosen is None:
        return None
    folds = sorted((r for r in current if r["param_hash"] == chosen["param_hash"]), key=lambda r: r["test_date"])
    runs = [RunLineage.from_row(r) for r in folds]
    problems = [p for run in runs for p in gate_problems(run, exp.promotion, f"experiments/{exp.name}.yaml")]
    keys = ("oos_n_trades", "oos_hit_rate", "oos_total_pnl_ticks", "oos_profit_factor", "oos_max_drawdown_ticks")
    return Candidate(experiment=exp.name, param_hash=chosen["param_hash"], params=runs[-1].params,
                     run_ids=[r.run_id for r in runs], test_dates=[r.test_date for r in runs],
                     oos=[{k: run.metrics.get(k) for k in keys} for run in runs], problems=problems)
