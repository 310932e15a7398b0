"""Synthetic days with a planted, known-optimal threshold, evaluated by the real TP/SL engine into results rows.

A day is a train of signal spikes (one every `GAP` bins, alternating sign) at levels 0.05, 0.15, … 0.95; after each
spike the mid rests 2 bins (a fill up to 2 bins late is at the spike's price), then walks TP + 1 ticks in the
spike's direction (a win) or SL + 1 against it (a loss) over a few bins and rests there. A threshold t fires on the
spikes of level ≥ t, so the pnl of a threshold is the sum of the edges of the levels above it and the win share of
each level plants the optimum: `BROAD` wins above 0.5 and loses below (optimum 0.5, neighbours nearly as good),
`NARROW` wins only at 0.55 (optimum 0.5, neighbours flat), `NOISE` wins half the time everywhere (no edge). Trades
exit at TP or SL only (no timeouts), so the count-based moments of the advisor are exact here.

`fold_rows` evaluates an ExperimentSpec's grid on a training day (in-sample) and a test day (out-of-sample)
and writes rows with the results-store columns the advisor reads (selected by the sweep's own `select`).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import numpy as np

from qmachina_assets.core.research.evaluation import METRIC_NAMES, evaluate_grid
from qmachina_assets.core.research.specs import ExperimentSpec, ServingSpec
from qmachina_assets.core.research.sweeps import select

TICK = 0.25
GAP = 40  # bins between spikes
LEVELS = tuple(round(0.05 + 0.1 * i, 2) for i in range(10))
BROAD = {lv: (0.75 if lv > 0.5 else 0.25) for lv in LEVELS}
NARROW = {lv: (0.95 if lv == 0.55 else 0.05 if lv == 0.45 else 0.5) for lv in LEVELS}
NOISE = dict.fromkeys(LEVELS, 0.5)
FINE_LEVELS = tuple(round(0.005 + 0.01 * i, 3) for i in range(100))  # for sampled (continuous) thresholds
FINE_BROAD = {lv: (0.75 if lv > 0.5 else 0.25) for lv in FINE_LEVELS}


def planted_day(date: dt.date, win_share: dict[float, float], tp: int, sl: int, per_level: int = 40,
                seed: int = 0, bin_seconds: float = 1.0, exact: bool = True,
                levels: tuple[float, ...] = LEVELS) -> dict[str, np.ndarray]:
    """One day of bins (`s`, `mid`, `best_bid`, `best_ask`, `ts_ns`, `valid`) from 09:30 ET (14:30 UTC).
    `exact`: each level wins exactly its share of the time; else each spike wins with that probability."""
    rng = np.random.default_rng(seed)
    events = []
    for lv in levels:
        wins = round(win_share[lv] * per_level)
        won = [k < wins for k in range(per_level)] if exact else list(rng.random(per_level) < win_share[lv])
        events += [(lv, w) for w in won]
    order = rng.permutation(len(events))
    n = GAP * (len(events) + 2)
    s = np.zeros(n)
    mid = np.empty(n)
    price = 5000.0
    mid[:GAP] = price
    for j, idx in enumerate(order):
        lv, win = events[idx]
        i = GAP * (j + 1)
        d = 1 if j % 2 == 0 else -1
        s[i] = d * lv
        target = price + d * ((tp + 1) if win else -(sl + 1)) * TICK
        path = np.linspace(price, target, 6)[1:]
        mid[i:i + 3] = price  # a fill up to 2 bins late is at the same price
        mid[i + 3:i + 8] = path
        mid[i + 8:i + GAP] = target
        price = target
    mid[GAP * (len(events) + 1):] = price
    start = dt.datetime.combine(date, dt.time(14, 30), tzinfo=dt.UTC).timestamp()
    ts = (start + np.arange(1, n + 1) * bin_seconds) * 1e9
    return {"s": s, "mid": mid, "best_bid": mid - TICK / 2, "best_ask": mid + TICK / 2,
            "ts_ns": ts.astype(np.int64), "valid": np.ones(n, dtype=bool)}


def _grid(day: dict[str, np.ndarray], exp: ExperimentSpec, axes: dict[str, list]) -> dict[tuple, dict[str, float]]:
    ev = exp.eval
    g = evaluate_grid(day["s"], day["mid"], day["best_bid"], day["best_ask"], day["ts_ns"], day["valid"],
                      thresholds=axes["threshold"], tp_list=axes["tp_ticks"], sl_list=axes["sl_ticks"],
                      cooldown_list=axes["cooldown_bins"], max_hold_bins=ev.max_hold_bins, tick_size=TICK,
                      warmup_bins=ev.warmup_bins, entry_mode=ev.entry_mode,
                      cost_ticks_per_trade=ev.cost_ticks_per_trade, latency_bins=ev.latency_bins)
    keys = ("threshold", "tp_ticks", "sl_ticks", "cooldown_bins")
    return {tuple(float(g[k][i]) for k in keys): {m: float(g[m][i]) for m in METRIC_NAMES}
            for i in range(len(g["threshold"]))}


def fold_rows(exp: ExperimentSpec, serving: ServingSpec, train: dict[str, np.ndarray], test: dict[str, np.ndarray],
              test_date: dt.date, sets: list[dict] | None = None, created_at: str | None = None) -> list[dict]:
    """Results rows of one fold: every set of `exp` (or `sets`) in-sample on `train`, out-of-sample on `test`."""
    sets = sets if sets is not None else exp.expand(serving)
    axes = {k: sorted({float(p.get(k, getattr(serving, k))) for p in sets})
            for k in ("threshold", "tp_ticks", "sl_ticks", "cooldown_bins")}
    is_m, oos_m = _grid(train, exp, axes), _grid(test, exp, axes)
    sweep = uuid.uuid4().hex[:16]
    created = created_at or dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    rows = []
    for p in sets:
        combo = tuple(float(p.get(k, getattr(serving, k))) for k in ("threshold", "tp_ticks", "sl_ticks",
                                                                      "cooldown_bins"))
        params = {k: v for k, v in p.items() if k != "param_hash"}
        row = {"experiment": exp.name, "sweep_id": sweep, "created_at": created, "test_date": test_date.isoformat(),
               "param_hash": p["param_hash"], "run_id": f"{sweep}-{p['param_hash']}", "signal": "flow_score",
               "params_json": json.dumps(params, sort_keys=True), "threshold": combo[0], "tp_ticks": combo[1],
               "sl_ticks": combo[2], "cooldown_bins": combo[3]}
        row.update({f"is_{m}": v for m, v in is_m[combo].items()})
        row.update({f"oos_{m}": v for m, v in oos_m[combo].items()})
        rows.append(row)
    best = select(rows, exp.eval.min_signals)
    for r in rows:
        r["selected"] = r is best
    return rows
