"""Bronze MBO partitions as a Dagster asset, with its data-quality checks evaluated in the same step."""


import datetime as dt
from pathlib import Path

import dagster as dg

from qmachina_assets.core.ingest import bronze_checks, lake
from qmachina_assets.core.ingest.bronze import DATA_NAME, BronzeManifest, build_bronze
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.defs.metadata import table_metadata
from qmachina_assets.defs.partitions import parse_session_key, session_partitions_def
from qmachina_assets.defs.resources import LakeResource

BRONZE_KEY = dg.AssetKey("bronze_mbo")
BRONZE_VERSION = "bronze-1"  # bump when build_bronze's output for the same source changes
BRONZE_CHECK_SPECS = [
    dg.AssetCheckSpec(name, asset=BRONZE_KEY, blocking=blocking, description=desc)
    for name, (blocking, desc) in bronze_checks.BRONZE_RULES.items()
]


def _iso(ns: int | None) -> str:
    return "-" if ns is None else dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).isoformat()


def manifest_metadata(m: BronzeManifest, created: bool) -> dict:
    counts = "\n".join(f"| {k} | {v:,} |" for k, v in m.action_counts.items())
    quality = "\n".join(
        f"| {k} | {getattr(m, k):,} |"
        for k in ("f_last_count", "snapshot_records", "sequence_gaps", "sequence_regressions", "unknown_cancel",
                  "unknown_modify", "unknown_fill", "duplicate_add", "ts_recv_backwards",
                  "dropped_other_instruments")
    )
    return {
        **table_metadata(None, m.record_count, Path(m.data_file).parent),
        "records": dg.MetadataValue.int(m.record_count),
        "sha256_source": dg.MetadataValue.text(m.sources[0].sha256),
        "sha256_bronze": dg.MetadataValue.text(m.data_sha256),
        "dbn_version": dg.MetadataValue.int(m.dbn_version),
        "schema": dg.MetadataValue.text(m.schema_name),
        "instrument_ids": dg.MetadataValue.text(", ".join(map(str, m.instrument_ids))),
        "first_ts_event": dg.MetadataValue.text(_iso(m.first_ts_event)),
        "last_ts_event": dg.MetadataValue.text(_iso(m.last_ts_event)),
        "first_ts_recv": dg.MetadataValue.text(_iso(m.first_ts_recv)),
        "last_ts_recv": dg.MetadataValue.text(_iso(m.last_ts_recv)),
        "starts_with_snapshot": dg.MetadataValue.bool(m.starts_with_snapshot),
        "unknown_order_events": dg.MetadataValue.int(m.unknown_order_events),
        "bytes": dg.MetadataValue.int(m.data_bytes),
        "path": dg.MetadataValue.path(m.data_file),
        "newly_written": dg.MetadataValue.bool(created),
        "action_counts": dg.MetadataValue.md("| action | records |\n|---|---|\n" + counts),
        "quality": dg.MetadataValue.md("| figure | count |\n|---|---|\n" + quality),
        "source": dg.MetadataValue.path(m.sources[0].path),
        "code_version": dg.MetadataValue.text(m.code_version),
    }


@dg.asset(
    key=BRONZE_KEY,
    partitions_def=session_partitions_def,
    group_name="bronze",
    check_specs=BRONZE_CHECK_SPECS,
    kinds={"dbn", "numba"},
    description="Validated, immutable DBN v3 copy of one (UTC date, contract) of raw MBO, with manifest.json.",
    code_version=BRONZE_VERSION,
)
def bronze_mbo(context: dg.AssetExecutionContext, lake_res: LakeResource) -> dg.MaterializeResult:
    date, symbol = parse_session_key(context.partition_key)
    instrument = locked_instrument()
    root = lake_res.path
    raw = lake.raw_files_for(root, instrument, date, symbol)
    manifest, created = build_bronze(
        raw, date=date, symbol=symbol, lake=root, instrument=instrument,
        progress=lambda n: context.log.info(f"bronze {date}|{symbol}: {n:,} records scanned"),
    )
    context.log.info(
        f"bronze {date}|{symbol}: {manifest.record_count:,} records "
        f"({'written' if created else 'already present, unchanged'})"
    )
    outcomes = bronze_checks.evaluate(manifest, lake.bronze_dir(root, symbol, date) / DATA_NAME)
    checks = [
        dg.AssetCheckResult(
            asset_key=BRONZE_KEY, check_name=o.name, passed=o.passed,
            severity=dg.AssetCheckSeverity.ERROR if o.severity == "ERROR" else dg.AssetCheckSeverity.WARN,
            metadata=o.metadata,
        )
        for o in outcomes
    ]
    return dg.MaterializeResult(metadata=manifest_metadata(manifest, created), check_results=checks,
                                data_version=dg.DataVersion(manifest.data_sha256[:16]))
