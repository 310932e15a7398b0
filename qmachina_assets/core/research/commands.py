"""`qmachina advise ...` and `qmachina automl ...`, for the console script to mount (`add_research_parsers`).

- `qmachina advise EXPERIMENT [--json] [--no-replay] [--write]`: the experiment's robustness flags (figure and
  threshold each) and its suggested follow-up sweeps; `--write` saves each suggestion as
  `configs/experiments/<name>.yaml` (a new sweep asset on the next code-location load). Nothing is promoted.
- `qmachina automl list`, `qmachina automl expand TEMPLATE --like EXPERIMENT [--json] [--write]`: a named
  template's experiments (one per signal of its family, evaluated like EXPERIMENT), written as serving and
  experiment YAML files with `--write`.

Exit status 0, or 2 with a message naming what was wrong (unknown experiment, no results, a file that exists).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_research_parsers(subparsers: Any) -> None:
    a = subparsers.add_parser("advise", help="robustness flags and suggested follow-up sweeps of an experiment")
    a.add_argument("experiment")
    a.add_argument("--lake", type=Path, help="lake directory (default: QMACHINA_LAKE_DIR or ./lake)")
    a.add_argument("--configs-dir", type=Path, help="default: QMACHINA_CONFIGS_DIR or ./configs")
    a.add_argument("--no-replay", action="store_true", help="do not replay the selected runs for their trades")
    a.add_argument("--json", action="store_true")
    a.add_argument("--write", action="store_true", help="save each suggestion as configs/experiments/<name>.yaml")
    a.set_defaults(func=cmd_advise)

    m = subparsers.add_parser("automl", help="named AutoML templates that expand to ordinary experiments")
    sub = m.add_subparsers(dest="automl_cmd", required=True)
    ls = sub.add_parser("list", help="the templates")
    ls.set_defaults(func=cmd_automl_list)
    e = sub.add_parser("expand", help="a template's serving and experiment specs (validated)")
    e.add_argument("template")
    e.add_argument("--like", required=True, help="experiment whose evaluation, walk-forward and gate to copy")
    e.add_argument("--configs-dir", type=Path, help="default: QMACHINA_CONFIGS_DIR or ./configs")
    e.add_argument("--json", action="store_true")
    e.add_argument("--write", action="store_true", help="write configs/serving/ and configs/experiments/ files")
    e.set_defaults(func=cmd_automl_expand)


def _configs(args: argparse.Namespace) -> Path:
    from qmachina_assets.core.paths import configs_root

    return Path(args.configs_dir) if args.configs_dir else configs_root()


def cmd_advise(args: argparse.Namespace) -> int:
    from qmachina_assets.core.paths import lake_root
    from qmachina_assets.core.research import advisor, search

    configs = _configs(args)
    adv = advisor.advise(Path(args.lake) if args.lake else lake_root(), args.experiment, configs_dir=configs,
                         replay=not args.no_replay)
    if adv is None:
        raise ValueError(f"no results of experiment {args.experiment!r} in the lake")
    if args.json:
        print(adv.model_dump_json(indent=2, exclude={"sensitivity", "heatmap"}))
    else:
        rob = adv.robustness
        print(f"{adv.experiment}: test days {', '.join(rob.test_dates)}; {rob.sets_tried} sets tried on the last; "
              f"candidate {json.dumps(rob.candidate['params']) if rob.candidate else 'none'}")
        if rob.note:
            print(f"note: {rob.note}")
        for f in rob.flags:
            state = {True: "FIRED", False: "ok", None: "n/a"}[f.fired]
            print(f"  [{state:5}] {f.name}{f' ({f.axis})' if f.axis else ''}: {f.message}")
        for s in adv.suggestions:
            print(f"  suggest {s.kind} {s.axis} -> {s.values} ({s.n_sets} sets/day) as {s.spec['name']}: {s.reason}")
    if args.write:
        for path in search.write_specs(configs, [("experiments", s.spec["name"], s.yaml) for s in adv.suggestions]):
            print(f"wrote {path}")
    return 0


def cmd_automl_list(args: argparse.Namespace) -> int:
    from qmachina_assets.core.research import search

    for t in search.TEMPLATES.values():
        budget = f"{t.n_samples} TPE sets per signal" if t.method == "tpe" else "grid"
        print(f"{t.name:22} {t.family:12} {budget:24} {t.description}")
    return 0


def cmd_automl_expand(args: argparse.Namespace) -> int:
    from qmachina_assets.core.research import search
    from qmachina_assets.core.research.specs import resolve_experiment

    template = search.TEMPLATES.get(args.template)
    if template is None:
        raise ValueError(f"unknown template {args.template!r} (known: {', '.join(search.TEMPLATES)})")
    configs = _configs(args)
    like, serving, pipeline = resolve_experiment(args.like, configs_dir=configs)
    out = search.expand_template(template, like, serving, pipeline)
    if args.json:
        print(json.dumps([e.model_dump(mode="json") for e in out], indent=2))
    else:
        for e in out:
            print(f"{e.experiment['name']:36} {e.signal:14} {e.n_sets:5} sets per test day")
    if args.write:
        files = [(kind, e.experiment["name"], text) for e in out
                 for kind, text in (("serving", e.serving_yaml), ("experiments", e.experiment_yaml))]
        for path in search.write_specs(configs, files):
            print(f"wrote {path}")
    return 0
