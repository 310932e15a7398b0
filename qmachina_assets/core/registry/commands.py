"""`qmachina serving ...` commands, for the console script to mount:

    from qmachina_assets.core.registry.commands import add_serving_parser
    add_serving_parser(subparsers)          # sets args.func = run

or standalone: `python -m qmachina_assets.core.registry.commands list`. Every command takes `--url` and
`--lake` (default: `QMACHINA_REGISTRY_URL`, else SQLite under the lake) and `--json` where it prints
records. Exit status 0 on success, 1 on a refused or failed operation (the message says why), and for
`reproduce`, 1 when the metrics do not reproduce exactly.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

ACTIONS = ("register", "promote", "list", "show", "history", "diff", "activate", "rollback", "reproduce", "verify")


def _default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def add_serving_parser(subparsers: Any, name: str = "serving") -> argparse.ArgumentParser:
    """Add the `serving` command group to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(name, help="serving registry: publish, list, diff, activate, roll back, reproduce")
    sub = p.add_subparsers(dest="serving_cmd", required=True)

    def cmd(cmd_name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(cmd_name, help=help_text)
        c.add_argument("--url", help="registry database URL (default: QMACHINA_REGISTRY_URL, else SQLite in the lake)")
        c.add_argument("--lake", type=Path, help="lake directory (default: QMACHINA_LAKE_DIR or ./lake)")
        c.set_defaults(func=run)
        return c

    def who(c: argparse.ArgumentParser) -> None:
        c.add_argument("--actor", default=_default_actor(), help="who makes the change (default: cli:$USER)")
        c.add_argument("--reason", required=True, help="why (kept in the alias audit)")
        c.add_argument("--expect", default=None, metavar="VERSION_ID|none",
                       help="the version the alias must point at now ('none': a new alias); the repoint is a "
                            "compare-and-swap on it (default: the alias's version when the command starts)")

    c = cmd("register", "publish a serving YAML directly (preflight, no metrics gate) and point an alias at it")
    c.add_argument("serving_yaml", type=Path)
    c.add_argument("--alias", required=True)
    c.add_argument("--configs-dir", type=Path)
    who(c)
    c.add_argument("--json", action="store_true")
    c = cmd("promote", "promote an experiment's walk-forward selection (preflight + gate)")
    c.add_argument("experiment", help="experiment name or YAML path")
    c.add_argument("run_ids", nargs="*", help="the selected run of every fold (default: the experiment's current "
                                              "candidate); anything but the walk-forward's selection is refused")
    c.add_argument("--alias", required=True)
    c.add_argument("--configs-dir", type=Path)
    c.add_argument("--allow-dirty", action="store_true",
                   help="publish runs made from uncommitted changes (recorded in the alias audit)")
    who(c)
    c.add_argument("--json", action="store_true")
    c = cmd("list", "published versions and aliases")
    c.add_argument("--json", action="store_true")
    c = cmd("show", "one version (by alias or id): spec, runtime snapshot, lineage")
    c.add_argument("ref", help="alias or version id")
    c.add_argument("--json", action="store_true")
    c = cmd("history", "the audit of an alias (all aliases without one)")
    c.add_argument("alias", nargs="?")
    c.add_argument("--json", action="store_true")
    c = cmd("diff", "field-by-field diff of two versions' runtime snapshots")
    c.add_argument("a", help="alias or version id")
    c.add_argument("b", help="alias or version id")
    c.add_argument("--json", action="store_true")
    c = cmd("activate", "point an alias at an existing version")
    c.add_argument("alias")
    c.add_argument("version_id")
    who(c)
    c.add_argument("--json", action="store_true")
    c = cmd("rollback", "point an alias back at the version active before the current one")
    c.add_argument("alias")
    who(c)
    c.add_argument("--json", action="store_true")
    c = cmd("reproduce", "rebuild a version's datasets, re-run its evaluation, compare the metrics exactly")
    c.add_argument("ref", help="alias or version id")
    c.add_argument("--no-rebuild", action="store_true", help="re-run on the stored datasets instead")
    c.add_argument("--json", action="store_true")
    cmd("verify", "re-derive every version id from its stored bytes and check aliases against the audit")
    return p


def _print(obj: Any, as_json: bool, text: str) -> None:
    if as_json:
        print(obj.model_dump_json(indent=2) if hasattr(obj, "model_dump_json") else json.dumps(obj, indent=2,
                                                                                                default=str))
    else:
        print(text)


def _event_text(ev: Any) -> str:
    if ev is None:
        return "alias unchanged (it already points at this version)"
    return (f"#{ev.id} {ev.at:%Y-%m-%d %H:%M:%S}Z {ev.alias}: {ev.from_version or '-'} -> {ev.to_version} "
            f"[{ev.action}{', uncommitted code allowed' if ev.dirty_allowed else ''}] by {ev.actor}: {ev.reason}")


def run(args: argparse.Namespace) -> int:
    from qmachina_assets.core.registry.preflight import PreflightError
    from qmachina_assets.core.registry.registry import Registry, RegistryError
    from qmachina_assets.core.research.specs import ConfigError

    try:
        with Registry(url=args.url, lake=args.lake, configs_dir=getattr(args, "configs_dir", None)) as reg:
            return _dispatch(reg, args)
    except PreflightError as err:
        print(f"refused: {err.subject}", file=sys.stderr)
        for issue in err.issues:
            print(f"  [{issue.kind}] {issue.message}", file=sys.stderr)
        return 1
    except (RegistryError, ConfigError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _expected(reg: Any, args: argparse.Namespace) -> str | None:
    """`--expect` (`none`: a new alias), else the alias's version now (the CAS then guards the command)."""
    if args.expect is None:
        return reg.current(args.alias)
    return None if args.expect.lower() == "none" else args.expect


def _dispatch(reg: Any, args: argparse.Namespace) -> int:
    c = args.serving_cmd
    as_json = getattr(args, "json", False)
    if c in ("register", "promote"):
        if c == "register":
            res = reg.register(args.serving_yaml, alias=args.alias, actor=args.actor, reason=args.reason,
                               configs_dir=args.configs_dir, expected_version_id=_expected(reg, args))
        else:
            res = reg.promote_run(args.experiment, args.run_ids or None, alias=args.alias, actor=args.actor,
                                  reason=args.reason, configs_dir=args.configs_dir, allow_dirty=args.allow_dirty,
                                  expected_version_id=_expected(reg, args))
        v = res.version
        _print(res, as_json, f"{'published' if res.created else 'already published'} {v.version_id} "
                             f"({v.serving['name']}, {v.lineage.kind})\n{_event_text(res.event)}")
    elif c == "list":
        versions, aliases = reg.list_versions(), reg.list_aliases()
        if as_json:
            print(json.dumps({"versions": [v.model_dump(mode="json") for v in versions],
                              "aliases": [a.model_dump(mode="json") for a in aliases]}, indent=2))
        else:
            print("aliases:" if aliases else "aliases: none")
            for a in aliases:
                owned = f", owned by experiment {a.owner_experiment}" if a.owner_experiment else ""
                print(f"  {a.name:<24} -> {a.version_id}  (rev {a.revision}, {a.updated_at:%Y-%m-%d %H:%M}Z, "
                      f"{a.updated_by}{owned})")
            print("versions:" if versions else "versions: none")
            for v in versions:
                tag = f"  [{', '.join(v.aliases)}]" if v.aliases else ""
                print(f"  {v.version_id}  {v.created_at:%Y-%m-%d %H:%M}Z  {v.lineage_kind:<10} {v.serving_name}{tag}")
    elif c == "show":
        v = reg.resolve(args.ref)
        snap = v.runtime_snapshot
        lin = v.lineage
        lines = [f"{v.version_id}{f'  (alias {v.alias})' if v.alias else ''}",
                 f"  serving     {v.serving['name']} ({snap['serving']['spec_hash']}), model {snap['model_id']}",
                 f"  pipeline    {snap['pipeline']['name']} ({snap['pipeline']['spec_hash']})",
                 f"  instrument  {snap['instrument']['product_type']} {snap['instrument']['dataset']} "
                 f"{snap['instrument']['symbol_root']}, runtime {snap['runtime_config']['config_version']}",
                 f"  signal      {json.dumps(snap['signal'])}",
                 f"  wire        {len(snap['stream_schema'])} fields x {snap['grid']['rows']} rows, "
                 f"{snap['grid']['cell_width_ms']} ms bins",
                 f"  lineage     {lin.kind}, code {lin.code_version}"
                 + (f", experiment {lin.experiment_name}, runs {', '.join(r.run_id for r in lin.runs)}"
                    if lin.kind == "experiment" else ""),
                 f"  created     {v.created_at:%Y-%m-%d %H:%M:%S}Z by {v.created_by}"]
        lines += [f"  run {r.run_id}: oos trades {r.metrics.get('oos_n_trades')}, hit {r.metrics.get('oos_hit_rate')}, "
                  f"pnl {r.metrics.get('oos_total_pnl_ticks')} ticks, datasets {', '.join(r.dataset_ids)}"
                  for r in lin.runs]
        _print(v, as_json, "\n".join(lines))
    elif c == "history":
        events = reg.history(args.alias)
        if as_json:
            print(json.dumps([e.model_dump(mode="json") for e in events], indent=2))
        else:
            print("\n".join(_event_text(e) for e in events) or "no alias changes")
    elif c == "diff":
        d = reg.diff(args.a, args.b)
        _print(d, as_json, d.text())
    elif c in ("activate", "rollback"):
        expected = _expected(reg, args)
        ev = (reg.activate(args.alias, args.version_id, actor=args.actor, reason=args.reason,
                           expected_version_id=expected) if c == "activate"
              else reg.rollback(args.alias, actor=args.actor, reason=args.reason, expected_version_id=expected))
        if as_json:
            print(json.dumps(None if ev is None else ev.model_dump(mode="json"), indent=2))
        else:
            print(_event_text(ev))
    elif c == "reproduce":
        from qmachina_assets.core.registry.reproduce import reproduce_version

        report = reproduce_version(reg.resolve(args.ref), reg.lake, rebuild=not args.no_rebuild)
        _print(report, as_json, report.text())
        return 0 if report.match else 1
    elif c == "verify":
        problems = reg.verify()
        print("\n".join(problems) or "registry verified: every version id matches its content, aliases match the "
                                     "audit")
        return 1 if problems else 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qmachina")
    add_serving_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
