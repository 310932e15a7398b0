"""Decision support: `/v1/experiments/{name}/...` (core/research/advisor.py), what the studio's compare step
draws and the follow-up sweeps it offers, and `/v1/datasets/{id}/redundancy/...` (core/research/redundancy.py),
near-duplicate gold outputs and signal features. Read-only: nothing here promotes, writes or starts anything."""
# No `from __future__ import annotations`: FastAPI must resolve the routes' Annotated dependencies (locals of build).

from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel

from qmachina_assets.core.gold.redundancy import RedundancyReport
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.core.research import advisor, search
from qmachina_assets.core.research import datasets as dsets
from qmachina_assets.core.research import redundancy as red
from qmachina_assets.core.research.evaluation import METRIC_NAMES
from qmachina_assets.core.research.specs import KNOWN_SIGNALS, ConfigError, resolve_experiment
from qmachina_serving.api.common import (
    NAME_RE,
    NOT_FOUND,
    REFUSED,
    ApiContext,
    DatasetId,
    ExperimentName,
    not_found,
    refused,
)

METRICS: tuple[str, ...] = tuple(f"{t}_{m}" for t in ("oos", "is") for m in METRIC_NAMES)
Metric = Literal[METRICS]  # type: ignore[valid-type]
AXIS_RE = r"^[a-z_][a-z0-9_.]*$"
REPLAY_CACHE_SIZE = 16
UNKNOWN_AXIS = {**NOT_FOUND, 422: {"description": "unknown axis or metric"}}
RankCorr = Annotated[float, Query(gt=0, le=1, description="flag pairs with |Spearman| at or above this")]
R2 = Annotated[float, Query(gt=0, le=1, description="flag features the others explain with R² at or above this")]
SignalName = Annotated[str, Query(pattern=NAME_RE, max_length=64)]


class SensitivityReport(BaseModel):
    experiment: str
    metric: str
    test_dates: list[str]
    n_rows: int
    swept_axes: dict[str, int]  # axis -> distinct values
    axes: list[advisor.AxisSensitivity]


class Suggestions(BaseModel):
    experiment: str
    suggestions: list[advisor.Suggestion]
    note: str | None = None


def build(ctx: ApiContext) -> APIRouter:
    r = APIRouter(tags=["advisor"])
    Lake = ctx.lake_dep()
    lock = ctx.lock
    replays: OrderedDict[tuple[Any, ...], advisor.Replayed] = OrderedDict()  # a replay fits and scores

    def results(lake: Path, name: str) -> advisor.Results:
        res = advisor.load_results(lake, name)
        if res is None:
            raise not_found(f"no results of experiment {name!r}")
        return res

    def unknown(exc: KeyError) -> HTTPException:
        return HTTPException(status_code=422, detail=str(exc.args[0]) if exc.args else str(exc))

    def replayed(lake: Path, name: str, res: advisor.Results) -> advisor.Replayed:
        key = (str(lake), name, tuple(x["run_id"] for x in res.selected()))  # results rows never change
        with lock:
            if key in replays:
                replays.move_to_end(key)
                return replays[key]
        out = advisor.replay_trades(lake, res, ctx.get_configs())
        with lock:
            replays[key] = out
            while len(replays) > REPLAY_CACHE_SIZE:
                replays.popitem(last=False)
        return out

    @r.get("/experiments/{name}/sensitivity", response_model=SensitivityReport, responses=NOT_FOUND)
    def sensitivity(name: ExperimentName, lake_dir: Lake,
                    metric: Annotated[Metric, Query(description="results column drawn")] = advisor.DEFAULT_METRIC,
                    axis: Annotated[str | None, Query(pattern=AXIS_RE, max_length=80,
                                                      description="one swept axis (default: all)")] = None,
                    ) -> SensitivityReport:
        """Per swept axis: the metric at each value with its spread over the other axes and the folds."""
        res = results(lake_dir, name)
        try:
            axes = [advisor.sensitivity(res, a, metric) for a in ([axis] if axis else list(res.axes))]
        except KeyError as exc:
            raise unknown(exc) from exc
        return SensitivityReport(experiment=name, metric=metric, test_dates=res.test_dates, n_rows=len(res.current),
                                 swept_axes={k: len(v) for k, v in res.axes.items()}, axes=axes)

    @r.get("/experiments/{name}/heatmap", response_model=advisor.Heatmap, responses=UNKNOWN_AXIS)
    def heatmap(name: ExperimentName, lake_dir: Lake,
                x: Annotated[str, Query(pattern=AXIS_RE, max_length=80, examples=["threshold"])],
                y: Annotated[str, Query(pattern=AXIS_RE, max_length=80, examples=["cooldown_bins"])],
                metric: Annotated[Metric, Query()] = advisor.DEFAULT_METRIC) -> advisor.Heatmap:
        """Median of the metric over the other axes and the folds for each (x, y) pair of values."""
        res = results(lake_dir, name)
        try:
            return advisor.heatmap(res, x, y, metric)
        except KeyError as exc:
            raise unknown(exc) from exc

    @r.get("/experiments/{name}/robustness", response_model=advisor.Robustness, responses=NOT_FOUND)
    def robustness(name: ExperimentName, lake_dir: Lake, thresholds: Annotated[advisor.Thresholds, Query()],
                   replay: Annotated[bool, Query(description="replay the selected runs for their trades (hour of "
                                                             "day, expectancy interval, trade moments)")] = True,
                   ) -> advisor.Robustness:
        """Robustness flags of the walk-forward's choices, each with its figure and threshold."""
        res = results(lake_dir, name)
        chain, note = advisor.spec_chain(name, ctx.get_configs())
        rep = replayed(lake_dir, name, res) if replay else advisor.Replayed(None, None, "replay not asked for")
        return advisor.robustness(res, cost_ticks_per_trade=chain[0].eval.cost_ticks_per_trade if chain else 0.0,
                                  thresholds=thresholds, oos_trades=rep.oos, is_trades=rep.is_candidate,
                                  note=rep.note or (f"{note}; cost taken as 0" if note else None))

    @r.get("/experiments/{name}/suggestions", response_model=Suggestions, responses=REFUSED)
    def suggestions(name: ExperimentName, lake_dir: Lake,
                    thresholds: Annotated[advisor.Thresholds, Query()]) -> Suggestions:
        """Follow-up sweeps with their reasons, each a validated ExperimentSpec (and its YAML) to submit."""
        res = results(lake_dir, name)
        chain, note = advisor.spec_chain(name, ctx.get_configs())
        if chain is None:
            raise refused(ValueError(note))
        return Suggestions(experiment=name, suggestions=advisor.suggest(res, *chain, thresholds=thresholds))

    def dataset(lake: Path, dataset_id: str) -> None:
        try:
            m = dsets.read_dataset_manifest(dsets.dataset_dir(lake, dataset_id))
        except (OSError, ValueError) as exc:
            raise refused(ValueError(f"dataset {dataset_id}: manifest does not validate: {exc}")) from exc
        if m is None:
            raise not_found(f"no dataset {dataset_id!r}")

    @r.get("/datasets/{dataset_id}/redundancy/gold", response_model=RedundancyReport, responses=REFUSED)
    def gold_redundancy(dataset_id: DatasetId, lake_dir: Lake, rank_corr: RankCorr = red.RANK_CORR,
                        r2: R2 = red.EXPLAINED_R2) -> RedundancyReport:
        """Near-duplicate gold outputs of a dataset (built-in and Gold DSL) over its valid cells."""
        dataset(lake_dir, dataset_id)
        try:
            return red.gold_redundancy(lake_dir, [dataset_id], rank_corr=rank_corr, r2=r2)
        except (OSError, ValueError) as exc:
            raise refused(exc) from exc

    @r.get("/datasets/{dataset_id}/redundancy/signals", response_model=RedundancyReport, responses=REFUSED)
    def signal_redundancy(dataset_id: DatasetId, lake_dir: Lake,
                          signals: Annotated[list[SignalName], Query(min_length=1, max_length=16,
                                                                     description="signal names (repeat)")],
                          rank_corr: RankCorr = red.RANK_CORR, r2: R2 = red.EXPLAINED_R2) -> RedundancyReport:
        """Near-duplicate signal scores (statistical) and features (ML) over a dataset's valid bins."""
        unknown_names = [x for x in signals if x not in KNOWN_SIGNALS]
        if unknown_names:
            raise HTTPException(status_code=422, detail=f"unknown signal(s) {', '.join(unknown_names)} "
                                                         f"(known: {', '.join(KNOWN_SIGNALS)})")
        dataset(lake_dir, dataset_id)
        try:
            return red.signal_redundancy(lake_dir, [dataset_id], signals, locked_instrument().tick_size,
                                         rank_corr=rank_corr, r2=r2)
        except (OSError, ValueError) as exc:  # a signal without named features, a dataset that does not load
            raise refused(exc) from exc

    @r.get("/automl/templates", response_model=list[search.AutoMLTemplate])
    def templates() -> list[search.AutoMLTemplate]:
        """Named AutoML templates: a signal family and a parameter regime each."""
        return list(search.TEMPLATES.values())

    @r.get("/automl/templates/{template}/expand", response_model=list[search.Expanded], responses=REFUSED)
    def expand(template: Annotated[str, PathParam(pattern=NAME_RE, max_length=64, examples=["thresholds_grid"])],
               like: Annotated[str, Query(pattern=NAME_RE, max_length=64, examples=["flow_score_sweep"],
                                          description="experiment whose evaluation, walk-forward and gate to copy")],
               ) -> list[search.Expanded]:
        """The template's experiments (one per signal, with its serving spec), validated, as specs and YAML."""
        t = search.TEMPLATES.get(template)
        if t is None:
            raise not_found(f"unknown template {template!r} (known: {', '.join(search.TEMPLATES)})")
        try:
            chain = resolve_experiment(like, configs_dir=ctx.get_configs())
        except (ConfigError, OSError) as exc:
            raise not_found(f"experiment {like!r}: {exc}") from exc
        try:
            return search.expand_template(t, *chain)
        except (ConfigError, ValueError) as exc:  # the like experiment's settings refuse a template's spec
            raise refused(exc) from exc

    return r
