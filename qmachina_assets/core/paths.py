"""Where the project's files live: repo root, configs, lake. Overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def lake_root() -> Path:
    """The data lake: `QMACHINA_LAKE_DIR`, else `lake/` in the checkout."""
    return Path(os.environ.get("QMACHINA_LAKE_DIR", PROJECT_ROOT / "lake")).resolve()


def configs_root() -> Path:
    return Path(os.environ.get("QMACHINA_CONFIGS_DIR", PROJECT_ROOT / "configs")).resolve()


def shared_data_root() -> Path:
    """Real Databento sample files shipped beside the checkout (`../shared/data/databento`)."""
    return Path(
        os.environ.get("QMACHINA_SAMPLE_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data" / "databento")
    ).resolve()
