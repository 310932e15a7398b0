"""Which emission window a silver partition gets: part of the asset's definition (`configs/silver.yaml`),
never run config, so the Dagster UI's Materialize button and the automation build the same thing.

A dense ±R grid at 100 ms is ~9 MB of Parquet per minute of market time, so a session whose live records
(after the opening snapshot) span more than `full_span_max_minutes` of `ts_recv` (a full trading day) is
gridded over `window` only (the first RTH hour by default), a shorter one whole (the engine's span: first
live record to the last; the shipped sample files). `sessions` pins a window per `date|symbol`.
The resolved window is recorded in the silver manifest and its version tag; a different window builds a new
version beside the old one (silver_partition.py), never an error.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qmachina_assets.core.engine.silver_partition import SilverWindow
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.paths import configs_root

POLICY_NAME = "silver.yaml"


class SilverWindowPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    full_span_max_minutes: float = Field(180.0, gt=0)
    window: SilverWindow = SilverWindow(start_et="09:30", end_et="10:30")
    sessions: dict[str, SilverWindow] = {}

    def window_for(self, key: str, live_minutes: float) -> SilverWindow:
        """The window of session `key` (`date|symbol`) whose live records span `live_minutes`."""
        if key in self.sessions:
            return self.sessions[key]
        return SilverWindow() if live_minutes <= self.full_span_max_minutes else self.window

    @property
    def policy_hash(self) -> str:
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def live_span_minutes(bronze_file: Path, last_ts_recv: int | None) -> float:
    """Minutes from the first record that is not part of the opening snapshot to the last one (reads only
    until that first live record)."""
    if last_ts_recv is None:
        return 0.0
    for chunk in dbn.iter_mbo_chunks(bronze_file, chunk_records=200_000):
        live = np.flatnonzero((chunk["flags"] & dbn.F_SNAPSHOT) == 0)
        if len(live):
            return max(0.0, (last_ts_recv - int(chunk["ts_recv"][live[0]])) / 60e9)
    return 0.0


def load_window_policy(path: Path | None = None) -> SilverWindowPolicy:
    """`configs/silver.yaml` (defaults when the file is absent); errors name the file and field."""
    path = Path(path) if path is not None else configs_root() / POLICY_NAME
    if not path.is_file():
        return SilverWindowPolicy()
    data = yaml.safe_load(path.read_text()) or {}
    try:
        return SilverWindowPolicy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{path}: {field}: {err['msg']}") from None
