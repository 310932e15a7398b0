"""Decision-support benchmark on planted synthetic days (tests/support/planted.py: a known-optimal threshold).

Usage: python bench/advisor.py [--sets N] [--folds F] [--budget B]
1. Advice speed: N parameter sets (thresholds x cooldowns x TP) on F walk-forward folds, evaluated by the real
   TP/SL engine, then the time of every advisor step on those rows (parse, sensitivity of every axis, heatmap,
   flags from the rows' counts, suggestions) - what one REST call or one sweep asset's metadata costs.
2. Search: on the finely planted day (optimum threshold 0.5), a grid over the threshold range vs the seeded TPE
   sampler with a budget of B sets: the in-sample best each finds and the distance of its selection to 0.5.
The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

from qmachina_assets.core.research import advisor, search
from qmachina_assets.core.research.specs import ExperimentSpec, resolve_serving
from tests.support.planted import BROAD, FINE_BROAD, FINE_LEVELS, fold_rows, planted_day

BASE = {"serving": "vp_flow_score", "walk_forward": {"train_days": 1},
        "promotion": {"min_oos_trades": 1, "min_hit_rate": 0.0, "min_profit_factor": 0.0, "max_drawdown_ticks": 1e6},
        "tracking": {"backend": "none"}}


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def advice_speed(n_sets: int, n_folds: int) -> dict:
    serving, pipeline = resolve_serving("vp_flow_score")
    n_thr = max(3, n_sets // 20)
    exp = ExperimentSpec.model_validate({
        **BASE, "name": "bench_advice",
        "eval": {"tp_ticks": [3, 4, 5, 6], "sl_ticks": [4], "cooldown_bins": [5, 10, 15, 20, 25], "max_hold_bins": 30,
                 "warmup_bins": 0, "min_signals": 5, "entry_mode": "mid"},
        "sweep": {"thresholds": [round(x, 4) for x in np.linspace(0.05, 0.95, n_thr)]}})
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(n_folds + 1)]
    data = {d: planted_day(d, BROAD, 4, 4, seed=i) for i, d in enumerate(days)}
    rows, t_eval = [], time.perf_counter()
    for a, b in itertools.pairwise(days):
        rows += fold_rows(exp, serving, data[a], data[b], b)
    t_eval = time.perf_counter() - t_eval
    res, t_parse = timed(advisor.Results, rows)
    sens, t_sens = timed(lambda: [advisor.sensitivity(res, a) for a in res.axes])
    pair = advisor.most_sensitive_pair(sens)
    _, t_heat = timed(advisor.heatmap, res, *pair)
    rob, t_flags = timed(advisor.robustness, res)
    sugg, t_sugg = timed(advisor.suggest, res, exp, serving, pipeline, flags=rob)
    _, t_png = timed(advisor.sensitivity_png, sens, advisor.heatmap(res, *pair))
    dsr = next(f for f in rob.flags if f.name == "deflated_sharpe")
    return {"rows": len(rows), "sets": exp.n_sets(serving), "folds": n_folds, "evaluate_s": round(t_eval, 2),
            "parse_s": round(t_parse, 3), "sensitivity_s": round(t_sens, 3), "heatmap_s": round(t_heat, 3),
            "flags_s": round(t_flags, 3), "suggest_s": round(t_sugg, 3), "png_s": round(t_png, 3),
            "flags_fired": [f"{f.name}:{f.axis}" if f.axis else f.name for f in rob.flags if f.fired],
            "deflated_sharpe": {k: round(v, 4) if isinstance(v, float) else v for k, v in dsr.details.items()
                                if k in ("sharpe_per_trade", "n_trades", "sets_tried", "dsr_with_tried_variance")}
            | {"dsr": round(dsr.figure, 4)},
            "suggestions": [f"{s.kind}:{s.axis}" for s in sugg]}


def search_vs_grid(budget: int) -> dict:
    serving, _ = resolve_serving("vp_flow_score")
    train = planted_day(dt.date(2024, 3, 14), FINE_BROAD, 4, 4, per_level=4, seed=1, levels=FINE_LEVELS)
    test = planted_day(dt.date(2024, 3, 15), FINE_BROAD, 4, 4, per_level=4, seed=2, levels=FINE_LEVELS)
    ev = {"tp_ticks": [4], "sl_ticks": [4], "cooldown_bins": [5, 40], "max_hold_bins": 30, "warmup_bins": 0,
          "min_signals": 5, "entry_mode": "mid"}
    grid_thr = [round(0.05 + 0.9 * i / 9, 4) for i in range(10)]
    grid_exp = ExperimentSpec.model_validate({**BASE, "name": "bench_grid", "eval": ev,
                                              "sweep": {"thresholds": grid_thr}})
    t0 = time.perf_counter()
    grid = fold_rows(grid_exp, serving, train, test, dt.date(2024, 3, 15))
    t_grid = time.perf_counter() - t0
    tpe_exp = ExperimentSpec.model_validate({**BASE, "name": "bench_tpe", "eval": ev, "sweep": {
        "thresholds": [0.05, 0.95], "search": {"method": "tpe", "n_samples": budget, "seed": 0}}})
    sampler = search.TpeSampler(tpe_exp, serving)
    rows, t0 = [], time.perf_counter()
    while batch := sampler.ask():
        part = fold_rows(tpe_exp, serving, train, test, dt.date(2024, 3, 15), batch)
        sampler.tell(part)
        rows += part
    t_tpe = time.perf_counter() - t0

    def best(rs):
        r = max(rs, key=lambda r: r["is_total_pnl_ticks"])
        return {"is_total_pnl_ticks": r["is_total_pnl_ticks"], "oos_total_pnl_ticks": r["oos_total_pnl_ticks"],
                "threshold": r["threshold"], "distance_to_optimum": round(abs(r["threshold"] - 0.5), 4)}

    return {"grid_sets": len(grid), "grid": best(grid), "grid_s": round(t_grid, 2), "tpe_sets": len(rows),
            "tpe": best(rows), "tpe_s": round(t_tpe, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", type=int, default=1000)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--budget", type=int, default=20)
    args = ap.parse_args()
    speed = advice_speed(args.sets, args.folds)
    print(f"advice on {speed['rows']} rows ({speed['sets']} sets x {speed['folds']} folds): "
          f"parse {speed['parse_s']} s, sensitivity {speed['sensitivity_s']} s, heatmap {speed['heatmap_s']} s, "
          f"flags {speed['flags_s']} s, suggestions {speed['suggest_s']} s, plot {speed['png_s']} s")
    s = search_vs_grid(args.budget)
    g, t = s["grid"], s["tpe"]
    print(f"grid {s['grid_sets']} sets: best threshold {g['threshold']} (IS {g['is_total_pnl_ticks']}); "
          f"TPE {s['tpe_sets']} sets: best threshold {t['threshold']} (IS {t['is_total_pnl_ticks']})")
    print(json.dumps({"advice": speed, "search": s}))


if __name__ == "__main__":
    main()
