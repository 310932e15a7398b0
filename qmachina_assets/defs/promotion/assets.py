"""Promotion in Dagster, as assets and checks so lineage runs from the raw file to the serving alias:

- `promotion_candidates_<experiment>` (fed by every partition of its sweep): the walk-forward's selection with
  its out-of-sample evidence; the experiment's gate is its blocking check `promotion_gate` (a failing gate is
  a failed check, and nothing downstream runs);
- `serving_alias_<experiment>`: the published serving version the alias points at. The automation publishes
  once the gate check passed (the registry's `promote_run` repeats preflight and gate in its transaction);
  versions published outside Dagster (CLI, REST, `promote_job`) show as observations of the same asset
  (`published_versions_sensor`).
- `promote_job`: a manual publish from the UI or the demo, with config.
"""

import json
from pathlib import Path

import dagster as dg

from qmachina_assets.core.registry import Registry
from qmachina_assets.core.registry.candidates import candidate
from qmachina_assets.core.research.specs import load_experiment, resolve_experiment
from qmachina_assets.defs.automation import ON_ANY_UPDATE, ON_GATE_PASSED, condition
from qmachina_assets.defs.resources import LakeResource
from qmachina_assets.defs.sweeps.assets import EXPERIMENT_DIR

GATE_CHECK = "promotion_gate"


def candidate_key(experiment: str) -> dg.AssetKey:
    return dg.AssetKey(f"promotion_candidates_{experiment}")


def alias_key(experiment: str) -> dg.AssetKey:
    return dg.AssetKey(f"serving_alias_{experiment}")


def _automated(path: Path) -> bool:
    try:
        exp, _, pipeline = resolve_experiment(path)
    except Exception:
        return False
    return exp.automation and pipeline.automation


def _candidates_asset(path: Path) -> dg.AssetsDefinition:
    exp = load_experiment(path)
    key = candidate_key(exp.name)
    gate = dg.AssetCheckSpec(GATE_CHECK, asset=key, blocking=True,
                             description=f"the gate of {path.name} (promotion:) on the candidate's out-of-sample "
                                         f"evidence, preflight included; failing = nothing is published")

    @dg.asset(key=key, group_name="promotion", kinds={"python"}, check_specs=[gate],
              deps=[dg.AssetDep(dg.AssetKey(f"sweep_{exp.name}"), partition_mapping=dg.AllPartitionMapping())],
              automation_condition=condition(ON_ANY_UPDATE, _automated(path)),
              description=f"The parameter set of {exp.name} the walk-forward selected last, with its "
                          f"out-of-sample evidence per test day; blocking check `{GATE_CHECK}`.")
    def _asset(context: dg.AssetExecutionContext, lake_res: LakeResource) -> dg.MaterializeResult:
        e = load_experiment(path)
        cand = candidate(lake_res.path, e)
        if cand is None:
            why = "no walk-forward selection yet (no sweep, or no set with enough in-sample trades)"
            return dg.MaterializeResult(
                metadata={"candidate": dg.MetadataValue.text("none yet"), "gate_passed": False},
                check_results=[dg.AssetCheckResult(check_name=GATE_CHECK, passed=False,
                                                   severity=dg.AssetCheckSeverity.ERROR,
                                                   metadata={"problems": dg.MetadataValue.md(f"- {why}")})],
                data_version=dg.DataVersion("none"))
        rows = "\n".join(f"| {d} | {r} | " + " | ".join(f"{v:.4g}" if v is not None else "-" for v in m.values())
                         + " |" for d, r, m in zip(cand.test_dates, cand.run_ids, cand.oos, strict=True))
        head = "| test day | run | " + " | ".join(cand.oos[0]) + " |\n|" + "---|" * (len(cand.oos[0]) + 2)
        problems = dg.MetadataValue.md("\n".join(f"- {p}" for p in cand.problems) or "none")
        return dg.MaterializeResult(
            metadata={
                "experiment": dg.MetadataValue.text(cand.experiment),
                "experiment_yaml": dg.MetadataValue.path(str(path)),
                "candidate_key": dg.MetadataValue.text(cand.key),
                "params": dg.MetadataValue.json(cand.params),
                "run_ids": dg.MetadataValue.json(cand.run_ids),
                "gate": dg.MetadataValue.json(e.promotion.model_dump()),
                "gate_passed": dg.MetadataValue.bool(cand.passes),
                "gate_problems": problems,
                "out_of_sample": dg.MetadataValue.md(f"{head}\n{rows}"),
            },
            check_results=[dg.AssetCheckResult(
                check_name=GATE_CHECK, passed=cand.passes, severity=dg.AssetCheckSeverity.ERROR,
                metadata={"problems": problems, "gate": dg.MetadataValue.json(e.promotion.model_dump()),
                          "candidate_key": dg.MetadataValue.text(cand.key)})],
            data_version=dg.DataVersion(cand.key[-60:]),
        )

    return _asset


def _alias_asset(path: Path) -> dg.AssetsDefinition:
    exp = load_experiment(path)
    key = alias_key(exp.name)

    @dg.asset(key=key, group_name="promotion", kinds={"postgres"}, deps=[candidate_key(exp.name)],
              automation_condition=condition(ON_GATE_PASSED, _automated(path)),
              description=f"Serving alias `{exp.name}`: the published version it points at. Materialized (a "
                          f"publish through the registry) once the candidate's `{GATE_CHECK}` check passed.")
    def _asset(context: dg.AssetExecutionContext, lake_res: LakeResource) -> dg.MaterializeResult:
        e = load_experiment(path)
        cand = candidate(lake_res.path, e)
        if cand is None or not cand.passes:
            raise dg.Failure(description=f"{e.name}: no candidate passing the gate "
                                         f"({'none' if cand is None else '; '.join(cand.problems)})")
        with Registry(lake=lake_res.path) as reg:
            result = reg.promote_run(str(path), cand.run_ids, alias=e.name, actor="dagster",
                                     reason=f"automation: gate passed on {cand.key}",
                                     expected_version_id=reg.current(e.name))
        v = result.version
        context.log.info(f"{e.name} -> {v.version_id} (created={result.created})")
        return dg.MaterializeResult(data_version=dg.DataVersion(v.version_id), metadata={
            "alias": dg.MetadataValue.text(e.name), "version_id": dg.MetadataValue.text(v.version_id),
            "created": dg.MetadataValue.bool(result.created), "run_ids": dg.MetadataValue.json(cand.run_ids),
            "candidate_key": dg.MetadataValue.text(cand.key)})

    return _asset


def candidate_assets(spec_dir: Path = EXPERIMENT_DIR) -> list[dg.AssetsDefinition]:
    return [_candidates_asset(p) for p in sorted(spec_dir.glob("*.yaml"))]


def alias_assets(spec_dir: Path = EXPERIMENT_DIR) -> list[dg.AssetsDefinition]:
    return [_alias_asset(p) for p in sorted(spec_dir.glob("*.yaml"))]


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
    context.log_event(dg.AssetObservation(  # lineage: the alias asset of the experiment shows this publish
        asset_key=alias_key(Path(config.experiment).stem),
        metadata={"alias": config.alias, "version_id": v.version_id, "by": "promote_job"}))
    return dg.Output(v.version_id, metadata={"version_id": v.version_id, "alias": config.alias,
                                             "created": result.created})


@dg.job(description="Publish one walk-forward selection with config (the UI's launchpad, the demo); the "
                    "automation publishes through the serving_alias_<experiment> assets instead.",
        tags={"qmachina/stage": "promotion"})
def promote_job():
    promote()


def published_versions_sensor(experiments: list[str]) -> dg.SensorDefinition:
    """Versions published outside Dagster (`qmachina serving promote`, REST) as observations of the
    `serving_alias_<name>` assets, so the alias in the UI always shows what serves."""

    @dg.sensor(name="published_versions_sensor", minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Observes serving aliases whose version changed (any publisher) on their alias asset.")
    def _sensor(context: dg.SensorEvaluationContext, lake_res: LakeResource) -> dg.SensorResult:
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        with Registry(lake=lake_res.path) as reg:
            aliases = [a for a in reg.list_aliases() if a.name in experiments]
        events = [dg.AssetObservation(asset_key=alias_key(a.name), metadata={
                      "alias": a.name, "version_id": a.version_id, "revision": a.revision,
                      "updated_by": str(a.updated_by)})
                  for a in aliases if seen.get(a.name) != a.version_id]
        seen.update({a.name: a.version_id for a in aliases})
        if not events:
            return dg.SensorResult(skip_reason=dg.SkipReason(f"{len(aliases)} alias(es), none changed"),
                                   cursor=json.dumps(seen))
        return dg.SensorResult(asset_events=events, cursor=json.dumps(seen))

    return _sensor
