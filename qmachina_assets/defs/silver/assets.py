"""Silver grids as a Dagster asset partitioned like bronze, checks evaluated on the written files."""

import base64

import dagster as dg

from qmachina_assets.core.engine.engine import ENGINE_VERSION
from qmachina_assets.core.engine.silver_partition import (
    SILVER_RULES,
    SilverWindow,
    build_silver,
    check_silver,
    depth_heatmap_png,
    silver_dir,
    silver_tag,
)
from qmachina_assets.core.engine.silver_window import live_span_minutes, load_window_policy
from qmachina_assets.core.ingest.bronze import DATA_NAME, read_manifest
from qmachina_assets.core.ingest.lake import bronze_dir
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.defs.automation import EAGER
from qmachina_assets.defs.bronze.assets import BRONZE_KEY
from qmachina_assets.defs.metadata import table_metadata
from qmachina_assets.defs.partitions import parse_session_key, session_partitions_def
from qmachina_assets.defs.resources import LakeResource

SILVER_KEY = dg.AssetKey("silver_grid")
SILVER_CHECK_SPECS = [dg.AssetCheckSpec(name, asset=SILVER_KEY, blocking=True, description=desc)
                      for name, desc in SILVER_RULES.items()]


class SilverConfig(dg.Config):
    """Optional one-off emission window in ET (HH:MM, both or neither). Empty (the UI's Materialize button,
    the automation): the window `configs/silver.yaml` gives this session. Another window is another version."""

    start_et: str | None = None
    end_et: str | None = None


def _code_version() -> str:
    """Engine version + the window policy: editing configs/silver.yaml marks every partition stale."""
    return f"{ENGINE_VERSION}+windows-{load_window_policy().policy_hash}"


@dg.asset(
    key=SILVER_KEY,
    deps=[BRONZE_KEY],
    partitions_def=session_partitions_def,
    group_name="silver",
    check_specs=SILVER_CHECK_SPECS,
    kinds={"parquet", "numba"},
    description="Engine output: per-bin scalars (bins.parquet) and the dense ±R grid (grid.parquet), over the "
                "session's window from configs/silver.yaml.",
    code_version=_code_version(),
    automation_condition=EAGER,
    pool="engine",
)
def silver_grid(
    context: dg.AssetExecutionContext, config: SilverConfig, lake_res: LakeResource
) -> dg.MaterializeResult:
    date, symbol = parse_session_key(context.partition_key)
    instrument = locked_instrument()
    if config.start_et or config.end_et:
        window = SilverWindow(start_et=config.start_et, end_et=config.end_et)
    else:
        bronze = read_manifest(lake_res.path, symbol, date)
        live = 0.0 if bronze is None else live_span_minutes(bronze_dir(lake_res.path, symbol, date) / DATA_NAME,
                                                                 bronze.last_ts_recv)
        window = load_window_policy().window_for(str(context.partition_key), live)
        context.log.info(f"silver {date}|{symbol}: live records span {live:.1f} min -> window {window.model_dump()}")
    manifest, created = build_silver(lake=lake_res.path, symbol=symbol, date=date, instrument=instrument,
                                     window=window)
    path = silver_dir(lake_res.path, symbol, date)
    outcomes = check_silver(path, instrument.grid_radius_ticks, instrument.cell_width_ms)
    png = base64.b64encode(depth_heatmap_png(path, instrument.grid_radius_ticks)).decode()
    counters = "\n".join(f"| {k} | {v:,} |" for k, v in manifest.counters.items())
    tag = silver_tag(manifest.window, manifest.engine_version, manifest.instrument_config_version,
                     manifest.bronze_sha256)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(tag),
        metadata={
            **table_metadata(path / "grid.parquet", manifest.grid_rows, path.resolve()),
            "version": dg.MetadataValue.text(tag),
            "bins": dg.MetadataValue.int(manifest.bins),
            "grid_rows": dg.MetadataValue.int(manifest.grid_rows),
            "records": dg.MetadataValue.int(manifest.records),
            "events_per_s": dg.MetadataValue.float(manifest.records_per_s),
            "engine_seconds": dg.MetadataValue.float(manifest.engine_seconds),
            "unknown_order_events": dg.MetadataValue.int(manifest.unknown_order_events),
            "crossed_bins": dg.MetadataValue.int(manifest.crossed_bins),
            "invalid_bins": dg.MetadataValue.int(manifest.invalid_bins),
            "window": dg.MetadataValue.json(manifest.window.model_dump()),
            "engine_version": dg.MetadataValue.text(manifest.engine_version),
            "newly_written": dg.MetadataValue.bool(created),
            "path": dg.MetadataValue.path(str(path)),
            "engine_counters": dg.MetadataValue.md("| counter | value |\n|---|---|\n" + counters),
            "depth_heatmap": dg.MetadataValue.md(f"![rest_depth heatmap](data:image/png;base64,{png})"),
        },
        check_results=[
            dg.AssetCheckResult(asset_key=SILVER_KEY, check_name=name, passed=ok, metadata=meta,
                                severity=dg.AssetCheckSeverity.ERROR)
            for name, (ok, meta) in outcomes.items()
        ],
    )
