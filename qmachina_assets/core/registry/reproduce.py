"""`reproduce`: rebuild a published version's datasets and re-run its evaluation from the recorded lineage.

With `rebuild=True` (the default) every train/test day is rebuilt from the lake's bronze partitions into
a scratch lake (its `bronze/` is a symlink to the real one), the rebuilt dataset ids and Parquet checksums
are compared with the stored datasets, and the recorded walk-forward fold is re-run on the rebuilt data
with exactly the recorded parameter set (`sweeps.run_fold(..., param_sets=[that set])`) and the recorded
experiment, base serving spec and pipeline (not today's YAML files). Metrics must match exactly (None =
NaN on both sides). `rebuild=False` re-runs the evaluation on the stored datasets.

An ML version's model (snapshot `model`) is checked too (`ModelCheck`): the stored file must match its sha256,
and refitting with the recorded params and labels on the recorded training datasets (of the evaluation lake:
the rebuilt ones with `rebuild`) must give the same predictions on the latest fold's test day as the stored
model, bit for bit (NaN where both are undefined); whether the refit's pickle has the same bytes is reported
(`same_bytes`: the fits are deterministic, one thread, fixed seeds). A mismatch is the named cause.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from qmachina_assets.core.ingest.tempfiles import temp_path
from qmachina_assets.core.registry.errors import RegistryError
from qmachina_assets.core.registry.lineage import clean_metric

_COMPARED = ("param_hash", "gold_config_hash", "test_dataset_id")


class _Report(BaseModel):
    model_config = ConfigDict(frozen=True)


class Mismatch(_Report):
    recorded: Any
    reproduced: Any


class DatasetCheck(_Report):
    dataset_id: str
    date: str
    rebuilt_id: str | None
    files: dict[str, Mismatch]  # Parquet files whose sha256 differs
    match: bool
    problems: list[str]


class RunCheck(_Report):
    run_id: str
    test_date: str
    recorded: dict[str, float | None]
    reproduced: dict[str, float | None]
    mismatches: dict[str, Mismatch]
    match: bool


class ModelCheck(_Report):
    path: str
    sha256: str
    test_date: str
    match: bool  # the stored model is intact and the refit predicts exactly as it does on the test day
    same_bytes: bool  # the refit pickles to the stored bytes
    n_scored: int  # test-day bins both score
    max_abs_diff: float | None
    problems: list[str]


class ReproduceReport(_Report):
    version_id: str
    match: bool  # every dataset id and file, and every metric of every run, reproduced exactly
    rebuilt: bool
    datasets: list[DatasetCheck]
    runs: list[RunCheck]
    code_version_recorded: str
    code_version_now: str
    notes: list[str]
    seconds: float
    cause: str | None = None  # when it does not reproduce: the code, the datasets, the model, or neither (named)
    model: ModelCheck | None = None  # an ML version's fitted model

    def text(self) -> str:
        lines = [f"{self.version_id}: {'REPRODUCED' if self.match else 'NOT REPRODUCED'} "
                 f"({len(self.runs)} run(s), {len(self.datasets)} dataset(s), {self.seconds:.1f} s)"]
        if self.cause:
            lines.append(f"  cause: {self.cause}")
        for d in self.datasets:
            lines.append(f"  dataset {d.dataset_id}: {'ok' if d.match else 'DIFFERS'}"
                         + "".join(f"\n    {p}" for p in d.problems))
        if self.model is not None:
            m = self.model
            lines.append(f"  model {m.path}: {'ok' if m.match else 'DIFFERS'} ({m.n_scored} test-day scores, "
                         f"same bytes: {m.same_bytes})" + "".join(f"\n    {p}" for p in m.problems))
        for r in self.runs:
            lines.append(f"  run {r.run_id} ({r.test_date}): {'ok' if r.match else 'DIFFERS'}")
            lines += [f"    {k}: recorded {m.recorded!r}, reproduced {m.reproduced!r}" for k, m in r.mismatches.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _checksums(path: Path) -> dict[str, str]:
    from qmachina_assets.core.research import datasets as dsets

    file = path / dsets.CHECKSUMS_NAME
    sums = json.loads(file.read_text())["files"] if file.is_file() else {}
    return {k: v for k, v in sums.items() if k in dsets.PARQUET_FILES}


def reproduce_version(version, lake: Path, *, rebuild: bool = True, scratch_dir: Path | None = None,
                      ) -> ReproduceReport:
    """See the module doc; `version` is a `PublishedVersion`."""
    from qmachina_assets.core.research import datasets as dsets
    from qmachina_assets.core.research import sweeps

    t0 = time.perf_counter()
    lin = version.lineage
    if lin.kind != "experiment":
        raise RegistryError(f"version {version.version_id} was registered directly ({lin.kind}): there is no "
                            "recorded evaluation to reproduce")
    exp, base, pipeline = lin.experiment_spec(), lin.base_serving_spec(), lin.pipeline_spec()
    lake = Path(lake).resolve()
    notes: list[str] = []
    now = dsets.git_code_version()
    code_diffs = [f"run {r.run_id} ran {r.code_text()}" for r in lin.runs if not _same_code(r, now)]
    if code_diffs:
        notes.append(f"code differs: {'; '.join(code_diffs)}; this checkout is {now.describe()}")

    dates: dict[str, str] = {}  # dataset id -> date
    for run in lin.runs:
        for d, ds in zip([*run.train_dates, run.test_date], run.dataset_ids, strict=True):
            dates[ds] = d
    checks: list[DatasetCheck] = []
    scratch: Path | None = None
    try:
        if rebuild:
            base_dir = Path(scratch_dir) if scratch_dir is not None else lake / "tmp"
            base_dir.mkdir(parents=True, exist_ok=True)
            scratch = temp_path(base_dir / f"reproduce-{version.version_id}")  # swept by `lake gc` if killed
            scratch.mkdir()
            (scratch / "bronze").symlink_to(lake / "bronze", target_is_directory=True)
            eval_lake = scratch
            for ds, day in dates.items():
                problems: list[str] = []
                files: dict[str, Mismatch] = {}
                try:
                    manifest, _ = dsets.build_dataset_day(scratch, pipeline, dt.date.fromisoformat(day),
                                                          pipeline.capture.symbol)
                    rebuilt_id = manifest.dataset_id
                except Exception as exc:  # reported, not raised: the report says what failed
                    rebuilt_id = None
                    problems.append(f"rebuild failed: {type(exc).__name__}: {exc}")
                if rebuilt_id is not None:
                    if rebuilt_id != ds:
                        problems.append(f"rebuilt as {rebuilt_id}")
                    stored_dir = dsets.dataset_dir(lake, ds)
                    if stored_dir.is_dir():
                        old, new = _checksums(stored_dir), _checksums(dsets.dataset_dir(scratch, rebuilt_id))
                        files = {k: Mismatch(recorded=old.get(k), reproduced=new.get(k))
                                 for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
                        problems += [f"{k}: sha256 {m.reproduced} differs from the stored {m.recorded}"
                                     for k, m in files.items()]
                    else:
                        notes.append(f"dataset {ds} is no longer stored; compared by id only")
                checks.append(DatasetCheck(dataset_id=ds, date=day, rebuilt_id=rebuilt_id, files=files,
                                           match=not problems, problems=problems))
        else:
            eval_lake = lake
            for ds, day in dates.items():
                problems = dsets.verify_dataset(dsets.dataset_dir(lake, ds))
                checks.append(DatasetCheck(dataset_id=ds, date=day, rebuilt_id=None, files={},
                                           match=not problems, problems=problems))

        runs: list[RunCheck] = []
        for run in lin.runs:
            fold = sweeps.Fold(tuple(dt.date.fromisoformat(d) for d in run.train_dates),
                               dt.date.fromisoformat(run.test_date))
            recorded = dict(run.metrics)
            mism: dict[str, Mismatch] = {}
            try:
                table = sweeps.run_fold(eval_lake, exp, base, pipeline, fold, pipeline.capture.symbol,
                                        param_sets=[{**run.params, "param_hash": run.param_hash}])
                row = table.to_pylist()[0]
                reproduced = {k: clean_metric(row.get(k)) for k in recorded}
                for k in _COMPARED:
                    if str(row.get(k)) != str(getattr(run, k)):
                        mism[k] = Mismatch(recorded=getattr(run, k), reproduced=row.get(k))
            except Exception as exc:
                reproduced = {}
                mism["error"] = Mismatch(recorded=None, reproduced=f"{type(exc).__name__}: {exc}")
            mism.update({k: Mismatch(recorded=v, reproduced=reproduced.get(k)) for k, v in recorded.items()
                         if reproduced and reproduced.get(k) != v})
            runs.append(RunCheck(run_id=run.run_id, test_date=run.test_date, recorded=recorded,
                                 reproduced=reproduced, mismatches=mism, match=not mism))
        model = None
        if version.runtime_snapshot.get("model") is not None:
            model = check_model(version, lake, eval_lake, pipeline)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    match = (all(c.match for c in checks) and all(r.match for r in runs) and bool(runs)
             and (model is None or model.match))
    cause = None
    if not match:
        bad_data = [c.dataset_id for c in checks if not c.match]
        if code_diffs:
            cause = (f"code mismatch: {'; '.join(code_diffs)}, but this checkout is {now.describe()}; check out "
                     "the recorded code (a run made from uncommitted changes cannot be checked out again)")
        elif bad_data:
            cause = f"dataset mismatch: {', '.join(bad_data)} did not rebuild identically from bronze (same code)"
        elif model is not None and not model.match:
            cause = f"model artifact mismatch: {'; '.join(model.problems)}"
        else:
            cause = ("same code and the same datasets give other figures: the recorded metrics are not what "
                     "this evaluation produces (non-determinism or an altered record)")
    return ReproduceReport(version_id=version.version_id, match=match, rebuilt=rebuild, datasets=checks, runs=runs,
                           code_version_recorded=lin.code_version, code_version_now=now.describe(), notes=notes,
                           seconds=round(time.perf_counter() - t0, 3), cause=cause, model=model)


def check_model(version, lake: Path, eval_lake: Path, pipeline) -> ModelCheck:
    """The stored model against a refit from its recorded entry (module doc); `lake` holds the model file,
    `eval_lake` the training/test datasets the refit and the comparison read."""
    import pickle

    import numpy as np

    from qmachina_assets.core.research import model_artifact

    entry = version.runtime_snapshot["model"]
    spec = version.serving_spec()
    last = max(version.lineage.runs, key=lambda r: r.test_date)
    exp = version.lineage.experiment_spec()
    head = {"path": str(entry.get("path")), "sha256": str(entry.get("sha256")), "test_date": last.test_date}
    try:
        stored = model_artifact.load_model(lake, entry)
    except model_artifact.ModelArtifactError as exc:
        return ModelCheck(**head, match=False, same_bytes=False, n_scored=0, max_abs_diff=None,
                          problems=[f"stored model: {exc}"])
    problems: list[str] = []
    try:
        refit = model_artifact.fit_model(eval_lake, spec, pipeline, exp.eval, list(entry["train_dataset_ids"]))
        a = model_artifact.score_days(eval_lake, stored, spec, pipeline, [last.test_dataset_id])
        b = model_artifact.score_days(eval_lake, refit, spec, pipeline, [last.test_dataset_id])
    except Exception as exc:
        return ModelCheck(**head, match=False, same_bytes=False, n_scored=0, max_abs_diff=None,
                          problems=[f"refit on {entry.get('train_days')} failed: {type(exc).__name__}: {exc}"])
    same_bytes = pickle.dumps(refit, protocol=model_artifact.PICKLE_PROTOCOL) == (lake / entry["path"]).read_bytes()
    both = np.isfinite(a) & np.isfinite(b)
    diff = float(np.max(np.abs(a[both] - b[both]))) if both.any() else None
    if not np.array_equal(a, b, equal_nan=True):
        nan_diff = int((np.isfinite(a) != np.isfinite(b)).sum())
        problems.append(f"model {entry['path']}: refitting {entry['signal']} {entry['params']} on "
                        f"{entry['train_days']} predicts otherwise on {last.test_date} (max |diff| {diff}, "
                        f"{nan_diff} bins defined on one side only): the stored model is not that fit")
    return ModelCheck(**head, match=not problems, same_bytes=same_bytes, n_scored=int(both.sum()), max_abs_diff=diff,
                      problems=problems)


def _same_code(run, now) -> bool:
    """Whether this checkout is the code a run recorded: the commit, and the same uncommitted diff (if any)."""
    if now.commit != run.code_version:
        return False
    if run.code_dirty is None:  # not recorded: only the commit can be compared
        return True
    return bool(now.dirty) == run.code_dirty and (not run.code_dirty or now.diff_sha256 == run.code_diff_sha256)
