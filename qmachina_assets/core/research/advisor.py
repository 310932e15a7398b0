"""Decision support at the promotion gate: sensitivity, robustness flags and follow-up sweeps, computed from
an experiment's results rows (sweeps.read_results) and its specs. Nothing here promotes or changes anything:
each figure carries what it was computed from, each flag its figure and threshold, each suggestion its reason.

Which rows: the *current* rows are the latest sweep of each test day (as the promotion candidate reads them);
"tried" counts every parameter set ever evaluated on a test day (every sweep, every spec version), because a
multiple-testing correction must count the attempts, not the survivors.

- **Sensitivity** (`sensitivity`, `heatmap`): per swept axis, the out-of-sample metric at each axis value
  with its spread over the other axes and the folds (median, quartiles, min/max over every (set, fold) row),
  each fold's median, and the profile (the best set's fold-mean at that value). Axes with many distinct values
  (a sampler's) are cut into quantile bins.
- **Flags** (`robustness`), on the walk-forward's choices: `edge` (the candidate's value is the lowest or
  highest tried), `narrow_peak` (its neighbours keep less than a share of its in-sample metric), `is_vs_oos`
  (out-of-sample pnl per trade below a share of in-sample), `few_trades` (Wilson interval on the hit rate, a
  normal interval on the expectancy), `fold_concentration` / `hour_concentration` (the pnl left without the
  best fold / hour of the day), `deflated_sharpe` (Bailey & López de Prado 2014, for the sets tried).
  The deflated Sharpe ratio's benchmark is the expected best of N *unskilled* sets, each a Sharpe estimate
  over the candidate's T trades (variance 1/(T-1)): a multiple-testing correction for N independent tries
  (conservative for a grid's correlated sets). The paper's variant, with the tried sets' own Sharpe dispersion,
  is reported beside it; on a grid with real structure that dispersion is mostly not noise and the variant
  rejects genuine optima (bench/advisor.py shows it on a planted one), so it does not decide the flag.
- **Suggestions** (`suggest`): extend an edge axis, refine around an interior optimum, drop a flat axis;
  each one a validated ExperimentSpec with its YAML and the number of sets it would evaluate.

Per-trade figures need trades, which results rows do not keep: `TradeSample` is filled by a replay of the
selected rows (`replay_trades`, the sweep's own code); without it the expectancy interval and the Sharpe
ratios use the row's counts (TP and SL trades earn exactly their barrier, timeouts are put at their mean: a
lower bound of the variance), and the hour-of-day flag is not assessed.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, Field, ValidationError

from qmachina_assets.core.research.specs import (
    BOUNDED_SIGNALS,
    TRADING_AXES,
    ConfigError,
    ExperimentSpec,
    PipelineSpec,
    ServingSpec,
    validate_experiment,
)

SELECTION_METRIC = "is_total_pnl_ticks"  # what sweeps._select maximises
DEFAULT_METRIC = "oos_total_pnl_ticks"
MAX_POINTS = 12  # axis values drawn one by one up to this many distinct values, else quantile bins
EULER_GAMMA = 0.5772156649015329
NY_TZ = "America/New_York"


class Thresholds(BaseModel):
    """Every threshold a flag or a suggestion is judged by (the API takes them as query parameters)."""

    min_edge_values: int = Field(3, ge=2, le=1000,
                                 description="an axis needs this many values for 'edge' to mean anything")
    peak_keep: float = Field(0.5, gt=0, lt=1, description="narrow peak: neighbours keep less than this share "
                                                          "of the selected set's in-sample metric")
    oos_is_ratio: float = Field(0.5, gt=0, le=100,
                                description="OOS pnl per trade below this share of IS pnl per trade")
    min_trades: int = Field(30, ge=1, le=10**9,
                            description="out-of-sample trades needed for a hit rate to mean something")
    confidence: float = Field(0.95, ge=0.5, le=0.999, description="level of the confidence intervals")
    min_dsr: float = Field(0.95, gt=0, lt=1, description="deflated Sharpe ratio (a probability) below this fires")
    flat_share: float = Field(0.1, gt=0, lt=1, description="an axis is flat when its profile moves less than "
                                                          "this share of the metric's spread over all rows")


# ---- rows ------------------------------------------------------------------------------------------


def _value(v: Any) -> float | str:
    """An axis value as a float (numbers) or canonical JSON (anything else: lists, strings, bools)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return json.dumps(v, sort_keys=True)
    return float(v)


def _finite(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


@dataclass
class Results:
    """An experiment's results rows, parsed once: current rows, swept axes, the walk-forward's choices."""

    rows: list[dict[str, Any]]  # every row ever written (all sweeps)
    current: list[dict[str, Any]] = field(init=False)
    params: dict[int, dict[str, float | str]] = field(init=False)  # id(row) -> axis values
    axes: dict[str, list[float | str]] = field(init=False)  # swept axes (>= 2 distinct values), sorted values

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("no results rows")
        latest: dict[str, tuple[str, str]] = {}
        for r in self.rows:
            seen = latest.get(r["test_date"])
            if seen is None or (r["created_at"], r["sweep_id"]) > seen:
                latest[r["test_date"]] = (r["created_at"], r["sweep_id"])
        self.current = [r for r in self.rows if latest[r["test_date"]][1] == r["sweep_id"]]
        self.params = {id(r): {k: _value(v) for k, v in json.loads(r["params_json"]).items()} for r in self.current}
        values: dict[str, set[float | str]] = {}
        for p in self.params.values():
            for k, v in p.items():
                values.setdefault(k, set()).add(v)
        self.axes = {k: sorted(vs, key=lambda x: (isinstance(x, str), x)) for k, vs in sorted(values.items())
                     if len(vs) >= 2}
        self._dates = sorted({r["test_date"] for r in self.current})
        self._cuts: dict[str, _Cut] = {}

    @classmethod
    def from_table(cls, table: Any) -> Results:
        return cls(table.to_pylist())

    @property
    def test_dates(self) -> list[str]:
        return self._dates

    @property
    def last_day(self) -> str:
        return self._dates[-1]

    def fold(self, test_date: str) -> list[dict[str, Any]]:
        return [r for r in self.current if r["test_date"] == test_date]

    def selected(self) -> list[dict[str, Any]]:
        """The walk-forward's choice on each test day (oldest first): the honest out-of-sample series."""
        return sorted((r for r in self.current if r.get("selected")), key=lambda r: r["test_date"])

    def candidate(self) -> dict[str, Any] | None:
        """The set selected on the latest test day: what promotion would take."""
        last = self.last_day
        return next((r for r in self.current if r["test_date"] == last and r.get("selected")), None)

    def tried(self, test_date: str | None = None) -> int:
        """Distinct parameter sets ever evaluated (on `test_date`, else on any day), every sweep counted."""
        return len({r["param_hash"] for r in self.rows if test_date is None or r["test_date"] == test_date})

    def numeric(self, axis: str) -> bool:
        return all(isinstance(v, float) for v in self.axes[axis])


# ---- sensitivity -----------------------------------------------------------------------------------


class AxisPoint(BaseModel):
    """The metric over every current (set, fold) row whose axis value falls at this point."""

    value: float | str = Field(description="the axis value (a bin's median value for binned axes)")
    lo: float | str | None = Field(None, description="binned axes: the bin's lowest value")
    hi: float | str | None = Field(None, description="binned axes: the bin's highest value")
    n_rows: int
    n_sets: int
    median: float | None
    q25: float | None
    q75: float | None
    min: float | None
    max: float | None
    fold_medians: dict[str, float | None] = Field(description="per test day: the median over the other axes")
    profile: float | None = Field(description="the best set's mean over folds at this value")
    is_median: float | None = Field(description="median of the in-sample selection metric")


class AxisSensitivity(BaseModel):
    axis: str
    metric: str
    numeric: bool
    binned: bool
    points: list[AxisPoint]
    selected_value: float | str | None = Field(description="the candidate's value (latest test day's selection)")
    profile_range: float | None = Field(description="max - min of the profile over the points")
    spread: float | None = Field(description="interquartile range of the metric over every row")
    flat: bool | None = Field(description="profile_range < flat_share x spread (None: not assessable)")


class Heatmap(BaseModel):
    metric: str
    x_axis: str
    y_axis: str
    x_values: list[float | str]
    y_values: list[float | str]
    median: list[list[float | None]] = Field(description="[y][x]: median over the other axes and folds")
    n_rows: list[list[int]]
    selected: tuple[float | str, float | str] | None = Field(description="the candidate's (x, y)")


def _stats(x: np.ndarray) -> dict[str, float | None]:
    if x.size == 0:
        return dict.fromkeys(("median", "q25", "q75", "min", "max"))
    q = np.quantile(x, [0.5, 0.25, 0.75])
    return {"median": float(q[0]), "q25": float(q[1]), "q75": float(q[2]), "min": float(x.min()),
            "max": float(x.max())}


@dataclass(frozen=True)
class _Cut:
    """How an axis is cut into points: one per distinct value, or quantile bins [lo, hi]."""

    values: list[float | str]
    lo: list[float | str]
    hi: list[float | str]
    binned: bool

    def index(self, v: float | str) -> int | None:
        if not self.binned:
            return self.values.index(v) if v in self.values else None
        for i, (lo, hi) in enumerate(zip(self.lo, self.hi, strict=True)):
            if lo <= v <= hi:  # type: ignore[operator]
                return i
        return None


def _cut(res: Results, axis: str) -> _Cut:
    if axis not in res._cuts:
        res._cuts[axis] = _make_cut(res, axis)
    return res._cuts[axis]


def _make_cut(res: Results, axis: str) -> _Cut:
    vals = res.axes[axis]
    if len(vals) <= MAX_POINTS or not res.numeric(axis):
        return _Cut(list(vals), list(vals), list(vals), False)
    x = np.array([v for r in res.current if (v := res.params[id(r)].get(axis)) is not None], dtype=np.float64)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, MAX_POINTS + 1)))
    lo, hi, mid = [], [], []
    for i in range(len(edges) - 1):
        last = i == len(edges) - 2
        inside = x[(x >= edges[i]) & ((x <= edges[i + 1]) if last else (x < edges[i + 1]))]
        if inside.size:
            lo.append(float(inside.min()))
            hi.append(float(inside.max()))
            mid.append(float(np.median(inside)))
    return _Cut(mid, lo, hi, True)


def _metric(row: dict[str, Any], metric: str) -> float | None:
    if metric not in row:
        raise KeyError(f"metric {metric!r} is not a results column")
    return _finite(row[metric])


def sensitivity(res: Results, axis: str, metric: str = DEFAULT_METRIC,
                thresholds: Thresholds | None = None) -> AxisSensitivity:
    """The metric against one swept axis (see the module doc)."""
    th = thresholds or Thresholds()
    if axis not in res.axes:
        raise KeyError(f"{axis!r} is not a swept axis (swept: {', '.join(res.axes) or 'none'})")
    cut = _cut(res, axis)
    groups: list[list[dict[str, Any]]] = [[] for _ in cut.values]
    for r in res.current:
        v = res.params[id(r)].get(axis)
        i = None if v is None else cut.index(v)
        if i is not None:
            groups[i].append(r)
    points = []
    for i, rows in enumerate(groups):
        m = np.array([x for r in rows if (x := _metric(r, metric)) is not None], dtype=np.float64)
        is_m = np.array([x for r in rows if (x := _metric(r, SELECTION_METRIC)) is not None], dtype=np.float64)
        by_fold: dict[str, list[float]] = {}
        by_set: dict[str, list[float]] = {}
        for r in rows:
            x = _metric(r, metric)
            if x is not None:
                by_fold.setdefault(r["test_date"], []).append(x)
                by_set.setdefault(r["param_hash"], []).append(x)
        points.append(AxisPoint(
            value=cut.values[i], lo=cut.lo[i] if cut.binned else None, hi=cut.hi[i] if cut.binned else None,
            n_rows=len(rows), n_sets=len({r["param_hash"] for r in rows}), **_stats(m),
            fold_medians={d: float(np.median(v)) for d, v in sorted(by_fold.items())},
            profile=max((float(np.mean(v)) for v in by_set.values()), default=None),
            is_median=float(np.median(is_m)) if is_m.size else None))
    allm = np.array([x for r in res.current if (x := _metric(r, metric)) is not None], dtype=np.float64)
    spread = float(np.subtract(*np.quantile(allm, [0.75, 0.25]))) if allm.size else None
    prof = [p.profile for p in points if p.profile is not None]
    prange = max(prof) - min(prof) if len(prof) >= 2 else None
    flat = None if prange is None or spread is None or spread <= 0 else prange < th.flat_share * spread
    if prange is not None and spread == 0:
        flat = prange == 0
    cand = res.candidate()
    sel = res.params[id(cand)].get(axis) if cand is not None else None
    return AxisSensitivity(axis=axis, metric=metric, numeric=res.numeric(axis), binned=cut.binned, points=points,
                           selected_value=sel, profile_range=prange, spread=spread, flat=flat)


def heatmap(res: Results, x_axis: str, y_axis: str, metric: str = DEFAULT_METRIC) -> Heatmap:
    """Median of the metric over the other axes and the folds, for each (x, y) cell."""
    for a in (x_axis, y_axis):
        if a not in res.axes:
            raise KeyError(f"{a!r} is not a swept axis (swept: {', '.join(res.axes) or 'none'})")
    if x_axis == y_axis:
        raise KeyError("a heatmap needs two different axes")
    cx, cy = _cut(res, x_axis), _cut(res, y_axis)
    cells: dict[tuple[int, int], list[float]] = {}
    counts = np.zeros((len(cy.values), len(cx.values)), dtype=np.int64)
    for r in res.current:
        p = res.params[id(r)]
        if p.get(x_axis) is None or p.get(y_axis) is None:
            continue
        i, j = cx.index(p[x_axis]), cy.index(p[y_axis])
        if i is None or j is None:
            continue
        counts[j, i] += 1
        x = _metric(r, metric)
        if x is not None:
            cells.setdefault((j, i), []).append(x)
    med = [[float(np.median(cells[(j, i)])) if (j, i) in cells else None for i in range(len(cx.values))]
           for j in range(len(cy.values))]
    cand = res.candidate()
    sel = (res.params[id(cand)].get(x_axis), res.params[id(cand)].get(y_axis)) if cand is not None else None
    sel = None if sel is None or None in sel else sel
    return Heatmap(metric=metric, x_axis=x_axis, y_axis=y_axis, x_values=cx.values, y_values=cy.values, median=med,
                   n_rows=counts.tolist(), selected=sel)


# ---- trades and statistics -------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeSample:
    """Trades of one selected row (from a replay): pnl per trade and entry times (ns since the epoch, UTC)."""

    pnl_ticks: np.ndarray
    entry_ts_ns: np.ndarray


def wilson(successes: int, n: int, confidence: float) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion; None without trials."""
    if n <= 0:
        return None
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def count_moments(row: dict[str, Any], prefix: str, cost: float) -> tuple[int, float, float] | None:
    """(n, mean, sd) of a row's trade pnl from its counts: TP trades earn tp - cost, SL trades -sl - cost
    (barrier fills), the rest (timeouts, truncated) all at their mean: a lower bound of the variance."""
    n = int(_finite(row.get(f"{prefix}_n_trades")) or 0)
    total = _finite(row.get(f"{prefix}_total_pnl_ticks"))
    if n < 2 or total is None:
        return None
    n_tp, n_sl = int(row[f"{prefix}_n_tp"]), int(row[f"{prefix}_n_sl"])
    win, loss = float(row["tp_ticks"]) - cost, -float(row["sl_ticks"]) - cost
    n_rest = n - n_tp - n_sl
    rest = total - n_tp * win - n_sl * loss
    second = n_tp * win ** 2 + n_sl * loss ** 2 + (rest * rest / n_rest if n_rest > 0 else 0.0)
    mean = total / n
    var = max(0.0, (second - n * mean * mean) / (n - 1))
    return n, mean, math.sqrt(var)


def sample_moments(x: np.ndarray) -> tuple[float, float, float, float]:
    """(mean, sd with ddof 1, skewness, kurtosis (3 = normal)) of a sample of at least 2 values."""
    mean = float(x.mean())
    sd = float(x.std(ddof=1))
    c = x - mean
    m2 = float(np.mean(c * c))
    if m2 <= 0:
        return mean, sd, 0.0, 3.0
    return mean, sd, float(np.mean(c ** 3) / m2 ** 1.5), float(np.mean(c ** 4) / m2 ** 2)


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """E[max of n_trials Sharpe estimates] under the null of no skill (Bailey & López de Prado 2014, eq. for
    SR0): sqrt(V) * ((1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e))); 0 for a single trial."""
    if n_trials <= 1 or sr_variance <= 0:
        return 0.0
    nd = statistics.NormalDist()
    return math.sqrt(sr_variance) * ((1 - EULER_GAMMA) * nd.inv_cdf(1 - 1 / n_trials)
                                     + EULER_GAMMA * nd.inv_cdf(1 - 1 / (n_trials * math.e)))


def deflated_sharpe(sr: float, n_obs: int, n_trials: int, sr_variance: float, skew: float = 0.0,
                    kurtosis: float = 3.0) -> float:
    """Probability that the true Sharpe ratio exceeds the best of `n_trials` unskilled ones (DSR): the
    probabilistic Sharpe ratio against SR0 = expected_max_sharpe, with the estimate's non-normal variance.
    Sharpe ratios are per observation (here: per trade), `n_obs` observations."""
    if n_obs < 2:
        raise ValueError("deflated_sharpe: needs at least 2 observations")
    sr0 = expected_max_sharpe(n_trials, sr_variance)
    den = 1 - skew * sr + (kurtosis - 1) / 4 * sr * sr
    if den <= 0:
        den = 1e-12
    return statistics.NormalDist().cdf((sr - sr0) * math.sqrt(n_obs - 1) / math.sqrt(den))


def _et_hours(ts_ns: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.to_datetime(ts_ns, utc=True).tz_convert(NY_TZ).hour.to_numpy()


# ---- flags -----------------------------------------------------------------------------------------


FlagName = Literal["edge", "narrow_peak", "is_vs_oos", "few_trades", "fold_concentration", "hour_concentration",
                   "deflated_sharpe"]


class Flag(BaseModel):
    """One robustness check. `fired` None = not assessable (the message says why)."""

    name: FlagName
    fired: bool | None
    axis: str | None = None
    figure: float | None = Field(None, description="the measured figure the threshold is applied to")
    threshold: float | None = None
    message: str
    details: dict[str, Any] = {}


class Robustness(BaseModel):
    experiment: str | None
    test_dates: list[str]
    candidate: dict[str, Any] | None = Field(description="latest test day's selection: run_id, param_hash, params")
    sets_tried: int = Field(description="distinct parameter sets evaluated on the latest test day, every sweep")
    spec_versions: int = Field(1, description="experiment spec versions (experiment_hash) among the current rows: "
                                              "above 1, the test days were swept with different specs")
    thresholds: Thresholds
    flags: list[Flag]
    trades_replayed: bool
    note: str | None = Field(None, description="why trade-level figures fall back to the rows' counts")


def _edge_flags(res: Results, cand: dict[str, Any], th: Thresholds) -> list[Flag]:
    """Per numeric axis: is the candidate's value the lowest or highest tried? On a sampled axis (cut into
    quantile bins, `_cut`), does it fall in the lowest or highest bin?"""
    out = []
    sel_rows = res.selected()
    for axis, vals in res.axes.items():
        if not res.numeric(axis):
            continue
        v = res.params[id(cand)].get(axis)
        if v is None:  # the candidate's sweep did not have this axis (the spec changed between test days)
            continue
        lo, hi = vals[0], vals[-1]
        cut = _cut(res, axis)
        last = len(cut.values) - 1

        def side_of(x: float | str | None, cut: _Cut = cut, last: int = last) -> str | None:
            i = None if x is None else cut.index(x)
            return "lowest" if i == 0 else "highest" if i == last else None

        at_edge = sum(side_of(res.params[id(r)].get(axis)) is not None for r in sel_rows)
        details = {"value": v, "lowest": lo, "highest": hi, "n_values": len(vals), "binned": cut.binned,
                   "folds_selecting_an_edge": at_edge, "folds": len(sel_rows)}
        if len(vals) < th.min_edge_values:
            out.append(Flag(name="edge", fired=None, axis=axis, figure=v, threshold=float(th.min_edge_values),
                            message=f"{axis}: {len(vals)} values tried; an edge needs at least "
                                    f"{th.min_edge_values} to mean anything", details=details))
            continue
        flat = sensitivity(res, axis, SELECTION_METRIC, th)
        if flat.flat:  # the selection does not depend on this axis: which end it picked means nothing
            out.append(Flag(name="edge", fired=False, axis=axis, figure=v, threshold=None, details=details,
                            message=f"{axis} = {v:g}: the in-sample profile is flat along this axis (moves "
                                    f"{flat.profile_range:.3g}, under {th.flat_share:.0%} of the spread "
                                    f"{flat.spread:.3g}), so an edge value means nothing"))
            continue
        side = side_of(v)
        where = (f"in the {side} of {len(cut.values)} bins of the {len(vals)} values sampled" if cut.binned
                 else f"the {side} of {len(vals)} values tried")
        msg = (f"{axis} = {v:g} is {where} ({lo:g} … {hi:g}): the optimum may lie beyond" if side
               else f"{axis} = {v:g} is inside the values tried ({lo:g} … {hi:g})")
        edge = (cut.hi[0] if side == "lowest" else cut.lo[-1]) if cut.binned else (lo if side == "lowest" else hi)
        details["side"] = side
        out.append(Flag(name="edge", fired=side is not None, axis=axis, figure=v,
                        threshold=edge if side else None,
                        message=msg + f"; {at_edge} of {len(sel_rows)} folds selected an edge value",
                        details=details))
    return out


def _neighbours(res: Results, rows: list[dict[str, Any]], cand: dict[str, Any]) -> list[dict[str, Any]]:
    """Sets next to the candidate: one step along one numeric axis with the others equal on a full grid; else
    the 2·d nearest in axis coordinates scaled to [0, 1]."""
    pc = res.params[id(cand)]
    axes = [a for a in res.axes if res.numeric(a) and a in pc]  # one fold: one sweep, the same keys
    if not axes:
        return []
    local = {a: sorted({res.params[id(r)][a] for r in rows}) for a in axes}
    full = math.prod(len(v) for v in local.values()) == len({r["param_hash"] for r in rows})
    if full:
        out = []
        for r in rows:
            p = res.params[id(r)]
            if any(p.get(k) != pc.get(k) for k in p if k not in axes):
                continue
            steps = [abs(local[a].index(p[a]) - local[a].index(pc[a])) for a in axes]
            if sorted(steps)[-1] == 1 and sum(steps) == 1:
                out.append(r)
        return out
    span = {a: (float(min(local[a])), float(max(local[a]))) for a in axes}

    def dist(r: dict[str, Any]) -> float:
        p = res.params[id(r)]
        return math.sqrt(sum(((float(p[a]) - float(pc[a])) / ((span[a][1] - span[a][0]) or 1.0)) ** 2 for a in axes))

    others = sorted((r for r in rows if r["param_hash"] != cand["param_hash"]), key=dist)
    return others[:2 * len(axes)]


def _peak_flag(res: Results, cand: dict[str, Any], th: Thresholds) -> Flag:
    rows = res.fold(cand["test_date"])
    nb = _neighbours(res, rows, cand)
    sel = _finite(cand[SELECTION_METRIC])
    vals = [x for r in nb if (x := _finite(r[SELECTION_METRIC])) is not None]
    details = {"selected_is": sel, "neighbours": [{"params": res.params[id(r)], "is": _finite(r[SELECTION_METRIC]),
                                                   "oos": _finite(r[DEFAULT_METRIC])} for r in nb],
               "metric": SELECTION_METRIC}
    if not vals or sel is None or sel <= 0:
        why = "no neighbouring sets" if not vals else "the selected set is not profitable in-sample"
        return Flag(name="narrow_peak", fired=None, threshold=th.peak_keep, message=f"not assessable: {why}",
                    details=details)
    keep = float(np.mean(vals)) / sel
    fired = keep < th.peak_keep
    msg = (f"its {len(vals)} neighbour(s) keep {keep:.0%} of the selected set's in-sample pnl ({sel:.4g} ticks); "
           f"{'below' if fired else 'at or above'} {th.peak_keep:.0%}"
           + (": a narrow peak, likely fitted to noise" if fired else ""))
    return Flag(name="narrow_peak", fired=fired, figure=keep, threshold=th.peak_keep, message=msg, details=details)


def _per_trade(rows: Iterable[dict[str, Any]], prefix: str) -> tuple[float, int]:
    n = 0
    total = 0.0
    for r in rows:
        n += int(_finite(r.get(f"{prefix}_n_trades")) or 0)
        total += _finite(r.get(f"{prefix}_total_pnl_ticks")) or 0.0
    return total, n


def _is_oos_flag(res: Results, th: Thresholds) -> Flag:
    sel = res.selected()
    is_total, is_n = _per_trade(sel, "is")
    oos_total, oos_n = _per_trade(sel, "oos")
    details = {"is_total_pnl_ticks": is_total, "is_n_trades": is_n, "oos_total_pnl_ticks": oos_total,
               "oos_n_trades": oos_n, "folds": len(sel)}
    if is_n == 0 or is_total <= 0:
        return Flag(name="is_vs_oos", fired=None, threshold=th.oos_is_ratio, details=details,
                    message="not assessable: the walk-forward selections are not profitable in-sample")
    is_pt = is_total / is_n
    oos_pt = oos_total / oos_n if oos_n else 0.0
    ratio = oos_pt / is_pt
    fired = ratio < th.oos_is_ratio
    msg = (f"out-of-sample {oos_pt:.3g} ticks/trade ({oos_n} trades) vs in-sample {is_pt:.3g} ({is_n}) over "
           f"{len(sel)} fold(s): OOS/IS = {ratio:.2f}, {'below' if fired else 'at or above'} {th.oos_is_ratio:g}")
    return Flag(name="is_vs_oos", fired=fired, figure=ratio, threshold=th.oos_is_ratio, message=msg,
                details={**details, "is_pnl_per_trade": is_pt, "oos_pnl_per_trade": oos_pt})


def _few_trades_flag(res: Results, th: Thresholds, cost: float, trades: dict[str, TradeSample] | None) -> Flag:
    sel = res.selected()
    n = sum(int(_finite(r.get("oos_n_trades")) or 0) for r in sel)
    hits = sum(int(_finite(r.get("oos_n_tp")) or 0) for r in sel)
    hit_ci = wilson(hits, n, th.confidence)
    z = statistics.NormalDist().inv_cdf(0.5 + th.confidence / 2)
    exp_ci = None
    source = None
    if trades is not None and all(r["test_date"] in trades for r in sel):
        x = np.concatenate([trades[r["test_date"]].pnl_ticks for r in sel]) if sel else np.zeros(0)
        if x.size >= 2:
            mean, sd = float(x.mean()), float(x.std(ddof=1))
            exp_ci, source = (mean - z * sd / math.sqrt(x.size), mean + z * sd / math.sqrt(x.size)), "replayed trades"
    else:  # pooled from each fold's counts
        parts = [m for r in sel if (m := count_moments(r, "oos", cost)) is not None]
        if parts:
            nn = sum(p[0] for p in parts)
            mean = sum(p[0] * p[1] for p in parts) / nn
            ss = sum((p[0] - 1) * p[2] ** 2 + p[0] * (p[1] - mean) ** 2 for p in parts)
            sd = math.sqrt(ss / (nn - 1)) if nn > 1 else 0.0
            exp_ci, source = (mean - z * sd / math.sqrt(nn), mean + z * sd / math.sqrt(nn)), \
                "counts (timeouts at their mean: too narrow)"
    fired = n < th.min_trades
    ci_txt = (f"hit rate {hits / n:.1%}, {th.confidence:.0%} CI [{hit_ci[0]:.1%}, {hit_ci[1]:.1%}]"
              if hit_ci else "no trades")
    if exp_ci:
        ci_txt += f"; expectancy CI [{exp_ci[0]:.3g}, {exp_ci[1]:.3g}] ticks/trade ({source})"
    msg = f"{n} out-of-sample trades over {len(sel)} fold(s) ({'fewer than' if fired else 'at least'} " \
          f"{th.min_trades}); {ci_txt}"
    return Flag(name="few_trades", fired=fired, figure=float(n), threshold=float(th.min_trades), message=msg,
                details={"n_trades": n, "n_tp": hits, "hit_rate_ci": hit_ci, "expectancy_ci": exp_ci,
                         "expectancy_source": source, "confidence": th.confidence})


def concentration(name: FlagName, what: str, pnl: dict[str, float]) -> Flag:
    """Fires when the out-of-sample profit does not survive removing its best fold / hour (pnl by key)."""
    total = sum(pnl.values())
    details = {f"pnl_by_{what}": pnl, "total": total}
    if len(pnl) < 2:
        return Flag(name=name, fired=None, threshold=0.0, details=details,
                    message=f"not assessable: trades in {len(pnl)} {what}(s) only")
    if total <= 0:
        return Flag(name=name, fired=None, threshold=0.0, details=details,
                    message=f"not assessable: out-of-sample total {total:.4g} ticks is not a profit")
    best = max(pnl, key=pnl.__getitem__)
    rest = total - pnl[best]
    fired = rest <= 0
    msg = (f"{what} {best} makes {pnl[best]:.4g} of {total:.4g} ticks; without it {rest:.4g} "
           f"({'no profit left: concentrated' if fired else 'still profitable'}) over {len(pnl)} {what}s")
    return Flag(name=name, fired=fired, figure=rest, threshold=0.0, message=msg, details={**details, "best": best})


def _dsr_flag(res: Results, cand: dict[str, Any], th: Thresholds, cost: float,
              trades_is: TradeSample | None) -> Flag:
    day = cand["test_date"]
    n_trials = res.tried(day)
    srs = [m[1] / m[2] for r in res.fold(day) if (m := count_moments(r, "is", cost)) is not None and m[2] > 0]
    var = float(np.var(srs, ddof=1)) if len(srs) >= 2 else 0.0
    if trades_is is not None and trades_is.pnl_ticks.size >= 2:
        mean, sd, skew, kurt = sample_moments(trades_is.pnl_ticks)
        n_obs, source = int(trades_is.pnl_ticks.size), "replayed in-sample trades"
    else:
        m = count_moments(cand, "is", cost)
        if m is None:
            return Flag(name="deflated_sharpe", fired=None, threshold=th.min_dsr,
                        message="not assessable: fewer than 2 in-sample trades", details={"sets_tried": n_trials})
        n_obs, mean, sd = m
        skew, kurt, source = 0.0, 3.0, "counts (normal shape assumed)"
    if sd <= 0:
        return Flag(name="deflated_sharpe", fired=None, threshold=th.min_dsr,
                    message="not assessable: in-sample pnl has no variance", details={"sets_tried": n_trials})
    sr = mean / sd
    null_var = 1.0 / (n_obs - 1)  # spread of unskilled Sharpe estimates over n_obs trades
    dsr = deflated_sharpe(sr, n_obs, n_trials, null_var, skew, kurt)
    sr0 = expected_max_sharpe(n_trials, null_var)
    dsr_dispersion = deflated_sharpe(sr, n_obs, n_trials, var, skew, kurt)
    fired = dsr < th.min_dsr
    msg = (f"in-sample Sharpe {sr:.3f}/trade over {n_obs} trades vs {sr0:.3f} expected from the best of "
           f"{n_trials} unskilled sets: deflated Sharpe {dsr:.3f}, {'below' if fired else 'at or above'} "
           f"{th.min_dsr:g} (with the tried sets' own Sharpe dispersion instead: {dsr_dispersion:.3f})")
    return Flag(name="deflated_sharpe", fired=fired, figure=dsr, threshold=th.min_dsr, message=msg,
                details={"sharpe_per_trade": sr, "n_trades": n_obs, "sets_tried": n_trials,
                         "null_sharpe_variance": null_var, "expected_max_sharpe": sr0,
                         "tried_sharpe_variance": var, "dsr_with_tried_variance": dsr_dispersion,
                         "skew": skew, "kurtosis": kurt, "source": source})


def robustness(res: Results, *, cost_ticks_per_trade: float = 0.0, thresholds: Thresholds | None = None,
               oos_trades: dict[str, TradeSample] | None = None, is_trades: TradeSample | None = None,
               note: str | None = None) -> Robustness:
    """Every flag for the walk-forward's choices (see the module doc). `oos_trades`: replayed out-of-sample
    trades of each fold's selected row by test date; `is_trades`: the candidate's replayed in-sample trades;
    `note`: why they are missing, when they are."""
    th = thresholds or Thresholds()
    cand = res.candidate()
    flags: list[Flag] = []
    if cand is None:
        flags = [Flag(name="edge", fired=None, message="no set selected on the latest test day (too few trades)")]
    else:
        flags += _edge_flags(res, cand, th)
        flags.append(_peak_flag(res, cand, th))
    flags.append(_is_oos_flag(res, th))
    flags.append(_few_trades_flag(res, th, cost_ticks_per_trade, oos_trades))
    flags.append(concentration("fold_concentration", "fold",
                                {r["test_date"]: _finite(r["oos_total_pnl_ticks"]) or 0.0 for r in res.selected()}))
    if oos_trades:
        by_hour: dict[str, float] = {}
        for t in oos_trades.values():
            for h, p in zip(_et_hours(t.entry_ts_ns), t.pnl_ticks, strict=True):
                by_hour[f"{int(h):02d}"] = by_hour.get(f"{int(h):02d}", 0.0) + float(p)
        flags.append(concentration("hour_concentration", "hour", dict(sorted(by_hour.items()))))
    else:
        flags.append(Flag(name="hour_concentration", fired=None,
                          message=f"not assessable without the selected runs' trades ({note or 'not replayed'})"))
    if cand is not None:
        flags.append(_dsr_flag(res, cand, th, cost_ticks_per_trade, is_trades))
    return Robustness(
        experiment=cand.get("experiment") if cand else None, test_dates=res.test_dates,
        candidate={"run_id": cand["run_id"], "param_hash": cand["param_hash"], "params": res.params[id(cand)]}
        if cand else None, sets_tried=res.tried(res.last_day), thresholds=th, flags=flags,
        spec_versions=len({r.get("experiment_hash") for r in res.current}),
        trades_replayed=oos_trades is not None, note=note)


# ---- follow-up sweeps ------------------------------------------------------------------------------


class Suggestion(BaseModel):
    kind: Literal["extend_edge", "refine_peak", "drop_flat_axis"]
    axis: str
    reason: str
    values: list[Any] = Field(description="the axis's values in the suggested experiment")
    n_sets: int = Field(description="parameter sets per test day the suggested experiment evaluates")
    spec: dict[str, Any] = Field(description="the suggested ExperimentSpec (validated against its serving spec)")
    yaml: str


def axis_values(exp: ExperimentSpec, serving: ServingSpec, axis: str) -> list[Any]:
    return list(exp.axes(serving)[axis])


def with_axis(exp: ExperimentSpec, serving: ServingSpec, axis: str, values: Sequence[Any],
              name: str | None = None) -> ExperimentSpec:
    """The experiment with one axis's values replaced (and renamed, with its own MLflow experiment)."""
    data = exp.model_dump(mode="json")
    values = list(values)
    if axis == "threshold":
        data["sweep"]["thresholds"] = values
    elif axis in TRADING_AXES:
        data["eval"][axis] = values
    elif axis.startswith("scoring."):
        data["sweep"]["scoring"][axis.split(".", 1)[1]] = values
    elif axis.startswith(("signal.params.", "signal.weights.")):
        assert serving.signal is not None
        data["sweep"]["per_signal"].setdefault(serving.signal.name, {})[axis.rsplit(".", 1)[1]] = values
    else:
        raise KeyError(f"{axis!r} is not an axis of experiment {exp.name!r}")
    if name is not None:
        data["name"] = name
        data["tracking"]["experiment_name"] = f"qmachina/{name}"
    out = ExperimentSpec.model_validate(data)
    out._path = exp._path
    return out


def _fmt(v: float) -> Any:
    return int(v) if float(v).is_integer() else round(float(v), 10)


def _integral(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _extend(values: list[float], side: str, integral: bool, upper: float | None) -> list[Any]:
    """Two more values beyond the edge, spaced like the last step (geometric when the axis is)."""
    v = sorted(values)
    a, b = (v[1], v[0]) if side == "lowest" else (v[-2], v[-1])
    geometric = a > 0 and b > 0 and len(v) >= 3 and _is_geometric(v)
    new = []
    x = b
    for _ in range(2):
        x = x * (b / a) if geometric else x + (b - a)
        if integral:
            x = round(x)
        if x <= 0 or (upper is not None and x > upper):
            break
        new.append(x)
    keep = [x for x in v if (x <= v[2] if side == "lowest" else x >= v[-3])]
    return [_fmt(x) for x in sorted(set(keep) | set(new))]


def _is_geometric(v: list[float]) -> bool:
    ratios = [b / a for a, b in itertools.pairwise(v)]
    steps = [b - a for a, b in itertools.pairwise(v)]
    return np.std(ratios) / np.mean(ratios) < np.std(steps) / (np.mean(steps) or 1.0)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _log_scale(lo: float, hi: float) -> bool:
    """The sampler's rule (search.search_space): a positive range spanning 10x or more is searched in logs."""
    return lo > 0 and hi / lo >= 10


def _extend_range(values: list[float], side: str, integral: bool, upper: float | None) -> list[Any] | None:
    """A sampled range [lo, hi] pushed past its edge by its own width (its own ratio on a log scale)."""
    lo, hi = min(values), max(values)
    if side == "highest":
        new_hi = hi * (hi / lo) if _log_scale(lo, hi) else hi + (hi - lo)
        new = [lo, min(new_hi, upper) if upper is not None else new_hi]
    else:
        new_lo = lo / (hi / lo) if _log_scale(lo, hi) else lo - (hi - lo)
        new = [new_lo if new_lo > 0 else lo / 2, hi]
    if integral:
        new = [max(1, round(new[0])), round(new[1])]
    return [_fmt(x) for x in new] if new[0] < new[1] else None


def _refine_range(values: list[float], v: float, integral: bool) -> list[Any] | None:
    """A quarter of the sampled range (in its scale) centred on the selected value, inside the range."""
    lo, hi = min(values), max(values)
    if _log_scale(lo, hi):
        f = (hi / lo) ** 0.125
        new = [max(lo, v / f), min(hi, v * f)]
    else:
        w = (hi - lo) / 8
        new = [max(lo, v - w), min(hi, v + w)]
    if integral:
        new = [math.floor(new[0]), math.ceil(new[1])]
    return [_fmt(x) for x in new] if new[0] < new[1] else None


def _refine(values: list[float], v: float, integral: bool) -> list[Any]:
    s = sorted(values)
    i = s.index(v)
    lo, hi = s[i - 1], s[i + 1]
    new = {lo, (lo + v) / 2, v, (v + hi) / 2, hi}
    if integral:
        new = {round(x) for x in new}
    return [_fmt(x) for x in sorted(new)]


def suggest(res: Results, exp: ExperimentSpec, serving: ServingSpec, pipeline: PipelineSpec,
            thresholds: Thresholds | None = None, flags: Robustness | None = None) -> list[Suggestion]:
    """Rule-based follow-up sweeps (module doc); each spec passes the same checks as a YAML file would (a rule
    whose values the checks refuse offers nothing)."""
    th = thresholds or Thresholds()
    flags = flags or robustness(res, cost_ticks_per_trade=exp.eval.cost_ticks_per_trade, thresholds=th)
    cand = res.candidate()
    if cand is None:
        return []
    spec_axes = exp.axes(serving)
    sel = res.params[id(cand)]
    upper = 1.0 if serving.signal is not None and serving.signal.name in BOUNDED_SIGNALS else None
    out: list[Suggestion] = []

    def add(kind: str, axis: str, values: list[Any], reason: str) -> None:
        short = axis.rsplit(".", 1)[-1]
        name = f"{exp.name}_{kind.split('_')[0]}_{short}"[:64]
        try:
            spec = with_axis(exp, serving, axis, values, name=name)
            validate_experiment(spec, serving, pipeline)
        except (ConfigError, ValidationError):  # the rule proposed values the specs refuse: not offered
            return
        body = spec.model_dump(mode="json", exclude_none=True)
        out.append(Suggestion(kind=kind, axis=axis, reason=reason, values=values, n_sets=spec.n_sets(serving),
                              spec=body, yaml=yaml.safe_dump(body, sort_keys=False)))

    ranges = exp.sweep.search.method == "tpe"  # numeric axes are [low, high] ranges, not value lists
    for f in flags.flags:
        if f.name != "edge" or not f.fired or f.axis not in spec_axes:
            continue
        axis = f.axis
        vals = spec_axes[axis]
        if not all(_number(x) for x in vals):
            continue
        side = f.details["side"]
        bound = upper if axis == "threshold" else None
        fv = [float(x) for x in vals]
        new = _extend_range(fv, side, _integral(vals), bound) if ranges else _extend(fv, side, _integral(vals), bound)
        if new is not None and sorted(new) != sorted(fv) and (ranges or len(new) > 2):
            add("extend_edge", axis, new, f"{f.message}; extend the axis past its {side} value")
    for axis in res.axes:
        if axis not in spec_axes:
            continue
        s = sensitivity(res, axis, thresholds=th)
        vals = spec_axes[axis]
        v = sel.get(axis)
        if s.flat:
            keep = [x for x in vals if _value(x) == v]  # a listed value, else a sampled one
            if not keep:
                keep = [round(v) if _integral(vals) else _fmt(v)] if isinstance(v, float) else vals[:1]
            add("drop_flat_axis", axis, keep,
                f"{axis}: the out-of-sample profile moves {s.profile_range:.3g} ticks across its values, less than "
                f"{th.flat_share:.0%} of the metric's spread ({s.spread:.3g}); fix it at {keep[0]} and spend the "
                f"budget elsewhere")
            continue
        if not all(_number(x) for x in vals) or not isinstance(v, float):
            continue
        fv = sorted(float(x) for x in vals)
        if ranges and fv[0] < v < fv[-1]:
            new = _refine_range(fv, v, _integral(vals))
            if new is not None:
                add("refine_peak", axis, new, f"{axis}: the selected value {v:g} is inside the range searched "
                                              f"({fv[0]:g} … {fv[-1]:g}); search a quarter of it around {v:g}")
        elif not ranges and len(fv) >= 3 and v in fv and fv[0] < v < fv[-1]:
            new = _refine(fv, v, _integral(vals))
            if len(new) > 3:
                add("refine_peak", axis, new,
                    f"{axis}: the selected value {v:g} is inside the values tried; refine between its neighbours "
                    f"{fv[fv.index(v) - 1]:g} and {fv[fv.index(v) + 1]:g}")
    return out


# ---- plots -----------------------------------------------------------------------------------------


def sensitivity_png(sens: Sequence[AxisSensitivity], heat: Heatmap | None = None) -> bytes:
    """One panel per axis (median with the quartile band and min/max, each fold's median, the profile, the
    candidate's value) and the heatmap, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(sens) + (heat is not None)
    ncol = min(3, max(1, n))
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), dpi=70, squeeze=False)
    flat = list(axes.flat)
    for ax, s in zip(flat, sens, strict=False):
        xs = list(range(len(s.points)))
        labels = [f"{p.value:.4g}" if isinstance(p.value, float) else str(p.value)[:10] for p in s.points]

        def arr(key: str, s: AxisSensitivity = s) -> np.ndarray:
            return np.array([np.nan if getattr(p, key) is None else getattr(p, key) for p in s.points], dtype=float)

        ax.fill_between(xs, arr("min"), arr("max"), color="#3b6ea8", alpha=0.12, label="min–max")
        ax.fill_between(xs, arr("q25"), arr("q75"), color="#3b6ea8", alpha=0.3, label="quartiles")
        ax.plot(xs, arr("median"), color="#3b6ea8", marker="o", label="median")
        ax.plot(xs, arr("profile"), color="#c0392b", ls="--", label="best set")
        dates = sorted({d for p in s.points for d in p.fold_medians})
        for d in dates:
            ax.plot(xs, [p.fold_medians.get(d, np.nan) for p in s.points], color="grey", lw=0.7, alpha=0.6)
        if s.selected_value is not None:
            for i, p in enumerate(s.points):
                inside = p.value == s.selected_value or (s.binned and p.lo is not None and p.hi is not None
                                                         and p.lo <= s.selected_value <= p.hi)
                if inside:
                    ax.axvline(i, color="#27ae60", lw=1.5, label="selected")
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xticks(xs, labels, fontsize=7, rotation=45 if len(xs) > 6 else 0)
        ax.set_title(f"{s.axis}{' (flat)' if s.flat else ''}", fontsize=9)
        ax.set_ylabel(s.metric, fontsize=7)
        ax.tick_params(labelsize=7)
    if sens:
        flat[0].legend(fontsize=6)
    if heat is not None:
        ax = flat[len(sens)]
        m = np.array([[np.nan if v is None else v for v in row] for row in heat.median], dtype=float)
        lim = np.nanmax(np.abs(m)) if np.isfinite(m).any() else 1.0
        im = ax.imshow(m, origin="lower", cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(heat.x_values)), [f"{v:.4g}" if isinstance(v, float) else str(v)[:8]
                                                   for v in heat.x_values], fontsize=7, rotation=45)
        ax.set_yticks(range(len(heat.y_values)), [f"{v:.4g}" if isinstance(v, float) else str(v)[:8]
                                                   for v in heat.y_values], fontsize=7)
        if heat.selected is not None and heat.selected[0] in heat.x_values and heat.selected[1] in heat.y_values:
            ax.plot(heat.x_values.index(heat.selected[0]), heat.y_values.index(heat.selected[1]), "k*", ms=10)
        ax.set_xlabel(heat.x_axis, fontsize=8)
        ax.set_ylabel(heat.y_axis, fontsize=8)
        ax.set_title(f"median {heat.metric}", fontsize=9)
        fig.colorbar(im, ax=ax)
    for ax in flat[n:]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def most_sensitive_pair(sens: Sequence[AxisSensitivity]) -> tuple[str, str] | None:
    """The two axes whose profiles move most (what a heatmap is most worth drawing for)."""
    ranked = sorted((s for s in sens if s.profile_range is not None), key=lambda s: -s.profile_range)
    return (ranked[0].axis, ranked[1].axis) if len(ranked) >= 2 else None


@dataclass(frozen=True)
class Replayed:
    """Trades of the walk-forward's selected rows, replayed (or why not: `note`)."""

    oos: dict[str, TradeSample] | None  # by test date
    is_candidate: TradeSample | None  # the candidate's in-sample trades
    note: str | None = None


def replay_trades(lake: Path, res: Results, configs_dir: Path | None = None) -> Replayed:
    """Replay each fold's selected row (run_equity.replay_evaluations: the sweep's own code) for its trades.
    Refused, with the reason in `note`, when a row cannot be replayed faithfully or its replay does not
    reproduce the stored trade count and pnl."""
    from qmachina_assets.core.research.run_equity import replay_evaluations

    cand = res.candidate()
    oos: dict[str, TradeSample] = {}
    is_cand = None
    for r in res.selected():
        try:
            ev = replay_evaluations(lake, r, configs_dir)
        except (ValueError, OSError) as exc:  # ReplayError, a dataset that does not load
            return Replayed(None, None, f"trades not replayed: {exc}")
        for tag, (out, data) in ev.items():
            stored_n, stored_pnl = _finite(r.get(f"{tag}_n_trades")), _finite(r.get(f"{tag}_total_pnl_ticks"))
            m = out.metrics
            if stored_n != m.n_trades or stored_pnl is None or not math.isclose(stored_pnl, m.total_pnl_ticks,
                                                                               rel_tol=1e-9, abs_tol=1e-6):
                return Replayed(None, None, f"trades not replayed: run {r['run_id']} replays to {m.n_trades} "
                                            f"trades / {m.total_pnl_ticks:.4g} ticks, stored {stored_n} / "
                                            f"{stored_pnl} (the code changed since the sweep)")
            sample = TradeSample(out.trades["pnl_ticks"].copy(), data.ts_ns[out.trades["entry_bin"]])
            if tag == "oos":
                oos[r["test_date"]] = sample
            elif cand is not None and r["run_id"] == cand["run_id"]:
                is_cand = sample
    return Replayed(oos, is_cand)


def load_results(lake: Path, experiment: str) -> Results | None:
    from qmachina_assets.core.research.sweeps import read_results

    table = read_results(lake, experiment)
    return None if table is None else Results.from_table(table)


class Advice(BaseModel):
    """Everything above for one experiment (what the sweep asset's metadata shows)."""

    experiment: str
    metric: str
    sensitivity: list[AxisSensitivity]
    heatmap: Heatmap | None
    robustness: Robustness
    suggestions: list[Suggestion]
    note: str | None = Field(None, description="why suggestions are missing, when the specs do not load")


def spec_chain(experiment: str, configs_dir: Path | None = None,
               ) -> tuple[tuple[ExperimentSpec, ServingSpec, PipelineSpec] | None, str | None]:
    """The experiment's specs, or None and why (an experiment's results outlive its YAML file)."""
    from qmachina_assets.core.research.specs import ConfigError, resolve_experiment

    try:
        return resolve_experiment(experiment, configs_dir=configs_dir), None
    except (ConfigError, OSError) as exc:
        return None, f"the specs of {experiment!r} do not load: {exc}"


def advise(lake: Path, experiment: str, *, configs_dir: Path | None = None, metric: str = DEFAULT_METRIC,
           thresholds: Thresholds | None = None, replay: bool = True) -> Advice | None:
    """Sensitivity of every swept axis, the heatmap of the two most sensitive, the flags (with replayed trades
    when `replay`) and the suggestions; None before any results."""
    res = load_results(lake, experiment)
    if res is None:
        return None
    th = thresholds or Thresholds()
    chain, note = spec_chain(experiment, configs_dir)
    cost = chain[0].eval.cost_ticks_per_trade if chain else 0.0
    rep = replay_trades(lake, res, configs_dir) if replay else Replayed(
        None, None, "trades not replayed here (GET /v1/experiments/{name}/robustness replays them)")
    rob = robustness(res, cost_ticks_per_trade=cost, thresholds=th, oos_trades=rep.oos, is_trades=rep.is_candidate,
                     note=rep.note or (f"{note}; cost taken as 0" if note else None))
    sens = [sensitivity(res, a, metric, th) for a in res.axes]
    pair = most_sensitive_pair(sens)
    sugg = suggest(res, *chain, thresholds=th, flags=rob) if chain else []
    return Advice(experiment=experiment, metric=metric, sensitivity=sens,
                  heatmap=heatmap(res, *pair, metric) if pair else None, robustness=rob, suggestions=sugg, note=note)


def advice_markdown(adv: Advice) -> tuple[str, str]:
    """(flags table, suggestions list) as Markdown."""
    head = "| flag | axis | fired | figure | threshold | why |\n|---|---|---|---|---|---|"
    mark = {True: "**yes**", False: "no", None: "n/a"}
    rows = [f"| {f.name} | {f.axis or ''} | {mark[f.fired]} | {'' if f.figure is None else f'{f.figure:.4g}'} | "
            f"{'' if f.threshold is None else f'{f.threshold:.4g}'} | {f.message} |" for f in adv.robustness.flags]
    sugg = [f"- **{s.kind}** `{s.axis}` → {s.values} ({s.n_sets} sets per test day): {s.reason}"
            for s in adv.suggestions] or [f"- none{f' ({adv.note})' if adv.note else ''}"]
    return "\n".join([head, *rows]), "\n".join(sugg)


__all__ = [
    "DEFAULT_METRIC", "Advice", "AxisSensitivity", "Flag", "Heatmap", "Results", "Robustness", "Suggestion",
    "Thresholds", "TradeSample", "advice_markdown", "advise", "deflated_sharpe", "expected_max_sharpe", "heatmap",
    "load_results", "replay_trades", "robustness", "sensitivity", "sensitivity_png", "suggest", "wilson", "with_axis",
]
