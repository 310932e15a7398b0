"""Gold as Dagster assets partitioned like silver: the built-in set, plus one asset per Gold DSL spec
found under `configs/gold/` (a new YAML file is a new asset variant on the next code-location load,
no code change)."""

import base64
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from qmachina_assets.core.engine.silver_partition import silver_dir
from qmachina_assets.core.gold import dsl as gold_dsl
from qmachina_assets.core.gold import dsl_runtime
from qmachina_assets.core.gold.features import GOLD_VERSION, GoldFeatureConfig
from qmachina_assets.core.gold.partition import (
    BUILTIN,
    DATA_NAME,
    GOLD_RULES,
    build_gold,
    check_gold,
    gold_dir,
    gold_tag,
    summary,
)
from qmachina_assets.core.instrument import InstrumentConfig, locked_instrument
from qmachina_assets.core.paths import configs_root
from qmachina_assets.defs.automation import EAGER
from qmachina_assets.defs.metadata import table_metadata
from qmachina_assets.defs.partitions import parse_session_key, session_partitions_def
from qmachina_assets.defs.resources import LakeResource
from qmachina_assets.defs.silver.assets import SILVER_KEY

#: (inputs for build_gold, config dict, config hash) of one feature set, resolved at run time.
Resolver = Callable[[InstrumentConfig], tuple[dict, dict, str]]


def _builtin(inst: InstrumentConfig) -> tuple[dict, dict, str]:
    cfg = GoldFeatureConfig.from_instrument(inst)
    return {"builtin_config": cfg}, cfg.model_dump(mode="json"), cfg.config_hash


def _dsl(path: Path) -> Resolver:
    def resolve(inst: InstrumentConfig) -> tuple[dict, dict, str]:
        spec = gold_dsl.load_spec(path)  # validates; errors name the file and the node

        def run(bins: dict, grid: dict) -> dict:
            return dsl_runtime.execute(spec, bins, grid, inst.grid_radius_ticks, inst.tick_int, inst.cell_width_ms)

        fields = sorted({n.field for n in spec.nodes.values() if isinstance(n, gold_dsl.SilverRef)})
        return {"dsl": (run, fields)}, spec.model_dump(mode="json"), spec.spec_hash

    return resolve


def _code_version(resolve: Resolver) -> str:
    """Gold version + the feature set's config hash: a changed spec or lock marks the partitions stale."""
    try:
        return f"{GOLD_VERSION}+{resolve(locked_instrument())[2]}"
    except Exception:  # an invalid DSL spec still gets its asset: the run reports the error
        return f"{GOLD_VERSION}+invalid"


def _gold_asset(feature_set: str, resolve: Resolver, description: str) -> dg.AssetsDefinition:
    key = dg.AssetKey(f"gold_{feature_set}")
    specs = [dg.AssetCheckSpec(name, asset=key, blocking=True, description=desc) for name, desc in GOLD_RULES.items()]

    @dg.asset(key=key, deps=[SILVER_KEY], partitions_def=session_partitions_def, group_name="gold",
              check_specs=specs, kinds={"parquet", "numba"}, description=description,
              code_version=_code_version(resolve), automation_condition=EAGER, pool="gold")
    def _asset(context: dg.AssetExecutionContext, lake_res: LakeResource) -> dg.MaterializeResult:
        date, symbol = parse_session_key(context.partition_key)
        inst = locked_instrument()
        inputs, config, config_hash = resolve(inst)

        def progress(done: int, total: int) -> None:
            context.log.info(f"gold {feature_set}: {done:,}/{total:,} bins")

        manifest, created = build_gold(
            lake=lake_res.path, symbol=symbol, date=date, feature_set=feature_set, config=config,
            config_hash=config_hash, radius=inst.grid_radius_ticks, tick_int=inst.tick_int, progress=progress,
            **inputs,
        )
        path = gold_dir(lake_res.path, feature_set, symbol, date)
        outcomes = check_gold(path, silver_dir(lake_res.path, symbol, date))
        table, png = summary(path)
        tag = gold_tag(manifest.config_hash, manifest.gold_version, manifest.silver_engine_version,
                       manifest.silver_bronze_sha256, manifest.silver_window)
        return dg.MaterializeResult(
            data_version=dg.DataVersion(tag),
            metadata={
                **table_metadata(path / DATA_NAME, manifest.rows, path.resolve()),
                "version": dg.MetadataValue.text(tag),
                "feature_set": dg.MetadataValue.text(feature_set),
                "config_hash": dg.MetadataValue.text(config_hash),
                "config": dg.MetadataValue.json(config),
                "bins": dg.MetadataValue.int(manifest.bins),
                "rows": dg.MetadataValue.int(manifest.rows),
                "valid_bins": dg.MetadataValue.int(manifest.valid_bins),
                "cells_per_s": dg.MetadataValue.float(manifest.cells_per_s),
                "newly_written": dg.MetadataValue.bool(created),
                "path": dg.MetadataValue.path(str(path)),
                "summary": dg.MetadataValue.md(table),
                "distributions": dg.MetadataValue.md(
                    f"![distributions](data:image/png;base64,{base64.b64encode(png).decode()})"),
            },
            check_results=[
                dg.AssetCheckResult(asset_key=key, check_name=name, passed=ok, metadata=meta,
                                    severity=dg.AssetCheckSeverity.ERROR)
                for name, (ok, meta) in outcomes.items()
            ],
        )

    return _asset


def gold_assets(spec_dir: Path | None = None) -> list[dg.AssetsDefinition]:
    """The built-in gold asset and one `gold_dsl_<name>` asset per `configs/gold/<name>.yaml` of the configs tree
    the code location reads (`QMACHINA_CONFIGS_DIR`, where Model Studio writes its typed specs)."""
    spec_dir = spec_dir if spec_dir is not None else configs_root() / "gold"
    assets = [_gold_asset(BUILTIN, _builtin, "Built-in gold (force block, composite, derivatives, state5, "
                                             "flow scoring) from silver, on absolute-tick series.")]
    for path in sorted(spec_dir.glob("*.yaml")):
        assets.append(_gold_asset(f"dsl_{path.stem}", _dsl(path), f"Gold DSL feature set {path.name}."))
    return assets
