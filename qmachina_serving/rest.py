"""The REST surface under `/v1`: serving versions and aliases, experiment results, datasets.

Endpoints (every one has a pydantic response model, so `/openapi.json` is complete):
- `GET  /v1/serving/versions` — published versions (oldest first) with the aliases pointing at them.
- `GET  /v1/serving/versions/{version_id}` — one version (an id or an alias): spec, runtime snapshot, lineage.
- `GET  /v1/serving/aliases`, `GET /v1/serving/aliases/{alias}` — where each alias points.
- `GET  /v1/serving/aliases/{alias}/history` — the alias's audit rows, oldest first.
- `POST /v1/serving/diff {a, b}` — field-by-field diff of two versions' (or aliases') runtime snapshots.
- `POST /v1/serving/aliases/{alias}/activate {version_id, reason, actor}` — audited repoint; the registry
  re-checks the version against the instrument lock and the wire schema (its preflight) before writing.
- `POST /v1/serving/aliases/{alias}/rollback {reason, actor}` — back to the version active before.
- `GET  /v1/experiments` — experiments with results in the lake.
- `GET  /v1/experiments/{name}/runs?test_date&signal&selected&min_oos_trades&sort&order&limit&offset` — one
  row per results row (one parameter set on one walk-forward fold): params + key metrics.
- `GET  /v1/experiments/{name}/runs/{run_id}` — the full row: every is_/oos_ metric and the lineage fields.
- `GET  /v1/experiments/{name}/runs/{run_id}/equity` — the run's in-sample and out-of-sample equity curves,
  replayed (run_equity.replay_run: results rows hold no trades); cached per run (results rows never change).
- `GET  /v1/datasets`, `GET /v1/datasets/{dataset_id}` — stored research datasets, a dataset's manifest.

Errors: 404 unknown version/alias/experiment/run/dataset; 422 invalid input (names in paths are matched by a
regex, so nothing reaches outside the lake's directories); 409 a refused write (`detail.issues` lists the
preflight issues), a rollback with nothing to roll back to, stored state that does not validate, or a run that
cannot be replayed (its specs changed since the sweep, its datasets left the lake); 503 when
the registry database cannot be reached.
Non-finite metrics (NaN, inf) are returned as null.

Wiring: `router` takes the lake and registry from `request.app.state.settings` (a `ServingSettings`) and opens
one Registry per app (kept on `app.state.rest_registry`); `build_router(registry_factory, lake, configs)` injects
them (the factory is called once, lazily; `configs` is the specs tree replays resolve, default `configs_root()`).
Both carry the `/v1` prefix: `app.include_router(router)`.
"""

import datetime as dt
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow.parquet as pq
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from qmachina_assets.core import datasets as dsets
from qmachina_assets.core import sweeps
from qmachina_assets.core.evaluation import METRIC_NAMES
from qmachina_assets.core.paths import configs_root
from qmachina_assets.core.registry import (
    AliasEvent,
    AliasRecord,
    PreflightError,
    PublishedVersion,
    Registry,
    RegistryError,
    UnknownVersionError,
    VersionSummary,
)
from qmachina_assets.core.registry.preflight import PreflightIssue
from qmachina_assets.core.registry.snapshot import SnapshotDiff
from qmachina_assets.core.run_equity import RunEquity, replay_run

NAME_RE = r"^[a-z0-9][a-z0-9_]*$"  # specs.NAME_PATTERN: aliases, version ids, experiment names, signals
# NAME_RE without the `sv_` prefix reserved for version ids (no look-ahead: pydantic's regex engine has none)
ALIAS_RE = r"^(?:[a-rt-z0-9][a-z0-9_]*|s|s[a-uw-z0-9_][a-z0-9_]*|sv|sv[a-z0-9][a-z0-9_]*)$"
VERSION_ID_RE = r"^sv_[0-9a-f]{16}$"
RUN_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
DATASET_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # one path component: no '/', cannot start with '.'

RegistryFactory = Callable[[], Registry]

Alias = Annotated[str, PathParam(pattern=ALIAS_RE, max_length=64, description="an alias (not `sv_...`)",
                                  examples=["live"])]
AliasOrId = Annotated[str, PathParam(pattern=NAME_RE, max_length=64, description="a version id or an alias",
                                      examples=["live"])]
ExperimentName = Annotated[str, PathParam(pattern=NAME_RE, max_length=64, examples=["flow_score_sweep"])]
RunId = Annotated[str, PathParam(pattern=RUN_ID_RE, max_length=160)]
DatasetId = Annotated[str, PathParam(pattern=DATASET_ID_RE, max_length=200)]

KEY_METRICS: tuple[str, ...] = (
    "is_n_trades", "is_total_pnl_ticks", "is_hit_rate",
    "oos_n_trades", "oos_total_pnl_ticks", "oos_mean_pnl_ticks", "oos_hit_rate", "oos_profit_factor",
    "oos_max_drawdown_ticks", "oos_sharpe_like_per_day",
)
SORT_KEYS: tuple[str, ...] = ("test_date", "run_id", "param_hash", *(f"{t}_{m}" for t in ("is", "oos")
                                                                  for m in METRIC_NAMES))
SortKey = Literal[SORT_KEYS]  # type: ignore[valid-type]
_LINEAGE_STR = ("sweep_id", "experiment", "experiment_hash", "serving", "serving_hash", "pipeline", "pipeline_hash",
                "test_date", "test_dataset_id", "code_version", "gold_config_hash", "created_at")


# ---- request / response models -----------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DiffRequest(_Body):
    a: str = Field(pattern=NAME_RE, max_length=64, description="version id or alias", examples=["live"])
    b: str = Field(pattern=NAME_RE, max_length=64, description="version id or alias", examples=["live"])


class _Who(_Body):
    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S", description="kept in the audit",
                        examples=["roll back: worse fills"])
    actor: str = Field(min_length=1, max_length=128, pattern=r"\S", description="who makes the change",
                       examples=["ops"])


class ActivateRequest(_Who):
    version_id: str = Field(pattern=VERSION_ID_RE)


class RollbackRequest(_Who):
    pass


class AliasChange(BaseModel):
    alias: str
    version_id: str  # where the alias points now
    changed: bool  # False: it already pointed there (no audit row)
    event: AliasEvent | None


class ErrorDetail(BaseModel):
    detail: Any


class RefusedDetail(BaseModel):
    message: str
    subject: str | None = None
    issues: list[PreflightIssue] = []


class Refused(BaseModel):
    detail: RefusedDetail


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


class DatasetSummary(BaseModel):
    dataset_id: str
    date: str
    symbol: str
    pipeline_name: str
    content_hash: str
    n_bins: int
    valid_bins: int
    created_at: str


# ---- helpers -----------------------------------------------------------------------------------------


def _clean(v: Any) -> Any:
    """JSON-safe value: non-finite floats -> None (recursively)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def _metric(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _json_obj(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return _clean(obj) if isinstance(obj, dict) else None


def _split(v: Any) -> list[str]:
    return [x for x in str(v or "").split(",") if x]


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _not_found(what: str) -> HTTPException:
    return HTTPException(status_code=404, detail=what)


def _refused(exc: Exception) -> HTTPException:
    if isinstance(exc, PreflightError):
        detail = RefusedDetail(message=str(exc), subject=exc.subject, issues=exc.issues)
    else:
        detail = RefusedDetail(message=str(exc))
    return HTTPException(status_code=409, detail=detail.model_dump(mode="json"))


def _registry_call(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except UnknownVersionError as exc:
        raise _not_found(str(exc)) from exc
    except (PreflightError, RegistryError) as exc:  # refused write, nothing to roll back to, integrity
        raise _refused(exc) from exc
    except SQLAlchemyError as exc:  # the database is unreachable or failing: not the client's fault, not a bug
        raise _unavailable(exc) from exc


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(status_code=503, detail=f"serving registry unavailable: {type(exc).__name__}: {exc}")


def _open(factory: Callable[[], Registry]) -> Registry:
    try:
        return factory()
    except (SQLAlchemyError, OSError, RegistryError) as exc:
        raise _unavailable(exc) from exc


def _results(lake: Path, name: str) -> list[dict[str, Any]]:
    table = sweeps.read_results(lake, name)
    if table is None:
        raise _not_found(f"no results of experiment {name!r}")
    return table.to_pylist()


def _run_row(lake: Path, name: str, run_id: str) -> dict[str, Any]:
    row = next((x for x in _results(lake, name) if x.get("run_id") == run_id), None)
    if row is None:
        raise _not_found(f"no run {run_id!r} in experiment {name!r}")
    return row


def _summary(row: dict[str, Any]) -> RunSummary:
    return RunSummary(run_id=str(row["run_id"]), sweep_id=_str(row.get("sweep_id")),
                      param_hash=_str(row.get("param_hash")), signal=_str(row.get("signal")),
                      test_date=_str(row.get("test_date")), selected=bool(row.get("selected")),
                      params=_json_obj(row.get("params_json")) or {},
                      metrics={k: _metric(row.get(k)) for k in KEY_METRICS})


_DETAIL_KEYS = {"run_id", "params_json", "signal_config_json", "train_dates", "train_dataset_ids", "selected",
                "threshold", "tp_ticks", "sl_ticks", "cooldown_bins", "sweep_seconds", "signal", "param_hash",
                *_LINEAGE_STR}


def _detail(row: dict[str, Any]) -> RunDetail:
    return RunDetail(
        run_id=str(row["run_id"]), signal=_str(row.get("signal")), selected=bool(row.get("selected")),
        params=_json_obj(row.get("params_json")) or {}, signal_config=_json_obj(row.get("signal_config_json")),
        train_dates=_split(row.get("train_dates")), train_dataset_ids=_split(row.get("train_dataset_ids")),
        param_hash=_str(row.get("param_hash")),
        **{k: _metric(row.get(k)) for k in ("threshold", "tp_ticks", "sl_ticks", "cooldown_bins", "sweep_seconds")},
        **{k: _str(row.get(k)) for k in _LINEAGE_STR},
        metrics={k: _metric(v) for k, v in sorted(row.items()) if k.startswith(("is_", "oos_"))},
        other={k: _clean(v if isinstance(v, str | int | float | bool) or v is None else str(v))
               for k, v in sorted(row.items()) if k not in _DETAIL_KEYS and not k.startswith(("is_", "oos_"))},
    )


def _sort_value(row: dict[str, Any], key: str) -> tuple[int, Any]:
    v = row.get(key)
    if key in ("test_date", "run_id", "param_hash"):
        return (0, str(v)) if v is not None else (1, "")
    x = _metric(v)
    return (0, x) if x is not None else (1, 0.0)


# ---- the router --------------------------------------------------------------------------------------


EQUITY_CACHE_SIZE = 32


def build_router(registry_factory: RegistryFactory | None = None, lake: Path | None = None,
                 configs: Path | None = None) -> APIRouter:
    """The `/v1` REST router. Without arguments the lake and registry come from the app's settings."""
    lock = threading.Lock()
    cache: dict[str, Registry] = {}
    equity_cache: OrderedDict[tuple[Any, ...], RunEquity] = OrderedDict()  # a replay takes seconds

    def get_lake(request: Request) -> Path:
        return Path(lake) if lake is not None else request.app.state.settings.lake

    def get_registry(request: Request) -> Registry:
        with lock:
            if registry_factory is not None:
                if "r" not in cache:
                    cache["r"] = _open(registry_factory)
                return cache["r"]
            reg = getattr(request.app.state, "rest_registry", None)
            if reg is None:
                settings = request.app.state.settings
                reg = _open(lambda: Registry(url=settings.registry_url, lake=settings.lake))
                request.app.state.rest_registry = reg
            return reg

    Reg = Annotated[Registry, Depends(get_registry)]
    Lake = Annotated[Path, Depends(get_lake)]
    not_found = {404: {"model": ErrorDetail}}
    refused = {404: {"model": ErrorDetail}, 409: {"model": Refused}}
    down = {503: {"model": ErrorDetail}}  # the registry database cannot be reached

    r = APIRouter(prefix="/v1")

    # -- serving --

    @r.get("/serving/versions", response_model=list[VersionSummary], responses=down, tags=["serving"])
    def list_versions(reg: Reg) -> list[VersionSummary]:
        return _registry_call(reg.list_versions)

    @r.get("/serving/versions/{version_id}", response_model=PublishedVersion, responses=refused | down,
           tags=["serving"])
    def show_version(version_id: AliasOrId, reg: Reg) -> PublishedVersion:
        return _registry_call(lambda: reg.resolve(version_id))

    @r.get("/serving/aliases", response_model=list[AliasRecord], responses=down, tags=["serving"])
    def list_aliases(reg: Reg) -> list[AliasRecord]:
        return _registry_call(reg.list_aliases)

    @r.get("/serving/aliases/{alias}", response_model=AliasRecord, responses=not_found | down, tags=["serving"])
    def show_alias(alias: Alias, reg: Reg) -> AliasRecord:
        for a in _registry_call(reg.list_aliases):
            if a.name == alias:
                return a
        raise _not_found(f"no alias {alias!r}")

    @r.get("/serving/aliases/{alias}/history", response_model=list[AliasEvent], responses=not_found | down,
           tags=["serving"])
    def alias_history(alias: Alias, reg: Reg) -> list[AliasEvent]:
        events = _registry_call(lambda: reg.history(alias))
        if not events:
            raise _not_found(f"no alias {alias!r}")
        return events

    @r.post("/serving/diff", response_model=SnapshotDiff, responses=refused | down, tags=["serving"])
    def diff(body: DiffRequest, reg: Reg) -> SnapshotDiff:
        d = _registry_call(lambda: reg.diff(body.a, body.b))
        return SnapshotDiff.model_validate(_clean(d.model_dump(mode="json")))

    @r.post("/serving/aliases/{alias}/activate", response_model=AliasChange, responses=refused | down, tags=["serving"])
    def activate(alias: Alias, body: Annotated[ActivateRequest, Body()], reg: Reg) -> AliasChange:
        ev = _registry_call(lambda: reg.activate(alias, body.version_id, actor=body.actor, reason=body.reason))
        return AliasChange(alias=alias, version_id=body.version_id, changed=ev is not None, event=ev)

    @r.post("/serving/aliases/{alias}/rollback", response_model=AliasChange, responses=refused | down, tags=["serving"])
    def rollback(alias: Alias, body: Annotated[RollbackRequest, Body()], reg: Reg) -> AliasChange:
        ev = _registry_call(lambda: reg.rollback(alias, actor=body.actor, reason=body.reason))
        return AliasChange(alias=alias, version_id=ev.to_version, changed=True, event=ev)

    # -- experiments --

    @r.get("/experiments", response_model=list[ExperimentSummary], tags=["experiments"])
    def list_experiments(lake_dir: Lake) -> list[ExperimentSummary]:
        root = sweeps.results_dir(lake_dir, "_").parent
        out = []
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            files = sorted(d.glob("*.parquet")) if d.is_dir() else []
            if not files or not _matches(NAME_RE, d.name):
                continue
            rows = 0
            for f in files:
                try:
                    rows += pq.read_metadata(f).num_rows
                except (OSError, ValueError):
                    continue
            dates = sorted({f.name.split("__", 1)[0] for f in files})
            out.append(ExperimentSummary(name=d.name, result_files=len(files), rows=rows, test_dates=dates))
        return out

    @r.get("/experiments/{name}/runs", response_model=RunList, responses=not_found, tags=["experiments"])
    def list_runs(
        name: ExperimentName,
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
            rows = [x for x in rows if (_metric(x.get("oos_n_trades")) or 0.0) >= min_oos_trades]
        present = [x for x in rows if _sort_value(x, sort)[0] == 0]
        missing = [x for x in rows if _sort_value(x, sort)[0] == 1]
        present.sort(key=lambda x: _sort_value(x, sort)[1], reverse=order == "desc")
        rows = present + missing  # missing / non-finite values last either way
        return RunList(experiment=name, total=len(rows), runs=[_summary(x) for x in rows[offset:offset + limit]])

    @r.get("/experiments/{name}/runs/{run_id}", response_model=RunDetail, responses=not_found,
           tags=["experiments"])
    def show_run(name: ExperimentName, run_id: RunId, lake_dir: Lake) -> RunDetail:
        return _detail(_run_row(lake_dir, name, run_id))

    @r.get("/experiments/{name}/runs/{run_id}/equity", response_model=RunEquity, responses=refused,
           tags=["experiments"])
    def run_equity(name: ExperimentName, run_id: RunId, lake_dir: Lake) -> RunEquity:
        row = _run_row(lake_dir, name, run_id)
        key = (str(lake_dir), name, run_id)  # results are append-only and run ids carry their sweep's uuid
        with lock:
            if key in equity_cache:
                equity_cache.move_to_end(key)
                return equity_cache[key]
        try:
            out = replay_run(lake_dir, row, Path(configs) if configs is not None else configs_root())
        except (ValueError, OSError) as exc:  # ReplayError, a dataset that does not load, a refused row
            raise _refused(ValueError(f"cannot replay run {run_id!r}: {exc}")) from exc
        with lock:
            equity_cache[key] = out
            while len(equity_cache) > EQUITY_CACHE_SIZE:
                equity_cache.popitem(last=False)
        return out

    # -- datasets --

    @r.get("/datasets", response_model=list[DatasetSummary], tags=["datasets"])
    def list_datasets(lake_dir: Lake) -> list[DatasetSummary]:
        out = []
        for ds in dsets.iter_dataset_ids(lake_dir):
            try:
                m = dsets.read_dataset_manifest(dsets.dataset_dir(lake_dir, ds))
            except (OSError, ValueError, ValidationError):
                continue  # an unreadable manifest: `GET /v1/datasets/{id}` says why
            if m is None:
                continue
            out.append(DatasetSummary(dataset_id=m.dataset_id, date=m.date, symbol=m.symbol,
                                      pipeline_name=m.pipeline_name, content_hash=m.content_hash, n_bins=m.n_bins,
                                      valid_bins=m.valid_bins, created_at=m.created_at))
        return out

    @r.get("/datasets/{dataset_id}", response_model=dsets.DatasetManifest, responses=refused, tags=["datasets"])
    def show_dataset(dataset_id: DatasetId, lake_dir: Lake) -> dsets.DatasetManifest:
        try:
            m = dsets.read_dataset_manifest(dsets.dataset_dir(lake_dir, dataset_id))
        except (OSError, ValueError, ValidationError) as exc:
            raise _refused(ValueError(f"dataset {dataset_id}: manifest does not validate: {exc}")) from exc
        if m is None:
            raise _not_found(f"no dataset {dataset_id!r}")
        return m

    return r


def _matches(pattern: str, s: str) -> bool:
    return re.fullmatch(pattern, s) is not None


router = build_router()

__all__ = ["build_router", "router"]
