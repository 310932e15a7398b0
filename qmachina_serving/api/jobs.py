"""`/v1/jobs`: experiments launched as Dagster runs (`experiment_job`), their status, cancel, resume and a
Server-Sent-Events feed of what the run reports.

A job is a row of the control plane's `jobs` table (workspace, author, estimate; what the quotas count) plus
the Dagster runs that carry it out (`detail.runs`: the first launch, then one per resume). Status and events
are read from Dagster (GraphQL, `qmachina_serving.dagster_api`); when the webserver cannot be reached these
routes answer 503 and nothing else in the process is affected (the stream never talks to Dagster).

Cost controls, in this order, before anything is launched: the estimate (parameter sets x test days x the
measured cost per set-day) against `job_budget_cpu_s` (409 with the estimate), then the workspace quotas
(concurrent jobs, parameter sets and CPU-seconds per day: 429), inside the control plane's write transaction
that also records the job, so two launches cannot both pass. Dagster's queued run coordinator then applies
the tag concurrency limits of `dagster_home/dagster.yaml` (global, and per `qmachina/workspace` value).
"""
# No `from __future__ import annotations`: FastAPI must resolve the routes' Annotated dependencies (locals of build).

import asyncio
import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import pyarrow.parquet as pq
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from qmachina_assets.core.control import ControlPlane, Principal
from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.specs import ConfigError, resolve_experiment
from qmachina_serving.api.common import NAME_RE, NOT_FOUND, ApiContext, control_call, not_found
from qmachina_serving.dagster_api import DagsterClient, DagsterError, DagsterUnavailable, RunEvent
from qmachina_serving.settings import ServingSettings

DAGSTER_JOB = "experiment_job"  # qmachina_assets/defs/research_jobs/jobs.py
WALL_TIME_REASON = "wall_time_exceeded"  # the sweep's failure metadata `reason` (same module)
RUN_STATUS = {"QUEUED": "queued", "NOT_STARTED": "queued", "MANAGED": "queued", "STARTING": "started",
              "STARTED": "started", "CANCELING": "started", "SUCCESS": "success", "FAILURE": "failure",
              "CANCELED": "canceled"}
ACTIVE = ("queued", "started")
RESUMABLE = ("failure", "timed_out", "canceled")
JobId = Annotated[str, PathParam(pattern=r"^j_[0-9a-f]{16}$")]
POLL_S = 0.5


class JobRequest(BaseModel):
    experiment: str = Field(pattern=NAME_RE, max_length=64)
    session_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    wall_time_s: float | None = Field(None, gt=0, description="the run's wall-time budget (default and maximum: "
                                                              "the server's job_wall_time_s)")


class Estimate(BaseModel):
    experiment: str
    sets_per_day: int
    days: int
    param_sets: int
    cost_per_set_day_s: float
    measured_from_rows: int  # results rows the cost per set-day was measured on (0: the configured default)
    estimated_cpu_seconds: float
    budget_cpu_seconds: float
    over_budget: bool


class Progress(BaseModel):
    done: int
    total: int
    eta_s: int | None = None


class JobOut(BaseModel):
    job_id: str
    workspace: str
    experiment: str
    session_id: str | None
    created_by: str
    status: str  # queued | started | success | failure | timed_out | canceled
    param_sets: int
    estimated_cpu_seconds: float
    cpu_seconds: float | None
    runs: list[str]  # Dagster run ids, first launch then one per resume
    wall_time_s: float
    progress: Progress | None
    result_run_ids: list[str]
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None


class JobList(BaseModel):
    jobs: list[JobOut]


class CostInfo(BaseModel):
    cost_per_set_day_s: float
    measured_from_rows: int
    budget_cpu_seconds: float
    wall_time_s: float


def _settings(request: Request) -> ServingSettings:
    s = getattr(request.app.state, "settings", None)
    return s if isinstance(s, ServingSettings) else ServingSettings()


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(status_code=503, detail=f"Dagster is unavailable, jobs cannot be launched or followed "
                                                 f"right now (the stream is not affected): {exc}")


def dagster_call(fn: Any) -> Any:
    try:
        return fn()
    except DagsterUnavailable as exc:
        raise _unavailable(exc) from exc
    except DagsterError as exc:
        raise HTTPException(status_code=409, detail=f"Dagster refused: {exc}") from exc


class _Measured:
    """Cost per set-day measured on the lake's results (sum of sweep seconds / rows), cached for a minute."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cache: dict[Path, tuple[float, float, int]] = {}

    def get(self, lake: Path, default: float) -> tuple[float, int]:
        with self.lock:
            hit = self.cache.get(lake)
            if hit and time.monotonic() - hit[0] < 60:
                return (hit[1] if hit[2] else default), hit[2]
        seconds, rows = 0.0, 0
        root = lake / "research" / "results"
        for f in sorted(root.glob("*/*.parquet")) if root.is_dir() else []:
            try:
                t = pq.read_table(f, columns=["sweep_seconds"])
            except (OSError, KeyError, ValueError):
                continue
            if t.num_rows:
                seconds += float(t["sweep_seconds"][0].as_py() or 0.0)  # one sweep (fold) per file
                rows += t.num_rows
        per = seconds / rows if rows and seconds > 0 else 0.0
        with self.lock:
            self.cache[lake] = (time.monotonic(), per, rows if per else 0)
        return (per, rows) if per else (default, 0)


class _EventCache:
    """Per Dagster run: the events read so far and the log cursor (the event log is append-only)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, tuple[list[RunEvent], str | None]] = {}

    def read(self, client: DagsterClient, run_id: str) -> list[RunEvent]:
        with self.lock:
            events, cursor = self.runs.get(run_id, ([], None))
        new, cursor = client.run_events(run_id, cursor)
        with self.lock:
            old, _ = self.runs.get(run_id, ([], None))
            if len(old) == len(events):  # nobody else appended meanwhile
                self.runs[run_id] = (events + new, cursor)
            return list(self.runs[run_id][0])


def job_events(client: DagsterClient, cache: _EventCache, job: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The job's events in order (their index is the SSE id) and the status they imply (None: not final)."""
    runs: list[str] = job.detail.get("runs", [])
    out: list[dict[str, Any]] = [{"event": "queued", "data": {"job_id": job.job_id, "run_id": runs[0] if runs else None,
                                                                "experiment": job.target}}]
    final: str | None = None
    for i, run_id in enumerate(runs):
        if i:
            out.append({"event": "resumed", "data": {"run_id": run_id, "parent_run_id": runs[i - 1]}})
        final = None
        step_error: RunEvent | None = None
        result_ids: list[str] = []
        for ev in cache.read(client, run_id):
            if ev.kind == "run_start":
                out.append({"event": "started", "data": {"run_id": run_id}})
            elif ev.kind == "progress":
                result_ids = ev.data.get("run_ids") or result_ids
                out.append({"event": "progress", "data": {"run_id": run_id, "done": ev.data["done"],
                                                          "total": ev.data["total"], "eta_s": ev.data.get("eta_s")}})
            elif ev.kind == "step_failure":
                step_error = ev
            elif ev.kind == "run_success":
                final = "success"
                out.append({"event": "completed", "data": {"run_id": run_id, "run_ids": result_ids,
                                                           "n_runs": len(result_ids)}})
            elif ev.kind == "run_failure":
                timed_out = step_error is not None and step_error.data.get("reason") == WALL_TIME_REASON
                final = "timed_out" if timed_out else "failure"
                out.append({"event": final if timed_out else "failed",
                            "data": {"run_id": run_id, "error": (step_error.message if step_error else ev.message),
                                     "step": step_error.data.get("step") if step_error else None}})
            elif ev.kind == "run_canceled":
                final = "canceled"
                out.append({"event": "canceled", "data": {"run_id": run_id, "reason": "user_requested"}})
    return out, final


def build(ctx: ApiContext) -> APIRouter:
    r = APIRouter(prefix="/jobs", tags=["jobs"])
    measured = _Measured()
    cache = _EventCache()
    Control = ctx.control_dep()

    def client(request: Request) -> DagsterClient:
        s = _settings(request)
        return DagsterClient(s.dagster_url, location=s.dagster_location, timeout_s=10.0)

    def estimate(request: Request, principal: Principal, name: str) -> Estimate:
        if name not in ctx.visible(request, principal, "experiment", [name]):
            raise not_found(f"no experiment {name!r}")
        try:
            exp, serving, pipeline = resolve_experiment(name, configs_dir=ctx.get_configs())
            per_day, days = exp.n_sets(serving), len(sweeps.folds(pipeline, exp))
        except FileNotFoundError as exc:
            raise not_found(f"no experiment {name!r}") from exc
        except (ConfigError, ValueError) as exc:
            raise HTTPException(status_code=422, detail=f"experiment {name!r} does not validate: {exc}") from exc
        s = _settings(request)
        cost, rows = measured.get(ctx.get_lake(request), s.job_cost_per_set_day_s)
        est = per_day * days * cost
        return Estimate(experiment=name, sets_per_day=per_day, days=days, param_sets=per_day * days,
                        cost_per_set_day_s=cost, measured_from_rows=rows, estimated_cpu_seconds=round(est, 3),
                        budget_cpu_seconds=s.job_budget_cpu_s, over_budget=est > s.job_budget_cpu_s)

    def out(job: Any, progress: Progress | None = None, error: str | None = None,
            result_ids: list[str] | None = None) -> JobOut:
        d = job.detail
        return JobOut(job_id=job.job_id, workspace=job.workspace, experiment=job.target, session_id=job.session_id,
                      created_by=job.created_by, status=job.status, param_sets=job.param_sets,
                      estimated_cpu_seconds=job.estimated_cpu_seconds, cpu_seconds=job.cpu_seconds,
                      runs=d.get("runs", []), wall_time_s=d.get("wall_time_s", 0.0),
                      progress=progress or (Progress(**d["progress"]) if d.get("progress") else None),
                      result_run_ids=result_ids if result_ids is not None else d.get("result_run_ids", []),
                      error=error if error is not None else d.get("error"), created_at=job.created_at,
                      updated_at=job.updated_at, finished_at=job.finished_at)

    def sync(cp: ControlPlane, c: DagsterClient, job: Any) -> tuple[Any, list[dict[str, Any]]]:
        """Bring the row up to date with Dagster (status, progress, result ids, error); returns (row, events)."""
        events, final = job_events(c, cache, job)
        run_id = job.detail["runs"][-1]
        info = c.run(run_id)
        status = RUN_STATUS.get(info.status, "started")
        if status == "failure" and final == "timed_out":
            status = "timed_out"
        if status not in ACTIVE and final is None:
            status = "started"  # the run ended but its last events are not in the log yet: next poll
        detail = dict(job.detail)
        prog = next((e["data"] for e in reversed(events) if e["event"] == "progress"), None)
        detail["progress"] = ({"done": prog["done"], "total": prog["total"], "eta_s": prog["eta_s"]}
                              if prog else None)
        done = next((e["data"] for e in reversed(events) if e["event"] == "completed"), None)
        if done:
            detail["result_run_ids"] = done["run_ids"]
        failed = next((e["data"] for e in reversed(events) if e["event"] in ("failed", "timed_out")), None)
        detail["error"] = failed["error"] if failed and status in ("failure", "timed_out") else None
        if status != job.status or detail != job.detail:
            cpu = (info.end_time - info.start_time) if info.end_time and info.start_time else None
            cp.set_job_status(job.job_id, status, cpu_seconds=cpu if status not in ACTIVE else None, detail=detail)
            job = cp.job(job.workspace, job.job_id)
        return job, events

    @r.get("/cost", response_model=CostInfo)
    def cost_info(request: Request, principal: ctx.caller()) -> CostInfo:
        """The cost per set-day the estimates use and the budgets (the studio's axis editor shows the estimate)."""
        s = _settings(request)
        cost, rows = measured.get(ctx.get_lake(request), s.job_cost_per_set_day_s)
        return CostInfo(cost_per_set_day_s=cost, measured_from_rows=rows, budget_cpu_seconds=s.job_budget_cpu_s,
                        wall_time_s=s.job_wall_time_s)

    @r.get("/estimate", response_model=Estimate, responses=NOT_FOUND)
    def get_estimate(request: Request, principal: ctx.caller(),
                     experiment: Annotated[str, Query(pattern=NAME_RE, max_length=64)]) -> Estimate:
        return estimate(request, principal, experiment)

    @r.post("", response_model=JobOut, status_code=201, responses={**NOT_FOUND, 409: {}, 429: {}, 503: {}})
    def launch(request: Request, body: JobRequest, principal: ctx.role("editor"), cp: Control) -> JobOut:
        """Launch the experiment as a Dagster run, after the budget and quota checks (module doc)."""
        est = estimate(request, principal, body.experiment)
        if est.over_budget:
            raise HTTPException(status_code=409, detail={
                "message": f"refused before launch: estimated cost {est.estimated_cpu_seconds:.1f} CPU-s "
                           f"({est.param_sets} parameter sets = {est.sets_per_day} sets x {est.days} days x "
                           f"{est.cost_per_set_day_s:.4g} s per set-day) exceeds the budget of "
                           f"{est.budget_cpu_seconds:.0f} s", "estimate": est.model_dump()})
        s = _settings(request)
        wall = min(body.wall_time_s or s.job_wall_time_s, s.job_wall_time_s)
        job_id = f"j_{uuid.uuid4().hex[:16]}"
        ws = principal.workspace
        tags = {"qmachina/kind": "experiment", "qmachina/workspace": ws, "qmachina/author": principal.user,
                "qmachina/job": job_id,
                "qmachina/experiment": body.experiment, "qmachina/session": body.session_id or "-"}
        conf = {"experiment": body.experiment, "wall_time_s": wall, "session_id": body.session_id or ""}
        run_config = {"ops": {"research_datasets": {"config": conf}, "experiment_sweep": {"config": conf}}}
        c = client(request)

        def tx() -> None:
            with cp.write(ws) as conn:
                cp.check_job_quota(conn, ws, est.param_sets, est.estimated_cpu_seconds)
                run_id = dagster_call(lambda: c.launch_run(DAGSTER_JOB, run_config, tags=tags))
                cp.add_job(conn, job_id=job_id, workspace=ws, kind="experiment", target=body.experiment,
                           created_by=principal.actor, param_sets=est.param_sets,
                           estimated_cpu_seconds=est.estimated_cpu_seconds, session_id=body.session_id,
                           detail={"runs": [run_id], "wall_time_s": wall, "tags": tags, "estimate": est.model_dump()})
                cp.audit_row(conn, workspace=ws, actor=principal.actor, action="job.submit", target=f"job:{job_id}",
                             payload=body.model_dump(), detail={"experiment": body.experiment, "run_id": run_id,
                                                                "param_sets": est.param_sets})

        control_call(tx)
        return out(control_call(lambda: cp.job(ws, job_id)))

    @r.get("", response_model=JobList, responses={503: {}})
    def list_jobs(request: Request, principal: ctx.caller(), cp: Control,
                  status: Annotated[str | None, Query(pattern=r"^[a-z_]{1,16}$")] = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> JobList:
        c = client(request)
        rows = control_call(lambda: cp.jobs(principal.workspace, limit=limit))
        jobs = []
        for j in rows:
            if j.status in ACTIVE:
                j, _ = dagster_call(lambda j=j: sync(cp, c, j))
            if status is None or j.status == status:
                jobs.append(out(j))
        return JobList(jobs=jobs)

    def owned_job(cp: ControlPlane, principal: Principal, job_id: str) -> Any:
        return control_call(lambda: cp.job(principal.workspace, job_id))  # another workspace's: 404

    @r.get("/{job_id}", response_model=JobOut, responses={**NOT_FOUND, 503: {}})
    def get_job(request: Request, job_id: JobId, principal: ctx.caller(), cp: Control) -> JobOut:
        job = owned_job(cp, principal, job_id)
        job, _ = dagster_call(lambda: sync(cp, client(request), job))
        return out(job)

    @r.post("/{job_id}/cancel", response_model=JobOut, responses={**NOT_FOUND, 409: {}, 503: {}})
    def cancel(request: Request, job_id: JobId, principal: ctx.role("editor"), cp: Control) -> JobOut:
        """Terminate the job's current run (a queued run is dropped from the queue)."""
        c = client(request)
        job, _ = dagster_call(lambda: sync(cp, c, owned_job(cp, principal, job_id)))
        if job.status not in ACTIVE:
            raise HTTPException(status_code=409, detail=f"job {job_id} is {job.status}: nothing to cancel")
        dagster_call(lambda: c.terminate(job.detail["runs"][-1]))
        with cp.write(principal.workspace) as conn:
            cp.audit_row(conn, workspace=principal.workspace, actor=principal.actor, action="job.cancel",
                         target=f"job:{job_id}", payload={"job_id": job_id})
        return out(job)

    @r.post("/{job_id}/resume", response_model=JobOut, responses={**NOT_FOUND, 409: {}, 429: {}, 503: {}})
    def resume(request: Request, job_id: JobId, principal: ctx.role("editor"), cp: Control) -> JobOut:
        """Re-execute the job's last run from its failure: a new run; succeeded steps are reused."""
        c = client(request)
        job, _ = dagster_call(lambda: sync(cp, c, owned_job(cp, principal, job_id)))
        if job.status not in RESUMABLE:
            raise HTTPException(status_code=409, detail=f"job {job_id} is {job.status}: only a failed, timed-out "
                                                        f"or canceled job can be resumed")
        ws = principal.workspace

        def tx() -> str:
            with cp.write(ws) as conn:
                cp.check_job_quota(conn, ws, 0, 0.0)
                new = dagster_call(lambda: c.reexecute(job.detail["runs"][-1]))
                cp.audit_row(conn, workspace=ws, actor=principal.actor, action="job.resume", target=f"job:{job_id}",
                             payload={"job_id": job_id}, detail={"run_id": new})
            return new

        new = control_call(tx)
        detail = {**job.detail, "runs": [*job.detail["runs"], new], "error": None}
        cp.set_job_status(job_id, "queued", detail=detail)
        return out(cp.job(ws, job_id))

    @r.get("/{job_id}/events", responses={**NOT_FOUND, 503: {}},
           response_class=StreamingResponse)
    async def events(request: Request, job_id: JobId, principal: ctx.caller(), cp: Control,
                     last_event_id: Annotated[int | None, Header(alias="Last-Event-ID")] = None,
                     after: Annotated[int | None, Query(ge=-1, description="resume after this event id (a "
                                                                           "reloaded page's EventSource)")] = None,
                     ) -> StreamingResponse:
        """Server-Sent Events: `queued`, `started`, `progress {done, total, eta_s}`, `completed {run_ids}`,
        `failed {error}`, `timed_out`, `canceled`, `resumed`; each with its index as `id`, so a reconnect sends
        Last-Event-ID (or `?after=`) and gets only what followed. Ends after a final event (`end`)."""
        c = client(request)
        start = max(x for x in (last_event_id, after, -1) if x is not None)
        job = owned_job(cp, principal, job_id)
        job, first = await asyncio.to_thread(lambda: dagster_call(lambda: sync(cp, c, job)))

        async def gen():
            nonlocal job
            sent, evs, quiet = start, first, 0.0
            while True:
                for i in range(sent + 1, len(evs)):
                    yield f"id: {i}\nevent: {evs[i]['event']}\ndata: {json.dumps(evs[i]['data'])}\n\n"
                    sent = i
                if job.status not in ACTIVE:
                    yield f"event: end\ndata: {json.dumps({'status': job.status})}\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(POLL_S)
                quiet += POLL_S
                if quiet >= 15:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                try:
                    fresh = await asyncio.to_thread(cp.job, job.workspace, job.job_id)
                    job, evs = await asyncio.to_thread(sync, cp, c, fresh)
                except DagsterUnavailable as exc:
                    yield f"event: unavailable\ndata: {json.dumps({'message': str(exc)})}\n\n"
                    await asyncio.sleep(2.0)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return r


__all__ = ["build"]
