"""Raw-file sensor: new `.dbn[.zst]` files in the lake become bronze partitions and runs."""


import json

import dagster as dg

from qmachina_assets.core.ingest.lake import discover_raw_files
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.defs.bronze.jobs import bronze_job
from qmachina_assets.defs.partitions import date_partitions_def, partition_key, symbol_partitions_def
from qmachina_assets.defs.resources import LakeResource


@dg.sensor(job=bronze_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds (date, symbol) partitions for new raw files and requests their bronze runs.")
def raw_file_sensor(context: dg.SensorEvaluationContext, lake_res: LakeResource) -> dg.SensorResult:
    instrument = locked_instrument()
    files, problems = discover_raw_files(lake_res.path, instrument)
    for problem in problems:
        context.log.warning(f"unusable raw file skipped: {problem}")
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    valid_dates = set(date_partitions_def.get_partition_keys())
    new_symbols: set[str] = set()
    requests: list[dg.RunRequest] = []
    for f in files:
        st = f.path.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        if seen.get(str(f.path)) == stamp:
            continue
        seen[str(f.path)] = stamp
        date = f.date.isoformat()
        if date not in valid_dates:
            context.log.warning(f"{f.path}: date {date} is outside the date partitions")
            continue
        for sym in f.symbols:
            if not context.instance.has_dynamic_partition(symbol_partitions_def.name, sym):
                new_symbols.add(sym)
            requests.append(dg.RunRequest(run_key=f"bronze:{date}|{sym}:{stamp}",
                                          partition_key=partition_key(date, sym)))
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"no new raw files ({len(files)} known, {len(problems)} unusable)"), cursor=json.dumps(seen))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=(
            [symbol_partitions_def.build_add_request(sorted(new_symbols))] if new_symbols else []
        ),
        cursor=json.dumps(seen),
    )
