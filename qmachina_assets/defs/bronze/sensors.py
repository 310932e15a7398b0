"""Raw-file sensor: new `.dbn[.zst]` files in the lake become session partitions and bronze runs."""


import json

import dagster as dg

from qmachina_assets.core.ingest.lake import discover_raw_files
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.defs.automation import sensor_interval
from qmachina_assets.defs.bronze.jobs import bronze_job
from qmachina_assets.defs.partitions import SESSIONS, session_key, session_partitions_def
from qmachina_assets.defs.resources import LakeResource


@dg.sensor(job=bronze_job, minimum_interval_seconds=sensor_interval(), default_status=dg.DefaultSensorStatus.RUNNING,
           description="Adds a `date|symbol` session partition per landed raw file and requests its bronze run.")
def raw_file_sensor(context: dg.SensorEvaluationContext, lake_res: LakeResource) -> dg.SensorResult:
    instrument = locked_instrument()
    files, problems = discover_raw_files(lake_res.path, instrument)
    for problem in problems:
        context.log.warning(f"unusable raw file skipped: {problem}")
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    new_keys: set[str] = set()
    requests: list[dg.RunRequest] = []
    for f in files:
        st = f.path.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        if seen.get(str(f.path)) == stamp:
            continue
        seen[str(f.path)] = stamp
        for sym in f.symbols:
            key = session_key(f.date, sym)
            if not context.instance.has_dynamic_partition(SESSIONS, key):
                new_keys.add(key)
            requests.append(dg.RunRequest(run_key=f"bronze:{key}:{stamp}", partition_key=key,
                                          tags={"qmachina/stage": "bronze", "qmachina/trigger": "raw_file"}))
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"no new raw files ({len(files)} known, {len(problems)} unusable)"), cursor=json.dumps(seen))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=(
            [session_partitions_def.build_add_request(sorted(new_keys))] if new_keys else []
        ),
        cursor=json.dumps(seen),
    )
