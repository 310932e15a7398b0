"""Checks of one sweep partition (one walk-forward fold), evaluated on its result rows in the same step:
every parameter set evaluated, metrics finite, and a selection made (or the reason why not)."""

from __future__ import annotations

import math

import dagster as dg

from qmachina_assets.core.research.evaluation import COUNT_METRICS, METRIC_NAMES
from qmachina_assets.core.research.specs import ExperimentSpec, ServingSpec
from qmachina_assets.core.research.sweeps import SELECTION_RULE

#: Always defined for a fold (ratios such as hit rate or profit factor are undefined, NaN, without trades
#: or losses; none may be infinite).
DEFINED = (*COUNT_METRICS, "total_pnl_ticks", "max_drawdown_ticks")

SWEEP_RULES: dict[str, tuple[bool, str]] = {
    "all_sets_evaluated": (True, "one result row per parameter set of the experiment (grid size or budget)"),
    "metrics_finite": (True, "in- and out-of-sample metrics are finite; ratios may be undefined, never ±inf"),
    "selection_made": (False, f"the walk-forward selected a set ({SELECTION_RULE}); metadata says why not"),
}


def check_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=key, blocking=blocking, description=desc)
            for name, (blocking, desc) in SWEEP_RULES.items()]


def evaluate(key: dg.AssetKey, rows: list[dict], exp: ExperimentSpec, serving: ServingSpec
             ) -> list[dg.AssetCheckResult]:
    expected = exp.n_sets(serving)
    bad: list[str] = []
    for r in rows:
        for tag in ("is", "oos"):
            for name in METRIC_NAMES:
                v = r.get(f"{tag}_{name}")
                if v is None:
                    continue
                if math.isinf(v) or (math.isnan(v) and name in DEFINED):
                    bad.append(f"{r['param_hash']}: {tag}_{name}={v}")
    chosen = next((r for r in rows if r["selected"]), None)
    most = max((r["is_n_trades"] for r in rows), default=0)
    why = ("selected " + r_params(chosen) if chosen else
           f"no set reached eval.min_signals={exp.eval.min_signals} in-sample trades (most: {most:g}): "
           f"nothing to promote from this fold")

    def result(name: str, passed: bool, **meta) -> dg.AssetCheckResult:
        blocking = SWEEP_RULES[name][0]
        return dg.AssetCheckResult(asset_key=key, check_name=name, passed=passed, metadata=meta,
                                   severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN)

    return [
        result("all_sets_evaluated", len(rows) == expected, evaluated=len(rows), expected=expected,
               search=exp.sweep.search.method),
        result("metrics_finite", not bad, non_finite=len(bad), examples=dg.MetadataValue.json(bad[:10])),
        result("selection_made", chosen is not None, reason=why, max_in_sample_trades=float(most)),
    ]


def r_params(row: dict) -> str:
    return f"{row['param_hash']} {row['params_json']}"
