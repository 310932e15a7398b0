"""Research datasets as Dagster assets: one `dataset_<name>` asset per `configs/pipelines/<name>.yaml`,
partitioned like bronze (date × symbol), built from the bronze partition with the pipeline's engine
overrides and window, its checks evaluated on the written files in the same step."""

from pathlib import Path

import dagster as dg

from qmachina_assets.core.paths import configs_root
from qmachina_assets.core.research.datasets import (
    DATASET_RULES,
    build_dataset_day,
    check_dataset,
    dataset_dir,
    lineage_markdown,
)
from qmachina_assets.core.research.specs import ConfigError, load_pipeline
from qmachina_assets.defs.bronze.assets import BRONZE_KEY
from qmachina_assets.defs.partitions import parse_session_key, session_partitions_def
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


def _dataset_asset(path: Path) -> dg.AssetsDefinition:
    name = path.stem
    key = dataset_key(name)
    specs = [dg.AssetCheckSpec(rule, asset=key, blocking=True, description=desc)
             for rule, desc in DATASET_RULES.items()]

    @dg.asset(key=key, deps=[BRONZE_KEY], partitions_def=session_partitions_def, group_name="datasets",
              check_specs=specs, kinds={"parquet", "numba"}, description=_description(path))
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
            metadata={
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
