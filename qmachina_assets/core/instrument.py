"""Instrument configuration and the single-instrument lock (SPEC §5.1).

One process (Dagster code location or serving process) works on exactly one instrument root. The
lock is loaded once at start-up from `QMACHINA_INSTRUMENT_CONFIG_PATH` or `configs/instrument.yaml`,
and every file, partition and spec is checked against it.

Departure from SPEC §5.1: the seed system locked one contract (`MNQH6`), which breaks as soon as
research spans a roll. Here the lock is the product type, dataset and *root*: any outright contract
of the root (root + CME month code + year, e.g. ESH4, ESM4) is accepted; spreads (`ESM4-ESU4`) and
other roots are refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from qmachina_assets.core.paths import configs_root

ENV_PATH = "QMACHINA_INSTRUMENT_CONFIG_PATH"
MONTH_CODES = "FGHJKMNQUVXZ"


class RollRule(BaseModel):
    """When the front contract changes: the calendar roll of quarterly index futures (CME's for ES: 8 calendar
    days before the contract's expiry, the third Friday of its month). The roll instant is `time_et` (New York)
    on the day `days_before_expiry` days before the expiry of the contract being rolled out of."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: Literal["calendar"] = "calendar"
    months: str = Field("HMUZ", pattern=f"^[{MONTH_CODES}]+$", description="contract months, in calendar order")
    days_before_expiry: int = Field(8, ge=0, le=366)
    time_et: str = Field("18:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")


def third_friday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)


class InstrumentConfigError(ValueError):
    """The instrument file is missing or malformed; the message names the file and field."""


class InstrumentLockError(ValueError):
    """Something names another instrument than the locked one; the message names the field."""


def _positive_list(v: list[float] | str) -> list[float]:
    if isinstance(v, str):
        v = [float(x) for x in v.split(",") if x.strip()]
    if not v or any(x <= 0 for x in v):
        raise ValueError("must be a non-empty list of values > 0")
    return list(v)


class InstrumentConfig(BaseModel):
    """Everything that is fixed per instrument: identity, grid geometry, engine and gold defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product_type: Literal["future_mbo", "equity_mbo"]
    dataset: str = Field(min_length=1, description="Databento dataset, e.g. GLBX.MDP3")
    symbol: str = Field(min_length=1, description="default (front) contract, e.g. ESH4")
    symbol_root: str = Field(min_length=1, description="the locked root, e.g. ES")
    price_scale: float = Field(gt=0)
    tick_size: float = Field(gt=0)
    bucket_size_dollars: float = Field(gt=0)
    rel_tick_size: float = Field(gt=0)
    grid_radius_ticks: int = Field(ge=1)
    cell_width_ms: int = Field(ge=1)
    n_absolute_ticks: int = Field(ge=3)
    flow_windows: list[int]
    flow_rollup_weights: list[float]
    flow_derivative_weights: list[float]
    flow_tanh_scale: float = Field(gt=0)
    flow_neutral_threshold: float = Field(gt=0, lt=1)
    flow_zscore_window_bins: int = Field(ge=2)
    flow_zscore_min_periods: int = Field(ge=2)
    projection_horizons_bins: list[int]
    contract_multiplier: float = Field(gt=0)
    qty_unit: str
    price_decimals: int = Field(ge=0)
    tau_velocity: float = Field(gt=0)
    tau_acceleration: float = Field(gt=0)
    tau_jerk: float = Field(gt=0)
    tau_rest_decay: float = Field(gt=0)
    c1: float = Field(ge=0)
    c2: float = Field(ge=0)
    c3: float = Field(ge=0)
    c4: float = Field(ge=0)
    c5: float = Field(ge=0)
    c6: float = Field(ge=0)
    c7: float = Field(ge=0)
    model_id: str = "vacuum_pressure"
    state_model_center_exclusion_radius: int = Field(0, ge=0)
    state_model_spatial_decay_power: float = Field(0.0, ge=0)
    state_model_zscore_window_bins: int = Field(240, ge=2)
    state_model_zscore_min_periods: int = Field(60, ge=2)
    state_model_tanh_scale: float = Field(3.0, gt=0)
    state_model_d1_weight: float = Field(1.0, ge=0)
    state_model_d2_weight: float = Field(0.0, ge=0)
    state_model_d3_weight: float = Field(0.0, ge=0)
    state_model_bull_pressure_weight: float = Field(1.0, ge=0)
    state_model_bull_vacuum_weight: float = Field(1.0, ge=0)
    state_model_bear_pressure_weight: float = Field(1.0, ge=0)
    state_model_bear_vacuum_weight: float = Field(1.0, ge=0)
    state_model_mixed_weight: float = Field(0.0, ge=0)
    # not part of config_version (excluded from dumps): it picks which contract a live run follows, never how
    # the engine or gold compute (every contract-level artifact keeps its version)
    roll: RollRule | None = Field(None, exclude=True, description="front-contract roll rule (live ingestion)")

    _v_windows = field_validator("flow_windows", "projection_horizons_bins", mode="before")(
        lambda v: [int(x) for x in _positive_list(v)]
    )
    _v_weights = field_validator("flow_rollup_weights", "flow_derivative_weights", mode="before")(
        _positive_list
    )

    @model_validator(mode="after")
    def _cross_field(self) -> InstrumentConfig:
        if len(self.flow_windows) != len(self.flow_rollup_weights):
            raise ValueError("flow_rollup_weights: must have one weight per flow_windows entry")
        if len(self.flow_derivative_weights) != 3:
            raise ValueError("flow_derivative_weights: exactly 3 weights (d1, d2, d3) expected")
        if len(set(self.projection_horizons_bins)) != len(self.projection_horizons_bins):
            raise ValueError("projection_horizons_bins: values must be unique")
        if self.flow_zscore_min_periods > self.flow_zscore_window_bins:
            raise ValueError("flow_zscore_min_periods: must be <= flow_zscore_window_bins")
        if self.state_model_zscore_min_periods > self.state_model_zscore_window_bins:
            raise ValueError("state_model_zscore_min_periods: must be <= state_model_zscore_window_bins")
        if not (self.state_model_d1_weight or self.state_model_d2_weight or self.state_model_d3_weight):
            raise ValueError("state_model_d1_weight: at least one of the d1/d2/d3 weights must be > 0")
        if not self.symbol_matches_root(self.symbol):
            raise ValueError(f"symbol: {self.symbol!r} is not an outright contract of root {self.symbol_root!r}")
        return self

    # ---- derived -----------------------------------------------------------------------------
    @property
    def tick_int(self) -> int:
        """Tick (or equity bucket) in integer price units (1e-9 dollars)."""
        size = self.tick_size if self.product_type == "future_mbo" else self.bucket_size_dollars
        return round(size / self.price_scale)

    @property
    def projection_horizons_ms(self) -> list[int]:
        return [b * self.cell_width_ms for b in self.projection_horizons_bins]

    @property
    def config_version(self) -> str:
        """First 12 hex of sha256 over the sorted `key=value` fields (SPEC §5.1)."""
        fields = self.model_dump()
        text = "|".join(f"{k}={fields[k]}" for k in sorted(fields))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return {
            **self.model_dump(),
            "projection_horizons_ms": self.projection_horizons_ms,
            "config_version": self.config_version,
        }

    def front_contract(self, at_ns: int) -> str:
        """The front contract at `at_ns` under the roll rule (the lock's `symbol` without one)."""
        if self.roll is None:
            return self.symbol
        et = ZoneInfo("America/New_York")
        at = dt.datetime.fromtimestamp(at_ns / 1e9, dt.UTC)
        t = dt.time.fromisoformat(self.roll.time_et)
        for year in (at.year - 1, at.year, at.year + 1):
            for code in self.roll.months:
                month = MONTH_CODES.index(code) + 1
                day = third_friday(year, month) - dt.timedelta(days=self.roll.days_before_expiry)
                if at < dt.datetime.combine(day, t, tzinfo=et):
                    return f"{self.symbol_root}{code}{year % 10}"
        raise ValueError(f"roll: no contract of {self.symbol_root} after {at.isoformat()}")

    # ---- the lock ------------------------------------------------------------------------------
    def symbol_matches_root(self, symbol: str) -> bool:
        if self.product_type == "equity_mbo":
            return symbol == self.symbol_root
        return re.fullmatch(rf"{re.escape(self.symbol_root)}[{MONTH_CODES}]\d{{1,2}}", symbol) is not None

    def check_lock(self, *, source: str, dataset: str | None = None, symbols: list[str] | None = None,
                   product_type: str | None = None) -> None:
        """Raise InstrumentLockError naming `source` and the field that differs from the lock."""
        if product_type is not None and product_type != self.product_type:
            raise InstrumentLockError(
                f"{source}: product_type is {product_type!r}; the instrument lock expects {self.product_type!r}"
            )
        if dataset is not None and dataset != self.dataset:
            raise InstrumentLockError(
                f"{source}: dataset is {dataset!r}; the instrument lock expects {self.dataset!r}"
            )
        for sym in symbols or []:
            if not self.symbol_matches_root(sym):
                raise InstrumentLockError(
                    f"{source}: symbol {sym!r} is not an outright contract of the locked root "
                    f"{self.symbol_root!r} ({self.product_type}, {self.dataset})"
                )


def _describe(err: dict) -> str:
    """`field 'name': reason` for field errors and for cross-field errors written as `name: reason`."""
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["loc"]:
        return f"field '{'.'.join(str(x) for x in err['loc'])}': {msg}"
    name, _, reason = msg.partition(": ")
    return f"field '{name}': {reason or msg}"


def instrument_config_path() -> Path:
    return Path(os.environ.get(ENV_PATH) or configs_root() / "instrument.yaml")


def load_instrument(path: str | os.PathLike[str] | None = None) -> InstrumentConfig:
    """Load and validate an instrument file; errors name the file and the offending field."""
    p = Path(path) if path is not None else instrument_config_path()
    if not p.is_file():
        raise InstrumentConfigError(f"{p}: instrument config not found (set {ENV_PATH} or create it)")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InstrumentConfigError(f"{p}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise InstrumentConfigError(f"{p}: expected a mapping of instrument fields, got {type(raw).__name__}")
    try:
        return InstrumentConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise InstrumentConfigError(f"{p}: {problems}") from exc


@lru_cache(maxsize=1)
def locked_instrument() -> InstrumentConfig:
    """The process-wide instrument lock, loaded once at start-up."""
    return load_instrument()
