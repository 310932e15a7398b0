"""Promotion in Dagster: a `promotion_candidates_<experiment>` asset per experiment (fed by its sweep),
a sensor that evaluates the experiment's gate on each new candidate, and `promote_job`, the only way the
Dagster side publishes (the registry's `promote_run` repeats preflight and gate in its transaction, so the
manual launch from the UI goes through the same gate)."""

import json
from pathlib import Path

import dagster as dg

from qmachina_assets.core.registry import Registry
from qmachina_assets.core.registry.candidates import candidate
from qmachina_assets.core.research.specs import load_experiment
from qmachina_assets.defs.resources import LakeResource
from qmachina_assets.defs.sweeps.assets import EXPERIMENT_DIR


def _candidates_asset(path: Path) -> dg.AssetsDefinition:
    exp = load_experiment(path)
    key = dg.AssetKey(f"promotion_candidates_{exp.name}")

    @dg.asset(key=key, group_name="promotion", kinds={"python"},
              deps=[dg.AssetDep(dg.AssetKey(f"sweep_{exp.name}"), partition_mapping=dg.AllPartitionMapping())],
              description=f"The parameter set of {exp.name} the walk-forward selected last, with its "
                          f"out-of-sample evidence per test day and the experiment's gate verdict.")
    def _asset(context: dg.AssetExecutionContext, lake_res: LakeResource) -> dg.MaterializeResult:
        e = load_experiment(path)
        cand = candidate(lake_res.path, e)
        if cand is None:
            return dg.MaterializeResult(metadata={"candidate": dg.MetadataValue.text("none yet"),
                                                  "gate_passed": dg.MetadataValue.bool(False)})
        rows = "\n".join(f"| {d} | {r} | " + " | ".join(f"{v:.4g}" if v is not None else "-" for v in m.values())
                         + " |" for d, r, m in zip(cand.test_dates, cand.run_ids, cand.oos, strict=True))
        head = "| test day | run | " + " | ".join(cand.oos[0]) + " |\n|" + "---|" * (len(cand.oos[0]) + 2)
        return dg.MaterializeResult(metadata={
            "experiment": dg.MetadataValue.text(cand.experiment),
            "experiment_yaml": dg.MetadataValue.path(str(path)),
            "candidate_key": dg.MetadataValue.text(cand.key),
            "params": dg.MetadataValue.json(cand.params),
            "run_ids": dg.MetadataValue.json(cand.run_ids),
            "gate": dg.MetadataValue.json(e.promotion.model_dump()),
            "gate_passed": dg.MetadataValue.bool(cand.passes),
            "gate_problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in cand.problems) or "none"),
            "out_of_sample": dg.MetadataValue.md(f"{head}\n{rows}"),
        })

    return _asset


def candidate_assets(spec_dir: Path = EXPERIMENT_DIR) -> list[dg.AssetsDefinition]:
    return [_candidates_asset(p) for p in sorted(spec_dir.glob("*.yaml"))]


class PromoteConfig(dg.Config):
    """What to publish: an experiment's walk-forward selection (its results run ids, one per fold) and the
    alias to point at it, as a compare-and-swap from `expected_version_id` (None: a new alias)."""

    experiment: str  # name (configs/experiments/<name>.yaml) or path of the ExperimentSpec
    run_ids: list[str]
    alias: str
    expected_version_id: str | None = None
    allow_dirty: bool = False  # publish runs made from uncommitted code (recorded in the alias audit)
    reason: str = "promotion sensor: gate passed"
    actor: str = "dagster"


@dg.op(description="Publish through the registry (preflight + gate in one transaction) and repoint the alias.")
def promote(context: dg.OpExecutionContext, config: PromoteConfig, lake_res: LakeResource) -> dg.Output:
    with Registry(lake=lake_res.path) as reg:
        result = reg.promote_run(config.experiment, config.run_ids, alias=config.alias, actor=config.actor,
                                 reason=config.reason, expected_version_id=config.expected_version_id,
                                 allow_dirty=config.allow_dirty)
    v = result.version
    context.log.info(f"{config.alias} -> {v.version_id} (created={result.created})")
    return dg.Output(v.version_id, metadata={"version_id": v.version_id, "alias": config.alias,
                                             "created": result.created})


@dg.job(description="Promote one parameter set (launch from the UI with config, or by the promotion sensor).")
def promote_job():
    promote()


def promotion_sensor(assets: list[dg.AssetsDefinition]) -> dg.SensorDefinition:
    """Evaluates each new candidate materialization: a passing one requests `promote_job` (run key = the
    candidate's evidence, so it is promoted once) as a compare-and-swap from the alias's version at this
    evaluation; a failing one is a skip whose reason lists the gate."""

    @dg.multi_asset_sensor(monitored_assets=[a.key for a in assets], job=promote_job, name="promotion_sensor",
                           default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30)
    def _sensor(context: dg.MultiAssetSensorEvaluationContext, lake_res: LakeResource):
        requests, skips = [], []
        for key, record in context.latest_materialization_records_by_key().items():
            if record is None:
                continue
            meta = record.asset_materialization.metadata
            exp = meta.get("experiment")
            if exp is None:
                skips.append(f"{key.to_user_string()}: no candidate yet")
            elif not meta["gate_passed"].value:
                skips.append(f"{exp.value}: gate failed: {meta['gate_problems'].value}")
            else:
                run_ids = meta["run_ids"].value
                with Registry(lake=lake_res.path) as reg:
                    expected = reg.current(exp.value)
                requests.append(dg.RunRequest(
                    run_key=meta["candidate_key"].value,
                    run_config={"ops": {"promote": {"config": {
                        "experiment": meta["experiment_yaml"].value, "run_ids": run_ids, "alias": exp.value,
                        "expected_version_id": expected,
                        "reason": f"promotion sensor: gate passed on {json.dumps(run_ids)}"}}}}))
        context.advance_all_cursors()
        if requests:
            return requests
        return dg.SkipReason("; ".join(skips) or "no new candidate")

    return _sensor
