"""Research datasets as Dagster assets: one `dataset_<name>` asset per `configs/pipelines/<name>.yaml`,
partitioned by the pipeline's capture sessions (`date|symbol` of each capture date: only valid days exist),
built from the bronze session of the same key with the pipeline's engine overrides and window, its checks
evaluated on the written files in the same step. Built as soon as the pipeline's capture sessions have
landed in bronze, unless the pipeline says `automation: false`."""

from pathlib import Path

import dagster as dg

from qmachina_assets.core.paths import configs_root
from qmachina_assets.core.research.datasets import (
    DATASET_RULES,
    DATASET_VERSION,
    GRID_NAME,
    build_dataset_day,
    check_dataset,
    dataset_dir,
    lineage_markdown,
)
from qmachina_assets.core.research.specs import ConfigError, PipelineSpec, load_pipeline
from qmachina_assets.defs.automation import EAGER, condition
from qmachina_assets.defs.bronze.assets import BRONZE_KEY
from qmachina_assets.defs.metadata import table_metadata
from qmachina_assets.defs.partitions import parse_session_key, session_key, session_partitions_def
from qmachina_assets.defs.resources import LakeResource


def dataset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey(f"dataset_{name}")


def _description(path: Path) -> str:
    head = f"Immutable research dataset of pipeline `{path.stem}` (bins + grid + gold, manifest, checksums)."
    try:
        spec = load_pipeline(path)
    except Exception:  # an invalid spec still gets its asset: the run reports the ConfigError
        return head
    return f"{head} {spec.description}".strip()


def capture_partitions(pipeline: PipelineSpec) -> dg.StaticPartitionsDefinition:
    """The pipeline's capture sessions: exactly the days it may be built for."""
    return dg.StaticPartitionsDefinition([session_key(d, pipeline.capture.symbol) for d in pipeline.days])


def _dataset_asset(path: Path) -> dg.AssetsDefinition:
    name = path.stem
    key = dataset_key(name)
    specs = [dg.AssetCheckSpec(rule, asset=key, blocking=True, description=desc)
             for rule, desc in DATASET_RULES.items()]
    try:
        spec = load_pipeline(path)
        partitions, auto = capture_partitions(spec), condition(EAGER, spec.automation)
        # every capture session of bronze is upstream (Dagster maps no dynamic → static keys one to one): the
        # datasets are built once the pipeline's whole capture has landed
        bronze = dg.AssetDep(BRONZE_KEY, partition_mapping=dg.SpecificPartitionsPartitionMapping(
            partitions.get_partition_keys()))
        version = f"{DATASET_VERSION}+{spec.dataset_hash[:8]}"
    except Exception:  # an invalid spec still gets its asset (on every session): the run reports the ConfigError
        partitions, auto, version, bronze = session_partitions_def, None, None, dg.AssetDep(BRONZE_KEY)

    @dg.asset(key=key, deps=[bronze], partitions_def=partitions, group_name="datasets",
              check_specs=specs, kinds={"parquet", "numba"}, description=_description(path),
              automation_condition=auto, code_version=version, pool="engine")
    def _asset(context: dg.AssetExecutionContext, lake_res: LakeResource) -> dg.MaterializeResult:
        date, symbol = parse_session_key(context.partition_key)
        try:
            pipeline = load_pipeline(path)
        except ConfigError as err:
            raise dg.Failure(description=f"pipeline spec {name!r} is invalid: {err}") from err
        if date not in pipeline.capture.dates:
            days = ", ".join(d.isoformat() for d in pipeline.days)
            raise dg.Failure(description=f"{date} is not a capture date of pipeline {name!r} ({path}); "
                                         f"it captures {days}")
        if symbol != pipeline.capture.symbol:
            raise dg.Failure(description=f"pipeline {name!r} captures {pipeline.capture.symbol}, not the "
                                         f"partition's symbol {symbol}")
        manifest, created = build_dataset_day(lake_res.path, pipeline, date, symbol)
        out = dataset_dir(lake_res.path, manifest.dataset_id)
        context.log.info(f"dataset {manifest.dataset_id}: {'written' if created else 're-used'} ({out})")
        outcomes = check_dataset(out)
        dsl = manifest.gold_dsl
        return dg.MaterializeResult(
            data_version=dg.DataVersion(manifest.dataset_id),
            metadata={
                **table_metadata(out / GRID_NAME, manifest.grid_rows, out),
                "dataset_id": dg.MetadataValue.text(manifest.dataset_id),
                "path": dg.MetadataValue.path(str(out)),
                "n_bins": dg.MetadataValue.int(manifest.n_bins),
                "grid_rows": dg.MetadataValue.int(manifest.grid_rows),
                "valid_share": dg.MetadataValue.float(round(manifest.valid_share, 6)),
                "newly_written": dg.MetadataValue.bool(created),
                "pipeline_spec_hash": dg.MetadataValue.text(manifest.pipeline_spec_hash),
                "runtime_config_version": dg.MetadataValue.text(manifest.runtime_config_version),
                "gold_config_hash": dg.MetadataValue.text(manifest.gold_config_hash),
                "gold_dsl_spec_hash": dg.MetadataValue.text(dsl.spec_hash if dsl else "-"),
                "bronze_sha256": dg.MetadataValue.text(manifest.bronze.sha256),
                "engine_version": dg.MetadataValue.text(manifest.engine_version),
                "code_version": dg.MetadataValue.text(manifest.code_version.commit),
                "code_dirty": dg.MetadataValue.bool(bool(manifest.code_version.dirty)),
                "lineage": dg.MetadataValue.md(lineage_markdown(manifest)),
            },
            check_results=[
                dg.AssetCheckResult(asset_key=key, check_name=rule, passed=ok, metadata=meta,
                                    severity=dg.AssetCheckSeverity.ERROR)
                for rule, (ok, meta) in outcomes.items()
            ],
        )

    return _asset


def dataset_assets(spec_dir: Path | None = None) -> list[dg.AssetsDefinition]:
    """One `dataset_<name>` asset per `configs/pipelines/<name>.yaml` (default: the configs tree)."""
    spec_dir = Path(spec_dir) if spec_dir is not None else configs_root() / "pipelines"
    return [_dataset_asset(path) for path in sorted(spec_dir.glob("*.yaml"))]
