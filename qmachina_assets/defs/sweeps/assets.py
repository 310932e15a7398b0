"""Sweeps as Dagster assets: one `sweep_<experiment>` asset per configs/experiments/<name>.yaml, partitioned
by its walk-forward test sessions (`date|symbol`; only valid test days exist). Each partition depends on
every dataset session its fold reads (training days and test day), so all of them are upstream in the UI
and the automation waits for all. Materializing a partition runs that fold, appends the rows to the results
store and logs them to MLflow; its checks (sweeps/checks.py) are evaluated on the rows in the same step."""

from pathlib import Path

import dagster as dg

from qmachina_assets.core.paths import configs_root
from qmachina_assets.core.research import sweeps
from qmachina_assets.core.research.specs import ExperimentSpec, PipelineSpec, resolve_experiment
from qmachina_assets.defs.automation import EAGER, condition
from qmachina_assets.defs.partitions import parse_session_key, session_key
from qmachina_assets.defs.resources import LakeResource
from qmachina_assets.defs.sweeps import checks
from qmachina_assets.defs.sweeps.advice import advice_metadata

EXPERIMENT_DIR = configs_root() / "experiments"  # QMACHINA_CONFIGS_DIR moves it (bench/backfill.py)
SHOWN = ("oos_n_trades", "oos_hit_rate", "oos_total_pnl_ticks", "oos_profit_factor", "oos_max_drawdown_ticks",
         "is_n_trades", "is_total_pnl_ticks")


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _top_table(rows: list[dict], n: int = 10) -> str:
    rows = sorted(rows, key=lambda r: -r["is_total_pnl_ticks"])[:n]
    head = "| selected | params | " + " | ".join(SHOWN) + " |"
    sep = "|---" * (len(SHOWN) + 2) + "|"
    body = [f"| {'**yes**' if r['selected'] else ''} | `{r['params_json']}` | "
            + " | ".join(_fmt(r[k]) for k in SHOWN) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def fold_partitions(pipeline: PipelineSpec, exp: ExperimentSpec
                    ) -> tuple[dg.StaticPartitionsDefinition, dg.StaticPartitionMapping]:
    """Test sessions of the walk-forward, and the mapping from each dataset session to the folds reading it."""
    sym = pipeline.capture.symbol
    reads: dict[str, set[str]] = {}
    tests = []
    for fold in sweeps.folds(pipeline, exp):
        test = session_key(fold.test, sym)
        tests.append(test)
        for day in (*fold.train, fold.test):
            reads.setdefault(session_key(day, sym), set()).add(test)
    return dg.StaticPartitionsDefinition(tests), dg.StaticPartitionMapping(reads)


def _sweep_asset(path: Path) -> dg.AssetsDefinition:
    exp, serving, pipeline = resolve_experiment(path)
    key = dg.AssetKey(f"sweep_{exp.name}")
    partitions, mapping = fold_partitions(pipeline, exp)
    dataset = dg.AssetKey(f"dataset_{pipeline.name}")

    @dg.asset(key=key, deps=[dg.AssetDep(dataset, partition_mapping=mapping)], partitions_def=partitions,
              group_name="experiments", kinds={"parquet", "mlflow"}, check_specs=checks.check_specs(key),
              automation_condition=condition(EAGER, exp.automation and pipeline.automation),
              code_version=sweeps.experiment_hash(exp), pool="engine",
              description=f"Walk-forward sweep of {exp.name} ({serving.name} on {pipeline.name}): "
                          f"{exp.n_sets(serving)} parameter sets per test day; a partition per test session, "
                          f"upstream of it every dataset session its fold reads.")
    def _asset(context: dg.AssetExecutionContext, lake_res: LakeResource) -> dg.MaterializeResult:
        test, symbol = parse_session_key(context.partition_key)
        e, s, p = resolve_experiment(path)  # read at run time: the YAML may have changed since load
        fold = sweeps.fold_for(p, e, test)

        def progress(done: int, total: int) -> None:
            context.log.info(f"{e.name} {test}: {done}/{total} parameter sets")

        table = sweeps.run_fold(lake_res.path, e, s, p, fold, symbol, progress=progress)
        out = sweeps.append_results(lake_res.path, table)
        run_id = sweeps.log_to_mlflow(lake_res.path, e, table) if e.tracking.backend == "mlflow" else None
        rows = table.to_pylist()
        best = next((r for r in rows if r["selected"]), None)
        meta = {
            "parameter_sets": dg.MetadataValue.int(len(rows)),
            "train_dates": dg.MetadataValue.text(rows[0]["train_dates"]),
            "test_dataset_id": dg.MetadataValue.text(rows[0]["test_dataset_id"]),
            "results_file": dg.MetadataValue.path(str(out)),
            "sweep_seconds": dg.MetadataValue.float(rows[0]["sweep_seconds"]),
            "top_in_sample": dg.MetadataValue.md(_top_table(rows)),
        }
        if run_id:
            meta["mlflow_run_id"] = dg.MetadataValue.text(run_id)
        if best:
            meta["selected_params"] = dg.MetadataValue.json(best["params_json"])
            for k in ("oos_n_trades", "oos_hit_rate", "oos_total_pnl_ticks", "oos_profit_factor",
                      "oos_max_drawdown_ticks"):
                meta[f"selected_{k}"] = dg.MetadataValue.float(float(best[k]))
        meta.update(advice_metadata(lake_res.path, e.name, path.parent.parent, context.log))  # decision support
        meta.update({"dagster/row_count": dg.MetadataValue.int(len(rows)),
                     "dagster/uri": dg.MetadataValue.url(out.resolve().as_uri())})
        return dg.MaterializeResult(metadata=meta, check_results=checks.evaluate(key, rows, e, s),
                                    data_version=dg.DataVersion(rows[0]["sweep_id"]))

    return _asset


def sweep_assets(spec_dir: Path = EXPERIMENT_DIR) -> list[dg.AssetsDefinition]:
    """One sweep asset per experiment YAML."""
    return [_sweep_asset(p) for p in sorted(spec_dir.glob("*.yaml"))]


def experiment_jobs(assets: list[dg.AssetsDefinition]) -> list:
    """One asset job per sweep or dataset asset, so a backfill over dates is one `dagster job backfill`."""
    return [dg.define_asset_job(f"{a.key.to_user_string()}_job", selection=[a.key]) for a in assets]
