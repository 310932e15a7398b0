"""`/v1/studio`: Model Studio sessions (control plane, per workspace): gated steps, the decision log, the specs
they generate (versioned config files, `core/research/studio.py`), the manual YAML mode, the data preview and
promotion through the promotion sensor's gate (`candidates.candidate` → every failed rule) and the registry's
preflight (`Registry.promote_run`, every issue).

Steps: data → gold → signal → evaluation (writes `studio_<sid>_v<n>` serving + experiment specs, registers the
experiment to the workspace, asks Dagster to reload its code location so the sweep asset appears) → run (a
finished job of that experiment, `/v1/jobs`) → compare → promote (`POST …/promote`).
"""
# No `from __future__ import annotations`: FastAPI must resolve the routes' Annotated dependencies (locals of build).

import contextlib
import datetime as dt
import threading
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow.parquet as pq
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, ValidationError

from qmachina_assets.core.control import studio as sessions
from qmachina_assets.core.control.studio import STEPS, Decision, StudioSession
from qmachina_assets.core.gold import dsl
from qmachina_assets.core.gold.dsl import DslValidationError
from qmachina_assets.core.registry import PreflightError
from qmachina_assets.core.registry.candidates import GateFailure, candidate
from qmachina_assets.core.research import datasets as dsets
from qmachina_assets.core.research import studio as specs_mod
from qmachina_assets.core.research import studio_gold
from qmachina_assets.core.research.specs import (
    KNOWN_SIGNALS,
    SIGNAL_PARAMS,
    ConfigError,
    ScoringConfig,
    SignalSpec,
    load_pipeline,
    load_serving,
    resolve_experiment,
)
from qmachina_assets.core.research.studio_gold import DayNotBuilt, GoldPreview, SampleError, SpecCheck
from qmachina_serving.api.common import ALIAS_RE, NAME_RE, NOT_FOUND, ApiContext, control_call, not_found
from qmachina_serving.dagster_api import DagsterClient, DagsterError, DagsterUnavailable
from qmachina_serving.settings import ServingSettings

SessionId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{12}$")]
Step = Annotated[str, PathParam(pattern=r"^(data|gold|signal|evaluation|run|compare)$")]
PREVIEW_FIELDS = ("mid_price", "flow_score", "composite", "spread_ticks", "rest_depth")


class NewSession(BaseModel):
    title: str = Field("", max_length=200)


class Commit(BaseModel):
    payload: dict[str, Any]


class SessionList(BaseModel):
    sessions: list[StudioSession]


class Decisions(BaseModel):
    decisions: list[Decision]


class PipelineInfo(BaseModel):
    name: str
    symbol: str
    dates: list[str]
    window: str | None
    description: str


class Catalog(BaseModel):
    pipelines: list[PipelineInfo]
    gold_dsls: list[str]  # Gold DSL specs of configs/gold/ (the gold step's DSL mode)
    bases: list[str]  # serving specs a studio model can start from (their wire schema and layout)
    signals: dict[str, list[str] | None]  # signal -> allowed params (None: checked by its own model)
    scoring_keys: list[str]
    steps: list[str]


class FieldStats(BaseModel):
    name: str
    min: float | None
    q25: float | None
    median: float | None
    q75: float | None
    max: float | None
    nan_share: float


class DayPreview(BaseModel):
    date: str
    dataset_id: str | None
    built: bool
    n_bins: int = 0
    ts_first: str | None = None
    ts_last: str | None = None
    price_min: float | None = None  # the day's mid price range (two-sided bins)
    price_max: float | None = None
    fields: list[FieldStats] = []
    heatmap: list[list[float]] = []  # a small (time x k) grid of the day's first gold/silver field


class Preview(BaseModel):
    pipeline: str
    days: list[DayPreview]
    more_days: int = 0  # capture days past MAX_PREVIEW_DAYS, not previewed (ask for one with `date`)


MAX_PREVIEW_DAYS = 10
#: Row groups of a day's gold read for the heatmap and the composite's quartiles (evenly spaced; ~1024 bins each).
MAX_HEATMAP_GROUPS = 48


class GoldSpecFile(BaseModel):
    """A shipped Gold DSL spec's file text, loaded into the gold step's editor as a starting point."""

    name: str
    yaml: str
    spec_hash: str | None  # None when the file does not validate (the editor's Validate lists why)


class GoldSpecText(BaseModel):
    spec_yaml: str = Field(max_length=studio_gold.MAX_SPEC_CHARS)


class GoldPreviewRequest(GoldSpecText):
    date: dt.date | None = None  # a capture date of the data step (default: its first with silver)
    sample_bins: int = Field(2000, ge=1, le=studio_gold.MAX_SAMPLE_BINS)
    start_bin: int = Field(0, ge=0)


#: Gold previews computing at once in this process (each bounded by MAX_SAMPLE_BINS); more is a 429.
PREVIEW_SLOTS = threading.BoundedSemaphore(2)


class YamlLayers(BaseModel):
    pipeline_yaml: str | None = None
    serving_yaml: str = Field(max_length=200_000)
    experiment_yaml: str = Field(max_length=200_000)


class YamlCheck(BaseModel):
    ok: bool
    error: str | None = None
    experiment: str | None = None
    serving: str | None = None
    sets_per_day: int | None = None


class PromoteRequest(BaseModel):
    alias: str = Field(pattern=ALIAS_RE, max_length=64)
    allow_dirty: bool = False
    reason: str = Field("promoted from Model Studio", max_length=500)


class Gate(BaseModel):
    experiment: str
    passes: bool
    failures: list[GateFailure]
    candidate: dict[str, Any] | None


class Promoted(BaseModel):
    alias: str
    version_id: str
    created: bool
    stream_url: str


def _stats(name: str, values: np.ndarray) -> FieldStats:
    v = values.astype("float64")
    finite = v[np.isfinite(v)]
    nan_share = float(1 - finite.size / v.size) if v.size else 0.0
    if not finite.size:
        return FieldStats(name=name, min=None, q25=None, median=None, q75=None, max=None, nan_share=nan_share)
    q = np.quantile(finite, [0, 0.25, 0.5, 0.75, 1])
    return FieldStats(name=name, min=q[0], q25=q[1], median=q[2], q75=q[3], max=q[4], nan_share=nan_share)


def _day_preview(lake: Path, pipeline: Any, day: dt.date) -> DayPreview:
    try:
        ds_id = dsets.dataset_id_for(lake, pipeline, day, pipeline.capture.symbol)
    except (OSError, ValueError, LookupError):
        return DayPreview(date=day.isoformat(), dataset_id=None, built=False)
    d = dsets.dataset_dir(lake, ds_id)
    if not (d / dsets.BINS_NAME).is_file():
        return DayPreview(date=day.isoformat(), dataset_id=ds_id, built=False)
    bins = pq.read_table(d / dsets.BINS_NAME)
    out = DayPreview(date=day.isoformat(), dataset_id=ds_id, built=True, n_bins=bins.num_rows)
    ts = next((c for c in ("ts_ns", "bin_end_ns", "ts_event") if c in bins.column_names), None)
    if ts and bins.num_rows:
        col = bins[ts].to_numpy()
        out.ts_first = dt.datetime.fromtimestamp(int(col[0]) / 1e9, dt.UTC).isoformat()
        out.ts_last = dt.datetime.fromtimestamp(int(col[-1]) / 1e9, dt.UTC).isoformat()
    out.fields = [_stats(c, bins[c].to_numpy(zero_copy_only=False)) for c in bins.column_names
                  if c in PREVIEW_FIELDS or c.startswith("mid")][:6]
    if "mid_price" in bins.column_names:
        mid = bins["mid_price"].to_numpy(zero_copy_only=False).astype("float64")
        mid = mid[np.isfinite(mid) & (mid > 0)]
        if mid.size:
            out.price_min, out.price_max = float(mid.min()), float(mid.max())
    gold_path = d / dsets.GOLD_NAME
    if gold_path.is_file():
        f = pq.ParquetFile(gold_path)  # bounded: at most MAX_HEATMAP_GROUPS row groups, evenly spaced
        groups = sorted({int(i) for i in np.linspace(0, f.num_row_groups - 1, min(f.num_row_groups,
                                                                                   MAX_HEATMAP_GROUPS))})
        g = f.read_row_groups(groups, columns=["bin_seq", "k", "composite"]) if groups else \
            pq.read_table(gold_path, columns=["bin_seq", "k", "composite"])
        out.fields += [_stats("gold.composite", g["composite"].to_numpy(zero_copy_only=False))]
        # heatmap: composite at k by bin, 48 time buckets x every 5th k
        seq, k = g["bin_seq"].to_numpy(), g["k"].to_numpy()
        val = np.nan_to_num(g["composite"].to_numpy(zero_copy_only=False).astype("float64"))
        if seq.size:
            ks = np.unique(k)[::5]
            tb = ((seq - seq.min()) * 48 // max(1, seq.max() - seq.min() + 1)).astype(int)
            grid = np.zeros((48, ks.size))
            counts = np.zeros((48, ks.size))
            idx = np.searchsorted(ks, k)
            ok = (idx < ks.size) & (ks[np.minimum(idx, ks.size - 1)] == k)
            np.add.at(grid, (tb[ok], idx[ok]), val[ok])
            np.add.at(counts, (tb[ok], idx[ok]), 1)
            out.heatmap = np.round(np.divide(grid, np.maximum(counts, 1)), 4).tolist()
    return out


def build(ctx: ApiContext) -> APIRouter:
    r = APIRouter(prefix="/studio", tags=["studio"])
    Control = ctx.control_dep()
    Reg = ctx.registry_dep()

    def settings(request: Request) -> ServingSettings:
        s = getattr(request.app.state, "settings", None)
        return s if isinstance(s, ServingSettings) else ServingSettings()

    def bad(exc: Exception) -> HTTPException:
        if isinstance(exc, DslValidationError):  # every problem, each naming its node
            return HTTPException(status_code=422, detail={"message": str(exc), "errors": [
                e.model_dump() for e in exc.errors]})
        return HTTPException(status_code=422, detail=str(exc))

    def reload_dagster(request: Request) -> None:
        """Ask Dagster to reload the code location, in the background (best effort): a reload re-imports it
        (tens of seconds on a busy machine); new specs' assets appear after it, runs do not wait for it."""
        s = settings(request)
        client = DagsterClient(s.dagster_url, location=s.dagster_location, timeout_s=120)

        def reload() -> None:
            with contextlib.suppress(DagsterUnavailable, DagsterError):
                client.reload()

        threading.Thread(target=reload, name="dagster-reload", daemon=True).start()

    def session_experiment(s: StudioSession) -> str:
        ev = s.steps.get("evaluation")
        if ev is None:
            raise HTTPException(status_code=409, detail="the evaluation step is not committed: no experiment yet")
        return ev.payload["experiment"]

    def next_version(cp: Any, ws: str, sid: str, configs: Path) -> int:
        n = 1 + sum(1 for d in sessions.decisions(cp, ws, sid) if d.step == "evaluation")
        while (configs / "experiments" / f"{specs_mod.spec_name(sid, n)}.yaml").exists():
            n += 1
        return n

    def publish_specs(request: Request, cp: Any, principal: Any, sid: str, serving: dict, experiment: dict,
                      pipeline: dict | None = None) -> dict:
        """Write the versioned files, register the experiment to the workspace, reload Dagster (best effort)."""
        configs = ctx.get_configs()
        try:
            specs_mod.write_specs(specs_mod.dump(serving), specs_mod.dump(experiment), configs,
                                  specs_mod.dump(pipeline) if pipeline is not None else None)
        except (ConfigError, ValueError) as exc:
            raise bad(exc) from exc
        control_call(lambda: cp.register_resource(principal.workspace, "experiment", experiment["name"],
                                                  actor=principal.actor))
        reload_dagster(request)  # experiment_job reads the spec at run time; the sweep asset appears after
        exp, srv, pipe = resolve_experiment(experiment["name"], configs_dir=configs)
        return {"experiment": exp.name, "serving": srv.name, "pipeline": pipe.name, "sets_per_day": exp.n_sets(srv),
                "dagster_reload": "requested"}

    @r.get("/catalog", response_model=Catalog)
    def catalog(principal: ctx.caller()) -> Catalog:
        configs = ctx.get_configs()
        pipes = []
        for p in sorted((configs / "pipelines").glob("*.yaml")):
            try:
                spec = load_pipeline(p.stem, configs_dir=configs)
            except (ConfigError, OSError):
                continue
            c = spec.capture
            window = f"{c.start_et}-{c.end_et} ET" if getattr(c, "start_et", None) else None
            pipes.append(PipelineInfo(name=spec.name, symbol=c.symbol, dates=[d.isoformat() for d in spec.days],
                                      window=window, description=spec.description))
        bases = []
        for p in sorted((configs / "serving").glob("*.yaml")):
            if p.stem.startswith("studio_"):
                continue
            try:
                srv = load_serving(p.stem, configs_dir=configs)
            except (ConfigError, OSError):
                continue
            if srv.signal is not None:
                bases.append(srv.name)
        return Catalog(pipelines=[p for p in pipes if not p.name.startswith("studio_")], bases=bases,
                       gold_dsls=sorted(p.stem for p in (configs / "gold").glob("*.yaml")),
                       signals={k: (list(v) if v is not None else None) for k, v in SIGNAL_PARAMS.items()
                                if k in KNOWN_SIGNALS},
                       scoring_keys=list(ScoringConfig.model_fields), steps=list(STEPS))

    @r.get("/preview", response_model=Preview, responses=NOT_FOUND)
    def preview(request: Request, principal: ctx.caller(),
                pipeline: Annotated[str, Query(pattern=NAME_RE, max_length=64)],
                date: Annotated[dt.date | None, Query()] = None) -> Preview:
        """Bins, time range, price range, quartiles of the main fields and a small heatmap of each built day of a
        pipeline (the first MAX_PREVIEW_DAYS, or the one `date`; a day not built yet says so: the run builds it)."""
        try:
            spec = load_pipeline(pipeline, configs_dir=ctx.get_configs())
        except FileNotFoundError as exc:
            raise not_found(f"no pipeline {pipeline!r}") from exc
        except ConfigError as exc:
            raise bad(exc) from exc
        lake = ctx.get_lake(request)
        if date is not None and date not in spec.days:
            raise HTTPException(status_code=422, detail=f"date: {date} is not a capture date of {spec.name}")
        days = [date] if date is not None else spec.days[:MAX_PREVIEW_DAYS]
        return Preview(pipeline=spec.name, days=[_day_preview(lake, spec, d) for d in days],
                       more_days=0 if date is not None else max(0, len(spec.days) - MAX_PREVIEW_DAYS))

    @r.post("/sessions", response_model=StudioSession, status_code=201)
    def create(body: NewSession, principal: ctx.role("editor"), cp: Control) -> StudioSession:
        return control_call(lambda: sessions.create_session(cp, principal.workspace, actor=principal.actor,
                                                            title=body.title))

    @r.get("/sessions", response_model=SessionList)
    def list_(principal: ctx.caller(), cp: Control) -> SessionList:
        return SessionList(sessions=control_call(lambda: sessions.list_sessions(cp, principal.workspace)))

    @r.get("/sessions/{sid}", response_model=StudioSession, responses=NOT_FOUND)
    def get(sid: SessionId, principal: ctx.caller(), cp: Control) -> StudioSession:
        return control_call(lambda: sessions.get_session(cp, principal.workspace, sid))

    @r.get("/sessions/{sid}/decisions", response_model=Decisions, responses=NOT_FOUND)
    def decision_log(sid: SessionId, principal: ctx.caller(), cp: Control) -> Decisions:
        return Decisions(decisions=control_call(lambda: sessions.decisions(cp, principal.workspace, sid)))

    @r.post("/sessions/{sid}/steps/{step}", response_model=StudioSession, responses={**NOT_FOUND, 409: {}})
    def commit(request: Request, sid: SessionId, step: Step, body: Commit, principal: ctx.role("editor"),
               cp: Control) -> StudioSession:
        """Commit a step after validating its payload (409 when an earlier step is not committed)."""
        ws = principal.workspace
        s = control_call(lambda: sessions.get_session(cp, ws, sid))
        missing = [x for x in STEPS[:STEPS.index(step)] if x not in s.steps]
        if missing:
            raise HTTPException(status_code=409, detail=f"step {step!r} needs {', '.join(missing)} committed first")
        configs = ctx.get_configs()
        payload = dict(body.payload)
        try:
            if step == "data":
                choice = specs_mod.DataChoice.model_validate(payload)
                pipe = load_pipeline(choice.pipeline, configs_dir=configs)
                days = {d.isoformat() for d in pipe.days}
                if choice.dates and not set(choice.dates) <= days:
                    raise ValueError(f"dates: {sorted(set(choice.dates) - days)} are not capture dates of "
                                     f"{pipe.name} ({', '.join(sorted(days))})")
                payload = choice.model_dump()
            elif step == "gold":
                choice = specs_mod.GoldChoice.model_validate(payload)
                ScoringConfig.model_validate(choice.scoring)
                if choice.dsl_yaml is not None:  # typed in the editor: a new versioned spec file
                    gname, gspec = studio_gold.write_gold_spec(configs, sid, choice.dsl_yaml)
                    choice = choice.model_copy(update={"mode": "dsl", "gold_dsl": gname, "dsl_yaml": None,
                                                       "spec_hash": gspec.spec_hash})
                    reload_dagster(request)  # its gold_dsl_<name> asset appears on the next load
                if choice.mode == "dsl" and not (choice.gold_dsl and (configs / "gold" / f"{choice.gold_dsl}.yaml")
                                                 .is_file()):
                    raise ValueError(f"gold_dsl: no Gold DSL spec {choice.gold_dsl!r} in {configs / 'gold'}")
                payload = choice.model_dump()
            elif step == "signal":
                choice = specs_mod.SignalChoice.model_validate(payload)
                SignalSpec.model_validate({"name": choice.name, "params": choice.params})
                payload = choice.model_dump()
            elif step == "evaluation":
                ev = specs_mod.EvalChoice.model_validate(payload)
                name = specs_mod.spec_name(sid, next_version(cp, ws, sid, configs))
                data = specs_mod.DataChoice.model_validate(s.steps["data"].payload)
                gold = specs_mod.GoldChoice.model_validate(s.steps["gold"].payload)
                serving, experiment = specs_mod.build_specs(
                    name, data, gold, specs_mod.SignalChoice.model_validate(s.steps["signal"].payload), ev, configs)
                pipeline = specs_mod.build_pipeline(name, data, gold, configs)
                payload = {**ev.model_dump(),
                           **publish_specs(request, cp, principal, sid, serving, experiment, pipeline)}
            elif step == "run":
                job = control_call(lambda: cp.job(ws, str(payload.get("job_id", ""))))
                if job.target != session_experiment(s):
                    raise HTTPException(status_code=409, detail=f"job {job.job_id} ran {job.target!r}, not this "
                                                                f"session's experiment {session_experiment(s)!r}")
                if job.status != "success":
                    raise HTTPException(status_code=409, detail=f"job {job.job_id} is {job.status}: the run step "
                                                                "needs a finished job")
                payload = {"job_id": job.job_id, "status": job.status,
                           "run_ids": job.detail.get("result_run_ids", []), "experiment": job.target}
            elif step == "compare":
                payload = {"run_id": str(payload.get("run_id") or "")[:200], "note": str(payload.get("note") or
                                                                                    "")[:2000]}
        except (ValidationError, ConfigError, ValueError, OSError) as exc:  # DslValidationError too
            raise bad(exc) from exc
        return control_call(lambda: sessions.commit_step(cp, ws, sid, step, payload, actor=principal.actor))

    @r.get("/gold/specs/{spec}", response_model=GoldSpecFile, responses=NOT_FOUND)
    def gold_spec(spec: Annotated[str, PathParam(pattern=NAME_RE, max_length=64)],
                  principal: ctx.caller()) -> GoldSpecFile:
        """The exact text of `configs/gold/<spec>.yaml` (the gold step's picker lists these) for the editor; the
        name pattern keeps the lookup inside that folder (a path is a 422, an unknown name a 404)."""
        path = ctx.get_configs() / "gold" / f"{spec}.yaml"
        try:
            text = path.read_text()
        except FileNotFoundError as exc:
            raise not_found(f"spec: no Gold DSL spec {spec!r} in configs/gold") from exc
        try:
            spec_hash: str | None = dsl.load_spec(path).spec_hash
        except DslValidationError:
            spec_hash = None
        return GoldSpecFile(name=spec, yaml=text, spec_hash=spec_hash)

    @r.post("/sessions/{sid}/gold/validate", response_model=SpecCheck, responses=NOT_FOUND)
    def gold_validate(sid: SessionId, body: GoldSpecText, principal: ctx.role("editor"), cp: Control) -> SpecCheck:
        """Validate a Gold DSL spec typed in the gold step's editor with the core's models and checks: every
        problem with its node and its line in the text (ok false), or the spec's hash and outputs."""
        control_call(lambda: sessions.get_session(cp, principal.workspace, sid))
        return studio_gold.check_spec_text(body.spec_yaml)[1]

    @r.post("/sessions/{sid}/gold/preview", response_model=GoldPreview, responses={**NOT_FOUND, 409: {}, 429: {}})
    def gold_preview(request: Request, sid: SessionId, body: GoldPreviewRequest, principal: ctx.role("editor"),
                     cp: Control) -> GoldPreview:
        """The spec's outputs on at most MAX_SAMPLE_BINS bins of one day of the data step's pipeline (its dataset's
        silver, else the silver partition), computed by the batch kernel: quantiles, NaN share, correlation with
        the built-in features and a histogram per output. 422 names the field (an invalid spec: every error)."""
        s = control_call(lambda: sessions.get_session(cp, principal.workspace, sid))
        if "data" not in s.steps:
            raise HTTPException(status_code=409, detail="the data step is not committed: no day to preview on")
        spec, check = studio_gold.check_spec_text(body.spec_yaml)
        if spec is None:
            raise HTTPException(status_code=422, detail={"message": "spec_yaml: the Gold DSL spec is invalid",
                                                         "errors": [e.model_dump() for e in check.errors]})
        data = specs_mod.DataChoice.model_validate(s.steps["data"].payload)
        try:
            pipe = load_pipeline(data.pipeline, configs_dir=ctx.get_configs())
        except (ConfigError, OSError) as exc:
            raise bad(exc) from exc
        days = [d for d in pipe.days if not data.dates or d.isoformat() in data.dates]
        if body.date is not None and body.date not in days:
            raise HTTPException(status_code=422, detail=f"date: {body.date} is not a day of the data step "
                                                        f"({', '.join(d.isoformat() for d in days)})")
        if not PREVIEW_SLOTS.acquire(blocking=False):
            raise HTTPException(status_code=429, detail="two gold previews are computing: retry in a moment")
        try:
            lake = ctx.get_lake(request)
            last: SampleError = DayNotBuilt("date: the data step has no day")
            for day in [body.date] if body.date is not None else days:  # default: its first built day
                try:
                    return studio_gold.preview_spec(spec, lake, pipe, day, body.sample_bins, body.start_bin)
                except DayNotBuilt as exc:
                    last = exc
                except SampleError as exc:
                    raise bad(exc) from exc
            raise HTTPException(status_code=409, detail=str(last))
        finally:
            PREVIEW_SLOTS.release()

    @r.get("/sessions/{sid}/yaml", response_model=YamlLayers, responses={**NOT_FOUND, 409: {}})
    def get_yaml(sid: SessionId, principal: ctx.caller(), cp: Control) -> YamlLayers:
        """The three config layers of the session's current experiment (manual mode edits these)."""
        s = control_call(lambda: sessions.get_session(cp, principal.workspace, sid))
        name = session_experiment(s)
        configs = ctx.get_configs()
        exp, srv, pipe = resolve_experiment(name, configs_dir=configs)
        return YamlLayers(pipeline_yaml=(configs / "pipelines" / f"{pipe.name}.yaml").read_text(),
                          serving_yaml=(configs / "serving" / f"{srv.name}.yaml").read_text(),
                          experiment_yaml=(configs / "experiments" / f"{exp.name}.yaml").read_text())

    @r.post("/sessions/{sid}/yaml", response_model=YamlCheck, responses={**NOT_FOUND, 409: {}})
    def post_yaml(request: Request, sid: SessionId, body: YamlLayers, principal: ctx.role("editor"), cp: Control,
                  dry_run: bool = False) -> YamlCheck:
        """Manual mode: validate the serving + experiment YAML with the same models as every spec; unless
        `dry_run`, write them as the session's next version and commit data, gold, signal and evaluation from
        them (the guided steps then show what the YAML says)."""
        ws = principal.workspace
        control_call(lambda: sessions.get_session(cp, ws, sid))
        configs = ctx.get_configs()
        if body.pipeline_yaml:
            return YamlCheck(ok=False, error="the pipeline layer is read-only here: pick a pipeline in the data step")
        try:
            exp, srv, pipe = specs_mod.validate_texts(body.serving_yaml, body.experiment_yaml, configs)
        except (ConfigError, ValueError, OSError, TypeError, KeyError) as exc:  # a missing reference is an OSError
            return YamlCheck(ok=False, error=str(exc))
        if dry_run:
            return YamlCheck(ok=True, experiment=exp.name, serving=srv.name, sets_per_day=exp.n_sets(srv))
        import yaml

        name = specs_mod.spec_name(sid, next_version(cp, ws, sid, configs))
        serving, experiment = yaml.safe_load(body.serving_yaml), yaml.safe_load(body.experiment_yaml)
        serving["name"], experiment["name"], experiment["serving"] = name, name, name
        published = publish_specs(request, cp, principal, sid, serving, experiment)
        axes = exp.axes(srv)
        steps = {
            "data": {"pipeline": pipe.name},
            "gold": {"mode": "builtin", "scoring": srv.scoring.model_dump(exclude_none=True)},
            "signal": {"name": srv.signal.name, "params": srv.signal.params, "base_serving": srv.name},
            "evaluation": {"thresholds": axes["threshold"], "tp_ticks": axes["tp_ticks"],
                           "sl_ticks": axes["sl_ticks"], "cooldown_bins": axes["cooldown_bins"],
                           "scoring": {k.split(".", 1)[1]: v for k, v in axes.items() if k.startswith("scoring.")},
                           "mode": "yaml", **published},
        }
        for step, payload in steps.items():
            control_call(lambda st=step, p=payload: sessions.commit_step(cp, ws, sid, st, p, actor=principal.actor))
        return YamlCheck(ok=True, experiment=name, serving=name, sets_per_day=published["sets_per_day"])

    @r.get("/sessions/{sid}/gate", response_model=Gate, responses={**NOT_FOUND, 409: {}})
    def gate(request: Request, sid: SessionId, principal: ctx.caller(), cp: Control) -> Gate:
        """The promotion sensor's verdict on the session's experiment: its candidate and every failed rule."""
        s = control_call(lambda: sessions.get_session(cp, principal.workspace, sid))
        name = session_experiment(s)
        exp, _, _ = resolve_experiment(name, configs_dir=ctx.get_configs())
        cand = candidate(ctx.get_lake(request), exp)
        if cand is None:
            return Gate(experiment=name, passes=False, candidate=None, failures=[GateFailure(
                rule="selection", message="no walk-forward selection yet (no finished sweep, or no parameter set "
                                          "with enough in-sample trades on the latest test day)")])
        return Gate(experiment=name, passes=cand.passes, failures=cand.failures,
                    candidate=cand.model_dump(exclude={"failures"}))

    @r.post("/sessions/{sid}/promote", response_model=Promoted, responses={**NOT_FOUND, 409: {}})
    def promote(request: Request, sid: SessionId, body: PromoteRequest, principal: ctx.role("admin"), cp: Control,
                reg: Reg) -> Promoted:
        """Publish the candidate through the registry (preflight + gate in one transaction) and point `alias`
        at it; 409 lists every failed rule or preflight issue."""
        ws = principal.workspace
        s = control_call(lambda: sessions.get_session(cp, ws, sid))
        missing = [x for x in STEPS[:STEPS.index("promote")] if x not in s.steps]
        if missing:
            raise HTTPException(status_code=409, detail=f"promote needs {', '.join(missing)} committed first")
        name = session_experiment(s)
        configs = ctx.get_configs()
        exp, _, _ = resolve_experiment(name, configs_dir=configs)
        cand = candidate(ctx.get_lake(request), exp)
        if cand is None or (cand.failures and not (body.allow_dirty and all(f.rule == "dirty_code"
                                                                               for f in cand.failures))):
            failures = cand.failures if cand else [GateFailure(rule="selection", message="no selection yet")]
            raise HTTPException(status_code=409, detail={
                "message": f"the gate of {name} refused the promotion ({len(failures)} failed rule(s))",
                "issues": [{"kind": f.rule, "message": f.message, "run_id": f.run_id} for f in failures]})
        try:
            res = reg.promote_run(name, cand.run_ids, alias=body.alias, actor=principal.actor, reason=body.reason,
                                  expected_version_id=reg.current(body.alias, ws), configs_dir=configs,
                                  allow_dirty=body.allow_dirty, workspace=ws)
        except PreflightError as exc:
            raise HTTPException(status_code=409, detail={
                "message": str(exc), "issues": [i.model_dump(mode="json") for i in exc.issues]}) from exc
        vid = res.version.version_id
        control_call(lambda: sessions.commit_step(cp, ws, sid, "promote", {"alias": body.alias, "version_id": vid,
                                                                           "run_ids": cand.run_ids},
                                                  actor=principal.actor, status="promoted"))
        return Promoted(alias=body.alias, version_id=vid, created=res.created, stream_url=f"./?serving={body.alias}")

    return r


__all__ = ["build"]
