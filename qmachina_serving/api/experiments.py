"""`/v1/experiments/...`: experiments with results in the lake, their runs (filter, sort), a run's detail
and its replayed equity curves."""
# No `from __future__ import annotations`: FastAPI must resolve the routes' Annotated dependencies (locals of build).

import datetime as dt
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow.parquet as pq
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.evaluation import METRIC_NAMES
from qmachina_assets.core.research.run_equity import RunEquity, replay_run
from qmachina_serving.api.common import (
    NAME_RE,
    NOT_FOUND,
    REFUSED,
    ApiContext,
    ExperimentName,
    RunId,
    clean,
    json_obj,
    matches,
    metric,
    not_found,
    refused,
    split,
    str_or_none,
)

KEY_METRICS: tuple[str, ...] = (
    "is_n_trades", "is_total_pnl_ticks", "is_hit_rate",
    "oos_n_trades", "oos_total_pnl_ticks", "oos_mean_pnl_ticks", "oos_hit_rate", "oos_profit_factor",
    "oos_max_drawdown_ticks", "oos_sharpe_like_per_day",
)
SORT_KEYS: tuple[str, ...] = ("test_date", "run_id", "param_hash", *(f"{t}_{m}" for t in ("is", "oos")
                                                                  for m in METRIC_NAMES))
SortKey = Literal[SORT_KEYS]  # type: ignore[valid-type]
LINEAGE_STR = ("sweep_id", "experiment", "experiment_hash", "serving", "serving_hash", "pipeline", "pipeline_hash",
                "test_date", "test_dataset_id", "code_version", "gold_config_hash", "created_at")


class ExperimentSummary(BaseModel):
    name: str
    result_files: int
    rows: int
    test_dates: list[str]


class RunSummary(BaseModel):
    run_id: str
    sweep_id: str | None
    param_hash: str | None
    signal: str | None
    test_date: str | None
    selected: bool
    params: dict[str, Any]
    metrics: dict[str, float | None]  # KEY_METRICS


class RunList(BaseModel):
    experiment: str
    total: int  # rows matching the filters (before offset/limit)
    runs: list[RunSummary]


class RunDetail(BaseModel):
    run_id: str
    experiment: str | None
    sweep_id: str | None
    param_hash: str | None
    signal: str | None
    selected: bool
    params: dict[str, Any]
    signal_config: dict[str, Any] | None
    threshold: float | None
    tp_ticks: float | None
    sl_ticks: float | None
    cooldown_bins: float | None
    test_date: str | None
    train_dates: list[str]
    test_dataset_id: str | None
    train_dataset_ids: list[str]
    experiment_hash: str | None
    serving: str | None
    serving_hash: str | None
    pipeline: str | None
    pipeline_hash: str | None
    gold_config_hash: str | None
    code_version: str | None
    sweep_seconds: float | None
    created_at: str | None
    metrics: dict[str, float | None]  # every is_* and oos_* column
    other: dict[str, Any]  # any further columns of the results row


def _results(lake: Path, name: str) -> list[dict[str, Any]]:
    table = sweeps.read_results(lake, name)
    if table is None:
        raise not_found(f"no results of experiment {name!r}")
    return table.to_pylist()


def _run_row(lake: Path, name: str, run_id: str) -> dict[str, Any]:
    row = next((x for x in _results(lake, name) if x.get("run_id") == run_id), None)
    if row is None:
        raise not_found(f"no run {run_id!r} in experiment {name!r}")
    return row


def _summary(row: dict[str, Any]) -> RunSummary:
    return RunSummary(run_id=str(row["run_id"]), sweep_id=str_or_none(row.get("sweep_id")),
                      param_hash=str_or_none(row.get("param_hash")), signal=str_or_none(row.get("signal")),
                      test_date=str_or_none(row.get("test_date")), selected=bool(row.get("selected")),
                      params=json_obj(row.get("params_json")) or {},
                      metrics={k: metric(row.get(k)) for k in KEY_METRICS})


_DETAIL_KEYS = {"run_id", "params_json", "signal_config_json", "train_dates", "train_dataset_ids", "selected",
                "threshold", "tp_ticks", "sl_ticks", "cooldown_bins", "sweep_seconds", "signal", "param_hash",
                *LINEAGE_STR}


def _detail(row: dict[str, Any]) -> RunDetail:
    return RunDetail(
        run_id=str(row["run_id"]), signal=str_or_none(row.get("signal")), selected=bool(row.get("selected")),
        params=json_obj(row.get("params_json")) or {}, signal_config=json_obj(row.get("signal_config_json")),
        train_dates=split(row.get("train_dates")), train_dataset_ids=split(row.get("train_dataset_ids")),
        param_hash=str_or_none(row.get("param_hash")),
        **{k: metric(row.get(k)) for k in ("threshold", "tp_ticks", "sl_ticks", "cooldown_bins", "sweep_seconds")},
        **{k: str_or_none(row.get(k)) for k in LINEAGE_STR},
        metrics={k: metric(v) for k, v in sorted(row.items()) if k.startswith(("is_", "oos_"))},
        other={k: clean(v if isinstance(v, str | int | float | bool) or v is None else str(v))
               for k, v in sorted(row.items()) if k not in _DETAIL_KEYS and not k.startswith(("is_", "oos_"))},
    )


def _sort_value(row: dict[str, Any], key: str) -> tuple[int, Any]:
    v = row.get(key)
    if key in ("test_date", "run_id", "param_hash"):
        return (0, str(v)) if v is not None else (1, "")
    x = metric(v)
    return (0, x) if x is not None else (1, 0.0)


EQUITY_CACHE_SIZE = 32


def build(ctx: ApiContext) -> APIRouter:
    r = APIRouter()
    Lake = ctx.lake_dep()
    Caller = ctx.caller()
    Name = ctx.owned("experiment", ExperimentName)
    lock = ctx.lock
    equity_cache: OrderedDict[tuple[Any, ...], RunEquity] = OrderedDict()  # a replay takes seconds

    @r.get("/experiments", response_model=list[ExperimentSummary], tags=["experiments"])
    def list_experiments(lake_dir: Lake, request: Request, who: Caller) -> list[ExperimentSummary]:
        root = sweeps.results_dir(lake_dir, "_").parent
        out = []
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            files = sorted(d.glob("*.parquet")) if d.is_dir() else []
            if not files or not matches(NAME_RE, d.name):
                continue
            rows = 0
            for f in files:
                try:
                    rows += pq.read_metadata(f).num_rows
                except (OSError, ValueError):
                    continue
            dates = sorted({f.name.split("__", 1)[0] for f in files})
            out.append(ExperimentSummary(name=d.name, result_files=len(files), rows=rows, test_dates=dates))
        mine = ctx.visible(request, who, "experiment", [e.name for e in out])
        return [e for e in out if e.name in mine]

    @r.get("/experiments/{name}/runs", response_model=RunList, responses=NOT_FOUND, tags=["experiments"])
    def list_runs(
        name: Name,
        lake_dir: Lake,
        test_date: Annotated[dt.date | None, Query(description="walk-forward test day")] = None,
        signal: Annotated[str | None, Query(pattern=NAME_RE, max_length=64)] = None,
        selected: Annotated[bool | None, Query(description="only in-sample winners (true) or the others")] = None,
        min_oos_trades: Annotated[int | None, Query(ge=0, le=10**9)] = None,
        sort: Annotated[SortKey, Query(description="column to sort by")] = "oos_total_pnl_ticks",
        order: Annotated[Literal["asc", "desc"], Query()] = "desc",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
    ) -> RunList:
        rows = _results(lake_dir, name)
        if test_date is not None:
            rows = [x for x in rows if str(x.get("test_date")) == test_date.isoformat()]
        if signal is not None:
            rows = [x for x in rows if x.get("signal") == signal]
        if selected is not None:
            rows = [x for x in rows if bool(x.get("selected")) == selected]
        if min_oos_trades is not None:
            rows = [x for x in rows if (metric(x.get("oos_n_trades")) or 0.0) >= min_oos_trades]
        present = [x for x in rows if _sort_value(x, sort)[0] == 0]
        missing = [x for x in rows if _sort_value(x, sort)[0] == 1]
        present.sort(key=lambda x: _sort_value(x, sort)[1], reverse=order == "desc")
        rows = present + missing  # missing / non-finite values last either way
        return RunList(experiment=name, total=len(rows), runs=[_summary(x) for x in rows[offset:offset + limit]])

    @r.get("/experiments/{name}/runs/{run_id}", response_model=RunDetail, responses=NOT_FOUND,
           tags=["experiments"])
    def show_run(name: Name, run_id: RunId, lake_dir: Lake) -> RunDetail:
        return _detail(_run_row(lake_dir, name, run_id))

    @r.get("/experiments/{name}/runs/{run_id}/equity", response_model=RunEquity, responses=REFUSED,
           tags=["experiments"])
    def run_equity(name: Name, run_id: RunId, lake_dir: Lake) -> RunEquity:
        row = _run_row(lake_dir, name, run_id)
        key = (str(lake_dir), name, run_id)  # results are append-only and run ids carry their sweep's uuid
        with lock:
            if key in equity_cache:
                equity_cache.move_to_end(key)
                return equity_cache[key]
        try:
            out = replay_run(lake_dir, row, ctx.get_configs())
        except (ValueError, OSError) as exc:  # ReplayError, a dataset that does not load, a refused row
            raise refused(ValueError(f"cannot replay run {run_id!r}: {exc}")) from exc
        with lock:
            equity_cache[key] = out
            while len(equity_cache) > EQUITY_CACHE_SIZE:
                equity_cache.popitem(last=False)
        return out

    return r
