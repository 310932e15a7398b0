"""The equity curves of one stored sweep run, rebuilt on demand.

A results row (sweeps.run_fold) keeps metrics only, not trades, so a run's equity curve is replayed: the
row's parameter set applied to its serving spec, the signal fitted on the row's training datasets and scored
on them (in-sample) and on its test dataset (out-of-sample) by `sweeps.fit_and_score`, the code the sweep
ran, then `evaluation.evaluate` with the row's trading values and the experiment's eval settings.

The replay is refused (`ReplayError`) when it could not reproduce the row: a spec whose hash differs from
the one recorded in the row (the configs changed since the sweep) or a dataset no longer in the lake.
`reproduced` reports whether the replayed trade counts and totals equal the stored metrics (a code change
since the sweep can still move them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from qmachina_assets.core.research import datasets as dsets
from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.evaluation import EvalResult, evaluate
from qmachina_assets.core.research.signals.base import GridData, LabelSpec
from qmachina_assets.core.research.specs import (
    ConfigError,
    ExperimentSpec,
    PipelineSpec,
    ServingSpec,
    apply_params,
    resolve_experiment,
)

MAX_POINTS = 2000


class ReplayError(ValueError):
    """The run cannot be replayed faithfully (changed specs, missing datasets)."""


class EquityCurve(BaseModel):
    """Cumulative realised pnl (ticks) over time, booked at each trade's exit bin, downsampled."""

    ts_ns: list[str] = Field(description="bin close times, ns since the epoch as decimal strings (int64 "
                                         "does not fit a JSON number exactly)")
    pnl_ticks: list[float] = Field(description="cumulative pnl at each ts_ns")
    n_trades: int
    total_pnl_ticks: float
    n_bins: int = Field(description="bins of the evaluated data before downsampling")


class RunEquity(BaseModel):
    run_id: str
    experiment: str
    in_sample: EquityCurve
    out_of_sample: EquityCurve
    reproduced: bool = Field(description="the replay's trade counts and total pnl equal the stored row's")


def downsample(ts_ns: np.ndarray, equity: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Indices worth drawing of a step curve: its first and last bin and every bin where it changes; above
    `max_points`, the min and max of equal buckets of those (so no spike disappears), in time order."""
    n = equity.shape[0]
    if n == 0:
        return ts_ns[:0], equity[:0]
    keep = np.unique(np.concatenate(([0], np.flatnonzero(np.diff(equity) != 0) + 1, [n - 1])))
    if keep.shape[0] > max_points:
        inner = keep[1:-1]
        buckets = np.array_split(inner, max(1, (max_points - 2) // 2))
        picked = [b[[np.argmin(equity[b]), np.argmax(equity[b])]] for b in buckets if b.shape[0]]
        keep = np.unique(np.concatenate(([keep[0]], *picked, [keep[-1]])))
    return ts_ns[keep], equity[keep]


def _curve(ts_ns: np.ndarray, equity: np.ndarray, n_trades: int, total: float) -> EquityCurve:
    ts, eq = downsample(ts_ns, equity)
    return EquityCurve(ts_ns=[str(int(t)) for t in ts], pnl_ticks=[float(x) for x in eq], n_trades=n_trades,
                       total_pnl_ticks=float(total), n_bins=int(equity.shape[0]))


def _split(v: Any) -> list[str]:
    return [x for x in str(v or "").split(",") if x]


def _check_specs(row: dict[str, Any], configs_dir: Path | None) -> tuple[ExperimentSpec, ServingSpec, PipelineSpec]:
    name = str(row.get("experiment") or "")
    try:
        exp, serving, pipeline = resolve_experiment(name, configs_dir=configs_dir)
    except (ConfigError, OSError) as exc:
        raise ReplayError(f"experiment {name!r}: its specs do not load: {exc}") from exc
    recorded = {"experiment": (row.get("experiment_hash"), sweeps.experiment_hash(exp)),
                "serving": (row.get("serving_hash"), serving.spec_hash),
                "pipeline": (row.get("pipeline_hash"), pipeline.spec_hash)}
    changed = [f"{k} spec (recorded {a}, now {b})" for k, (a, b) in recorded.items() if a != b]
    if changed:
        raise ReplayError(f"run {row.get('run_id')}: changed since the sweep: {', '.join(changed)}; "
                          f"the replay would not be the evaluated run")
    return exp, serving, pipeline


def replay_evaluations(lake: Path, row: dict[str, Any], configs_dir: Path | None = None,
                       ) -> dict[str, tuple[EvalResult, GridData]]:
    """The row's in-sample ("is") and out-of-sample ("oos") evaluations (trades, metrics, equity) replayed with
    the data they ran on (see the module doc); ReplayError when the replay would not be the evaluated run."""
    exp, serving, pipeline = _check_specs(row, configs_dir)
    train_ids, test_ids = _split(row.get("train_dataset_ids")), _split(row.get("test_dataset_id"))
    missing = [d for d in (*train_ids, *test_ids) if dsets.read_dataset_manifest(dsets.dataset_dir(lake, d)) is None]
    if missing or not train_ids or not test_ids:
        names = ", ".join(missing) or "none recorded"
        raise ReplayError(f"run {row.get('run_id')}: dataset(s) not in the lake: {names}")
    try:
        applied = apply_params(serving, json.loads(row.get("params_json") or "{}"))
    except (ConfigError, ValueError) as exc:
        raise ReplayError(f"run {row.get('run_id')}: its parameters do not apply: {exc}") from exc
    runtime = pipeline.runtime()
    ev = exp.eval
    train_src = sweeps.DayData(lake, train_ids, runtime.grid_radius_ticks, runtime.tick_int)
    test_src = sweeps.DayData(lake, test_ids, runtime.grid_radius_ticks, runtime.tick_int)
    label = LabelSpec(applied.tp_ticks, applied.sl_ticks, ev.max_hold_bins, runtime.tick_size)
    scores = sweeps.fit_and_score(applied, pipeline, label, train_src, test_src, pipeline.gold_config().config_hash)
    params = sweeps.eval_params(applied, ev, runtime.tick_size)  # the row's trading values: `applied` carries them
    return {tag: (evaluate(s, data.mid, data.best_bid, data.best_ask, data.ts_ns, data.valid, params,
                           day=data.day, high=data.mid_high, low=data.mid_low), data)
            for tag, (s, data) in scores.items()}


def replay_run(lake: Path, row: dict[str, Any], configs_dir: Path | None = None) -> RunEquity:
    """In-sample and out-of-sample equity curves of one results row (see the module doc)."""
    curves: dict[str, EquityCurve] = {}
    reproduced = True
    for tag, (res, data) in replay_evaluations(lake, row, configs_dir).items():
        m = res.metrics
        curves[tag] = _curve(data.ts_ns, res.equity, m.n_trades, m.total_pnl_ticks)
        stored_n, stored_pnl = row.get(f"{tag}_n_trades"), row.get(f"{tag}_total_pnl_ticks")
        reproduced &= (stored_n is not None and stored_pnl is not None and int(stored_n) == m.n_trades
                       and math.isclose(float(stored_pnl), m.total_pnl_ticks, rel_tol=1e-9, abs_tol=1e-6))
    return RunEquity(run_id=str(row["run_id"]), experiment=str(row.get("experiment")), in_sample=curves["is"],
                     out_of_sample=curves["oos"], reproduced=reproduced)
