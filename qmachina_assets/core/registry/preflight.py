"""Preflight: everything a serving version must satisfy before it is published.

`preflight` runs inside `Registry.promote` itself (in its write transaction, before any write), so every
path — CLI, API, sensor, a direct library call — goes through it. It collects every problem and raises
one `PreflightError` listing them, each with a `kind`:

- `spec`: the serving or pipeline spec does not re-validate (e.g. built with `model_construct`), or its
  `gold_column` signal names a column that is neither built-in gold nor an output of the pipeline's Gold DSL.
- `model_id`: a model without a producer (known: `specs.MODEL_FIELDS`).
- `stream_schema`: a field not in the silver allow-list, or with another dtype than the exact Arrow wire
  schema (`silver.silver_schema()`), or a field the model's producer does not emit.
- `runtime`, `gold_config`: the pipeline runtime + serving fields, or the gold config, do not validate.
- `instrument`: the capture symbol or a dataset belongs to another instrument than the lock.
- `dataset`: a lineage dataset is missing from the lake, fails its checksums, or was built from another
  pipeline/runtime/gold config than the one being published (stale).
- `code_version`: the recorded code version is unknown or not a commit of this checkout, or a run was made
  from uncommitted changes (refused unless `allow_dirty`; the alias audit records that it was allowed).
- `lineage`: the lineage does not describe this spec (spec/pipeline/experiment hashes, the promoted
  parameters), or a run's row in the results store differs from the recorded one.
- `selection`: the runs are not the walk-forward's selection (`candidates.gate_failures`: every fold's
  selected run of the latest sweep, the promoted parameters being the latest fold's).
- `gate`: an out-of-sample metric of a run is below the experiment's promotion gate (and the caller's).
- `artifact`: an ML signal without its fitted model (a direct `register` has no walk-forward fold to fit it on,
  so an ML spec cannot be registered), a model fitted for another signal/params/training days than the latest
  fold's, a model file missing or not matching its sha256, a model given for a signal that is not ML, or a fit
  at promotion that failed (`model_artifact`). The checked entry becomes the snapshot's `model` section (only
  ML versions have one, so other versions keep their ids).
- `gold_dsl`: the pipeline's Gold DSL spec is missing or invalid, or the browser could not run it (a node,
  option or expression function outside `web/src/gold/dsl-capabilities.json`, a silver column that is not
  streamed, or a producer without the dense grid); a lineage dataset built from another version of the spec
  is `dataset` (stale).
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from qmachina_assets.core.gold import dsl
from qmachina_assets.core.gold.features import GoldFeatureConfig
from qmachina_assets.core.instrument import InstrumentConfig, InstrumentLockError
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.registry.candidates import gate_failures
from qmachina_assets.core.registry.lineage import Lineage, clean_metric, read_runs
from qmachina_assets.core.registry.snapshot import runtime_snapshot, stream_schema_problems
from qmachina_assets.core.research.specs import (
    MODEL_FIELDS,
    SILVER_FIELDS,
    ConfigError,
    PipelineSpec,
    PromotionGate,
    ServingSpec,
    apply_params,
    signal_column_problem,
)

KINDS: tuple[str, ...] = ("spec", "model_id", "stream_schema", "runtime", "gold_config", "instrument", "dataset",
                          "code_version", "lineage", "selection", "gate", "artifact", "gold_dsl")
_GOLD_FIELDS = ("scoring.", "engine.c", "engine.flow_")


class PreflightIssue(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.message}"


class PreflightError(ValueError):
    """The version cannot be published; `issues` lists every problem (kind + message)."""

    def __init__(self, subject: str, issues: list[PreflightIssue]):
        self.subject = subject
        self.issues = issues
        super().__init__(f"preflight refused {subject}: " + "; ".join(str(i) for i in issues))

    @property
    def kinds(self) -> set[str]:
        return {i.kind for i in self.issues}


class _Issues(list[PreflightIssue]):
    def add(self, kind: str, message: str) -> None:
        assert kind in KINDS, kind
        self.append(PreflightIssue(kind=kind, message=message))


# ---- code version ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _git_has_commit(commit: str, root: str) -> bool | None:
    """True/False when `root` is a git checkout that does/does not hold `commit`; None without git."""
    try:
        inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=root, capture_output=True,
                                text=True, timeout=5)
        if inside.returncode != 0:
            return None
        found = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root, capture_output=True,
                               timeout=5)
        return found.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return None


def code_version_problem(version: str, root: Path = PROJECT_ROOT) -> str | None:
    """Why a recorded code version cannot be resolved, or None. A git sha must be a commit of the checkout
    (when there is one); outside a checkout any recorded non-`unknown` version is accepted."""
    v = (version or "").strip()
    if not v or v == "unknown":
        return (f"code version {version!r} cannot be resolved: the run was made outside a git checkout without "
                "QMACHINA_CODE_VERSION")
    if re.fullmatch(r"[0-9a-f]{7,40}", v):
        has = _git_has_commit(v, str(root))
        if has is False:
            return f"code version {v} is not a commit of this checkout ({root}); fetch it or re-run the experiment"
    return None


# ---- the checks ------------------------------------------------------------------------------------


def _check_spec(serving: ServingSpec, pipeline: PipelineSpec, issues: _Issues) -> bool:
    """Model id, wire schema, then full re-validation; False when the snapshot cannot be built."""
    ok = True
    if serving.model_id not in MODEL_FIELDS:
        issues.add("model_id", f"model_id: unknown model {serving.model_id!r} (known: {', '.join(MODEL_FIELDS)})")
        ok = False
    fields = [{"name": getattr(f, "name", None), "dtype": getattr(f, "dtype", None)} for f in serving.stream_schema]
    for p in stream_schema_problems(fields):
        issues.add("stream_schema", p)
        ok = False
    emitted = MODEL_FIELDS.get(serving.model_id, ())
    for i, f in enumerate(serving.stream_schema):
        if f.name in SILVER_FIELDS and SILVER_FIELDS[f.name][1] != f.role:
            issues.add("stream_schema", f"stream_schema[{i}]: {f.name} has role {SILVER_FIELDS[f.name][1]}, "
                                        f"not {f.role}")
            ok = False
        if emitted and f.name in SILVER_FIELDS and f.name not in emitted:
            issues.add("stream_schema", f"stream_schema[{i}]: the {serving.model_id} producer does not emit "
                                        f"{f.name!r}")
            ok = False
    if not ok:
        return False
    for what, model, spec in (("serving", ServingSpec, serving), ("pipeline", PipelineSpec, pipeline)):
        try:
            model.model_validate(spec.model_dump())
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(x) for x in err["loc"])
                msg = str(err["msg"]).removeprefix("Value error, ")
                first = str(err["loc"][0]) if err["loc"] else msg.split(":", 1)[0]
                kind = {"scoring": "gold_config", "engine": "gold_config", "stream_schema": "stream_schema",
                        "model_id": "model_id"}.get(first, "spec")
                issues.add(kind, f"{what} spec {spec.name!r} does not validate: {loc + ': ' if loc else ''}{msg}")
            ok = False
    return ok


def _snapshot(serving: ServingSpec, pipeline: PipelineSpec, inst: InstrumentConfig,
              issues: _Issues) -> dict[str, Any] | None:
    try:
        snapshot = runtime_snapshot(serving, pipeline, inst)
    except ConfigError as err:
        kind = "gold_config" if err.field.startswith(_GOLD_FIELDS) else "runtime"
        issues.add(kind, f"{err.file}: {err.field}: {err.reason}")
        return None
    except dsl.DslValidationError as err:
        issues.add("gold_dsl", f"pipeline {pipeline.name!r} gold_dsl: {err}")
        return None
    try:
        gold_cfg = GoldFeatureConfig.model_validate(snapshot["gold_config"])
    except ValidationError as exc:
        issues.add("gold_config", f"gold config does not validate: {exc.errors()[0]['msg']}")
        return None
    if gold_cfg.config_hash != snapshot["gold_config_hash"]:
        issues.add("gold_config", "gold config does not round-trip through JSON (hash "
                                  f"{snapshot['gold_config_hash']} -> {gold_cfg.config_hash})")
        return None
    return snapshot


def _check_gold_dsl(serving: ServingSpec, snapshot: dict[str, Any], issues: _Issues) -> None:
    """The browser must be able to run the Gold DSL the version serves (refused here, not found in the viewer)."""
    section = snapshot.get("gold_dsl")
    if section is None:
        return
    spec = dsl.GoldDslSpec.model_validate(section["spec"])
    where = f"gold DSL {section['name']!r} ({section['spec_hash']})"
    if serving.model_id != "vacuum_pressure":
        issues.add("gold_dsl", f"{where}: the {serving.model_id} producer does not stream the dense ±R grid a Gold "
                               "DSL is computed from")
    try:
        problems = dsl.browser_problems(spec, {f.name for f in serving.stream_schema})
    except dsl.DslValidationError as err:
        problems = [str(err)]
    for p in problems:
        issues.add("gold_dsl", f"{where}: {p}")


def _check_instrument(pipeline: PipelineSpec, inst: InstrumentConfig, issues: _Issues) -> None:
    try:
        inst.check_lock(source=f"pipeline {pipeline.name!r} capture.symbol", symbols=[pipeline.capture.symbol])
    except InstrumentLockError as err:
        issues.add("instrument", str(err))


def _check_datasets(lake: Path, ids: list[str], pipeline: PipelineSpec, inst: InstrumentConfig,
                    issues: _Issues, gold_dsl_hash: str | None = None) -> None:
    from qmachina_assets.core.research import datasets as dsets

    try:
        want_runtime = pipeline.runtime(inst).config_version
        want_gold = pipeline.gold_config(inst).config_hash
    except ConfigError:
        want_runtime = want_gold = None  # reported by the runtime check
    for ds in ids:
        path = dsets.dataset_dir(lake, ds)
        if not path.is_dir():
            issues.add("dataset", f"dataset {ds} not found in the lake ({path})")
            continue
        try:
            m = dsets.read_dataset_manifest(path)
        except ValueError as exc:
            issues.add("dataset", f"dataset {ds}: manifest unreadable ({exc})")
            continue
        if m is None:
            issues.add("dataset", f"dataset {ds}: {dsets.MANIFEST_NAME} missing ({path})")
            continue
        problems = dsets.verify_dataset(path)
        if problems:
            issues.add("dataset", f"dataset {ds} fails its checksums: {'; '.join(problems)}")
        if m.dataset_id != ds:
            issues.add("dataset", f"dataset {ds}: its manifest names {m.dataset_id}")
        rt = m.runtime_config
        lock_diff = [k for k in ("product_type", "dataset", "symbol_root") if rt.get(k) != getattr(inst, k)]
        if lock_diff or not inst.symbol_matches_root(m.symbol):
            issues.add("instrument", f"dataset {ds} was built for {rt.get('product_type')}/{rt.get('dataset')}/"
                                     f"{m.symbol}; the instrument lock is {inst.product_type}/{inst.dataset}/"
                                     f"{inst.symbol_root}")
        if m.pipeline_dataset_hash != pipeline.dataset_hash:
            issues.add("dataset", f"dataset {ds} was built by pipeline {m.pipeline_name!r} with dataset hash "
                                  f"{m.pipeline_dataset_hash}; pipeline {pipeline.name!r} now has "
                                  f"{pipeline.dataset_hash} (stale)")
        if want_runtime is not None and m.runtime_config_version != want_runtime:
            issues.add("dataset", f"dataset {ds} was built with runtime config {m.runtime_config_version}; the "
                                  f"pipeline under the current lock resolves to {want_runtime} (stale)")
        if gold_dsl_hash is not None and (m.gold_dsl is None or m.gold_dsl.spec_hash != gold_dsl_hash):
            held = "no Gold DSL" if m.gold_dsl is None else f"Gold DSL {m.gold_dsl.name} ({m.gold_dsl.spec_hash})"
            issues.add("dataset", f"dataset {ds} holds {held}; the version serves {gold_dsl_hash} (stale)")
        if want_gold is not None and m.gold_config_hash != want_gold:
            issues.add("dataset", f"dataset {ds} holds gold config {m.gold_config_hash}; the pipeline's is "
                                  f"{want_gold} (stale)")


def _check_experiment(serving: ServingSpec, pipeline: PipelineSpec, lineage: Lineage, lake: Path,
                      snapshot: dict[str, Any] | None, issues: _Issues, *, allow_dirty: bool,
                      gate: PromotionGate | None) -> None:
    """Lineage of an experiment promotion against the spec, the results store and the promotion gate
    (`candidates.gate_failures`: the walk-forward's selection, the metric rules, dirty code)."""
    from qmachina_assets.core.research.sweeps import experiment_hash

    if lineage.experiment is None or lineage.base_serving is None or not lineage.runs:
        issues.add("lineage", "an experiment lineage needs the experiment, the base serving spec and at least one "
                              "run")
        return
    try:
        exp = lineage.experiment_spec()
        base = lineage.base_serving_spec()
    except ValidationError as exc:
        issues.add("lineage", f"recorded experiment/base serving spec does not validate: {exc.errors()[0]['msg']}")
        return
    assert exp is not None and base is not None
    exp_hash = experiment_hash(exp)
    if lineage.experiment_hash != exp_hash or lineage.experiment_name != exp.name:
        issues.add("lineage", f"experiment hash {lineage.experiment_hash} does not match the recorded experiment "
                              f"({exp.name} {exp_hash})")
    if lineage.base_serving_hash != base.spec_hash or exp.serving != base.name:
        issues.add("lineage", f"base serving spec {base.name!r} ({base.spec_hash}) is not the one experiment "
                              f"{exp.name!r} sweeps ({exp.serving!r}, {lineage.base_serving_hash})")
    if base.pipeline != pipeline.name:
        issues.add("lineage", f"base serving spec uses pipeline {base.pipeline!r}, not {pipeline.name!r}")
    try:
        evaluated = apply_params(base, lineage.params or {})
        if evaluated.spec_hash != serving.spec_hash:
            issues.add("lineage", f"the published spec ({serving.spec_hash}) is not the evaluated one: base "
                                  f"{base.name!r} with parameters {lineage.params} gives {evaluated.spec_hash} "
                                  "(what was evaluated is what is served)")
    except ConfigError as err:
        issues.add("lineage", f"the recorded parameters do not apply to the base serving spec: {err}")
    try:
        stored = {r.run_id: r for r in read_runs(lake, exp.name, [r.run_id for r in lineage.runs])}
    except LookupError as err:
        issues.add("lineage", str(err))
        stored = {}
    latest = max(lineage.runs, key=lambda r: r.test_date)
    if latest.params != lineage.params:
        issues.add("lineage", f"the promoted parameters {lineage.params} are not those of the latest fold's run "
                              f"{latest.run_id} ({latest.test_date}: {latest.params})")
    gold_hash = snapshot["gold_config_hash"] if snapshot is not None else None
    if gold_hash is not None and latest.gold_config_hash != gold_hash:
        issues.add("lineage", f"run {latest.run_id} evaluated gold config {latest.gold_config_hash}; the published "
                              f"one is {gold_hash}")
    for run in lineage.runs:
        where = f"run {run.run_id}"
        if run.experiment_hash != exp_hash:
            issues.add("lineage", f"{where} ran experiment version {run.experiment_hash}; the recorded experiment is "
                                  f"{exp_hash} (stale)")
        if run.serving_hash != base.spec_hash:
            issues.add("lineage", f"{where} swept serving spec version {run.serving_hash}, not {base.spec_hash} "
                                  "(stale)")
        if run.pipeline_hash != pipeline.spec_hash:
            issues.add("lineage", f"{where} ran on pipeline version {run.pipeline_hash}; pipeline "
                                  f"{pipeline.name!r} is now {pipeline.spec_hash} (stale)")
        row = stored.get(run.run_id)
        if row is None:
            continue
        a, b = run.model_dump(exclude={"metrics", "created_at"}), row.model_dump(exclude={"metrics", "created_at"})
        diff = [k for k in a if a[k] != b[k]]
        diff += [k for k in sorted(set(run.metrics) | set(row.metrics))
                 if clean_metric(run.metrics.get(k)) != clean_metric(row.metrics.get(k))]
        if diff:
            shown = ", ".join(f"{k} {run.metrics.get(k, a.get(k))!r} (stored {row.metrics.get(k, b.get(k))!r})"
                              for k in diff[:6])
            issues.add("lineage", f"{where} differs from the results store: {shown}")
    for f in gate_failures(lake, exp, list(lineage.runs), allow_dirty=allow_dirty, gate=gate):
        issues.add(_GATE_KINDS.get(f.rule, "gate"), f.message)


def _check_artifact(serving: ServingSpec, lineage: Lineage, lake: Path, snapshot: dict[str, Any] | None,
                    model: dict[str, Any] | None, model_error: str | None, issues: _Issues) -> None:
    """The `artifact` rule (module doc); an accepted entry is added to the snapshot as `model`."""
    from qmachina_assets.core.research import model_artifact

    try:
        ml = model_artifact.is_ml(serving)
    except ValueError:
        return  # a signal that does not validate is the spec check's
    if not ml:
        if model is not None:
            issues.add("artifact", f"a model entry ({model.get('path')}) was given for signal "
                                   f"{serving.signal.name if serving.signal else None!r}, which is not an ML signal")
        return
    if model_error is not None:
        issues.add("artifact", model_error)
        return
    fold = None
    try:
        exp = lineage.experiment_spec() if lineage.kind == "experiment" and lineage.runs else None
    except ValidationError:
        exp = None  # reported as `lineage`
    if exp is not None and serving.tp_ticks is not None and serving.sl_ticks is not None:
        last = max(lineage.runs, key=lambda r: r.test_date)
        tick = snapshot["grid"]["tick_size"] if snapshot is not None else None
        fold = {"train_days": last.train_dates, "train_dataset_ids": last.train_dataset_ids}
        if tick is not None:
            fold["labels"] = {"tp_ticks": float(serving.tp_ticks), "sl_ticks": float(serving.sl_ticks),
                              "max_hold_bins": exp.eval.max_hold_bins, "tick_size": float(tick)}
    problems = model_artifact.entry_problems(lake, model, serving, fold)
    if problems and model is None and lineage.kind == "register":
        problems = [problems[0] + " (a direct registration has no walk-forward fold to fit it on)"]
    for p in problems:
        issues.add("artifact", p)
    if not problems and snapshot is not None:
        snapshot["model"] = dict(model)  # type: ignore[arg-type]


#: Issue kind of each failed gate rule (`candidates.RULES`); the metric rules are `gate`.
_GATE_KINDS: dict[str, str] = {"selection": "selection", "dirty_code": "code_version"}


def preflight(serving: ServingSpec, pipeline: PipelineSpec, lineage: Lineage, *, instrument: InstrumentConfig,
              lake: Path, gate: PromotionGate | None = None, allow_dirty: bool = False,
              model: dict[str, Any] | None = None, model_error: str | None = None) -> dict[str, Any]:
    """The runtime snapshot of `serving` when it may be published; else PreflightError with every problem.
    `allow_dirty` publishes runs made from uncommitted changes (the caller records that in the audit). `model`:
    an ML signal's fitted model entry (`model_artifact.model_entry`), `model_error` why it could not be fitted."""
    issues = _Issues()
    snapshot = None
    if _check_spec(serving, pipeline, issues):
        snapshot = _snapshot(serving, pipeline, instrument, issues)
        if snapshot is not None:
            _check_gold_dsl(serving, snapshot, issues)
            section = snapshot.get("gold_dsl")
            problem = signal_column_problem(serving, section["name"] if section else None,
                                            section["outputs"] if section else ())
            if problem is not None:
                issues.add("spec", f"serving spec {serving.name!r} signal.params.column: {problem}")
    _check_instrument(pipeline, instrument, issues)
    if lineage.serving_spec_hash != serving.spec_hash or lineage.serving_name != serving.name:
        issues.add("lineage", f"lineage describes serving spec {lineage.serving_name!r} ({lineage.serving_spec_hash}), "
                              f"not {serving.name!r} ({serving.spec_hash})")
    if lineage.pipeline_spec_hash != pipeline.spec_hash or serving.pipeline != pipeline.name:
        issues.add("lineage", f"serving spec {serving.name!r} uses pipeline {serving.pipeline!r}; lineage and "
                              f"arguments name pipeline {pipeline.name!r} ({lineage.pipeline_spec_hash} / "
                              f"{pipeline.spec_hash})")
    if lineage.kind == "experiment":
        _check_experiment(serving, pipeline, lineage, Path(lake), snapshot, issues, allow_dirty=allow_dirty,
                          gate=gate)
    else:
        if lineage.runs or lineage.experiment is not None:
            issues.add("lineage", "a register lineage carries no experiment runs")
        if gate is not None:
            issues.add("gate", "a metrics gate needs experiment runs; this lineage has none (kind register)")
    _check_artifact(serving, lineage, Path(lake), snapshot, model, model_error, issues)
    dsl_hash = (snapshot.get("gold_dsl") or {}).get("spec_hash") if snapshot is not None else None
    _check_datasets(Path(lake), lineage.dataset_ids, pipeline, instrument, issues, dsl_hash)
    versions = {v for v in lineage.code_version.split(",") if v} | {r.code_version for r in lineage.runs}
    for v in sorted(versions) or [""]:
        if (p := code_version_problem(v)) is not None:
            issues.add("code_version", p)
    if issues:
        raise PreflightError(f"serving spec {serving.name!r}", list(issues))
    assert snapshot is not None
    return snapshot
