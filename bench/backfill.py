"""Backfill benchmark: N synthetic RTH days through bronze -> silver -> gold -> dataset -> sweep with the real
Dagster instance and daemon (queued runs, multiprocess executor, run concurrency limits).

Usage: python bench/backfill.py [--days 20] [--records 20000000] [--max-runs 2] [--workdir DIR] [--keep]
Generates and lands N business days of ESH4 (not timed; re-used from the workdir when present), writes a
throw-away DAGSTER_HOME (SQLite, queued run coordinator with `--max-runs` concurrent runs) and configs tree
(a pipeline capturing the N days over RTH, a small walk-forward `ads` experiment), starts `dagster-daemon run`
in its own process group, then submits two asset backfills over the days: bronze_mbo, silver_grid (RTH
window), gold_builtin and the dataset; when it is done, the sweep over days 2..N (each trained on the day
before). Prints days per hour (wall time of both backfills), peak RSS per run (the VmHWM of every process
that logged an event of the run, sampled each second: step processes are separate under the multiprocess
executor), and the share of step time per stage. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYMBOL = "ESH4"
RTH = {"start_et": "09:30", "end_et": "16:00"}
EXPERIMENT = """name: bench_bf_ads
description: backfill benchmark sweep (48 parameter sets per test day)
serving: bench_bf_ads
eval: {tp_ticks: [4, 8], sl_ticks: [4, 8], max_hold_bins: 1200, warmup_bins: 300, cooldown_bins: [20],
       min_signals: 5}
sweep:
  per_signal: {ads: {zscore_window: [100, 200, 400]}}
  thresholds: [0.05, 0.10, 0.20, 0.30]
walk_forward: {train_days: 1, test_days: 1}
promotion: {min_oos_trades: 20, min_hit_rate: 0.4, min_profit_factor: 1.1, max_drawdown_ticks: 80}
tracking: {backend: none}
"""


def business_days(start: dt.date, n: int) -> list[dt.date]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


def prepare(work: Path, days: list[dt.date], records: int, max_runs: int) -> dict[str, str]:
    """Lake with the raw days landed, configs tree, DAGSTER_HOME; returns the environment of every process."""
    from qmachina_assets.core.ingest import lake as lakemod
    from qmachina_assets.core.ingest.synth import SynthParams, write_synthetic_day
    from qmachina_assets.core.instrument import locked_instrument

    inst = locked_instrument()
    lake, home, configs = work / "lake", work / "dagster_home", work / "configs"
    lake.mkdir(parents=True, exist_ok=True)
    for i, day in enumerate(days):
        landed = list((lake / "raw").rglob(f"*{day.isoformat()}*")) if (lake / "raw").exists() else []
        if landed:
            continue
        src = work / f"synth-{day}-{records}.dbn.zst"
        t = time.perf_counter()
        write_synthetic_day(src, SynthParams(n_records=records, seed=100 + i, date=day, symbol=SYMBOL), inst)
        lakemod.land_raw_file(src, lake, inst)
        src.unlink()
        print(f"landed {day} ({records:,} records) in {time.perf_counter() - t:.1f} s", flush=True)
    if configs.exists():
        shutil.rmtree(configs)
    shutil.copytree(ROOT / "configs", configs)
    for d in ("experiments",):  # only the benchmark's experiment: the others' sweeps are not part of it
        shutil.rmtree(configs / d)
        (configs / d).mkdir()
    dates = ", ".join(d.isoformat() for d in days)
    (configs / "pipelines" / "bench_bf.yaml").write_text(
        f"name: bench_bf\ndescription: backfill benchmark days\ncapture: {{symbol: {SYMBOL}, dates: [{dates}], "
        f"start_et: \"{RTH['start_et']}\", end_et: \"{RTH['end_et']}\"}}\n")
    serving = (configs / "serving" / "vp_flow_score.yaml").read_text()
    serving = (serving.replace("name: vp_flow_score", "name: bench_bf_ads")
               .replace("pipeline: es_sample_days", "pipeline: bench_bf")
               .replace("signal:\n  name: flow_score", "signal:\n  name: ads"))
    (configs / "serving" / "bench_bf_ads.yaml").write_text(serving)
    (configs / "experiments" / "bench_bf_ads.yaml").write_text(EXPERIMENT)
    if home.exists():
        shutil.rmtree(home)
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "storage:\n  sqlite:\n    base_dir: " + str(home / "storage") + "\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n"
        f"  config:\n    max_concurrent_runs: {max_runs}\n"
        "telemetry:\n  enabled: false\n")
    return {**os.environ, "DAGSTER_HOME": str(home), "QMACHINA_LAKE_DIR": str(lake),
            "QMACHINA_CONFIGS_DIR": str(configs), "QMACHINA_EXECUTOR": "multiprocess"}


class RssSampler:
    """Peak RSS (VmHWM, MB) of every live process, by pid, sampled on demand."""

    def __init__(self) -> None:
        self.peak: dict[int, float] = {}

    def sample(self) -> None:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/status") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            mb = int(line.split()[1]) / 1024
                            self.peak[int(d)] = max(self.peak.get(int(d), 0.0), mb)
                            break
            except OSError:
                continue


def submit(instance, defs, assets: list[str], keys: list[str], run_config: dict | None, title: str) -> str:
    import dagster as dg
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(), asset_graph=defs.resolve_asset_graph(), partition_names=keys,
        asset_selection=[dg.AssetKey.from_user_string(a) for a in assets], backfill_timestamp=time.time(),
        tags={"qmachina/trigger": "bench-backfill"}, dynamic_partitions_store=instance, all_partitions=False,
        title=title, description=None, run_config=run_config)
    instance.add_backfill(backfill)
    return backfill.backfill_id


def wait(instance, backfill_id: str, sampler: RssSampler, timeout_s: float) -> str:
    from dagster._core.execution.backfill import BulkActionStatus

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        sampler.sample()
        status = instance.get_backfill(backfill_id).status
        if status not in (BulkActionStatus.REQUESTED,):
            from dagster import DagsterRunStatus, RunsFilter

            active = instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id}, statuses=[
                DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
                DagsterRunStatus.NOT_STARTED]))
            if not active:
                return str(status.value)
        time.sleep(1.0)
    raise TimeoutError(f"backfill {backfill_id} not done after {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--records", type=int, default=20_000_000, help="records per synthetic day")
    ap.add_argument("--start", default="2024-03-04", help="first business day")
    ap.add_argument("--max-runs", type=int, default=2, help="queued-run concurrency (memory: ~3 GB per run)")
    ap.add_argument("--step-concurrency", type=int, default=1, help="steps at once inside a run")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/qmachina_bench_backfill"))
    ap.add_argument("--timeout", type=float, default=6 * 3600)
    ap.add_argument("--keep", action="store_true", help="keep the workdir (lake, instance) afterwards")
    args = ap.parse_args(argv)
    if args.days < 2:
        ap.error("--days must be >= 2 (the sweep trains on the day before each test day)")

    days = business_days(dt.date.fromisoformat(args.start), args.days)
    env = prepare(args.workdir, days, args.records, args.max_runs)
    env["QMACHINA_MAX_CONCURRENT"] = str(args.step_concurrency)
    os.environ.update(env)  # this process loads the same code location to build the backfills

    import dagster as dg
    from dagster import DagsterRunStatus, RunsFilter

    from qmachina_assets.core.instrument import locked_instrument
    from qmachina_assets.definitions import defs
    from qmachina_assets.defs.backfill import sync_sessions

    keys = [f"{d.isoformat()}|{SYMBOL}" for d in days]
    daemon = None
    sampler = RssSampler()
    log = (args.workdir / "daemon.log").open("wb")
    try:
        with dg.DagsterInstance.get() as instance:
            sync_sessions(instance, Path(env["QMACHINA_LAKE_DIR"]), locked_instrument())
            daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run",
                                       "-w", str(ROOT / "workspace.yaml")], cwd=ROOT, env=env,
                                      start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
            t0 = time.time()
            b1 = submit(instance, defs, ["bronze_mbo", "silver_grid", "gold_builtin", "dataset_bench_bf"], keys,
                        {"ops": {"silver_grid": {"config": RTH}}}, f"bench: {args.days} days to datasets")
            s1 = wait(instance, b1, sampler, args.timeout)
            t1 = time.time()
            b2 = submit(instance, defs, ["sweep_bench_bf_ads"], keys[1:], None, "bench: sweeps")
            s2 = wait(instance, b2, sampler, args.timeout)
            t2 = time.time()
            sampler.sample()
            runs = [r for b in (b1, b2)
                    for r in instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": b}))]
            stage_s: dict[str, float] = defaultdict(float)
            run_rows = []
            for r in runs:
                pids = {e.pid for e in instance.all_logs(r.run_id) if e.pid}
                peak = max((sampler.peak.get(p, 0.0) for p in pids), default=0.0)
                steps = instance.get_run_step_stats(r.run_id)
                for st in steps:
                    if st.start_time and st.end_time:
                        stage = st.step_key.split("_")[0]
                        stage_s[stage] += st.end_time - st.start_time
                run_rows.append({"run_id": r.run_id[:8], "partition": r.tags.get("dagster/partition"),
                                 "status": r.status.value, "steps": [s.step_key for s in steps],
                                 "peak_rss_mb": round(peak)})
    finally:
        if daemon is not None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        log.close()
    total = t2 - t0
    step_total = sum(stage_s.values()) or 1.0
    failed = [r for r in run_rows if r["status"] != DagsterRunStatus.SUCCESS.value]
    for r in sorted(run_rows, key=lambda x: (x["partition"] or "", x["steps"])):
        print(f"run {r['run_id']} {r['partition']} {r['status']:8s} peak RSS {r['peak_rss_mb']:6,} MB  "
              f"{', '.join(r['steps'])}")
    shares = {k: round(v / step_total, 3) for k, v in sorted(stage_s.items())}
    print(f"{args.days} days x {args.records:,} records: datasets in {t1 - t0:.0f} s ({s1}), sweeps in {t2 - t1:.0f} s "
          f"({s2}); {args.days / total * 3600:.1f} days/hour; {len(runs)} runs, {len(failed)} not successful")
    print("share of step time per stage: " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)
    print(json.dumps({
        "days": args.days, "records_per_day": args.records, "max_concurrent_runs": args.max_runs,
        "step_concurrency": args.step_concurrency, "wall_s": round(total, 1),
        "datasets_wall_s": round(t1 - t0, 1), "sweeps_wall_s": round(t2 - t1, 1),
        "days_per_hour": round(args.days / total * 3600, 2), "runs": len(runs), "runs_not_successful": len(failed),
        "peak_rss_mb_max": max((r["peak_rss_mb"] for r in run_rows), default=0),
        "stage_step_seconds": {k: round(v, 1) for k, v in stage_s.items()}, "stage_share": shares,
        "backfill_status": [s1, s2], "cpu_count": os.cpu_count(),
    }))
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
