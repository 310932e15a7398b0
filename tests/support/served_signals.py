"""The evaluation a `signals=1` stream must reproduce: the sweep's own code on the served day's research dataset,
and the trades as the stream announces them (shared by tests/serving/test_serving_stream.py and
tests/serving/test_dsl_serving.py)."""

from __future__ import annotations

from pathlib import Path

from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.datasets import build_dataset_day
from qmachina_assets.core.research.evaluation import evaluate
from qmachina_assets.core.research.signals.base import LabelSpec
from qmachina_assets.core.research.specs import EvalConfig, resolve_serving
from tests.support.serving import DATE


def evaluated_day(lake: Path, serving_name: str):
    """The evaluation of serving spec `serving_name` (of the served lake's configs) on the served day, by the
    sweep's code: the research dataset of its pipeline's capture window (its Gold DSL outputs included),
    `sweeps.fit_and_score`, `evaluate` with `sweeps.eval_params` (a registered version has no experiment:
    EvalConfig's defaults). Returns (scores, GridData, EvalParams, EvalResult)."""
    serving, pipeline = resolve_serving(serving_name, configs_dir=lake.parent / "configs")
    runtime = pipeline.runtime()
    manifest, _ = build_dataset_day(lake, pipeline, DATE)
    src = sweeps.DayData(lake, [manifest.dataset_id], runtime.grid_radius_ticks, runtime.tick_int)
    ev = EvalConfig()
    label = LabelSpec(serving.tp_ticks, serving.sl_ticks, ev.max_hold_bins, runtime.tick_size)
    s, data = sweeps.fit_and_score(serving, pipeline, label, src, src, pipeline.gold_config().config_hash)["oos"]
    params = sweeps.eval_params(serving, ev, runtime.tick_size)
    res = evaluate(s, data.mid, data.best_bid, data.best_ask, data.ts_ns, data.valid, params, day=data.day,
                   high=data.mid_high, low=data.mid_low)
    return s, data, params, res


def expected_events(res, data) -> list[tuple]:
    """The evaluation's trades as the stream announces them: entry at the fill bin, exit at the exit bin."""
    names = {1: "tp", -1: "sl", 0: "timeout", 2: "truncated"}
    out = []
    for t in res.trades:
        e, x = int(t["entry_bin"]), int(t["exit_bin"])
        out.append(("entry", e, str(int(data.ts_ns[e])), int(t["direction"]), float(t["entry_price"]), None, None))
        out.append(("exit", x, str(int(data.ts_ns[x])), int(t["direction"]), float(t["exit_price"]),
                    names[int(t["outcome"])], float(t["pnl_ticks"])))
    return out


def stream_events(signals: list[dict]) -> list[tuple]:
    """The events of a stream's `signal` messages, in the `expected_events` form."""
    return [(e["event"], e["bin_seq"], e["ts_ns"], e["direction"], e["price"], e.get("outcome"), e.get("pnl_ticks"))
            for m in signals for e in m["events"]]
