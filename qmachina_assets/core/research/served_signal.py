"""The served signal bin by bin: the score and the trades a published version's evaluation made, as a stream.

Issue 14 item 4 ("served ≠ evaluated"): what the viewer shows must be what was evaluated, from the same code.
`SignalStream` advances on the engine's silver one chunk at a time, exactly the evaluation's pipeline made
incremental:

1. **Gold**: `GoldRuntime.step` (the batch gold's kernel, equal bit for bit; online_sim step 2).
2. **Score**: `online_sim.OnlineSignal`, a rolling GridData of the signal's lookback fed like
   `datasets.load_grid_data` (invalid bins zeroed) and scored by the batch `Signal.score`. Exact for
   finite-memory signals (flow_score, msd, ads, derivative, iirc, jad, erd); EMA signals (pfp, spg,
   ads_pfp_svac) keep their EMA's horizon to a weight of `online_sim.EMA_TOLERANCE` (1e-9 of the initial
   deviation), so a score within that of a threshold may fire differently (`Lookback.exact` false, reported
   with the stream). ML signals score with the fitted model the version carries (snapshot `model`, fitted at
   promotion on the walk-forward's latest fold: `model_artifact`), loaded after its sha256 is verified; their
   lookback is their features' longest window (+ the last valid bin before it for tick returns), exact. A
   version without a model, or whose model file is missing or altered, is refused (`MLSignalUnavailable`,
   naming the file).
3. **Trades**: `evaluation.Trader`, `evaluate`'s rules one bin at a time (tested equal to it), with the
   `EvalParams` of `sweeps.eval_params`: the served spec's threshold / cooldown / TP / SL and the eval settings
   of the experiment that evaluated it (a version registered without an experiment: `EvalConfig()`'s
   defaults, `eval_source` "defaults").

Prices and validity are the dataset's: valid = book_valid & mid > 0, mid 0 where invalid, bid/ask =
price_int × price_scale, intrabin high/low NaN where invalid or unknown. One `SignalStream` is one evaluation
session (a research dataset is one capture window of one date, `day` = its index): a replay of a date is one
session; `finish` closes it as `evaluate` closes a session's end.

A signal reading Gold DSL outputs (`gold_column` on one; `SignalSetup.dsl_outputs` are the version's) gets
them from the stream's DSL follower (`replay.DslFollower`), which computes them once per bin and passes them to
`feed` (`dsl=`); the DSL state and this stream's share one engine checkpoint (`replay.Followers`).

The gold's bin_seq is the absolute cell index (bin_start_ns // cell), so a state warmed from the capture
window's start continues across an engine restarted mid-day (which numbers its bins from 0); only
differences of bin_seq matter to the gold. `checkpoint`/`restore` (arrays + JSON, no pickle) let the state
join an engine checkpoint (`checkpoints.SilverFollower`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qmachina_assets.core.engine import silver
from qmachina_assets.core.gold.features import GOLD_CODE_COLUMNS, GOLD_FLOAT_COLUMNS, GoldFeatureConfig, GoldRuntime
from qmachina_assets.core.instrument import InstrumentConfig
from qmachina_assets.core.research.evaluation import EvalParams, TradeEvent, Trader
from qmachina_assets.core.research.model_artifact import ModelArtifactError, fitted_for, load_model
from qmachina_assets.core.research.online_sim import Lookback, OnlineSignal, signal_lookback
from qmachina_assets.core.research.signals.base import Signal
from qmachina_assets.core.research.signals.catalog import make_signal
from qmachina_assets.core.research.specs import EvalConfig, ServingSpec
from qmachina_assets.core.research.sweeps import eval_params, signal_kwargs

#: Bumped when the stream's state layout or rules change (part of `identity`, so old checkpoints miss).
STATE_VERSION = 1
_GOLD_STATE = ("si", "sf", "ring", "fifo", "srt")
#: columns the stream has without a Gold DSL: silver and built-in gold
ONLINE_COLUMNS = frozenset((*(n for n, _ in silver.GRID_COLUMNS), *GOLD_FLOAT_COLUMNS, *GOLD_CODE_COLUMNS))


class SignalUnavailable(ValueError):
    """The version's signal cannot be streamed (no signal, an ML model that cannot be loaded, a spec that does not
    validate)."""


class MLSignalUnavailable(SignalUnavailable):
    """An ML signal whose fitted model cannot be loaded: none in the version, or a missing or altered file."""


@dataclass(frozen=True)
class SignalSetup:
    """What the stream of a published version's signal is built from (all from the published version)."""

    serving: ServingSpec
    eval: EvalConfig
    eval_source: Literal["experiment", "defaults"]
    runtime: InstrumentConfig
    gold_config: GoldFeatureConfig
    #: the outputs of the version's Gold DSL and its spec hash (none: the pipeline has no Gold DSL)
    dsl_outputs: tuple[str, ...] = ()
    dsl_hash: str | None = None
    model: Signal | None = None  # an ML signal's fitted model (loaded from the version's artifact)
    model_sha256: str | None = None

    @classmethod
    def from_published(cls, serving: dict[str, Any] | None, experiment_eval: dict[str, Any] | None,
                       runtime: InstrumentConfig, gold_config: dict[str, Any],
                       gold_dsl: dict[str, Any] | None = None, *, model: dict[str, Any] | None = None,
                       lake: Path | str | None = None) -> SignalSetup:
        """From a published version's serving spec dump, its lineage experiment's `eval` (None: registered
        without an experiment), the snapshot's runtime, gold config and Gold DSL section (None: none), and for
        an ML signal the snapshot's `model` entry with the lake holding its file. SignalUnavailable names why
        not."""
        if serving is None:
            raise SignalUnavailable("the published version carries no serving spec")
        try:
            spec = ServingSpec.model_validate(serving)
        except ValueError as exc:
            raise SignalUnavailable(f"its serving spec does not validate: {exc}") from exc
        if spec.signal is None:
            raise SignalUnavailable(f"serving spec {spec.name!r} has no signal (signal: null)")
        sig = make_signal(spec.signal.name, signal_kwargs(spec))
        fitted = None
        if sig.kind == "ml":
            if model is None:
                raise MLSignalUnavailable(f"signal {spec.signal.name!r} is an ML signal and the published version "
                                          "carries no fitted model (published before models were stored); "
                                          "re-promote it from its experiment")
            if lake is None:
                raise MLSignalUnavailable(f"signal {spec.signal.name!r}: no lake to load its model "
                                          f"{model.get('path')} from")
            if not fitted_for(model, spec):
                raise MLSignalUnavailable(f"model {model.get('path')} was fitted for {model.get('signal')!r} "
                                          f"{model.get('params')}, the version serves {spec.signal.name!r}")
            try:
                fitted = load_model(Path(lake), model)
            except ModelArtifactError as exc:
                raise MLSignalUnavailable(f"signal {spec.signal.name!r}: its model cannot be loaded: {exc}") from exc
        outputs = tuple(gold_dsl["outputs"]) if gold_dsl is not None else ()
        unknown = [c for c in sig.columns if c not in ONLINE_COLUMNS and c not in outputs]
        if unknown:
            dsl = f"its Gold DSL's outputs are {', '.join(outputs)}" if outputs else "its pipeline has no Gold DSL"
            raise SignalUnavailable(f"signal {spec.signal.name!r} reads {', '.join(map(repr, unknown))}: not a silver "
                                    f"or built-in gold column, and {dsl}")
        ev = EvalConfig() if experiment_eval is None else EvalConfig.model_validate(experiment_eval)
        return cls(spec, ev, "defaults" if experiment_eval is None else "experiment", runtime,
                   GoldFeatureConfig.model_validate(gold_config), outputs,
                   gold_dsl["spec_hash"] if gold_dsl is not None else None, fitted,
                   None if fitted is None else str(model["sha256"]))  # type: ignore[index]

    def signal(self) -> Signal:
        """The signal that scores: the loaded model (ML), else a fresh instance of the spec's signal."""
        assert self.serving.signal is not None
        return self.model if self.model is not None else make_signal(self.serving.signal.name,
                                                                     signal_kwargs(self.serving))

    @property
    def params(self) -> EvalParams:
        return eval_params(self.serving, self.eval, self.runtime.tick_size)

    def lookback(self) -> Lookback:
        return signal_lookback(self.signal(), int(self.runtime.cell_width_ms))

    def dsl_columns(self) -> tuple[str, ...]:
        """The Gold DSL outputs the signal reads (fed per bin by the stream's DSL follower)."""
        assert self.serving.signal is not None
        sig = make_signal(self.serving.signal.name, signal_kwargs(self.serving))
        return tuple(c for c in sig.columns if c not in ONLINE_COLUMNS and c in self.dsl_outputs)

    def describe(self) -> dict[str, Any]:
        """The stream's announcement of what it trades (JSON)."""
        assert self.serving.signal is not None
        lb = self.lookback()
        out = {"signal": self.serving.signal.name, "signal_params": signal_kwargs(self.serving),
               "eval": self.params.model_dump(mode="json"), "eval_source": self.eval_source,
               "lookback_bins": lb.bins, "lookback_exact": lb.exact}
        if self.model_sha256 is not None:
            out["model_sha256"] = self.model_sha256
        if self.dsl_columns():  # the score depends on the DSL spec (absent otherwise: identities unchanged)
            out["gold_dsl"] = {"spec_hash": self.dsl_hash, "columns": list(self.dsl_columns())}
        return out


@dataclass(frozen=True)
class BinSignal:
    """One bin's output: the score (NaN: undefined) and the trade events its close made known."""

    ts_ns: int
    score: float
    events: list[TradeEvent]


class SignalStream:
    """Gold → score → Trader for one session (see the module docstring). Not thread-safe."""

    def __init__(self, setup: SignalSetup, start_ns: int | None = None):
        assert setup.serving.signal is not None
        rt = setup.runtime
        self.setup = setup
        self.params = setup.params
        self.radius, self.cell_ns = int(rt.grid_radius_ticks), int(rt.cell_width_ms) * 1_000_000
        sig = setup.signal()
        self.lookback = signal_lookback(sig, int(rt.cell_width_ms))
        self.gold = GoldRuntime(setup.gold_config, self.radius, int(rt.tick_int))
        self.online = OnlineSignal(sig, self.lookback.bins, self.radius, int(rt.cell_width_ms), float(rt.price_scale),
                                   dsl_columns=setup.dsl_columns(), keep_last_valid=self.lookback.keep_last_valid)
        self.trader = Trader(self.params)
        self.ts: list[int] = []  # bin close of each Trader bin index (events name bins by that index)
        self._start_ns = start_ns
        self._price_scale = float(rt.price_scale)

    # ---- checkpoints.SilverFollower -------------------------------------------------------------
    @property
    def identity(self) -> str:
        body = json.dumps({"v": STATE_VERSION, **self.setup.describe(),
                           "gold": self.setup.gold_config.config_hash}, sort_keys=True)
        return "signal:" + hashlib.sha256(body.encode()).hexdigest()[:16]

    @property
    def start_ns(self) -> int | None:
        return self._start_ns

    @property
    def reads_dsl(self) -> bool:
        """Whether `feed` needs the chunk's Gold DSL outputs (`dsl=`, the DSL follower's)."""
        return bool(self.online.dsl_columns)

    def feed(self, bins: dict[str, np.ndarray], grid: dict[str, np.ndarray],
             dsl: dict[str, np.ndarray] | None = None) -> list[BinSignal]:
        """Advance over a silver chunk's consecutive bins; one BinSignal per bin. `dsl`: the chunk's Gold DSL
        outputs (`DslRuntime.step`'s, computed once by the stream's DSL follower) when the signal reads some."""
        n = len(bins["bin_seq"])
        if not n:
            return []
        gold_bins = {"bin_seq": np.asarray(bins["bin_start_ns"], np.int64) // self.cell_ns,
                     **{k: bins[k] for k in ("spot_ref_price_int", "book_valid", "ask_reprice_sign",
                                             "bid_reprice_sign")}}
        gold = self.gold.step(gold_bins, grid)
        mids = np.asarray(bins["mid_price"], np.float64)
        valid = np.asarray(bins["book_valid"], bool) & (mids > 0)
        bid = np.asarray(bins["best_bid_price_int"]) * self._price_scale
        ask = np.asarray(bins["best_ask_price_int"]) * self._price_scale
        ext = [np.where(valid & (x > 0), x, np.nan) if x is not None else np.full(n, np.nan)
               for x in (bins.get("mid_high_price"), bins.get("mid_low_price"))]
        ts = np.asarray(bins["ts_ns"], np.int64).tolist()
        out = []
        for b in range(n):
            score = self.online.push(bins, grid, gold, b, dsl)
            ok = bool(valid[b])
            events = self.trader.step(score, float(mids[b]) if ok else 0.0, float(bid[b]), float(ask[b]), ok,
                                      float(ext[0][b]), float(ext[1][b]))
            self.ts.append(ts[b])
            out.append(BinSignal(ts[b], score, events))
        return out

    def finish(self) -> list[TradeEvent]:
        """The session's end: an open position closes `truncated` at its last tradable bin."""
        return self.trader.finish()

    def event_ts(self, event: TradeEvent) -> int:
        """The bin close of the bin an event happened at."""
        return self.ts[event.bin]

    def checkpoint(self) -> bytes:
        meta = {"v": STATE_VERSION, "trader": self.trader.state(), "n_ts": len(self.ts)}
        arrays = {f"gold:{k}": getattr(self.gold, k) for k in _GOLD_STATE}
        arrays.update({f"online:{k}": a for k, a in self.online.state().items()})
        arrays["ts"] = np.asarray(self.ts, np.int64)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        z = np.load(io.BytesIO(blob), allow_pickle=False)
        meta = json.loads(z["meta"].tobytes())
        if meta.get("v") != STATE_VERSION:
            raise ValueError(f"signal stream state version {meta.get('v')}, expected {STATE_VERSION}")
        for k in _GOLD_STATE:
            getattr(self.gold, k)[...] = z[f"gold:{k}"]
        self.online.load_state({k.split(":", 1)[1]: z[k] for k in z.files if k.startswith("online:")})
        self.trader.load_state(meta["trader"])
        self.ts = z["ts"].tolist()


def score_json(score: float) -> float | None:
    """A score on the wire: null when undefined (NaN/inf), else the float."""
    return score if math.isfinite(score) else None
