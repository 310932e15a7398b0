"""`experiment_job`: one experiment, end to end, as one Dagster run (what `POST /v1/jobs` launches).

The experiment is named in the run config and resolved from `configs/experiments/<name>.yaml` at run time, so
a spec written by Model Studio (or by hand) runs without a code change or a restart of the code location.
Two steps: `research_datasets` builds (or re-uses) every capture day of the pipeline, `experiment_sweep`
runs the walk-forward folds, in the run's own process (the in-process executor: a step process per step
would import the code location twice more for two short sequential steps). Re-executing a failed run
FROM_FAILURE (the jobs API's resume) reuses the datasets step. The sweep reports its own progress as it
runs: an `AssetObservation` of `sweep_<name>` with `sets_done`, `sets_total`, `eta_s` after each group
of parameter sets (the jobs API turns them into SSE
progress events). A run past its wall-time budget (`wall_time_s`) stops between two groups of sets and fails
with `wall_time_exceeded` in its metadata (the jobs API marks the job `timed_out`).
"""


import json
import os
import time
from pathlib import Path

import dagster as dg

from qmachina_assets.core.paths import configs_root
from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.datasets import build_dataset_day
from qmachina_assets.core.research.specs import ConfigError, resolve_experiment
from qmachina_assets.defs.resources import LakeResource

#: Test hook: with this variable set, a file `<dir>/<experiment>.fail` makes the next sweep fail once (after its
#: first progress report) and is removed, so a resume succeeds. Unset in production.
FAULT_DIR_ENV = "QMACHINA_JOB_FAULT_DIR"
WALL_TIME_REASON = "wall_time_exceeded"


class ExperimentRunConfig(dg.Config):
    experiment: str
    wall_time_s: float = 0.0  # 0: no budget
    session_id: str = ""


class WallTimeExceeded(Exception):
    pass


def _resolve(name: str):
    try:
        return resolve_experiment(name, configs_dir=configs_root())
    except (ConfigError, FileNotFoundError) as err:
        raise dg.Failure(description=f"experiment {name!r} does not load: {err}") from err


@dg.op(description="Build (or re-use) the research dataset of every capture day of the experiment's pipeline.")
def research_datasets(context: dg.OpExecutionContext, config: ExperimentRunConfig,
                      lake_res: LakeResource) -> list[str]:
    _, _, pipeline = _resolve(config.experiment)
    ids = []
    for day in pipeline.days:
        manifest, created = build_dataset_day(lake_res.path, pipeline, day, pipeline.capture.symbol)
        context.log.info(f"dataset {manifest.dataset_id}: {'written' if created else 're-used'}")
        ids.append(manifest.dataset_id)
    return ids


@dg.op(description="Every walk-forward fold of the experiment; progress reported as sweep observations.")
def experiment_sweep(context: dg.OpExecutionContext, config: ExperimentRunConfig, lake_res: LakeResource,
                     datasets: list[str]) -> list[str]:
    exp, serving, pipeline = _resolve(config.experiment)
    folds = sweeps.folds(pipeline, exp)
    if not folds:
        raise dg.Failure(description=f"experiment {exp.name!r}: pipeline {pipeline.name!r} has too few capture days "
                                     f"for {exp.walk_forward.train_days} training day(s)")
    per_fold = exp.n_sets(serving)
    total = per_fold * len(folds)
    key = dg.AssetKey(f"sweep_{exp.name}")
    t0 = time.monotonic()
    deadline = t0 + config.wall_time_s if config.wall_time_s > 0 else None
    fault = Path(os.environ[FAULT_DIR_ENV]) / f"{exp.name}.fail" if os.environ.get(FAULT_DIR_ENV) else None
    base = 0

    def report(done: int) -> None:
        elapsed = time.monotonic() - t0
        eta = elapsed / done * (total - done) if done else 0.0
        context.log_event(dg.AssetObservation(asset_key=key, metadata={
            "sets_done": dg.MetadataValue.int(done), "sets_total": dg.MetadataValue.int(total),
            "eta_s": dg.MetadataValue.int(round(eta)), "elapsed_ms": dg.MetadataValue.int(round(elapsed * 1000))}))
        if fault is not None and fault.exists():
            fault.unlink()
            raise dg.Failure(description=f"injected failure ({fault}) after {done}/{total} parameter sets")
        if deadline is not None and time.monotonic() > deadline and done < total:
            raise WallTimeExceeded(f"wall-time budget of {config.wall_time_s:g} s exceeded after {done}/{total} "
                                   f"parameter sets")

    run_ids: list[str] = []
    try:
        report(0)
        for fold in folds:
            table = sweeps.run_fold(lake_res.path, exp, serving, pipeline, fold, pipeline.capture.symbol,
                                    progress=lambda done, _n, b=base: report(b + done))
            sweeps.append_results(lake_res.path, table)
            if exp.tracking.backend == "mlflow":
                sweeps.log_to_mlflow(lake_res.path, exp, table)
            run_ids += [str(r) for r in table.column("run_id").to_pylist()]
            base += per_fold
    except WallTimeExceeded as exc:
        raise dg.Failure(description=str(exc), metadata={"reason": WALL_TIME_REASON,
                                                         "sets_done": base}) from exc
    context.log_event(dg.AssetObservation(asset_key=key, metadata={
        "sets_done": dg.MetadataValue.int(total), "sets_total": dg.MetadataValue.int(total),
        "eta_s": dg.MetadataValue.int(0), "run_ids": dg.MetadataValue.text(json.dumps(run_ids)),
        "datasets": dg.MetadataValue.text(json.dumps(datasets))}))
    return run_ids


@dg.job(description="One experiment end to end (datasets, walk-forward sweep): what the jobs API launches.",
        tags={"qmachina/kind": "experiment"}, executor_def=dg.in_process_executor)
def experiment_job() -> None:
    experiment_sweep(research_datasets())
