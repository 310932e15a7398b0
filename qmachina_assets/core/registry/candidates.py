"""The promotion gate: what the walk-forward selected, and whether that passes the experiment's rules.

Walk-forward selection (one rule, `sweeps.select`): on each test day, the latest sweep of the experiment's
current version (its `experiment_hash`) flagged the parameter set with the highest in-sample total pnl
among those with at least `eval.min_signals` in-sample trades (ties: in-sample hit rate). That set, per
fold, is what a researcher would have traded on the test day; its out-of-sample row is the honest record.
Promotion publishes the latest fold's selection (what is traded next) with every fold's selected row as
evidence, and nothing else: a parameter set chosen by its out-of-sample result, an older sweep, or a subset
of the folds is refused by `gate_failures` (rule `selection`).

`gate_failures` is the one gate: a plain function returning every failed rule with its reason (empty:
pass). The registry's preflight runs it inside the publishing transaction, so the CLI, the Dagster
promotion sensor and job, the REST API and direct library calls all meet the same gate.

Rules: `selection` (above), `min_oos_trades`, `min_hit_rate`, `min_profit_factor`, `max_drawdown_ticks`
(each fold's out-of-sample row against `ExperimentSpec.promotion`) and `dirty_code` (a run made from
uncommitted changes, unless explicitly allowed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from qmachina_assets.core.registry.lineage import RunLineage
from qmachina_assets.core.research.specs import ExperimentSpec, PromotionGate
from qmachina_assets.core.research.sweeps import SELECTION_RULE, experiment_hash, read_results, select

METRIC_RULES: tuple[str, ...] = ("min_oos_trades", "min_hit_rate", "min_profit_factor", "max_drawdown_ticks")
RULES: tuple[str, ...] = ("selection", *METRIC_RULES, "dirty_code")


class GateFailure(BaseModel):
    """One failed rule of the promotion gate: which rule, which run (if one), and why."""

    model_config = ConfigDict(frozen=True)

    rule: str
    run_id: str | None = None
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


# ---- metrics ---------------------------------------------------------------------------------------


def metric_failures(run: RunLineage, gate: PromotionGate, source: str) -> list[GateFailure]:
    """Out-of-sample metrics of `run` below `gate` (SPEC §6.10; `source` names where the gate came from)."""
    m = run.metrics
    out: list[GateFailure] = []

    def low(rule: str, name: str, value: Any, op: str, bound: float) -> None:
        out.append(GateFailure(rule=rule, run_id=run.run_id,
                               message=f"run {run.run_id}: oos_{name} {value} {op} {bound} ({source})"))

    n = m.get("oos_n_trades")
    if n is None or n < gate.min_oos_trades:
        low("min_oos_trades", "n_trades", n, "<", gate.min_oos_trades)
    hr = m.get("oos_hit_rate")
    if hr is None or hr < gate.min_hit_rate:
        low("min_hit_rate", "hit_rate", hr, "<", gate.min_hit_rate)
    pf = m.get("oos_profit_factor")
    if pf is None:  # undefined without losing trades: infinite when the run made money, else failing
        total = m.get("oos_total_pnl_ticks")
        if not (n and total is not None and total > 0):
            low("min_profit_factor", "profit_factor", "undefined (no losing trade, no profit)", "<",
                gate.min_profit_factor)
    elif pf < gate.min_profit_factor:
        low("min_profit_factor", "profit_factor", pf, "<", gate.min_profit_factor)
    dd = m.get("oos_max_drawdown_ticks")
    if dd is None or dd > gate.max_drawdown_ticks:
        low("max_drawdown_ticks", "max_drawdown_ticks", dd, ">", gate.max_drawdown_ticks)
    return out


def gate_problems(run: RunLineage, gate: PromotionGate, source: str) -> list[str]:
    """The metric failures of one run as text."""
    return [f.message for f in metric_failures(run, gate, source)]


# ---- the walk-forward's selection --------------------------------------------------------------------


class Fold(BaseModel):
    """One test day of the walk-forward: its latest sweep of the current experiment version."""

    test_date: str
    sweep_id: str
    selected: RunLineage | None  # None: no parameter set had enough in-sample trades
    n_sets: int


def walk_forward(lake: Path, exp: ExperimentSpec, table: Any = None) -> list[Fold]:
    """Per test day (oldest first), the latest sweep of `exp`'s current version and the run it selected,
    re-derived with `sweeps.select` from that sweep's rows (the stored flag must agree)."""
    table = read_results(lake, exp.name) if table is None else table
    if table is None:
        return []
    version = experiment_hash(exp)
    rows = [r for r in table.to_pylist() if r["experiment_hash"] == version]
    latest: dict[str, tuple[str, str]] = {}
    for r in rows:
        seen = latest.get(r["test_date"])
        if seen is None or (r["created_at"], r["sweep_id"]) > seen:
            latest[r["test_date"]] = (r["created_at"], r["sweep_id"])
    out = []
    for day in sorted(latest):
        sweep = [r for r in rows if r["test_date"] == day and r["sweep_id"] == latest[day][1]]
        best = select(sweep, exp.eval.min_signals)
        flagged = [r for r in sweep if r["selected"]]
        if flagged != ([] if best is None else [best]):
            raise ValueError(f"results of {exp.name} sweep {latest[day][1]} ({day}) flag "
                             f"{[r['run_id'] for r in flagged]} as selected; the selection rule gives "
                             f"{None if best is None else best['run_id']} (the store was altered)")
        out.append(Fold(test_date=day, sweep_id=latest[day][1], n_sets=len(sweep),
                        selected=None if best is None else RunLineage.from_row(best)))
    return out


def selection_failures(lake: Path, exp: ExperimentSpec, runs: list[RunLineage], *,
                       folds: list[Fold] | None = None) -> list[GateFailure]:
    """How `runs` differ from the walk-forward's selection: one run per fold, each the set its fold selected."""
    try:
        folds = walk_forward(lake, exp) if folds is None else folds
    except ValueError as exc:
        return [GateFailure(rule="selection", message=str(exc))]
    out: list[GateFailure] = []

    def fail(message: str, run_id: str | None = None) -> None:
        out.append(GateFailure(rule="selection", run_id=run_id, message=message))

    if not folds:
        fail(f"experiment {exp.name!r} (version {experiment_hash(exp)}) has no walk-forward results: run its "
             "sweep first")
        return out
    by_day = {f.test_date: f for f in folds}
    seen: set[str] = set()
    for run in runs:
        fold = by_day.get(run.test_date)
        if run.test_date in seen:
            fail(f"run {run.run_id}: a second run of test day {run.test_date} (one run per fold)", run.run_id)
            continue
        seen.add(run.test_date)
        if fold is None:
            fail(f"run {run.run_id}: test day {run.test_date} has no sweep of experiment {exp.name!r} version "
                 f"{experiment_hash(exp)}", run.run_id)
        elif fold.selected is None:
            fail(f"run {run.run_id}: on {run.test_date} the walk-forward selected nothing (no parameter set had "
                 f">= {exp.eval.min_signals} in-sample trades)", run.run_id)
        elif run.run_id != fold.selected.run_id:
            sel = fold.selected
            fail(f"run {run.run_id} ({run.params}) is not the walk-forward's selection on {run.test_date}: sweep "
                 f"{fold.sweep_id} selected run {sel.run_id} ({sel.params}) by its rule ({SELECTION_RULE}, "
                 f"min_signals {exp.eval.min_signals}); promotion takes the walk-forward's selection only",
                 run.run_id)
    for day, fold in by_day.items():
        if day not in seen:
            sel = fold.selected
            fail(f"test day {day} is missing: the walk-forward's record is every fold's selected run "
                 f"({'nothing selected' if sel is None else 'run ' + sel.run_id}); promote all folds together")
    return out


def dirty_failures(runs: list[RunLineage]) -> list[GateFailure]:
    return [GateFailure(rule="dirty_code", run_id=r.run_id,
                        message=f"run {r.run_id} was made from uncommitted changes ({r.code_text()}): that code "
                                "cannot be checked out again, so its figures cannot be reproduced; commit and re-run "
                                "the sweep, or publish with allow_dirty (--allow-dirty), which the alias audit "
                                "records")
            for r in runs if r.code_dirty]


def gate_failures(lake: Path, exp: ExperimentSpec, runs: list[RunLineage], *, allow_dirty: bool = False,
                  gate: PromotionGate | None = None, folds: list[Fold] | None = None) -> list[GateFailure]:
    """Every failed rule of promoting `runs` (see the module doc); `gate` adds a caller's stricter gate."""
    out = selection_failures(lake, exp, runs, folds=folds)
    for g, source in ((exp.promotion, f"promotion gate of experiment {exp.name!r}"), (gate, "caller's gate")):
        if g is not None:
            out += [f for run in runs for f in metric_failures(run, g, source)]
    if not allow_dirty:
        out += dirty_failures(runs)
    return out


# ---- the candidate -----------------------------------------------------------------------------------


class Candidate(BaseModel):
    experiment: str
    param_hash: str  # of the latest fold's selection: what is promoted
    params: dict
    run_ids: list[str]  # the selected run of every fold, oldest test day first
    test_dates: list[str]
    oos: list[dict[str, float | None]]  # per fold: n_trades, hit_rate, total_pnl_ticks, profit_factor, drawdown
    failures: list[GateFailure]  # failed rules, empty when it passes (dirty code counts as a failure)

    @property
    def problems(self) -> list[str]:
        return [str(f) for f in self.failures]

    @property
    def passes(self) -> bool:
        return not self.failures

    @property
    def key(self) -> str:
        """Identity of this evidence: a new sweep or a new test day makes a new key (a new sensor run key)."""
        return f"{self.experiment}:{self.param_hash}:{'+'.join(self.run_ids)}"


OOS_KEYS = ("oos_n_trades", "oos_hit_rate", "oos_total_pnl_ticks", "oos_profit_factor", "oos_max_drawdown_ticks")


def candidate(lake: Path, exp: ExperimentSpec) -> Candidate | None:
    """The experiment's promotion candidate (the walk-forward's selection, see the module doc) with its gate
    verdict, or None while the latest fold has selected nothing (no sweep yet, or too few trades)."""
    try:
        folds = walk_forward(lake, exp)
    except ValueError:
        return None
    if not folds or folds[-1].selected is None:
        return None
    runs = [f.selected for f in folds if f.selected is not None]
    last = runs[-1]
    return Candidate(experiment=exp.name, param_hash=last.param_hash, params=last.params,
                     run_ids=[r.run_id for r in runs], test_dates=[r.test_date for r in runs],
                     oos=[{k: r.metrics.get(k) for k in OOS_KEYS} for r in runs],
                     failures=gate_failures(lake, exp, runs, folds=folds))
