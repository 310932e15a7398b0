"""Near-duplicate features: which of a set of columns add nothing the others do not already carry.

Two tests, each reported with its figure and threshold:
- **rank correlation**: a pair whose Spearman correlation is |ρ| ≥ `rank_corr` (monotone transforms of one
  another, e.g. a feature and its tanh or its z-score, score near ±1 where a Pearson correlation may not);
- **explained by the others**: a column whose least-squares fit on all the other columns (standardised, with an
  intercept) reaches R² ≥ `r2` (a weighted sum of other features), with its largest contributors.

Rows are those where every column is finite, evenly thinned to `max_rows`; a column constant on them carries
no information and is listed apart. Used by the Gold DSL preview (outputs against the built-in set) and by the
research advisor (signal scores and ML feature matrices on a dataset)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

RANK_CORR = 0.95
EXPLAINED_R2 = 0.95
MAX_ROWS = 100_000
TOP_CONTRIBUTORS = 3
RIDGE = 1e-9


class RedundantPair(BaseModel):
    a: str
    b: str
    rank_corr: float = Field(description="Spearman correlation")
    pearson: float | None
    message: str


class Explained(BaseModel):
    name: str
    r2: float = Field(description="R² of the least-squares fit on every other column")
    by: list[str] = Field(description="the largest standardised coefficients, largest first")
    message: str


class RedundancyReport(BaseModel):
    n_rows: int = Field(description="rows used (every column finite), after thinning")
    features: list[str]
    constant: list[str] = Field(description="columns constant on the rows used: no information")
    rank_corr_threshold: float
    r2_threshold: float
    pairs: list[RedundantPair] = Field(description="pairs at or above the rank-correlation threshold")
    explained: list[Explained] = Field(description="columns at or above the R² threshold")
    rank_corr: dict[str, dict[str, float | None]] = Field(description="Spearman matrix of the targets vs all")
    r2: dict[str, float | None] = Field(description="each target's R² on the other columns")


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties sharing their average rank (Spearman's convention)."""
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    starts = np.flatnonzero(np.concatenate(([True], sx[1:] != sx[:-1])))
    ends = np.concatenate((starts[1:], [sx.size]))
    avg = (starts + ends - 1) / 2.0
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _corr(z: np.ndarray) -> np.ndarray:
    """Correlation matrix of standardised columns (n, p)."""
    return (z.T @ z) / z.shape[0]


def _standardise(m: np.ndarray) -> np.ndarray:
    sd = m.std(axis=0)
    return (m - m.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def redundancy(columns: Mapping[str, np.ndarray], targets: Sequence[str] | None = None, *,
               rank_corr: float = RANK_CORR, r2: float = EXPLAINED_R2, max_rows: int = MAX_ROWS) -> RedundancyReport:
    """Redundancy of `targets` (default: every column) among all `columns` (equal-length 1-D arrays)."""
    names = list(columns)
    targets = list(targets) if targets is not None else names
    missing = [t for t in targets if t not in columns]
    if missing:
        raise KeyError(f"targets not among the columns: {', '.join(missing)}")
    if not names:
        raise ValueError("redundancy: no columns")
    m = np.column_stack([np.asarray(columns[n], dtype=np.float64).ravel() for n in names])
    m = m[np.isfinite(m).all(axis=1)]
    if m.shape[0] > max_rows:
        m = m[np.linspace(0, m.shape[0] - 1, max_rows).astype(np.int64)]
    n = m.shape[0]
    varying = [i for i in range(len(names)) if n >= 3 and m[:, i].std() > 0]
    constant = [names[i] for i in range(len(names)) if i not in varying]
    live = [names[i] for i in varying]
    z = _standardise(m[:, varying]) if varying else np.zeros((n, 0))
    zr = _standardise(np.column_stack([average_ranks(m[:, i]) for i in varying])) if varying else z
    rho, pear = (_corr(zr), _corr(z)) if varying else (np.zeros((0, 0)), np.zeros((0, 0)))
    idx = {nm: j for j, nm in enumerate(live)}

    pairs: list[RedundantPair] = []
    matrix: dict[str, dict[str, float | None]] = {}
    for t in targets:
        matrix[t] = {o: (float(rho[idx[t], idx[o]]) if t in idx and o in idx else None) for o in names if o != t}
    seen: set[tuple[str, str]] = set()
    for t in targets:
        if t not in idx:
            continue
        for o in live:
            key = tuple(sorted((t, o)))
            if o == t or key in seen:
                continue
            seen.add(key)  # type: ignore[arg-type]
            r = float(rho[idx[t], idx[o]])
            if abs(r) >= rank_corr:
                p = float(pear[idx[t], idx[o]])
                pairs.append(RedundantPair(a=key[0], b=key[1], rank_corr=r, pearson=p,
                                           message=f"{key[0]} and {key[1]}: rank correlation {r:+.3f} "
                                                   f"(|ρ| ≥ {rank_corr:g}; Pearson {p:+.3f})"))
    explained: list[Explained] = []
    r2s: dict[str, float | None] = {}
    # R² of column j on all the others from the inverse correlation matrix: 1 - 1 / inv[j, j], coefficients
    # -inv[j, k] / inv[j, j] (one p x p inverse instead of p regressions; RIDGE keeps exact duplicates finite)
    inv = np.linalg.inv(pear + RIDGE * np.eye(len(live))) if len(live) >= 2 else None
    for t in targets:
        if t not in idx or inv is None:
            r2s[t] = None
            continue
        j = idx[t]
        value = float(min(1.0, max(0.0, 1.0 - 1.0 / inv[j, j])))
        r2s[t] = value
        if value >= r2:
            coef = -inv[j] / inv[j, j]
            coef[j] = 0.0
            top = [live[k] for k in np.argsort(-np.abs(coef))[:TOP_CONTRIBUTORS] if k != j]
            explained.append(Explained(name=t, r2=value, by=top,
                                       message=f"{t}: R² {value:.3f} on the other {len(live) - 1} column(s) "
                                               f"(≥ {r2:g}), mostly {', '.join(top)}"))
    pairs.sort(key=lambda p: -abs(p.rank_corr))
    return RedundancyReport(n_rows=n, features=names, constant=constant, rank_corr_threshold=rank_corr,
                            r2_threshold=r2, pairs=pairs, explained=explained, rank_corr=matrix, r2=r2s)
