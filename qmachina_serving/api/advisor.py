"""`/v1/experiments/{name}/...` decision support (core/research/advisor.py): what the studio's compare step
draws and the follow-up sweeps it offers. Read-only: nothing here promotes, writes or starts anything."""
# No `from __future__ import annotations`: FastAPI must resolve the routes' Annotated dependencies (locals of build).

from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from qmachina_assets.core.research import advisor
from qmachina_assets.core.research.evaluation import METRIC_NAMES
from qmachina_serving.api.common import NOT_FOUND, REFUSED, ApiContext, ExperimentName, not_found, refused

METRICS: tuple[str, ...] = tuple(f"{t}_{m}" for t in ("oos", "is") for m in METRIC_NAMES)
Metric = Literal[METRICS]  # type: ignore[valid-type]
AXIS_RE = r"^[a-z_][a-z0-9_.]*$"
REPLAY_CACHE_SIZE = 16
UNKNOWN_AXIS = {**NOT_FOUND, 422: {"description": "unknown axis or metric"}}


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

    return r
