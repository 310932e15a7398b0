"""The one signal interface: fit on a training window, then score bins causally.

Every signal (statistical or ML) is a class registered by name with a pydantic `Params` model (extra keys
forbidden: a bad parameter is an error, never a silent fallback to defaults, SPEC §10.13). `fit` sees only
the training data (earlier days under walk-forward); `score` returns one float per bin where the value at
bin i uses bins <= i only, so the evaluated signal is exactly what a stream would compute (SPEC §10.9/10.10).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict


@dataclass
class GridData:
    """Dense bins x k arrays of one or more contiguous days (a research dataset, or a slice of one).

    `columns[name]` is float64 (n_bins, 2R+1) with column R = the spot (k = 0); invalid bins hold zeros.
    `day` numbers the UTC trading day of each bin (0, 1, ...) so signals can reset state at day boundaries.
    """

    ts_ns: np.ndarray  # int64 bin close
    mid: np.ndarray  # float64 price, 0 where invalid
    best_bid: np.ndarray  # float64 price, 0 where the side is empty
    best_ask: np.ndarray
    valid: np.ndarray  # bool: book valid and mid > 0
    day: np.ndarray  # int64 day index per bin
    radius: int
    cell_width_ms: int
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    #: intrabin extremes of the mid (float64 per bin, NaN where unknown; None: the data has none) — the
    #: evaluator tests its barriers against them
    mid_high: np.ndarray | None = None
    mid_low: np.ndarray | None = None

    @property
    def n_bins(self) -> int:
        return int(self.ts_ns.shape[0])

    def grid(self, name: str) -> np.ndarray:
        try:
            return self.columns[name]
        except KeyError:
            raise KeyError(f"grid column {name!r} is not in this dataset (has: {sorted(self.columns)})") from None

    def k_index(self, k: int) -> int:
        """Column index of relative tick k."""
        if abs(k) > self.radius:
            raise ValueError(f"k={k} outside the dataset's ±{self.radius} grid")
        return self.radius + k

    def slice(self, start: int, stop: int) -> GridData:
        return GridData(self.ts_ns[start:stop], self.mid[start:stop], self.best_bid[start:stop],
                        self.best_ask[start:stop], self.valid[start:stop], self.day[start:stop], self.radius,
                        self.cell_width_ms, {k: v[start:stop] for k, v in self.columns.items()},
                        None if self.mid_high is None else self.mid_high[start:stop],
                        None if self.mid_low is None else self.mid_low[start:stop])


class SignalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class LabelSpec:
    """How ML signals label training bins: the experiment's own TP/SL barriers (SPEC §10.10), resolved
    within `max_hold_bins`; training bins whose label window reaches past the training data are purged."""

    tp_ticks: float
    sl_ticks: float
    max_hold_bins: int
    tick_size: float


class Signal(ABC):
    """A signal: `fit(train)` then `score(data)`; subclasses declare name, kind, columns, Params."""

    name: ClassVar[str]
    kind: ClassVar[Literal["statistical", "ml"]]
    #: grid columns read (silver, built-in gold or Gold DSL outputs): a class constant for signals that read
    #: fixed columns; a signal whose params name its column (`gold_column`) sets it per instance, so read it
    #: from an instance
    columns: tuple[str, ...]
    default_thresholds: ClassVar[tuple[float, ...]]
    Params: ClassVar[type[SignalParams]]

    def __init__(self, params: SignalParams | dict | None = None):
        self.params = params if isinstance(params, self.Params) else self.Params(**(params or {}))
        self.fitted = False

    def fit(self, train: GridData, labels: LabelSpec | None = None) -> Signal:
        """Learn from the training window only (ML models; statistical signals learn nothing)."""
        self.fitted = True
        return self

    @abstractmethod
    def score(self, data: GridData) -> np.ndarray:
        """float64 per bin, causal; NaN where no value (warm-up, invalid bins)."""


REGISTRY: dict[str, type[Signal]] = {}


def register(cls: type[Signal]) -> type[Signal]:
    if cls.name in REGISTRY:
        raise ValueError(f"signal {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls
