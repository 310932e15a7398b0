"""Lineage of a published serving version: where it came from, enough to check and to reproduce it.

Two kinds:
- `experiment`: one parameter set of an ExperimentSpec promoted from its walk-forward results — the
  experiment, the base serving spec and the pipeline as they were evaluated (full dumps, so `reproduce`
  does not depend on today's YAML files), and one `RunLineage` per results row (run id, parameters,
  dataset ids, code version, config hashes, in- and out-of-sample metrics).
- `register`: a serving spec registered directly (no experiment): the spec and pipeline hashes and the
  code version of the registering checkout.

Timestamps (`recorded_at`, a run's `created_at`) are recorded but are not part of the version id.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from qmachina_assets.core.research.specs import ExperimentSpec, PipelineSpec, ServingSpec, apply_params

#: Results columns of a run that identify what was evaluated (compared with the results store).
RUN_KEYS: tuple[str, ...] = (
    "sweep_id", "param_hash", "signal", "test_date", "test_dataset_id", "code_version", "experiment_hash",
    "serving_hash", "pipeline_hash", "gold_config_hash",
)


#: RunLineage fields added after the first published versions (see `Lineage.content`).
_LATER_RUN_FIELDS: tuple[str, ...] = ("code_dirty", "code_diff_sha256")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def clean_metric(v: Any) -> float | None:
    """A metric as stored in lineage: float, or None for NaN/inf (JSON has neither)."""
    if v is None:
        return None
    x = float(v)
    return x if math.isfinite(x) else None


class RunLineage(_Model):
    """One results row (one parameter set on one walk-forward fold)."""

    run_id: str
    sweep_id: str
    param_hash: str
    params: dict[str, Any]
    signal: str
    test_date: str
    train_dates: list[str]
    test_dataset_id: str
    train_dataset_ids: list[str]
    code_version: str
    experiment_hash: str
    serving_hash: str
    pipeline_hash: str
    gold_config_hash: str
    selected: bool
    metrics: dict[str, float | None]  # is_* and oos_*
    created_at: str | None = None
    #: The checkout had uncommitted changes (None: unknown, e.g. rows written before this was recorded) and
    #: the sha256 of that diff; part of the version id only when known (older versions keep their ids).
    code_dirty: bool | None = None
    code_diff_sha256: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunLineage:
        def split(s: str | None) -> list[str]:
            return [x for x in (s or "").split(",") if x]

        return cls(
            run_id=row["run_id"], params=json.loads(row["params_json"]), train_dates=split(row["train_dates"]),
            train_dataset_ids=split(row["train_dataset_ids"]), selected=bool(row["selected"]),
            metrics={k: clean_metric(v) for k, v in sorted(row.items()) if k.startswith(("is_", "oos_"))},
            created_at=row.get("created_at"), **{k: str(row[k]) for k in RUN_KEYS},
            code_dirty=None if row.get("code_dirty") is None else bool(row["code_dirty"]),
            code_diff_sha256=row.get("code_diff_sha256") or None,
        )

    def code_text(self) -> str:
        """The run's code state in words (commit, and the diff hash when it ran on uncommitted changes)."""
        if self.code_dirty:
            return f"{self.code_version} + uncommitted changes (diff sha256 {(self.code_diff_sha256 or '?')[:16]})"
        return self.code_version + ("" if self.code_dirty is False else " (dirty state not recorded)")

    @property
    def dataset_ids(self) -> list[str]:
        return [*self.train_dataset_ids, self.test_dataset_id]


class Lineage(_Model):
    kind: Literal["experiment", "register"]
    serving_name: str
    serving_spec_hash: str  # of the published (promoted) serving spec
    pipeline: dict[str, Any]  # PipelineSpec dump
    pipeline_spec_hash: str
    code_version: str
    code_dirty: bool | None = None
    experiment: dict[str, Any] | None = None  # ExperimentSpec dump
    experiment_name: str | None = None
    experiment_hash: str | None = None
    base_serving: dict[str, Any] | None = None  # the serving spec the experiment swept (ServingSpec dump)
    base_serving_hash: str | None = None
    params: dict[str, Any] | None = None  # the promoted parameter set
    runs: list[RunLineage] = []
    recorded_at: str | None = None

    def content(self) -> dict[str, Any]:
        """What the version id covers: everything but the timestamps. Fields added after versions were
        first published count only when set, so the stored versions keep their ids."""
        out = self.model_dump(mode="json", exclude={"recorded_at": True, "runs": {"__all__": {"created_at"}}})
        for run in out["runs"]:
            for k in _LATER_RUN_FIELDS:
                if run.get(k) is None:
                    run.pop(k, None)
        return out

    @property
    def dataset_ids(self) -> list[str]:
        out: list[str] = []
        for r in self.runs:
            out += [d for d in r.dataset_ids if d not in out]
        return out

    def pipeline_spec(self) -> PipelineSpec:
        return PipelineSpec.model_validate(self.pipeline)

    def experiment_spec(self) -> ExperimentSpec | None:
        return None if self.experiment is None else ExperimentSpec.model_validate(self.experiment)

    def base_serving_spec(self) -> ServingSpec | None:
        return None if self.base_serving is None else ServingSpec.model_validate(self.base_serving)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def lineage_for_register(serving: ServingSpec, pipeline: PipelineSpec, *, code_version: str | None = None,
                         code_dirty: bool | None = None) -> Lineage:
    """Lineage of a direct registration; the code version defaults to the checkout's (git) commit."""
    if code_version is None:
        from qmachina_assets.core.research.datasets import git_code_version

        cv = git_code_version()
        code_version, code_dirty = cv.commit, cv.dirty
    return Lineage(kind="register", serving_name=serving.name, serving_spec_hash=serving.spec_hash,
                   pipeline=pipeline.model_dump(mode="json"), pipeline_spec_hash=pipeline.spec_hash,
                   code_version=code_version, code_dirty=code_dirty, recorded_at=_now())


def read_runs(lake: Path, experiment: str, run_ids: list[str]) -> list[RunLineage]:
    """The results rows of `run_ids` (in that order); LookupError naming the missing ids."""
    from qmachina_assets.core.research.sweeps import read_results, results_dir

    table = read_results(Path(lake), experiment)
    rows = {} if table is None else {r["run_id"]: r for r in table.to_pylist() if r["run_id"] in set(run_ids)}
    missing = [r for r in run_ids if r not in rows]
    if missing:
        raise LookupError(f"run(s) {', '.join(missing)} not found in the results of experiment {experiment!r} "
                          f"({results_dir(Path(lake), experiment)})")
    return [RunLineage.from_row(rows[r]) for r in run_ids]


def lineage_from_results(lake: Path, experiment: ExperimentSpec, base_serving: ServingSpec, pipeline: PipelineSpec,
                         run_ids: list[str] | str) -> tuple[Lineage, ServingSpec]:
    """(lineage, promoted serving spec) of a walk-forward selection from the experiment's results store.

    `run_ids`: one results row per fold (the set each fold selected; `candidates` checks that they are);
    the promoted spec is `apply_params` of the latest fold's set on the base serving spec (what was
    evaluated is what is served)."""
    from qmachina_assets.core.research.sweeps import experiment_hash

    ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
    if not ids:
        raise ValueError("lineage_from_results: no run ids")
    runs = sorted(read_runs(lake, experiment.name, ids), key=lambda r: r.test_date)
    params = runs[-1].params
    promoted = apply_params(base_serving, params)
    codes = {r.code_version for r in runs}
    dirty = {r.code_dirty for r in runs}
    lineage = Lineage(
        kind="experiment", serving_name=promoted.name, serving_spec_hash=promoted.spec_hash,
        pipeline=pipeline.model_dump(mode="json"), pipeline_spec_hash=pipeline.spec_hash,
        code_version=runs[0].code_version if len(codes) == 1 else ",".join(sorted(codes)),
        code_dirty=True if True in dirty else (None if None in dirty else False),
        experiment=experiment.model_dump(mode="json"), experiment_name=experiment.name,
        experiment_hash=experiment_hash(experiment), base_serving=base_serving.model_dump(mode="json"),
        base_serving_hash=base_serving.spec_hash, params=params, runs=runs, recorded_at=_now(),
    )
    return lineage, promoted
