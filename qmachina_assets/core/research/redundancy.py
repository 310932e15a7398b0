"""Redundancy of what a model is built from, on research datasets: the stored gold outputs (per grid cell) and
the signals (per bin: a statistical signal's score, an ML signal's feature matrix column by column), with the
rank-correlation and R² tests of `core/gold/redundancy.py` (the Gold DSL preview uses the same). What the
studio shows before a researcher sweeps two signals that say the same thing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qmachina_assets.core.gold.redundancy import EXPLAINED_R2, MAX_ROWS, RANK_CORR, RedundancyReport, redundancy
from qmachina_assets.core.research import datasets as dsets
from qmachina_assets.core.research.signals import features
from qmachina_assets.core.research.signals.base import GridData
from qmachina_assets.core.research.signals.catalog import make_signal

NOT_FEATURES = frozenset(("bin_seq", "k", "gold_valid"))
#: The named feature matrix each ML signal fits on (the builders its `features` calls, with its params).
ML_FEATURES: dict[str, Callable[[GridData, Any, float], tuple[np.ndarray, list[str]]]] = {
    "gbm_mf": lambda d, p, tick: features.gbm_mf_features(d, tick, p.slope_window),
    "xgb_snap": lambda d, p, tick: features.xgb_snap_features(d, tick, p.snap_k),
    "knn_cl": lambda d, p, tick: features.knn_cl_features(d, tick),
    "lsvm_der": lambda d, p, tick: features.lsvm_der_features(d, p.slope_windows),
    "svm_sp": lambda d, p, tick: features.svm_sp_features(d, tick),
}


def gold_redundancy(lake: Path, dataset_ids: Sequence[str], *, rank_corr: float = RANK_CORR,
                    r2: float = EXPLAINED_R2, max_rows: int = MAX_ROWS) -> RedundancyReport:
    """Every gold output stored in the datasets (the built-in set and the pipeline's Gold DSL outputs) over
    their valid cells (`gold_valid`)."""
    parts: dict[str, list[np.ndarray]] = {}
    for ds in dataset_ids:
        path = dsets.dataset_dir(lake, ds) / dsets.GOLD_NAME
        if not path.is_file():
            raise dsets.DatasetError(f"{path}: no gold in dataset {ds!r}")
        schema = pq.read_schema(path)
        cols = [f.name for f in schema
                if f.name not in NOT_FEATURES and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]
        t = pq.read_table(path, columns=[*cols, "gold_valid"])
        keep = t["gold_valid"].to_numpy(zero_copy_only=False).astype(bool)
        step = max(1, int(keep.sum()) * len(dataset_ids) // max_rows)
        for c in cols:
            parts.setdefault(c, []).append(t[c].to_numpy(zero_copy_only=False)[keep][::step].astype(np.float64))
    ragged = [c for c, v in parts.items() if len(v) != len(dataset_ids)]
    if ragged:
        raise dsets.DatasetError(f"gold column(s) {', '.join(ragged)} missing from some of the datasets")
    return redundancy({c: np.concatenate(v) for c, v in parts.items()}, rank_corr=rank_corr, r2=r2,
                      max_rows=max_rows)


def signal_redundancy(lake: Path, dataset_ids: Sequence[str], signals: Sequence[str], tick_size: float,
                      params: dict[str, dict[str, Any]] | None = None, *, rank_corr: float = RANK_CORR,
                      r2: float = EXPLAINED_R2, max_rows: int = MAX_ROWS) -> RedundancyReport:
    """Statistical signals' scores (column `<signal>`) and ML signals' features (`<signal>:<feature>`) per
    valid bin of the datasets; `params` per signal name (default: the signal's defaults)."""
    if not signals:
        raise ValueError("signal_redundancy: name at least one signal")
    sigs = {name: make_signal(name, (params or {}).get(name)) for name in dict.fromkeys(signals)}
    unsupported = [n for n, s in sigs.items() if s.kind == "ml" and n not in ML_FEATURES]
    if unsupported:
        raise ValueError(f"no named feature matrix for {', '.join(unsupported)} "
                         f"(ML signals with one: {', '.join(ML_FEATURES)})")
    columns = sorted({c for s in sigs.values() for c in s.columns})
    data = dsets.load_grid_data(lake, list(dataset_ids), columns)
    out: dict[str, np.ndarray] = {}
    for name, sig in sigs.items():
        if sig.kind == "ml":
            x, names = ML_FEATURES[name](data, sig.params, tick_size)
            out.update({f"{name}:{f}": x[:, j] for j, f in enumerate(names)})
        else:
            out[name] = sig.score(data)
    keep = data.valid
    return redundancy({k: v[keep] for k, v in out.items()}, rank_corr=rank_corr, r2=r2, max_rows=max_rows)
