"""Walk-forward sweeps: an ExperimentSpec's parameter sets, fitted on earlier days, evaluated on later ones.

For one test day: every parameter set is scored on its training days (in-sample) and on the test day
(out-of-sample) by the TP/SL engine; the results are one row per (parameter set, test day) holding both,
with the in-sample winner flagged `selected` (what a researcher would have traded that day). Promotion
gates on the out-of-sample columns.

Speed: parameter sets that share a *signal config* (gold scoring values, signal params and, for ML
signals, the label barriers) share one fit and one score; their threshold x TP x SL x cooldown product is
one `evaluation.evaluate_grid` call. Gold is recomputed from the dataset's silver only when a set sweeps
gold scoring values (`scoring.*`), once per distinct gold config.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from qmachina_assets.core.gold import features as gold
from qmachina_assets.core.ingest.tempfiles import atomic_path
from qmachina_assets.core.research import datasets as dsets
from qmachina_assets.core.research import search
from qmachina_assets.core.research.evaluation import METRIC_NAMES, EvalParams, evaluate_grid
from qmachina_assets.core.research.signals.base import GridData, LabelSpec, Signal
from qmachina_assets.core.research.signals.catalog import make_signal
from qmachina_assets.core.research.specs import EvalConfig, ExperimentSpec, PipelineSpec, ServingSpec, apply_params

GOLD_COLUMNS = frozenset((*gold.GOLD_FLOAT_COLUMNS, *gold.GOLD_CODE_COLUMNS))
TRADING_KEYS = ("threshold", "tp_ticks", "sl_ticks", "cooldown_bins")


@dataclass(frozen=True)
class Fold:
    """One walk-forward step: fit on `train`, evaluate on `test` (dates of the pipeline's capture)."""

    train: tuple[dt.date, ...]
    test: dt.date


def folds(pipeline: PipelineSpec, exp: ExperimentSpec) -> list[Fold]:
    """Rolling folds over the capture dates: each test day's training days are the `train_days` before it."""
    days = pipeline.days
    n = exp.walk_forward.train_days
    return [Fold(tuple(days[i - n:i]), days[i]) for i in range(n, len(days))]


def fold_for(pipeline: PipelineSpec, exp: ExperimentSpec, test: dt.date) -> Fold:
    for f in folds(pipeline, exp):
        if f.test == test:
            return f
    days = [d.isoformat() for d in pipeline.days]
    raise ValueError(f"{test}: not a walk-forward test day of pipeline {pipeline.name!r} with "
                     f"{exp.walk_forward.train_days} training day(s) (capture dates {days})")


def signal_kwargs(serving: ServingSpec) -> dict[str, Any]:
    """Constructor parameters of the serving spec's signal (weights map to `<key>_weight`)."""
    assert serving.signal is not None
    return serving.signal.kwargs()


def eval_params(serving: ServingSpec, ev: EvalConfig, tick_size: float) -> EvalParams:
    """The evaluation setting of one applied serving spec: its trading values (threshold, TP/SL, cooldown)
    with the experiment's eval settings. The one formula a replayed run (`run_equity`) and the served
    signal's stream (`served_signal`) use, so both trade what the sweep's grid row evaluated."""
    if serving.signal is None:
        raise ValueError(f"serving spec {serving.name!r} has no signal (signal: null): nothing to evaluate")
    return EvalParams(threshold=float(serving.threshold), tp_ticks=float(serving.tp_ticks),
                      sl_ticks=float(serving.sl_ticks), cooldown_bins=int(serving.cooldown_bins),
                      max_hold_bins=ev.max_hold_bins, tick_size=float(tick_size), warmup_bins=ev.warmup_bins,
                      entry_mode=ev.entry_mode, cost_ticks_per_trade=ev.cost_ticks_per_trade,
                      latency_bins=ev.latency_bins)


def _group_key(serving: ServingSpec, gold_hash: str, is_ml: bool) -> str:
    sig = serving.signal
    assert sig is not None
    key: dict[str, Any] = {"gold": gold_hash, "signal": sig.name, "kwargs": signal_kwargs(serving)}
    if is_ml:
        key["labels"] = [serving.tp_ticks, serving.sl_ticks]
    return json.dumps(key, sort_keys=True, default=str)


class DayData:
    """GridData of a set of dataset days, with gold recomputed from silver for a non-default gold config."""

    def __init__(self, lake: Path, ids: list[str], radius: int, tick_int: int):
        self.lake, self.ids, self.radius, self.tick_int = lake, ids, radius, tick_int
        self._gold_cache: dict[str, dict[str, np.ndarray]] = {}

    def load(self, columns: list[str], gold_cfg: gold.GoldFeatureConfig, stored_hash: str) -> GridData:
        gold_cols = [c for c in columns if c in GOLD_COLUMNS]
        if gold_cfg.config_hash == stored_hash or not gold_cols:
            return dsets.load_grid_data(self.lake, self.ids, columns)
        data = dsets.load_grid_data(self.lake, self.ids, [c for c in columns if c not in GOLD_COLUMNS])
        recomputed = self._recompute(gold_cfg)
        w = 2 * self.radius + 1
        for c in gold_cols:
            x = recomputed[c].astype(np.float64).reshape(-1, w)
            x[~data.valid] = 0.0
            data.columns[c] = x
        return data

    def _recompute(self, cfg: gold.GoldFeatureConfig) -> dict[str, np.ndarray]:
        if cfg.config_hash not in self._gold_cache:
            parts = []
            for ds in sorted(self.ids, key=lambda d: dsets.read_dataset_manifest(dsets.dataset_dir(self.lake, d)).date):
                path = dsets.dataset_dir(self.lake, ds)
                b = pq.read_table(path / dsets.BINS_NAME, columns=list(_BIN_INPUTS))
                g = pq.read_table(path / dsets.GRID_NAME, columns=["k", *gold.GOLD_INPUTS])
                parts.append(gold.compute_gold({c: b[c].to_numpy() for c in _BIN_INPUTS},
                                               {c: g[c].to_numpy() for c in g.column_names},
                                               cfg, self.radius, self.tick_int))
            self._gold_cache[cfg.config_hash] = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
        return self._gold_cache[cfg.config_hash]


_BIN_INPUTS = ("bin_seq", "spot_ref_price_int", "book_valid", "ask_reprice_sign", "bid_reprice_sign")


def label_spec(applied: ServingSpec, ev: EvalConfig, tick_size: float) -> LabelSpec:
    """The barriers an ML signal of one applied serving spec learns: its TP/SL with the experiment's
    max_hold (what the evaluator trades on the same rows)."""
    return LabelSpec(applied.tp_ticks, applied.sl_ticks, ev.max_hold_bins, tick_size)


def fit_signal(applied: ServingSpec, pipeline: PipelineSpec, label: LabelSpec, train_src: DayData,
               stored_gold: str) -> tuple[Signal, GridData]:
    """(signal fitted on the training days, their GridData): the one fitting step of the sweep, a run's
    replay and a promoted ML version's model artifact (`model_artifact`), so the stored model is the one the
    walk-forward scored."""
    sig = make_signal(applied.signal.name, signal_kwargs(applied))
    train = train_src.load(list(sig.columns), applied.gold_config(pipeline), stored_gold)
    sig.fit(train, label)
    return sig, train


def fit_and_score(applied: ServingSpec, pipeline: PipelineSpec, label: LabelSpec, train_src: DayData,
                  test_src: DayData, stored_gold: str) -> dict[str, tuple[np.ndarray, GridData]]:
    """The signal of one applied serving spec fitted on the training days (ML signals learn `label`'s
    barriers), scored in-sample ("is", the training days) and out-of-sample ("oos", the test day). Shared by
    the sweep and a single run's replay (run_equity), so a replay is the code that produced the row."""
    sig, train = fit_signal(applied, pipeline, label, train_src, stored_gold)
    test = test_src.load(list(sig.columns), applied.gold_config(pipeline), stored_gold)
    return {"is": (sig.score(train), train), "oos": (sig.score(test), test)}


def run_fold(lake: Path, exp: ExperimentSpec, serving: ServingSpec, pipeline: PipelineSpec, fold: Fold,
             symbol: str | None = None, *, param_sets: list[dict[str, Any]] | None = None,
             progress: Callable[[int, int], None] | None = None) -> pa.Table:
    """Evaluate every parameter set of `exp` on one fold; one row per parameter set (see module doc)."""
    t0 = time.perf_counter()
    if param_sets is None and (sampler := search.sampler_for(exp, serving, pipeline)) is not None:
        return _run_sampled(sampler, lake, exp, serving, pipeline, fold, symbol, progress, t0)
    sets = param_sets if param_sets is not None else exp.expand(serving)
    runtime = pipeline.runtime()
    train_ids = [dsets.dataset_id_for(lake, pipeline, d, symbol) for d in fold.train]
    test_ids = [dsets.dataset_id_for(lake, pipeline, fold.test, symbol)]
    stored = dsets.read_dataset_manifest(dsets.dataset_dir(lake, test_ids[0]))
    if stored is None:
        raise FileNotFoundError(f"{dsets.dataset_dir(lake, test_ids[0])}: dataset of {fold.test} is not built")
    stored_gold = pipeline.gold_config().config_hash
    train_src = DayData(lake, train_ids, runtime.grid_radius_ticks, runtime.tick_int)
    test_src = DayData(lake, test_ids, runtime.grid_radius_ticks, runtime.tick_int)
    ev = exp.eval

    groups: dict[str, list[tuple[dict[str, Any], ServingSpec]]] = {}
    for values in sets:
        applied = apply_params(serving, {k: v for k, v in values.items() if k != "param_hash"})
        sig = make_signal(applied.signal.name, signal_kwargs(applied))
        key = _group_key(applied, applied.gold_config(pipeline).config_hash, sig.kind == "ml")
        groups.setdefault(key, []).append((values, applied))

    rows: list[dict[str, Any]] = []
    done = 0
    for members in groups.values():
        applied = members[0][1]
        label = label_spec(applied, ev, runtime.tick_size)
        scores = fit_and_score(applied, pipeline, label, train_src, test_src, stored_gold)
        axes = {k: sorted({m[0].get(k, getattr(m[1], k)) for m in members}) for k in TRADING_KEYS}
        metrics = {}
        for tag, (s, data) in scores.items():
            grid = evaluate_grid(s, data.mid, data.best_bid, data.best_ask, data.ts_ns, data.valid,
                                 thresholds=axes["threshold"], tp_list=axes["tp_ticks"], sl_list=axes["sl_ticks"],
                                 cooldown_list=axes["cooldown_bins"], max_hold_bins=ev.max_hold_bins,
                                 tick_size=runtime.tick_size, warmup_bins=ev.warmup_bins, entry_mode=ev.entry_mode,
                                 cost_ticks_per_trade=ev.cost_ticks_per_trade, latency_bins=ev.latency_bins,
                                 day=data.day, high=data.mid_high, low=data.mid_low)
            index = {tuple(float(grid[k][i]) for k in TRADING_KEYS): i for i in range(len(grid["threshold"]))}
            metrics[tag] = (grid, index)
        for values, app in members:
            combo = tuple(float(values.get(k, getattr(app, k))) for k in TRADING_KEYS)
            row: dict[str, Any] = {
                "param_hash": values["param_hash"], "signal": app.signal.name,
                "params_json": json.dumps({k: v for k, v in values.items() if k != "param_hash"}, sort_keys=True),
                "signal_config_json": json.dumps(signal_kwargs(app), sort_keys=True),
                "gold_config_hash": app.gold_config(pipeline).config_hash,
                **dict(zip(TRADING_KEYS, combo, strict=True)),
            }
            for tag, (grid, index) in metrics.items():
                i = index[combo]
                for name in METRIC_NAMES:
                    row[f"{tag}_{name}"] = float(grid[name][i])
            rows.append(row)
            done += 1
        if progress:
            progress(done, len(sets))
    return _finish(rows, exp, serving, pipeline, fold, train_ids, test_ids, time.perf_counter() - t0)


def _run_sampled(sampler: search.Sampler, lake: Path, exp: ExperimentSpec, serving: ServingSpec,
                 pipeline: PipelineSpec, fold: Fold, symbol: str | None,
                 progress: Callable[[int, int], None] | None, t0: float) -> pa.Table:
    """A sampler's sweep: each batch it asks for is evaluated like a grid, its in-sample rows told back; the
    rows then form one sweep (one id, one in-sample winner)."""
    rows: list[dict[str, Any]] = []
    part: list[dict[str, Any]] = []
    while batch := sampler.ask():
        part = run_fold(lake, exp, serving, pipeline, fold, symbol, param_sets=batch).to_pylist()
        sampler.tell(part)
        rows += [{k: v for k, v in r.items() if k not in _SWEEP_META} for r in part]
        if progress:
            progress(len(rows), sampler.budget)
    if not part:
        raise ValueError(f"{exp.name}: the sampler proposed no parameter set")
    return _finish(rows, exp, serving, pipeline, fold, part[0]["train_dataset_ids"].split(","),
                   [part[0]["test_dataset_id"]], time.perf_counter() - t0)


_SWEEP_META = frozenset(("sweep_id", "experiment", "experiment_hash", "serving", "serving_hash", "pipeline",
                         "pipeline_hash", "test_date", "train_dates", "train_dataset_ids", "test_dataset_id",
                         "code_version", "sweep_seconds", "created_at", "run_id", "selected"))


def experiment_hash(exp: ExperimentSpec) -> str:
    body = exp.model_dump(mode="json", exclude={"description", "automation"})  # what shapes the results
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


SELECTION_RULE = "highest in-sample total pnl among the sets with >= min_signals in-sample trades, ties by hit rate"


def select(rows: list[dict[str, Any]], min_signals: int) -> dict[str, Any] | None:
    """The walk-forward's choice among one fold's rows (SELECTION_RULE), or None when no set is eligible.
    It sees in-sample columns only: what a researcher could have known before the test day."""
    eligible = [r for r in rows if r["is_n_trades"] >= min_signals]
    return max(eligible, key=lambda r: (r["is_total_pnl_ticks"], _nan_low(r["is_hit_rate"]), r["param_hash"]),
               default=None)


def _nan_low(x: float | None) -> float:
    return -1.0 if x is None or x != x else float(x)


def _select(rows: list[dict[str, Any]], min_signals: int) -> None:
    best = select(rows, min_signals)
    for r in rows:
        r["selected"] = r is best


def _finish(rows: list[dict[str, Any]], exp: ExperimentSpec, serving: ServingSpec, pipeline: PipelineSpec,
            fold: Fold, train_ids: list[str], test_ids: list[str], seconds: float) -> pa.Table:
    _select(rows, exp.eval.min_signals)
    sweep_id = uuid.uuid4().hex[:16]
    code = dsets.git_code_version()
    meta = {
        "sweep_id": sweep_id, "experiment": exp.name, "experiment_hash": experiment_hash(exp),
        "serving": serving.name, "serving_hash": serving.spec_hash, "pipeline": pipeline.name,
        "pipeline_hash": pipeline.spec_hash, "test_date": fold.test.isoformat(),
        "train_dates": ",".join(d.isoformat() for d in fold.train), "train_dataset_ids": ",".join(train_ids),
        "test_dataset_id": test_ids[0], "code_version": code.commit, "code_dirty": code.dirty,
        "code_diff_sha256": code.diff_sha256 or "", "sweep_seconds": round(seconds, 3),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    return pa.Table.from_pylist([{**meta, "run_id": f"{sweep_id}-{r['param_hash']}", **r} for r in rows])


# ---- the append-only results store ----------------------------------------------------------------


def results_dir(lake: Path, experiment: str) -> Path:
    return lake / "research" / "results" / experiment


def append_results(lake: Path, table: pa.Table) -> Path:
    """Write one new Parquet file (never rewrite one): concurrent sweeps cannot clobber each other."""
    if table.num_rows == 0:
        raise ValueError("append_results: empty results table")
    exp = table["experiment"][0].as_py()
    sweep = table["sweep_id"][0].as_py()
    out = results_dir(lake, exp)
    out.mkdir(parents=True, exist_ok=True)
    final = out / f"{table['test_date'][0].as_py()}__{sweep}.parquet"
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp)
    return final


def read_results(lake: Path, experiment: str) -> pa.Table | None:
    """Every results row of an experiment (all sweeps ever run), or None."""
    path = results_dir(lake, experiment)
    files = sorted(p for p in path.glob("*.parquet")) if path.is_dir() else []
    if not files:
        return None
    # files written before a column existed lack it: read them under the union of every file's schema (the
    # dataset would otherwise take the first file's and drop the newer columns)
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    return pads.dataset(files, schema=schema, format="parquet").to_table()


# ---- MLflow ----------------------------------------------------------------------------------------


def tracking_uri(lake: Path) -> str:
    """`QMACHINA_MLFLOW_TRACKING_URI` (a server) when set, else a SQLite store under the lake."""
    uri = os.environ.get("QMACHINA_MLFLOW_TRACKING_URI")
    if uri:
        return uri
    (lake / "mlflow").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(lake / 'mlflow' / 'mlflow.db').resolve()}"


def log_to_mlflow(lake: Path, exp: ExperimentSpec, table: pa.Table) -> str:
    """One parent MLflow run per fold (lineage as params, the selected set's metrics, the results file
    as an artifact) and one child run per parameter set (its params, in/out-of-sample metrics)."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    mlflow.set_tracking_uri(tracking_uri(lake))
    name = exp.tracking.experiment_name or f"qmachina/{exp.name}"
    artifacts = (lake / "mlflow" / "artifacts").resolve()
    found = mlflow.get_experiment_by_name(name)
    exp_id = found.experiment_id if found else mlflow.create_experiment(name, artifact_location=artifacts.as_uri())
    client = mlflow.MlflowClient()
    rows = table.to_pylist()
    first = rows[0]
    lineage = {k: first[k] for k in ("sweep_id", "experiment_hash", "serving", "serving_hash", "pipeline",
                                       "pipeline_hash", "test_date", "train_dates", "test_dataset_id",
                                       "train_dataset_ids", "code_version", "code_dirty", "code_diff_sha256")}
    now = int(time.time() * 1000)
    parent = client.create_run(exp_id, run_name=f"{exp.name}:{first['test_date']}:{first['sweep_id'][:8]}",
                               tags={"qmachina.kind": "sweep"})
    pid = parent.info.run_id
    best = next((r for r in rows if r["selected"]), None)
    client.log_batch(pid, params=[Param(k, str(v)[:500]) for k, v in lineage.items()],
                     metrics=[Metric(k, float(v), now, 0) for k, v in (best or {}).items()
                              if k.startswith(("is_", "oos_")) and isinstance(v, float) and np.isfinite(v)])
    for r in rows:
        child = client.create_run(exp_id, run_name=r["run_id"], tags={"mlflow.parentRunId": pid,
                                                                      "qmachina.kind": "param_set"})
        params = {"param_hash": r["param_hash"], "signal": r["signal"], "gold_config_hash": r["gold_config_hash"],
                  **json.loads(r["params_json"]), **{k: lineage[k] for k in ("test_dataset_id", "code_version")}}
        metrics = [Metric(k, float(v), now, 0) for k, v in r.items()
                   if k.startswith(("is_", "oos_")) and isinstance(v, float) and np.isfinite(v)]
        client.log_batch(child.info.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()],
                         metrics=metrics, tags=[RunTag("selected", str(r["selected"]))])
        client.set_terminated(child.info.run_id)
    staged = lake / "mlflow" / "staging" / f"{first['sweep_id']}.parquet"
    with atomic_path(staged) as tmp:
        pq.write_table(table, tmp)
    try:
        client.log_artifact(pid, str(staged), artifact_path="results")
    finally:
        staged.unlink(missing_ok=True)
    client.set_terminated(pid)
    return pid
