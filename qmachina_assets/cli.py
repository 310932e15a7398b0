"""The `qmachina` console script: a thin argument parser over the domain core and Dagster layer."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from qmachina_assets.core.paths import PROJECT_ROOT, lake_root, shared_data_root

# Real Databento sample files the demo lands (relative to ../shared/data/databento)
SAMPLE_FILES = (
    "nautilus_trader/esh4-glbx-mdp3-20231224.mbo.dbn.zst",
    "nautilus_trader/esh4-glbx-mdp3-20231225.mbo.dbn.zst",
    "nautilus_trader/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst",
)
DEMO_DATE = dt.date(2024, 3, 15)
DEMO_DATES = (dt.date(2024, 3, 14), DEMO_DATE)  # training day, test day of the demo experiment
DEMO_EXPERIMENT = "demo_flow_score_sweep"
DEMO_SILVER_WINDOW = {"start_et": "09:30", "end_et": "10:30"}


def _date(s: str) -> dt.date:
    try:
        return dt.date.fromisoformat(s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {s!r}") from exc


def cmd_synth(args: argparse.Namespace) -> int:
    from qmachina_assets.core.ingest.synth import SynthParams, write_synthetic_day
    from qmachina_assets.core.instrument import locked_instrument

    instrument = locked_instrument()
    params = SynthParams(n_records=args.events, seed=args.seed, date=args.date,
                         symbol=args.symbol or instrument.symbol)
    path = write_synthetic_day(args.out, params, instrument)
    print(f"wrote {params.n_records:,} MBO records for {params.symbol} {params.date} to {path}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from qmachina_assets.core.ingest.lake import land_raw_file
    from qmachina_assets.core.instrument import locked_instrument

    instrument = locked_instrument()
    lake = Path(args.lake) if args.lake else lake_root()
    keys = []
    for src in args.files:
        f = land_raw_file(src, lake, instrument)
        print(f"landed {src} -> {f.path} (partitions: {', '.join(f'{f.date}|{s}' for s in f.symbols)})")
        keys += [f"{f.date}|{s}" for s in f.symbols]
    if os.environ.get("DAGSTER_HOME"):  # the session partitions, so the UI and CLI can materialize them at once
        import dagster as dg

        from qmachina_assets.defs.partitions import register_sessions

        with dg.DagsterInstance.get() as instance:
            new = register_sessions(instance, keys)
        print(f"dagster: {len(new)} new session partition(s) in {os.environ['DAGSTER_HOME']}"
              + (f": {', '.join(new)}" if new else ""))
    else:
        print("dagster: DAGSTER_HOME is unset, sessions not registered (the raw_file_sensor adds them; or "
              "`qmachina sessions sync`)")
    return 0


def _instance():
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))
    import dagster as dg

    return dg.DagsterInstance.get()


def cmd_sessions(args: argparse.Namespace) -> int:
    """`sessions sync`: register every landed session in the Dagster instance; `sessions list`: print them."""
    from qmachina_assets.core.instrument import locked_instrument
    from qmachina_assets.defs.backfill import sync_sessions
    from qmachina_assets.defs.partitions import sessions_of

    with _instance() as instance:
        if args.sessions_cmd == "sync":
            lake = Path(args.lake) if args.lake else lake_root()
            new = sync_sessions(instance, lake, locked_instrument())
            print(f"sessions sync: {len(new)} new of {len(sessions_of(instance))} registered"
                  + (f": {', '.join(new)}" if new else ""))
        else:
            for k in sessions_of(instance, args.symbol):
                print(k)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """A date-range backfill of one symbol's sessions (queued for the daemon; `--in-process` runs it here)."""
    import dagster as dg

    from qmachina_assets.defs.backfill import submit_backfill
    from qmachina_assets.defs.partitions import sessions_of

    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))
    from qmachina_assets.definitions import defs

    assets = [a.strip() for a in args.assets.split(",") if a.strip()]
    with dg.DagsterInstance.get() as instance:
        if args.in_process:
            keys = sessions_of(instance, args.symbol, args.start, args.end)
            if not keys:
                raise ValueError(f"no landed session of {args.symbol} between {args.start} and {args.end}")
            job = defs.resolve_implicit_global_asset_job_def().get_subset(
                asset_selection={dg.AssetKey.from_user_string(a) for a in assets})
            for k in keys:
                res = job.execute_in_process(partition_key=k, instance=instance, raise_on_error=False,
                                             tags={"qmachina/trigger": "cli-backfill"})
                print(f"{k}: {'success' if res.success else 'FAILED'} (run {res.run_id})")
                if not res.success:
                    return 1
            return 0
        backfill_id, keys = submit_backfill(instance, defs, assets, args.symbol, args.start, args.end)
    print(f"backfill {backfill_id}: {', '.join(assets)} over {len(keys)} session(s): {', '.join(keys)} "
          f"(queued: the daemon of `dagster dev` runs it)")
    return 0


def cmd_silver(args: argparse.Namespace) -> int:
    """Engine on any MBO file outside the lake (ad-hoc research; an independent check of the engine)."""
    import numpy as np

    from qmachina_assets.core.engine.engine import iter_file, write_silver
    from qmachina_assets.core.engine.silver_partition import SilverWindow
    from qmachina_assets.core.ingest import dbn
    from qmachina_assets.core.ingest.lake import outright_symbols
    from qmachina_assets.core.instrument import locked_instrument

    instrument = locked_instrument()
    header = dbn.read_header(args.file)
    dbn.require_mbo(header)
    outright_symbols(header, instrument)  # the instrument lock: dataset and every symbol of the file
    if args.symbol:
        instrument.check_lock(source=f"{args.file}: --symbol", symbols=[args.symbol])
    ids = header.instrument_ids(args.symbol) if args.symbol else None
    if args.symbol and not ids:
        raise ValueError(f"{args.file}: no instrument_id mapping for symbol {args.symbol!r}")
    if ids is None:
        seen = set()
        for chunk in dbn.iter_mbo_chunks(args.file):
            seen.update(int(x) for x in np.unique(chunk["instrument_id"]))
        if len(seen) > 1:
            raise ValueError(f"{args.file}: holds instruments {sorted(seen)}; choose one with --symbol")
    start_ns, end_ns = SilverWindow(start_et=args.start_et, end_et=args.end_et).bounds_ns(header.start_date)
    bins, grid = write_silver(args.out, iter_file(args.file, instrument, start_ns, end_ns, instrument_ids=ids))
    print(f"wrote {bins} and {grid}")
    return 0


def cmd_gold_fixtures(args: argparse.Namespace) -> int:
    """Regenerate the committed cross-language gold parity fixtures from a real sample day: the built-in set
    (`--out`) and every shipped Gold DSL spec plus the coverage spec(s) of `--dsl-out` (`*.yaml` there)."""
    from qmachina_assets.core.gold.fixtures import write_dsl_fixtures, write_parity_fixtures
    from qmachina_assets.core.instrument import locked_instrument
    from qmachina_assets.core.paths import configs_root

    source = args.source or shared_data_root() / SAMPLE_FILES[1]
    meta = write_parity_fixtures(Path(source), args.out, locked_instrument())
    print(f"wrote {meta['bins']} bins x {2 * meta['grid_radius_ticks'] + 1} rows of {meta['source']} "
          f"(config {meta['config_hash']}) to {args.out}")
    specs = sorted((configs_root() / "gold").glob("*.yaml")) + sorted(Path(args.dsl_out).glob("*.yaml"))
    meta = write_dsl_fixtures(Path(source), args.dsl_out, locked_instrument(), specs)
    print(f"wrote {meta['bins']} bins x {2 * meta['grid_radius_ticks'] + 1} rows and the outputs of "
          f"{', '.join(meta['specs'])} to {args.dsl_out}")
    return 0


def cmd_validate_configs(args: argparse.Namespace) -> int:
    """Every YAML under configs/ against its model, references across layers included (CI runs this)."""
    from qmachina_assets.core.research.specs import validate_configs

    issues = validate_configs(args.root)
    for issue in issues:
        print(issue, file=sys.stderr if issue.severity == "error" else sys.stdout)
    errors = [i for i in issues if i.severity == "error"]
    n_files = sum(1 for _ in (args.root / "configs").rglob("*.yaml"))
    print(f"validate-configs: {n_files} files, {len(errors)} errors")
    return 1 if errors else 0


def cmd_online_sim(args: argparse.Namespace) -> int:
    """Replay a file bin by bin through engine -> gold -> signal and report per-bin latency per stage."""
    from qmachina_assets.core.research.online_sim import format_report, run_online_sim

    if not Path(args.file).is_file():
        raise FileNotFoundError(f"{args.file}: no such file")
    report = run_online_sim(args.file, args.serving, start_et=args.start_et, end_et=args.end_et,
                            bin_budget_ms=args.bin_budget_ms)
    print(format_report(report))
    return 0


def cmd_lake_gc(args: argparse.Namespace) -> int:
    """Remove the temporary files and directories that killed writers left in the lake."""
    from qmachina_assets.core.ingest.tempfiles import gc

    lake = Path(args.lake) if args.lake else lake_root()
    found = gc(lake, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for o in found:
        print(f"{verb} {o.path} ({o.bytes / 1e6:.1f} MB)")
    print(f"lake gc: {verb} {len(found)} stale temporary entr{'y' if len(found) == 1 else 'ies'}, "
          f"{sum(o.bytes for o in found) / 1e6:.1f} MB, under {lake}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Replace this process with a Celery worker of the code location (`QMACHINA_EXECUTOR=celery` runs)."""
    import socket

    name = f"{args.name or 'qmachina'}-{os.getpid()}@{socket.gethostname()}"
    argv = [sys.executable, "-m", "celery", "-A", "qmachina_assets.defs.celery_app", "worker",
            "--prefetch-multiplier=1", "-Q", "dagster", "-n", name, "--loglevel", args.loglevel,
            "--concurrency", str(args.concurrency), "--pool", args.pool]
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached


def cmd_serve(args: argparse.Namespace) -> int:
    """The serving process (FastAPI + WebSocket stream + REST under /v1); settings from QMACHINA_SERVING_*."""
    from qmachina_serving.server import serve

    serve(args.host, args.port)
    return 0


def cmd_live_gateway(args: argparse.Namespace) -> int:
    """The loopback Live gateway (qmachina_serving/live/gateway.py): Databento's Live protocol over lake files."""
    from qmachina_serving.live.gateway import main_with

    return main_with(args)


def cmd_live(args: argparse.Namespace) -> int:
    """`qmachina live` (qmachina_serving/live/runner.py): Databento Live MBO -> engine -> Redis Streams;
    `qmachina live status`: the recent live_sessions rows."""
    from qmachina_serving.live import runner

    if args.action == "demo":
        from qmachina_serving.live.demo import main_with

        return main_with(args)
    return runner.status_main(args) if args.action == "status" else runner.main_with(args)


def cmd_demo(args: argparse.Namespace) -> int:
    """Main job on the embedded default: synthetic day + real samples -> bronze -> silver, SQLite instance."""
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))
    import dagster as dg

    from qmachina_assets.core.ingest.lake import land_raw_file
    from qmachina_assets.core.ingest.synth import SynthParams, write_synthetic_day
    from qmachina_assets.core.instrument import locked_instrument
    from qmachina_assets.defs.bronze.assets import bronze_mbo
    from qmachina_assets.defs.gold.assets import gold_assets
    from qmachina_assets.defs.partitions import register_sessions, session_key
    from qmachina_assets.defs.resources import default_resources
    from qmachina_assets.defs.silver.assets import silver_grid

    instrument = locked_instrument()
    lake = lake_root()
    staging = lake / "staging"
    landed = []
    print(f"[1/4] synthetic days: {args.records:,} records each, {instrument.symbol} "
          f"{', '.join(map(str, DEMO_DATES))} (seed {args.seed}+)")
    for i, day in enumerate(DEMO_DATES):
        params = SynthParams(n_records=args.records, seed=args.seed + i, date=day, symbol=instrument.symbol)
        synth_path = staging / f"synth-{params.symbol.lower()}-{day:%Y%m%d}-s{params.seed}.mbo.dbn.zst"
        if not synth_path.exists():
            write_synthetic_day(synth_path, params, instrument)
        landed.append(land_raw_file(synth_path, lake, instrument))
    print(f"[2/4] real Databento samples from {shared_data_root()}")
    for rel in SAMPLE_FILES:
        src = shared_data_root() / rel
        if not src.is_file():
            print(f"      missing {src} (skipped)")
            continue
        landed.append(land_raw_file(src, lake, instrument))
    gold_builtin = next(a for a in gold_assets() if a.key.to_user_string() == "gold_builtin")
    print(f"[3/4] bronze, silver and gold partitions into DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    rows = []
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with dg.DagsterInstance.get() as instance:
        for f in landed:
            # the synthetic day spans 24 h: its silver covers the first RTH hour (a full dense day is ~10 GB)
            window = DEMO_SILVER_WINDOW if f.path.name.startswith("synth-") else {}
            for sym in f.symbols:
                pk = session_key(f.date, sym)
                register_sessions(instance, [pk])
                print(f"      bronze + silver + gold {pk} {window or ''}...", flush=True)
                res = dg.materialize([bronze_mbo, silver_grid, gold_builtin], partition_key=pk, instance=instance,
                                     resources=default_resources(), raise_on_error=True,
                                     run_config={**quiet, "ops": {"silver_grid": {"config": window}}})
                bronze = res.asset_materializations_for_node("bronze_mbo")[0].metadata
                silver = res.asset_materializations_for_node("silver_grid")[0].metadata
                gold = res.asset_materializations_for_node("gold_builtin")[0].metadata
                failed = [f"{c.severity.value.lower()}: {c.asset_key.path[-1]}.{c.check_name}"
                          for c in res.get_asset_check_evaluations() if not c.passed]
                rows.append((str(pk), bronze["records"].value, bronze["starts_with_snapshot"].value,
                             bronze["unknown_order_events"].value, silver["bins"].value,
                             silver["engine_seconds"].value, gold["cells_per_s"].value,
                             ", ".join(failed) or "all passed"))
        print(f"[4/4] experiment {DEMO_EXPERIMENT}: datasets, walk-forward sweep, promotion gate", flush=True)
        research = _demo_experiment(instance, dg, quiet)
    print()
    print(f"{'partition':<17} {'records':>10} {'snapshot':>8} {'unknown':>8} {'bins':>7} {'silver s':>9} "
          f"{'gold cells/s':>13}  checks")
    for part, n, snap, unk, bins, secs, gcps, chk in rows:
        print(f"{part:<17} {n:>10,} {snap!s:>8} {unk:>8,} {bins:>7,} {secs:>9.1f} {gcps:>13,.0f}  {chk}")
    print()
    print(f"lake:          {lake}  (raw/, bronze/, silver/ and gold/builtin/, each partition with manifest.json)")
    print(f"dagster home:  {os.environ['DAGSTER_HOME']}")
    for line in research:
        print(line)
    print("look at it:    DAGSTER_HOME=$PWD/dagster_home .venv/bin/dagster dev -w workspace.yaml"
          "  -> http://127.0.0.1:3000 (assets, checks, partitions, raw_file_sensor)")
    aliases = _register_demo_ema()
    token_file = _demo_access(lake)
    print(f"stream it:     .venv/bin/qmachina serve  -> http://127.0.0.1:8002/?serving={aliases}"
          "  (registry: /registry.html, experiments: /experiments.html, model studio: /studio.html)")
    print("model studio:  http://127.0.0.1:8002/studio.html  (build, run, compare and promote a model in the browser;"
          " runs go through Dagster: keep `dagster dev` above running)")
    print(f"log in:        the browser asks once at /login.html: paste the owner token of workspace "
          f"'{DEMO_WORKSPACE}' from {token_file} (API clients: Authorization: Bearer $(cat {token_file}))")
    return 0


DEMO_WORKSPACE = "default"
DEMO_OWNER = "demo"


def _demo_access(lake: Path) -> Path:
    """The demo's workspace (`default`, owner `demo`) and an owner token in `{lake}/control/demo_owner.token`
    (0600); an existing file whose token is still valid is kept."""
    from qmachina_assets.core.control import AuthError, ControlPlane
    from qmachina_assets.core.control.commands import write_secret

    path = lake / "control" / "demo_owner.token"
    with ControlPlane(lake=lake) as cp:
        if DEMO_WORKSPACE not in {w.name for w in cp.list_workspaces()}:
            cp.create_workspace(DEMO_WORKSPACE, actor="qmachina demo", owner=DEMO_OWNER)
        if path.is_file():
            try:
                if cp.authenticate(path.read_text().strip()).role == "owner":
                    return path
            except AuthError:
                pass
        if DEMO_OWNER not in {m.user for m in cp.members(DEMO_WORKSPACE)}:
            cp.add_member(DEMO_WORKSPACE, DEMO_OWNER, "owner", actor="qmachina demo")
        _, token = cp.create_token(DEMO_WORKSPACE, DEMO_OWNER, actor="qmachina demo", label="make demo")
    write_secret(path, token)
    return path


def _register_demo_ema() -> str:
    """Register the EMA-ensemble spec on the demo's days (alias `ema_ensemble`); returns the aliases a browser
    can open, the promoted flow-score one first when the gate published it."""
    from qmachina_assets.core.registry import Registry

    with Registry() as reg:
        reg.register(PROJECT_ROOT / "configs" / "serving" / "ema_ensemble.yaml", alias="ema_ensemble",
                     actor="qmachina demo", reason="the second serving model (SPEC §9) on the demo days",
                     expected_version_id=reg.current("ema_ensemble"))
        promoted = any(a.name == DEMO_EXPERIMENT for a in reg.list_aliases())
    return f"{DEMO_EXPERIMENT}  (or ?serving=ema_ensemble)" if promoted else "ema_ensemble"


def _demo_experiment(instance, dg, quiet: dict) -> list[str]:
    """Datasets of both demo days, the walk-forward sweep on the test day, the promotion candidate and, if
    it passes the experiment's gate, the promotion (what the sensor does under `dagster dev`)."""
    from qmachina_assets.core.registry import Registry
    from qmachina_assets.defs.datasets.assets import dataset_assets
    from qmachina_assets.defs.partitions import session_key
    from qmachina_assets.defs.promotion.assets import candidate_assets, promote_job
    from qmachina_assets.defs.resources import default_resources
    from qmachina_assets.defs.sweeps.assets import sweep_assets

    def pick(assets: list, key: str):
        return next(a for a in assets if a.key.to_user_string() == key)

    resources = default_resources()
    dataset = pick(dataset_assets(), "dataset_es_rth_1h")
    for day in DEMO_DATES:
        dg.materialize([dataset], partition_key=session_key(day, "ESH4"), instance=instance,
                       resources=resources, raise_on_error=True, run_config=quiet)
    sweep = pick(sweep_assets(), f"sweep_{DEMO_EXPERIMENT}")
    res = dg.materialize([sweep], partition_key=session_key(DEMO_DATE, "ESH4"), instance=instance,
                         resources=resources, raise_on_error=True, run_config=quiet)
    sm = res.asset_materializations_for_node(f"sweep_{DEMO_EXPERIMENT}")[0].metadata
    cands = pick(candidate_assets(), f"promotion_candidates_{DEMO_EXPERIMENT}")
    # the gate is the candidate's blocking check: a failing gate fails this run (reported below, not raised)
    res = dg.materialize([cands], instance=instance, resources=resources, raise_on_error=False, run_config=quiet)
    cm = res.asset_materializations_for_node(f"promotion_candidates_{DEMO_EXPERIMENT}")[0].metadata
    lines = [f"experiment:    {DEMO_EXPERIMENT}: {sm['parameter_sets'].value} parameter sets, trained on "
             f"{sm['train_dates'].value}, tested on {DEMO_DATE} ({sm['sweep_seconds'].value:.1f} s); results in "
             f"{sm['results_file'].value}"]
    if "run_ids" not in cm:
        return [*lines, "promotion:     no candidate (no parameter set had enough in-sample trades)"]
    if not cm["gate_passed"].value:
        return [*lines, f"promotion:     gate failed for {cm['params'].value}:", cm["gate_problems"].value]
    with Registry() as reg:
        expected = reg.current(DEMO_EXPERIMENT)
    config = {"ops": {"promote": {"config": {"experiment": DEMO_EXPERIMENT, "run_ids": cm["run_ids"].value,
                                             "alias": DEMO_EXPERIMENT, "expected_version_id": expected,
                                             "reason": "qmachina demo: gate passed"}}}}
    promote_job.execute_in_process(run_config={**config, **quiet}, instance=instance, resources=resources)
    with Registry() as reg:
        live = reg.resolve(DEMO_EXPERIMENT)
    return [*lines, f"promotion:     gate passed; alias {DEMO_EXPERIMENT} -> {live.version_id} "
                    f"(qmachina serving show {DEMO_EXPERIMENT})"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qmachina", description="qMachina order-book research platform")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic, deterministic MBO day as DBN v3 (.dbn or .dbn.zst)")
    s.add_argument("out", type=Path)
    s.add_argument("--events", type=int, default=2_000_000, help="number of MBO records")
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--date", type=_date, default=DEMO_DATE)
    s.add_argument("--symbol", default=None, help="contract of the locked root (default: instrument.yaml)")
    s.set_defaults(func=cmd_synth)

    i = sub.add_parser("ingest", help="validate DBN MBO files and land them in the lake's raw tree")
    i.add_argument("files", nargs="+", type=Path)
    i.add_argument("--lake", default=None, help="lake root (default: QMACHINA_LAKE_DIR or ./lake)")
    i.set_defaults(func=cmd_ingest)

    se = sub.add_parser("sessions", help="the Dagster session partitions (date|symbol) of the landed files")
    se_sub = se.add_subparsers(dest="sessions_cmd", required=True)
    sy = se_sub.add_parser("sync", help="register every landed session in the Dagster instance (DAGSTER_HOME)")
    sy.add_argument("--lake", default=None, help="lake root (default: QMACHINA_LAKE_DIR or ./lake)")
    sy.set_defaults(func=cmd_sessions)
    sl = se_sub.add_parser("list", help="print the registered sessions")
    sl.add_argument("--symbol", default=None)
    sl.set_defaults(func=cmd_sessions)

    b = sub.add_parser("backfill", help="backfill assets over one symbol's sessions in a date range")
    b.add_argument("--assets", default="bronze_mbo,silver_grid,gold_builtin", help="comma-separated asset keys")
    b.add_argument("--symbol", required=True)
    b.add_argument("--from", dest="start", type=_date, required=True)
    b.add_argument("--to", dest="end", type=_date, required=True)
    b.add_argument("--in-process", action="store_true", help="run here, one run per session, no daemon needed")
    b.set_defaults(func=cmd_backfill)

    v = sub.add_parser("silver", help="run the engine on a DBN MBO file: DIR/bins.parquet + DIR/grid.parquet")
    v.add_argument("file", type=Path)
    v.add_argument("--out", type=Path, required=True)
    v.add_argument("--symbol", default=None, help="instrument to use in a multi-instrument file")
    v.add_argument("--start-et", default=None, help="emission window start, HH:MM America/New_York")
    v.add_argument("--end-et", default=None, help="emission window end, HH:MM America/New_York")
    v.set_defaults(func=cmd_silver)

    lk = sub.add_parser("lake", help="lake maintenance")
    lk_sub = lk.add_subparsers(dest="lake_cmd", required=True)
    gc = lk_sub.add_parser("gc", help="remove temporary files/directories left by killed writers (dead pids)")
    gc.add_argument("--lake", default=None, help="lake root (default: QMACHINA_LAKE_DIR or ./lake)")
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed")
    gc.set_defaults(func=cmd_lake_gc)

    g = sub.add_parser("gold-fixtures", help="write the gold parity golden vectors (silver in, gold out)")
    g.add_argument("--out", type=Path, default=PROJECT_ROOT / "tests" / "fixtures" / "gold_parity")
    g.add_argument("--dsl-out", type=Path, default=PROJECT_ROOT / "tests" / "fixtures" / "gold_dsl",
                   help="Gold DSL vectors: every configs/gold/*.yaml and the *.yaml coverage specs of this directory")
    g.add_argument("--source", type=Path, default=None, help="MBO file (default: the ESH4 2023-12-25 sample)")
    g.set_defaults(func=cmd_gold_fixtures)

    c = sub.add_parser("validate-configs", help="validate every YAML under configs/ (pipelines, serving, ...)")
    c.add_argument("--root", type=Path, default=PROJECT_ROOT, help="project root holding configs/")
    c.set_defaults(func=cmd_validate_configs)

    o = sub.add_parser("online-sim", help="replay a DBN file bin by bin (engine, gold, signal): latency per bin")
    o.add_argument("file", type=Path)
    o.add_argument("--serving", required=True, help="serving spec name (configs/serving/<name>.yaml)")
    o.add_argument("--start-et", default=None)
    o.add_argument("--end-et", default=None)
    o.add_argument("--bin-budget-ms", type=float, default=None, help="default: the cell width")
    o.set_defaults(func=cmd_online_sim)

    from qmachina_assets.core.registry.commands import add_serving_parser

    add_serving_parser(sub)  # qmachina serving register|promote|list|show|history|diff|activate|rollback|...

    from qmachina_assets.core.research.commands import add_research_parsers

    add_research_parsers(sub)  # qmachina advise EXPERIMENT, automl list|expand

    from qmachina_assets.core.control.commands import add_control_parsers

    add_control_parsers(sub)  # qmachina workspace create|list, member add|remove|role|list, token create|revoke|list

    v2 = sub.add_parser("serve", help="run the serving process (stream, REST) on uvicorn")
    v2.add_argument("--host", default=None, help="default: QMACHINA_SERVING_HOST or 127.0.0.1")
    v2.add_argument("--port", type=int, default=None, help="default: QMACHINA_SERVING_PORT")
    v2.set_defaults(func=cmd_serve)

    w = sub.add_parser("worker", help="a Celery worker running Dagster steps of the code location "
                                      "(runs with QMACHINA_EXECUTOR=celery; broker QMACHINA_CELERY_BROKER)")
    w.add_argument("--concurrency", type=int, default=1, help="steps at once in this worker")
    w.add_argument("--pool", choices=("prefork", "solo", "threads"), default="prefork")
    w.add_argument("--name", default=None, help="worker name prefix (default: qmachina)")
    w.add_argument("--loglevel", default="INFO")
    w.set_defaults(func=cmd_worker)

    lg = sub.add_parser("live-gateway", help="loopback Databento Live gateway over DBN files (tests, demo market)")
    lg.add_argument("files", nargs="+", type=Path, help="DBN MBO files (merged on ts_recv)")
    lg.add_argument("--host", default="127.0.0.1")
    lg.add_argument("--port", type=int, default=0, help="0: a free port (printed as JSON on stdout)")
    lg.add_argument("--control-port", type=int, default=0, help="fault commands: reset, stall S, refuse_auth N, ...")
    lg.add_argument("--speed", type=float, default=1.0, help="x real time; 0: as fast as the socket takes it")
    lg.add_argument("--skip-idle-s", type=float, default=5.0, help="skip market-time gaps longer than this")
    lg.add_argument("--start", default=None, help="open the market at this ts_recv (ns, or ISO time in UTC)")
    lg.add_argument("--at-end", choices=("idle", "close"), default="idle",
                    help="after the last record: heartbeats forever, or close the sessions cleanly")
    lg.add_argument("--key", action="append", default=None,
                    help="accepted API key (repeatable; default: $QMACHINA_GATEWAY_KEYS, else the demo key)")
    lg.set_defaults(func=cmd_live_gateway)

    lv = sub.add_parser("live", help="live ingestion: Databento Live MBO -> engine -> every alias's frames -> "
                                     "Redis Streams (`live status`: the live_sessions rows)")
    lv.add_argument("action", nargs="?", choices=("run", "status", "demo"), default="run",
                    help="run (default), status (the live_sessions rows), demo (gateway + live + serve)")
    lv.add_argument("--speed", type=float, default=1.0, help="demo: the loopback market's speed (x real time)")
    lv.add_argument("--gateway", action="append", default=None,
                    help="HOST:PORT of a Live gateway (repeat for failover, in order; default: Databento's)")
    lv.add_argument("--key", default=None, help="API key (default: $DATABENTO_API_KEY)")
    lv.add_argument("--symbol", default=None, help="contract (default: the instrument lock's front contract)")
    lv.add_argument("--workspace", default="default")
    lv.add_argument("--alias", action="append", default=None, help="alias to publish (repeatable; default: all)")
    lv.add_argument("--no-publish", action="store_true", help="no alias: capture and engine only (benchmarks)")
    lv.add_argument("--lake", type=Path, default=None, help="default: QMACHINA_LAKE_DIR, else lake/")
    lv.add_argument("--registry-url", default=None, help="default: QMACHINA_REGISTRY_URL, else SQLite in the lake")
    lv.add_argument("--redis-url", default=None, help="default: $QMACHINA_LIVE_REDIS_URL or redis://127.0.0.1:6379/0")
    lv.add_argument("--maxlen", type=int, default=20_000, help="entries kept per alias stream")
    lv.add_argument("--heartbeat-s", type=int, default=5, help="gateway heartbeat interval (stall: 1.5x)")
    lv.add_argument("--backoff-base-s", type=float, default=0.5)
    lv.add_argument("--backoff-cap-s", type=float, default=15.0)
    lv.add_argument("--failover-after", type=int, default=3, help="failed attempts before the next gateway")
    lv.add_argument("--primary-probe-s", type=float, default=5.0, help="probe the first gateway this often")
    lv.add_argument("--max-replay-s", type=float, default=23 * 3600.0,
                    help="a disconnection longer than this is not replayed: re-snapshot, report the gap")
    lv.add_argument("--at-close", choices=("reconnect", "exit"), default="reconnect",
                    help="when the gateway ends the session cleanly: reconnect, or flush and close the day")
    lv.add_argument("--silver-out", type=Path, default=None, help="also write the live silver (bins/grid Parquet)")
    lv.add_argument("--run-id", default=None)
    lv.add_argument("--limit", type=int, default=10, help="status: rows to print")
    lv.add_argument("--json", action="store_true", help="status: JSON")
    lv.set_defaults(func=cmd_live)

    d = sub.add_parser("demo", help="end-to-end on the embedded default (sample data, SQLite instance)")
    d.add_argument("--records", type=int, default=2_000_000, help="size of the synthetic sample day")
    d.add_argument("--seed", type=int, default=7)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from qmachina_assets.core.ingest.dbn import DbnError
    from qmachina_assets.core.instrument import InstrumentConfigError, InstrumentLockError

    try:
        return args.func(args)
    except (DbnError, InstrumentConfigError, InstrumentLockError, FileExistsError, FileNotFoundError,
            ValueError) as exc:
        print(f"qmachina {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
