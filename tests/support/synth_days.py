"""Two synthetic trading days (2024-03-14/15, ESH4, 300 k records each) in a throw-away lake with a copy of
`configs/`, a pipeline of their first 20 minutes after the open and a flow-score serving spec on it: the
shared ground of the sweep and registry tests, which add their own experiments."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.ingest.bronze import build_bronze
from qmachina_assets.core.ingest.synth import SynthParams, write_synthetic_day
from qmachina_assets.core.instrument import InstrumentConfig, load_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.research import datasets
from qmachina_assets.core.research.datasets import CodeVersion

DAYS = (dt.date(2024, 3, 14), dt.date(2024, 3, 15))
PIPELINE = """name: synth_two_days
description: two synthetic days, 20 minutes after the open
capture: {symbol: ESH4, dates: [2024-03-14, 2024-03-15], start_et: "09:30", end_et: "09:50"}
"""


@dataclass(frozen=True)
class SynthDays:
    root: Path
    lake: Path
    configs: Path
    instrument: InstrumentConfig
    serving_text: str  # configs/serving/synth_flow.yaml, for variants


def build_synth_days(root: Path) -> SynthDays:
    lake = root / "lake"
    inst = load_instrument(PROJECT_ROOT / "configs" / "instrument.yaml")
    for i, day in enumerate(DAYS):
        src = write_synthetic_day(root / f"synth-{day}.dbn.zst",
                                  SynthParams(n_records=300_000, seed=11 + i, date=day, symbol="ESH4"), inst)
        f = lakemod.land_raw_file(src, lake, inst)
        build_bronze([f.path], date=f.date, symbol="ESH4", lake=lake, instrument=inst)
    configs = root / "configs"
    shutil.copytree(PROJECT_ROOT / "configs", configs)
    (configs / "pipelines" / "synth_two_days.yaml").write_text(PIPELINE)
    serving = (configs / "serving" / "vp_flow_score.yaml").read_text()
    serving = serving.replace("name: vp_flow_score", "name: synth_flow").replace("pipeline: es_sample_days",
                                                                                  "pipeline: synth_two_days")
    (configs / "serving" / "synth_flow.yaml").write_text(serving)
    return SynthDays(root, lake, configs, inst, serving)


@contextlib.contextmanager
def pinned_code(dirty: bool = False, diff: str = "0" * 64):
    """Sweeps and registrations record this checkout's HEAD as clean (or as dirty with `diff`), whatever the
    working tree's state: the registry refuses runs made from uncommitted code, and a developer's tree is dirty."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    code = CodeVersion(commit=head, dirty=dirty, source="git", diff_sha256=diff if dirty else None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets, "git_code_version", lambda *a, **k: code)
        yield code
