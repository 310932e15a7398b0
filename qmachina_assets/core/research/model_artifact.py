"""The fitted model an ML serving version carries: fitted at promotion, content-addressed in the lake, loaded by hash.

An ML signal scores with a model fitted on earlier days (`signals/ml.py`), so a published ML version is only
what was evaluated if it carries that model. At promotion (`Registry.promote` of an experiment lineage) the
promoted spec's signal is fitted exactly as the walk-forward's LATEST fold fitted it: the same function
(`sweeps.fit_signal`, which the sweep's `fit_and_score` calls), on that fold's recorded training datasets, with
its parameters and its `LabelSpec` (the spec's TP/SL, the experiment's max_hold, the instrument tick). The
fitted signal is written to `{lake}/registry/models/<sha256>.pkl` (temp name, then rename; an existing file
with that hash is reused) and described by the version's snapshot `model` entry (`model_entry`): path
(lake-relative), sha256, bytes, signal, params, train days and dataset ids, labels, library versions.

Serialization: a pickle (protocol 5) of the whole fitted `MLSignal` object, not a library's native format,
because the state that scores is more than the booster: the tick the features divide by, the grid radius and
feature count checked at scoring, the early-stopping iteration, the StandardScaler of the sklearn pipelines,
the PCA's PC1 sign. Pickling the object gives back exactly what the sweep scored with (the tests compare the
predictions bit for bit); LightGBM and XGBoost boosters pickle through their own model text/bytes. Pickle runs
code when loaded, so `load_model` verifies the file's sha256 against the immutable snapshot BEFORE unpickling:
only the bytes the registry published are ever deserialized. A pickle is tied to library versions: `libs`
records lightgbm, xgboost, scikit-learn and numpy, and loading refuses a model whose signal's library (or
numpy) now has another version (the predictions could differ: served would no longer be evaluated), naming
both versions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from qmachina_assets.core.ingest.tempfiles import atomic_path
from qmachina_assets.core.research.signals.base import Signal
from qmachina_assets.core.research.signals.catalog import make_signal
from qmachina_assets.core.research.specs import EvalConfig, PipelineSpec, ServingSpec

MODELS_DIR = ("registry", "models")
FORMAT = "pickle"
PICKLE_PROTOCOL = 5
#: Distribution names of each recorded library (xgboost ships as `xgboost` or `xgboost-cpu`).
LIBRARIES: dict[str, tuple[str, ...]] = {"lightgbm": ("lightgbm",), "xgboost": ("xgboost", "xgboost-cpu"),
                                         "sklearn": ("scikit-learn",), "numpy": ("numpy",)}
#: The libraries whose version must match at load, per signal (numpy for all: the features and the inputs).
SIGNAL_LIBRARIES: dict[str, tuple[str, ...]] = {"gbm_mf": ("lightgbm", "numpy"), "xgb_snap": ("xgboost", "numpy")}
_DEFAULT_LIBRARIES = ("sklearn", "numpy")
ENTRY_KEYS: tuple[str, ...] = ("format", "path", "sha256", "bytes", "signal", "params", "train_days",
                               "train_dataset_ids", "labels", "libs")


class ModelArtifactError(ValueError):
    """A model artifact is missing, altered or unusable; the message names the file."""


def is_ml(serving: ServingSpec) -> bool:
    """Whether the spec's signal scores with a fitted model (ValueError when its signal does not validate)."""
    from qmachina_assets.core.research.sweeps import signal_kwargs

    return serving.signal is not None and make_signal(serving.signal.name, signal_kwargs(serving)).kind == "ml"


def library_versions() -> dict[str, str | None]:
    """Installed versions of the model libraries (None: not installed), without importing them."""
    out: dict[str, str | None] = {}
    for lib, dists in LIBRARIES.items():
        out[lib] = None
        for d in dists:
            try:
                out[lib] = importlib.metadata.version(d)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def model_path(lake: Path, sha256: str, fmt: str = FORMAT) -> Path:
    return Path(lake).joinpath(*MODELS_DIR, f"{sha256}.{'pkl' if fmt == FORMAT else fmt}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---- fitting -----------------------------------------------------------------------------------------


def fit_model(lake: Path, serving: ServingSpec, pipeline: PipelineSpec, ev: EvalConfig,
              train_dataset_ids: list[str]) -> Signal:
    """`serving`'s signal fitted on the datasets `train_dataset_ids` exactly as `sweeps.run_fold` fits it
    (`sweeps.fit_signal`, the same DayData, the same LabelSpec)."""
    from qmachina_assets.core.research import sweeps

    runtime = pipeline.runtime()
    train_src = sweeps.DayData(Path(lake), list(train_dataset_ids), runtime.grid_radius_ticks, runtime.tick_int)
    label = sweeps.label_spec(serving, ev, runtime.tick_size)
    sig, _ = sweeps.fit_signal(serving, pipeline, label, train_src, pipeline.gold_config().config_hash)
    return sig


def score_days(lake: Path, sig: Signal, serving: ServingSpec, pipeline: PipelineSpec,
               dataset_ids: list[str]) -> np.ndarray:
    """A fitted signal's scores on datasets (as the sweep scores its test day)."""
    from qmachina_assets.core.research import sweeps

    runtime = pipeline.runtime()
    src = sweeps.DayData(Path(lake), list(dataset_ids), runtime.grid_radius_ticks, runtime.tick_int)
    data = src.load(list(sig.columns), serving.gold_config(pipeline), pipeline.gold_config().config_hash)
    return sig.score(data)


def write_model(lake: Path, sig: Signal) -> tuple[Path, str, int]:
    """Pickle a fitted signal to its content-addressed file (temp, then rename; kept when that hash is already
    stored intact). (path, sha256, bytes)."""
    blob = pickle.dumps(sig, protocol=PICKLE_PROTOCOL)
    sha = hashlib.sha256(blob).hexdigest()
    path = model_path(lake, sha)
    if not (path.is_file() and sha256_file(path) == sha):
        with atomic_path(path) as tmp:
            tmp.write_bytes(blob)
    return path, sha, len(blob)


def model_entry(lake: Path, sig: Signal, serving: ServingSpec, pipeline: PipelineSpec, ev: EvalConfig,
                train_days: list[str], train_dataset_ids: list[str]) -> dict[str, Any]:
    """Write the fitted signal and describe it for the snapshot's `model` section (see the module doc)."""
    from qmachina_assets.core.research import sweeps

    path, sha, size = write_model(lake, sig)
    runtime = pipeline.runtime()
    label = sweeps.label_spec(serving, ev, runtime.tick_size)
    return {"format": FORMAT, "path": path.relative_to(Path(lake)).as_posix(), "sha256": sha, "bytes": size,
            "signal": sig.name, "params": sweeps.signal_kwargs(serving), "train_days": list(train_days),
            "train_dataset_ids": list(train_dataset_ids),
            "labels": {"tp_ticks": label.tp_ticks, "sl_ticks": label.sl_ticks, "max_hold_bins": label.max_hold_bins,
                       "tick_size": label.tick_size},
            "libs": library_versions()}


def build_model(lake: Path, serving: ServingSpec, pipeline: PipelineSpec, ev: EvalConfig, train_days: list[str],
                train_dataset_ids: list[str]) -> tuple[dict[str, Any], float]:
    """(snapshot `model` entry, fit seconds): fit on one fold's training days, then write the artifact."""
    t0 = time.perf_counter()
    sig = fit_model(lake, serving, pipeline, ev, train_dataset_ids)
    seconds = time.perf_counter() - t0
    return model_entry(lake, sig, serving, pipeline, ev, train_days, train_dataset_ids), seconds


# ---- checking and loading ------------------------------------------------------------------------------


def _file(lake: Path, entry: dict[str, Any]) -> Path:
    rel = str(entry.get("path") or "")
    path = Path(lake) / rel
    if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise ModelArtifactError(f"model path {rel!r}: expected a path inside the lake (registry/models/<sha256>.pkl)")
    return path


def file_problems(lake: Path, entry: dict[str, Any]) -> list[str]:
    """Why the entry's file is not the published model: missing, or another sha256 / size. [] when intact."""
    try:
        path = _file(lake, entry)
    except ModelArtifactError as exc:
        return [str(exc)]
    if not path.is_file():
        return [f"model file {path} is missing (sha256 {entry.get('sha256')})"]
    sha = sha256_file(path)
    if sha != entry.get("sha256"):
        return [f"model file {path}: sha256 {sha} differs from the published {entry.get('sha256')} (altered or "
                "replaced)"]
    if path.stat().st_size != entry.get("bytes"):
        return [f"model file {path}: {path.stat().st_size} bytes, the published entry says {entry.get('bytes')}"]
    return []


def fitted_for(entry: dict[str, Any], serving: ServingSpec) -> bool:
    """Whether the entry's model was fitted for `serving`'s signal and params (compared as JSON: a stored entry
    holds lists where a spec may hold tuples)."""
    from qmachina_assets.core.research.sweeps import signal_kwargs

    assert serving.signal is not None
    return (entry.get("signal") == serving.signal.name
            and json.dumps(entry.get("params"), sort_keys=True) == json.dumps(signal_kwargs(serving), sort_keys=True))


def entry_problems(lake: Path, entry: dict[str, Any] | None, serving: ServingSpec,
                   fold: dict[str, Any] | None = None) -> list[str]:
    """Every way a snapshot `model` entry fails to be `serving`'s fitted model (the preflight's `artifact`
    rule): no entry, missing keys, another signal/params than published, other `train_days`,
    `train_dataset_ids` or `labels` than `fold` says (the latest fold's), the file (above)."""
    from qmachina_assets.core.research.sweeps import signal_kwargs

    assert serving.signal is not None
    name = serving.signal.name
    if not entry:
        return [f"signal {name!r} is an ML signal and the version carries no fitted model (snapshot `model`: "
                "path, sha256): a version with no model cannot score what was evaluated; promote it from its "
                "experiment's walk-forward, which fits and stores the model"]
    missing = [k for k in ENTRY_KEYS if k not in entry]
    if missing:
        return [f"model entry lacks {', '.join(missing)} (expected {', '.join(ENTRY_KEYS)})"]
    out = []
    if entry["format"] != FORMAT:
        out.append(f"model {entry['path']}: format {entry['format']!r}, expected {FORMAT!r}")
    if not fitted_for(entry, serving):
        out.append(f"model {entry['path']} was fitted for signal {entry['signal']!r} {entry['params']}; the version "
                   f"serves {name!r} {signal_kwargs(serving)}")
    for key, want in (fold or {}).items():
        if entry[key] != want:
            out.append(f"model {entry['path']} has {key} {entry[key]}; the walk-forward's latest fold has {want}")
    return out + file_problems(lake, entry)


_CACHE: dict[str, Signal] = {}
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8


def load_model(lake: Path, entry: dict[str, Any]) -> Signal:
    """The fitted signal of a snapshot `model` entry. The file's sha256 is verified before it is unpickled
    (ModelArtifactError naming the file on a mismatch or a missing file), the signal's libraries must have the
    recorded versions, and the object must be that fitted signal. The unpickled object is cached by sha256 (a
    model is immutable and `score` does not change it); the file is hashed on every call."""
    if not entry:
        raise ModelArtifactError("the version carries no model entry")
    sha = str(entry.get("sha256"))
    path = _file(lake, entry)
    if not path.is_file():
        raise ModelArtifactError(f"model file {path} is missing (sha256 {sha})")
    blob = path.read_bytes()
    got = hashlib.sha256(blob).hexdigest()
    if got != sha:
        raise ModelArtifactError(f"model file {path}: sha256 {got} differs from the published {sha}; refusing to "
                                 "load it (altered or replaced)")
    with _CACHE_LOCK:
        hit = _CACHE.get(sha)
    if hit is not None:
        return hit
    now = library_versions()
    rec = entry.get("libs") or {}
    for lib in SIGNAL_LIBRARIES.get(str(entry.get("signal")), _DEFAULT_LIBRARIES):
        if rec.get(lib) != now.get(lib):
            raise ModelArtifactError(f"model file {path} was pickled with {lib} {rec.get(lib)}, this process has "
                                     f"{now.get(lib)}: its predictions could differ from the evaluated ones; install "
                                     f"{lib}=={rec.get(lib)} or re-promote")
    sig = pickle.loads(blob)  # safe: the bytes were verified against the immutable snapshot's sha256 above
    if not isinstance(sig, Signal) or sig.kind != "ml" or sig.name != entry.get("signal") or not sig.fitted:
        raise ModelArtifactError(f"model file {path} does not hold a fitted {entry.get('signal')!r} signal")
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[sha] = sig
    return sig


def load_snapshot_model(lake: Path, snapshot: dict[str, Any]) -> Signal | None:
    """The fitted model of a published version's snapshot (None when it carries none); see `load_model`."""
    entry = snapshot.get("model")
    return None if entry is None else load_model(lake, entry)

