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

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from qmachina_serving.api import advisor, datasets, experiments, serving
from qmachina_serving.api.common import ApiContext, RegistryFactory


def build_router(registry_factory: RegistryFactory | None = None, lake: Path | None = None,
                 configs: Path | None = None) -> APIRouter:
    """The `/v1` REST router. Without arguments the lake and registry come from the app's settings."""
    ctx = ApiContext(registry_factory, lake, configs)
    r = APIRouter(prefix="/v1")
    for module in (serving, experiments, advisor, datasets):
        r.include_router(module.build(ctx))
    return r


router = build_router()

__all__ = ["build_router", "router"]
