"""The six ML signals of SPEC §6.8 behind the one `Signal` interface: fit on a training window, score causally.

Evaluation protocol (replaces the seed's in-array walk-forward, SPEC §10.9/10.10/10.13):
- `fit(train, labels)` builds the causal features of `features.py` on the training window, labels each training
  bin with the EXPERIMENT's barriers (`LabelSpec`: +1 if the mid reaches entry + tp·tick first, −1 if it reaches
  entry − sl·tick first, 0 if neither within max_hold bins; first touch, the same scan as the evaluator: bins i+1
  … i+max_hold, invalid bins skipped) and PURGES every bin whose label window i+1 … i+max_hold reaches past the
  last bin of its training DAY, even if a barrier was touched before the end: no label depends on data outside
  `train`, nor on the next day's open when days are concatenated. The seed's training at bin i used labels
  resolved up to 1200 bins later (look-ahead) with hard-coded tp 8 / sl 4 (not the experiment's).
- Boosting early stopping uses a chronological 80/20 split of the usable rows with an embargo of max_hold
  bins (a fitting row's label window ends before the first validation bin) and monitors validation AUC,
  which, unlike log loss, does not punish a shift of the up/down base rate between the two parts.
- Training rows are capped (`max_train_rows`) by an even, deterministic, chronological subsample.
- `score(data)` computes the features on `data` and predicts with the fitted model only; the model never
  changes while scoring, so the score of bin i depends on bins <= i of `data` (features reset each day).
  NaN where the feature row is not warm (any NaN) or the bin is invalid. Scoring before `fit` raises.
- Retraining inside the scored window (the SPEC's "retrain every N bins") is NOT done: fit-on-train /
  score-on-test is the protocol, and walk-forward over days happens in the sweep harness (each fold calls
  `fit` on the earlier days). The SPEC's start bins become `min_train_rows` (fit refuses fewer usable rows).
- Output convention: every ML signal returns a signed score for the evaluator's symmetric rule (long if
  s >= thr, short if s <= −thr, thr > 0). Probability signals (gbm_mf, xgb_snap) return 2·P(up) − 1, so the
  SPEC's "up if p >= t, down if p <= 1 − t" is exactly thr = 2t − 1; their raw P(up) is `probability()`.
  `default_thresholds` are the SPEC's translated to that scale, with the SPEC's 0 thresholds dropped (the
  evaluator needs thr > 0). `spec_output` records the SPEC's native mode.
- Binary models (boosting, both SVMs) learn "up barrier first" vs "down barrier first" on the bins where a
  barrier was touched (label ±1); KNN learns all three classes (confidence = P(up) − P(down)).
- Bad parameters raise (pydantic, extra keys forbidden) — never a silent fallback to defaults (§10.13).
  lsvm_der is a full SGD refit on the training window with its scaler fitted on train only (§10.13).
- Libraries: LightGBM (gbm_mf), XGBoost CPU wheel (xgb_snap), scikit-learn (the rest); fixed seeds, one
  thread each (the sweep harness parallelises across processes).
"""

from __future__ import annotations

import itertools
import math
import warnings
from abc import abstractmethod
from typing import ClassVar, Literal

import numpy as np
from numba import njit
from pydantic import Field, model_validator
from threadpoolctl import ThreadpoolController, threadpool_limits

from qmachina_assets.core.research.signals import common, features
from qmachina_assets.core.research.signals.base import GridData, LabelSpec, Signal, SignalParams, register

SEED = 42
PROBABILITY_THRESHOLDS = (0.50, 0.52, 0.55, 0.58, 0.60, 0.65)  # SPEC §6.8 on P(up)


_CONTROLLER: ThreadpoolController | None = None


def _scoring_threads():
    """`threadpool_limits(1)` for `score`, with the controller built once: building one scans the process's
    loaded libraries (~5 ms), which an online stream scoring every bin would pay per bin. Built at the first
    score, after fit or unpickling loaded the model's library (fit keeps a fresh `threadpool_limits`)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1)


def probability_to_signed(thresholds: tuple[float, ...]) -> tuple[float, ...]:
    """SPEC probability thresholds t as thresholds 2t − 1 on the signed score (non-positive ones dropped)."""
    return tuple(round(2 * t - 1, 10) for t in thresholds if 2 * t - 1 > 0)


# ------------------------------------------------------------------------------------------ labels


@njit(cache=True)
def _barrier_labels_kernel(mid, ok, day_end, up, dn, max_hold, label, usable):
    n = mid.shape[0]
    for i in range(n):
        last = day_end[i]  # the last bin of i's day: no label looks into the next day
        label[i] = 0
        usable[i] = False
        if not ok[i]:
            continue
        entry = mid[i]
        hi = entry + up
        lo = entry - dn
        end = min(i + max_hold, last)
        lab = 0
        for j in range(i + 1, end + 1):
            if not ok[j]:
                continue
            if mid[j] >= hi:
                lab = 1
                break
            if mid[j] <= lo:
                lab = -1
                break
        label[i] = lab
        usable[i] = i + max_hold <= last  # purge: the label window must lie inside the day


def barrier_labels(data: GridData, spec: LabelSpec) -> tuple[np.ndarray, np.ndarray]:
    """(label int8 per bin, usable bool per bin) from the experiment's TP/SL barriers (see module doc).

    `label` is what the data shows (also for purged bins, for inspection); `usable` is False for invalid
    bins and for bins whose window i+1 … i+max_hold reaches past the last bin of their day (purged: with
    several training days concatenated, a day's last bins are never labelled by the next day's open).
    """
    if spec.max_hold_bins < 1 or spec.tp_ticks <= 0 or spec.sl_ticks <= 0 or spec.tick_size <= 0:
        raise ValueError(f"label spec needs tp, sl, tick > 0 and max_hold_bins >= 1, got {spec}")
    eps = 1e-9 * spec.tick_size
    n = data.n_bins
    label = np.empty(n, dtype=np.int8)
    usable = np.empty(n, dtype=np.bool_)
    day = np.asarray(data.day)
    change = np.flatnonzero(day[1:] != day[:-1])  # last bin of every day but the final one
    day_end = np.repeat(np.append(change, n - 1), np.diff(np.concatenate(([-1], change, [n - 1])))).astype(np.int64)
    _barrier_labels_kernel(np.asarray(data.mid, dtype=np.float64), features.valid_mask(data), day_end,
                           spec.tp_ticks * spec.tick_size - eps, spec.sl_ticks * spec.tick_size - eps,
                           int(spec.max_hold_bins), label, usable)
    return label, usable


def even_subsample(idx: np.ndarray, cap: int) -> np.ndarray:
    """At most `cap` entries of idx, evenly spaced and in order (deterministic)."""
    if idx.size <= cap:
        return idx
    return idx[np.unique(np.round(np.linspace(0, idx.size - 1, cap)).astype(np.int64))]


def chronological_split(idx: np.ndarray, frac: float, embargo: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows): the last `frac` of idx validates; fit rows end `embargo` bins before it."""
    cut = math.floor(idx.size * (1 - frac))
    if cut <= 0 or cut >= idx.size:
        return idx, idx[:0]
    first_val = idx[cut]
    return idx[:cut][idx[:cut] + embargo < first_val], idx[cut:]


# ------------------------------------------------------------------------------------------ base


class MLParams(SignalParams):
    min_train_rows: int = Field(1000, ge=10)
    max_train_rows: int = Field(50_000, ge=100)

    @model_validator(mode="after")
    def _rows(self):
        if self.min_train_rows > self.max_train_rows:
            raise ValueError(f"min_train_rows ({self.min_train_rows}) exceeds max_train_rows ({self.max_train_rows})")
        return self


class MLSignal(Signal):
    """Shared fit/score machinery; subclasses build features and wrap one model."""

    kind: ClassVar[Literal["ml"]] = "ml"
    spec_output: ClassVar[Literal["probability", "confidence"]]
    #: Train on the ±1 bins only (binary models) instead of all three classes.
    binary: ClassVar[bool] = True
    supervised: ClassVar[bool] = True

    def __init__(self, params: SignalParams | dict | None = None):
        super().__init__(params)
        self._model = None
        self._tick = float("nan")
        self._n_features = -1
        self._radius = -1
        self.train_info: dict[str, float | int] = {}

    # subclass hooks
    @abstractmethod
    def features(self, data: GridData) -> np.ndarray:
        """(n_bins, n_features) causal feature matrix (uses `self._tick` for returns)."""

    @abstractmethod
    def _fit_model(self, x: np.ndarray, y: np.ndarray, idx: np.ndarray, max_hold: int) -> dict | None:
        """Fit on rows x (bins idx, chronological) with labels y in {−1, 0, 1}; may return extra train info."""

    @abstractmethod
    def _predict(self, x: np.ndarray) -> np.ndarray:
        """Signed score per row."""

    # the interface
    def fit(self, train: GridData, labels: LabelSpec | None = None) -> MLSignal:
        if labels is None:
            raise ValueError(f"{self.name}: fit needs a LabelSpec (the experiment's tp/sl/max_hold/tick)")
        self.fitted, self._model = False, None  # a failed refit never leaves a stale model behind
        self._tick = float(labels.tick_size)
        with threadpool_limits(1):
            x = self.features(train)
            lab, usable = barrier_labels(train, labels)
            rows = usable & np.isfinite(x).all(axis=1)
            if self.binary:
                rows &= lab != 0
            idx = np.flatnonzero(rows)
            n_usable = int(idx.size)
            idx = even_subsample(idx, self.params.max_train_rows)
            if idx.size < self.params.min_train_rows:
                raise ValueError(f"{self.name}: {idx.size} usable training rows (warm, valid, label window inside "
                                 f"the training data{', a barrier touched' if self.binary else ''}); "
                                 f"min_train_rows is {self.params.min_train_rows}")
            y = lab[idx].astype(np.int64)
            classes = np.unique(y)
            if classes.size < 2:
                raise ValueError(f"{self.name}: training labels hold one class only ({classes.tolist()}); "
                                 "cannot fit a classifier")
            self._n_features = x.shape[1]
            self._radius = train.radius
            extra = self._fit_model(x[idx], y, idx, int(labels.max_hold_bins)) or {}
        self.train_info = {**extra, "n_usable": n_usable, "n_rows": int(idx.size), "n_up": int((y == 1).sum()),
                           "n_down": int((y == -1).sum()), "n_flat": int((y == 0).sum()),
                           "n_purged": int((features.valid_mask(train) & ~usable).sum())}
        self.fitted = True
        return self

    def _check_fitted(self) -> None:
        if not self.fitted or self._model is None:
            raise RuntimeError(f"{self.name}: score() called before fit(); an ML signal must be fitted on a "
                               "training window first")

    def _check_radius(self, data: GridData) -> None:
        if data.radius != self._radius:
            raise ValueError(f"{self.name}: data has a ±{data.radius} grid, the model was fitted on ±{self._radius}")

    def score(self, data: GridData) -> np.ndarray:
        self._check_fitted()
        self._check_radius(data)
        with _scoring_threads():
            x = self.features(data)
            if x.shape[1] != self._n_features:  # pragma: no cover - guarded by the radius check
                raise ValueError(f"{self.name}: {x.shape[1]} features on this data, the model was fitted on "
                                 f"{self._n_features}")
            ok = features.valid_mask(data) & np.isfinite(x).all(axis=1)
            out = np.full(data.n_bins, np.nan)
            if ok.any():
                out[ok] = self._predict(x[ok])
        return out


def _binary01(y: np.ndarray) -> np.ndarray:
    return (y > 0).astype(np.int64)


# ------------------------------------------------------------------------------------- gbm_mf / xgb


class GbmMfParams(MLParams):
    num_leaves: int = Field(31, ge=2)
    learning_rate: float = Field(0.05, gt=0, le=1)
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    bagging_freq: int = Field(5, ge=0)
    min_child_samples: int = Field(20, ge=1)
    max_rounds: int = Field(200, ge=1)
    early_stopping_rounds: int = Field(20, ge=1)
    valid_fraction: float = Field(0.2, ge=0, lt=1)
    slope_window: int = Field(50, ge=2)
    seed: int = SEED
    min_train_rows: int = Field(2400, ge=10)


@register
class GbmMf(MLSignal):
    """LightGBM on 53 multi-family features (SPEC §6.8); score 2·P(up) − 1."""

    name = "gbm_mf"
    spec_output = "probability"
    columns = (*[c for c, _ in features.ASYM_COLUMNS], features.P_COL, features.V_COL)
    default_thresholds = probability_to_signed(PROBABILITY_THRESHOLDS)
    Params = GbmMfParams

    def features(self, data: GridData) -> np.ndarray:
        return features.gbm_mf_features(data, self._tick, self.params.slope_window)[0]

    def _fit_model(self, x, y, idx, max_hold):
        import lightgbm as lgb

        p = self.params
        params = {"objective": "binary", "num_leaves": p.num_leaves, "learning_rate": p.learning_rate,
                  "feature_fraction": p.feature_fraction, "bagging_fraction": p.bagging_fraction,
                  "bagging_freq": p.bagging_freq, "min_child_samples": p.min_child_samples, "seed": p.seed,
                  "metric": "auc", "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbose": -1,
                  "first_metric_only": True}
        fit_idx, val_idx = chronological_split(idx, p.valid_fraction, max_hold)
        pos = np.searchsorted(idx, fit_idx), np.searchsorted(idx, val_idx)
        y01 = _binary01(y)
        dtrain = lgb.Dataset(x[pos[0]], y01[pos[0]], free_raw_data=True)
        kwargs = {}
        if val_idx.size and np.unique(y01[pos[1]]).size == 2:
            kwargs = {"valid_sets": [lgb.Dataset(x[pos[1]], y01[pos[1]], reference=dtrain)],
                      "callbacks": [lgb.early_stopping(p.early_stopping_rounds, verbose=False)]}
        self._model = lgb.train(params, dtrain, num_boost_round=p.max_rounds, **kwargs)
        return {"rounds": int(self._model.best_iteration or self._model.current_iteration()),
                "n_fit": int(fit_idx.size), "n_valid": int(val_idx.size)}

    def probability(self, data: GridData) -> np.ndarray:
        """The SPEC's native output P(up) (NaN where no score)."""
        return (self.score(data) + 1.0) / 2.0

    def _predict(self, x):
        best = self._model.best_iteration or None
        return 2.0 * self._model.predict(x, num_iteration=best, num_threads=1) - 1.0


class XgbSnapParams(MLParams):
    max_depth: int = Field(4, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.6, gt=0, le=1)
    min_child_weight: float = Field(10.0, ge=0)
    gamma: float = Field(0.1, ge=0)
    max_rounds: int = Field(150, ge=1)
    early_stopping_rounds: int = Field(15, ge=1)
    valid_fraction: float = Field(0.2, ge=0, lt=1)
    snap_k: int = Field(25, ge=1)
    seed: int = SEED
    min_train_rows: int = Field(3000, ge=10)


@register
class XgbSnap(MLSignal):
    """XGBoost on a 163-feature P/V/flow snapshot (SPEC §6.8); score 2·P(up) − 1."""

    name = "xgb_snap"
    spec_output = "probability"
    columns = (features.P_COL, features.V_COL, features.FLOW_COL)
    default_thresholds = probability_to_signed(PROBABILITY_THRESHOLDS)
    Params = XgbSnapParams

    def features(self, data: GridData) -> np.ndarray:
        return features.xgb_snap_features(data, self._tick, self.params.snap_k)[0]

    def _fit_model(self, x, y, idx, max_hold):
        import xgboost as xgb

        p = self.params
        params = {"objective": "binary:logistic", "eval_metric": "auc", "max_depth": p.max_depth,
                  "eta": p.learning_rate, "subsample": p.subsample, "colsample_bytree": p.colsample_bytree,
                  "min_child_weight": p.min_child_weight, "gamma": p.gamma, "seed": p.seed, "nthread": 1,
                  "tree_method": "hist"}
        fit_idx, val_idx = chronological_split(idx, p.valid_fraction, max_hold)
        pos = np.searchsorted(idx, fit_idx), np.searchsorted(idx, val_idx)
        y01 = _binary01(y)
        dtrain = xgb.DMatrix(x[pos[0]], label=y01[pos[0]], nthread=1)
        kwargs = {}
        if val_idx.size and np.unique(y01[pos[1]]).size == 2:
            dval = xgb.DMatrix(x[pos[1]], label=y01[pos[1]], nthread=1)
            kwargs = {"evals": [(dval, "val")], "early_stopping_rounds": p.early_stopping_rounds}
        self._model = xgb.train(params, dtrain, num_boost_round=p.max_rounds, verbose_eval=False, **kwargs)
        best = getattr(self._model, "best_iteration", None)
        return {"rounds": int(best + 1) if best is not None else int(self._model.num_boosted_rounds()),
                "n_fit": int(fit_idx.size), "n_valid": int(val_idx.size)}

    def probability(self, data: GridData) -> np.ndarray:
        """The SPEC's native output P(up) (NaN where no score)."""
        return (self.score(data) + 1.0) / 2.0

    def _predict(self, x):
        import xgboost as xgb

        best = getattr(self._model, "best_iteration", None)
        rng = (0, best + 1) if best is not None else (0, 0)
        return 2.0 * self._model.predict(xgb.DMatrix(x, nthread=1), iteration_range=rng) - 1.0


# ------------------------------------------------------------------------------------------- knn_cl


class KnnClParams(MLParams):
    n_neighbors: int = Field(11, ge=1)
    min_train_rows: int = Field(1800, ge=10)
    max_train_rows: int = Field(20_000, ge=100)


@register
class KnnCl(MLSignal):
    """StandardScaler + distance-weighted Euclidean KNN over three classes; score P(up) − P(down)."""

    name = "knn_cl"
    spec_output = "confidence"
    binary = False
    columns = (*[c for c, _ in features.ASYM_COLUMNS], features.P_COL, features.V_COL)
    default_thresholds = (0.1, 0.2, 0.3)
    Params = KnnClParams

    def features(self, data: GridData) -> np.ndarray:
        return features.knn_cl_features(data, self._tick)[0]

    def _fit_model(self, x, y, idx, max_hold):
        from sklearn.neighbors import KNeighborsClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        k = min(self.params.n_neighbors, x.shape[0])
        self._model = make_pipeline(StandardScaler(), KNeighborsClassifier(k, weights="distance", n_jobs=1))
        self._model.fit(x, y)

    def _predict(self, x):
        proba = self._model.predict_proba(x)
        classes = list(self._model.classes_)
        up = proba[:, classes.index(1)] if 1 in classes else 0.0
        down = proba[:, classes.index(-1)] if -1 in classes else 0.0
        return up - down


# ----------------------------------------------------------------------------------------- lsvm_der


class LsvmDerParams(MLParams):
    alpha: float = Field(1e-4, gt=0)
    max_iter: int = Field(50, ge=1)
    tol: float = Field(1e-3, gt=0)
    slope_windows: tuple[int, int] = (100, 300)
    seed: int = SEED
    min_train_rows: int = Field(1500, ge=10)

    @model_validator(mode="after")
    def _windows(self):
        if min(self.slope_windows) < 2:
            raise ValueError(f"slope_windows must be >= 2, got {self.slope_windows}")
        return self


@register
class LsvmDer(MLSignal):
    """Linear SVM by SGD (hinge, class-balanced) on 60 derivative features; score = decision function.

    A full refit on the training window, its StandardScaler fitted on the training rows only (the seed
    never refit and refit the scaler before partial_fit, SPEC §10.13)."""

    name = "lsvm_der"
    spec_output = "confidence"
    columns = tuple(c for c, _ in features.ASYM_COLUMNS)
    default_thresholds = (0.3, 0.5, 0.7, 1.0)
    Params = LsvmDerParams

    def features(self, data: GridData) -> np.ndarray:
        return features.lsvm_der_features(data, self.params.slope_windows)[0]

    def _fit_model(self, x, y, idx, max_hold):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import SGDClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        p = self.params
        clf = SGDClassifier(loss="hinge", alpha=p.alpha, class_weight="balanced", max_iter=p.max_iter, tol=p.tol,
                            random_state=p.seed)
        self._model = make_pipeline(StandardScaler(), clf)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._model.fit(x, y)

    def _predict(self, x):
        return self._model.decision_function(x)


# ------------------------------------------------------------------------------------------- svm_sp


class SvmSpParams(MLParams):
    C: float = Field(0.1, gt=0)
    max_iter: int = Field(2000, ge=1)
    seed: int = SEED
    min_train_rows: int = Field(1200, ge=10)


@register
class SvmSp(MLSignal):
    """LinearSVC (hinge, C 0.1, class-balanced) on 45 spatial-profile features; score = decision function.
    Features are standardised with a scaler fitted on the training rows."""

    name = "svm_sp"
    spec_output = "confidence"
    columns = ("v_add", "v_pull", features.P_COL, features.V_COL)
    default_thresholds = (0.2, 0.4, 0.6, 0.8)
    Params = SvmSpParams

    def features(self, data: GridData) -> np.ndarray:
        return features.svm_sp_features(data, self._tick)[0]

    def _fit_model(self, x, y, idx, max_hold):
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        p = self.params
        svc = LinearSVC(C=p.C, loss="hinge", dual=True, class_weight="balanced", max_iter=p.max_iter,
                        random_state=p.seed)
        self._model = make_pipeline(StandardScaler(), svc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._model.fit(x, y)

    def _predict(self, x):
        return self._model.decision_function(x)


# ------------------------------------------------------------------------------------------- pca_ad


class PcaAdParams(SignalParams):
    n_components: int = Field(10, ge=1)
    z_window: int = Field(300, ge=2)
    z_min_periods: int = Field(30, ge=1)
    direction_weights: tuple[float, float] = (0.6, 0.4)  # tanh(z_pc1/3), tanh(z_dir/3)
    magnitude_weights: tuple[float, float] = (0.5, 0.5)  # max(z_recon, 0), max(z_mahal, 0)
    tanh_scale: float = Field(3.0, gt=0)
    min_train_rows: int = Field(700, ge=2)
    max_train_rows: int = Field(50_000, ge=100)

    @model_validator(mode="after")
    def _check(self):
        if self.z_min_periods > self.z_window:
            raise ValueError(f"z_min_periods ({self.z_min_periods}) exceeds z_window ({self.z_window})")
        if self.n_components > self.min_train_rows:
            raise ValueError(f"n_components ({self.n_components}) exceeds min_train_rows ({self.min_train_rows})")
        return self


@register
class PcaAd(MLSignal):
    """PCA anomaly score on P−V profiles (SPEC §6.8), unsupervised; scaler + PCA fitted on the training window.

    Per bin: reconstruction error, Mahalanobis-like norm of the scores (Σ s²/λ), PC1 score signed so that
    positive = bid-side loadings dominate, and the (v_add − v_pull) bid-minus-ask mean. Each is robust-z'd
    causally (window 300, per day); output = [0.6·tanh(z_pc1/3) + 0.4·tanh(z_dir/3)] ×
    [0.5·max(z_recon, 0) + 0.5·max(z_mahal, 0)]. NaN at invalid bins and until the day has
    `z_min_periods` valid bins. `labels` is not needed (ignored)."""

    name = "pca_ad"
    spec_output = "confidence"
    supervised = False
    columns = ("v_add", "v_pull", features.P_COL, features.V_COL)
    default_thresholds = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0)
    Params = PcaAdParams

    def features(self, data: GridData) -> np.ndarray:
        return features.pca_ad_inputs(data)[0]

    def fit(self, train: GridData, labels: LabelSpec | None = None) -> PcaAd:
        from sklearn.decomposition import PCA
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        p = self.params
        self.fitted, self._model = False, None
        with threadpool_limits(1):
            x = self.features(train)
            idx = np.flatnonzero(features.valid_mask(train) & np.isfinite(x).all(axis=1))
            idx = even_subsample(idx, p.max_train_rows)
            if idx.size < p.min_train_rows:
                raise ValueError(f"{self.name}: {idx.size} valid training bins; min_train_rows is {p.min_train_rows}")
            n_comp = min(p.n_components, x.shape[1])
            model = make_pipeline(StandardScaler(), PCA(n_components=n_comp, svd_solver="full"))
            model.fit(x[idx])
        pca = model[-1]
        load = pca.components_[0]
        r = train.radius
        self._pc1_sign = 1.0 if load[:r].sum() >= load[r + 1:].sum() else -1.0
        self._model = model
        self._n_features = x.shape[1]
        self._radius = r
        self.train_info = {"n_rows": int(idx.size), "explained_variance": float(pca.explained_variance_ratio_.sum())}
        self.fitted = True
        return self

    def _fit_model(self, x, y, idx, max_hold):  # pragma: no cover - fit is overridden
        raise NotImplementedError

    def _predict(self, x):  # pragma: no cover - score is overridden
        raise NotImplementedError

    def components(self, data: GridData) -> dict[str, np.ndarray]:
        """Raw per-bin inputs of the score (NaN at invalid bins): recon, mahal, pc1 (signed), direction."""
        self._check_fitted()
        self._check_radius(data)
        pv, direction = features.pca_ad_inputs(data)
        ok = features.valid_mask(data)
        scaler, pca = self._model[0], self._model[-1]
        out = {k: np.full(data.n_bins, np.nan) for k in ("recon", "mahal", "pc1", "direction")}
        if ok.any():
            z = scaler.transform(pv[ok])
            s = pca.transform(z)
            back = pca.inverse_transform(s)
            out["recon"][ok] = np.sqrt(((z - back) ** 2).sum(axis=1))
            out["mahal"][ok] = np.sqrt((s ** 2 / np.maximum(pca.explained_variance_, 1e-12)).sum(axis=1))
            out["pc1"][ok] = self._pc1_sign * s[:, 0]
            out["direction"][ok] = direction[ok]
        return out

    def score(self, data: GridData) -> np.ndarray:
        self._check_fitted()
        p = self.params
        with _scoring_threads():
            comp = self.components(data)
        raw = np.column_stack([comp["pc1"], comp["direction"], comp["recon"], comp["mahal"]])
        z = common.rolling_robust_z(raw, p.z_window, p.z_min_periods, day=data.day)
        (w_pc1, w_dir), (w_rec, w_mah) = p.direction_weights, p.magnitude_weights
        direction = w_pc1 * np.tanh(z[:, 0] / p.tanh_scale) + w_dir * np.tanh(z[:, 1] / p.tanh_scale)
        magnitude = w_rec * np.maximum(z[:, 2], 0.0) + w_mah * np.maximum(z[:, 3], 0.0)
        out = direction * magnitude
        ok = features.valid_mask(data)
        seen = _count_in_day(ok, data.day)
        out[~ok | (seen < p.z_min_periods)] = np.nan
        return out


def _count_in_day(ok: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Number of True entries of ok from the start of each bin's day up to and including the bin."""
    c = np.cumsum(ok, dtype=np.int64)
    before = np.zeros_like(c)
    for a, b in itertools.pairwise(common.day_starts(day, ok.shape[0]).tolist()):
        before[a:b] = c[a - 1] if a > 0 else 0
    return c - before
