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
- `GET  /v1/experiments/{name}/sensitivity?metric&axis` — per swept axis, the metric at each value with its spread
  over the other axes and folds (median, quartiles, min/max, per-fold medians, best set), the selected value.
- `GET  /v1/experiments/{name}/heatmap?x&y&metric` — median of the metric for each pair of values of two axes.
- `GET  /v1/experiments/{name}/robustness?replay&<thresholds>` — robustness flags (edge, narrow peak, IS vs OOS,
  few trades with intervals, fold/hour concentration, deflated Sharpe), each with its figure and threshold; the
  selected runs are replayed for their trades (cached), or the figures fall back to the rows' counts (`note`).
- `GET  /v1/experiments/{name}/suggestions?<thresholds>` — rule-based follow-up sweeps, each with its reason, the
  validated ExperimentSpec and its YAML (409 when the experiment's specs no longer load).
- `GET  /v1/datasets/{dataset_id}/redundancy/gold?rank_corr&r2` — near-duplicate gold outputs of a dataset.
- `GET  /v1/datasets/{dataset_id}/redundancy/signals?signals=..&rank_corr&r2` — near-duplicate signal scores and
  ML features on a dataset.
- `GET  /v1/automl/templates`, `GET /v1/automl/templates/{template}/expand?like=EXPERIMENT` — named AutoML
  templates and the validated serving + experiment specs one expands to (the studio submits them).
- `GET  /v1/datasets`, `GET /v1/datasets/{dataset_id}` — stored research datasets, a dataset's manifest.
- `POST /v1/jobs {experiment, session_id?, wall_time_s?}` — launch an experiment as a Dagster run (budget and
  quotas checked first); `GET /v1/jobs[?status=]`, `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/cancel|resume`,
  `GET /v1/jobs/{id}/events` (SSE), `GET /v1/jobs/estimate?experiment=`, `GET /v1/jobs/cost` (`api/jobs.py`).
- `/v1/studio/…` — Model Studio (`api/studio.py`): `catalog`, `preview?pipeline=`, `sessions` (create, list, one),
  `sessions/{id}/steps/{step}` (gated commit), `…/decisions`, `…/yaml` (manual mode), `…/gate`, `…/promote`.

Errors: 404 unknown version/alias/experiment/run/dataset; 422 invalid input (names in paths are matched by a
regex, so nothing reaches outside the lake's directories); 409 a refused write (`detail.issues` lists the
preflight issues), a rollback with nothing to roll back to, stored state that does not validate, or a run that
cannot be replayed (its specs changed since the sweep, its datasets left the lake); 503 when
the registry database cannot be reached.
Non-finite metrics (NaN, inf) are returned as null.

Authentication (`qmachina_serving.auth`): every `/v1` route needs `Authorization: Bearer <token>` or the
browser's session cookie (`POST /auth/login`); roles: viewer reads, editor creates, admin activates/rolls
back and sets quotas and reads `/v1/audit`, owner manages members and tokens. Another workspace's objects
answer 404. Also: `GET /v1/auth/me`, `POST /v1/auth/ticket` (stream ticket), `/v1/workspace[/members|/tokens|
/quotas]`, `GET /v1/audit`.

Wiring: `router` takes the lake and registry from `request.app.state.settings` (a `ServingSettings`) and opens
one Registry per app (kept on `app.state.rest_registry`); `build_router(registry_factory, lake, configs)` injects
them (the factory is called once, lazily; `configs` is the specs tree replays resolve, default `configs_root()`).
Both carry the `/v1` prefix: `app.include_router(router)`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends

from qmachina_serving.api import advisor, audit, auth, datasets, experiments, jobs, serving, studio, workspaces
from qmachina_serving.api.common import ApiContext, ControlFactory, RegistryFactory

#: The routers under `/v1`, each `module.build(ctx) -> APIRouter`. Add yours here: it is authenticated by
#: construction (the `/v1` router carries the auth dependency); declare the role it needs with `ctx.role(...)`.
V1_MODULES = (auth, workspaces, audit, serving, experiments, advisor, datasets, jobs, studio)


def build_router(registry_factory: RegistryFactory | None = None, lake: Path | None = None,
                 configs: Path | None = None, control_factory: ControlFactory | None = None) -> APIRouter:
    """`/auth/login|logout` (public) and the `/v1` REST router, whose every route requires a valid credential.
    Without arguments the lake, registry and control plane come from the app's settings."""
    ctx = ApiContext(registry_factory, lake, configs, control_factory)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(ctx.authenticate)])
    for module in V1_MODULES:
        v1.include_router(module.build(ctx))
    r = APIRouter()
    r.include_router(auth.build_public(ctx))
    r.include_router(v1)
    return r


router = build_router()

__all__ = ["build_router", "router"]
