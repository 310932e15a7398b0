"""`served_signal.SignalSetup`: what `signals=1` trades is read from the published version, and what it cannot
score is refused with the reason (the stream test, tests/serving/test_serving_stream.py, proves the events equal
`evaluate`)."""

from __future__ import annotations

import numpy as np
import pytest

from qmachina_assets.core.engine import silver
from qmachina_assets.core.gold.features import GoldFeatureConfig
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.core.research.served_signal import (
    MLSignalUnavailable,
    SignalSetup,
    SignalStream,
    SignalUnavailable,
)
from qmachina_assets.core.research.specs import load_serving


def _dump(**change) -> dict:
    return {**load_serving("vp_flow_score").model_dump(mode="json"), **change}


def _setup(serving: dict | None, ev: dict | None = None) -> SignalSetup:
    runtime = locked_instrument()
    return SignalSetup.from_published(serving, ev, runtime, GoldFeatureConfig.from_instrument(runtime).model_dump())


def test_params_come_from_the_spec_and_the_experiments_eval() -> None:
    default = _setup(_dump())
    assert default.eval_source == "defaults"
    p = default.params
    assert (p.threshold, p.cooldown_bins, p.tp_ticks, p.sl_ticks) == (0.15, 20, 8.0, 4.0)
    assert (p.max_hold_bins, p.warmup_bins, p.latency_bins, p.entry_mode) == (1200, 300, 1, "cross")
    exp = _setup(_dump(), {"max_hold_bins": 300, "warmup_bins": 10, "cost_ticks_per_trade": 0.5, "latency_bins": 2})
    q = exp.params
    assert exp.eval_source == "experiment"
    assert (q.max_hold_bins, q.warmup_bins, q.cost_ticks_per_trade, q.latency_bins) == (300, 10, 0.5, 2)
    info = exp.describe()
    assert info["signal"] == "flow_score" and info["lookback_bins"] == 1 and info["lookback_exact"]
    assert info["eval"]["cost_ticks_per_trade"] == 0.5
    s = SignalStream(exp, start_ns=123)
    assert s.start_ns == 123 and s.identity.startswith("signal:") and s.identity != SignalStream(default).identity


@pytest.mark.parametrize(("serving", "needle"), [
    (None, "no serving spec"),
    (_dump(signal=None, threshold=None, cooldown_bins=None, tp_ticks=None, sl_ticks=None), "has no signal"),
    (_dump(signal={"name": "gbm_mf", "params": {}, "weights": {}}), "ML signal"),
    (_dump(threshold=-1), "does not validate"),
])
def test_what_cannot_be_scored_is_refused_with_the_reason(serving, needle) -> None:
    with pytest.raises(SignalUnavailable, match=needle) as exc:
        _setup(serving)
    assert isinstance(exc.value, MLSignalUnavailable) == (needle == "ML signal")  # 4501 on the stream, else 4422


def test_an_ml_version_needs_its_model_file(tmp_path) -> None:
    """The loading rules (the full path, promotion to stream, is tests/registry/test_model_artifact.py)."""
    runtime = locked_instrument()
    gold = GoldFeatureConfig.from_instrument(runtime).model_dump()
    spec = _dump(signal={"name": "knn_cl", "params": {}, "weights": {}})
    entry = {"format": "pickle", "path": "registry/models/" + "0" * 64 + ".pkl", "sha256": "0" * 64, "bytes": 1,
             "signal": "knn_cl", "params": {}}
    with pytest.raises(MLSignalUnavailable, match="no lake"):
        SignalSetup.from_published(spec, None, runtime, gold, model=entry)
    with pytest.raises(MLSignalUnavailable, match=f"model file {tmp_path}/registry/models/0+.pkl is missing"):
        SignalSetup.from_published(spec, None, runtime, gold, model=entry, lake=tmp_path)
    with pytest.raises(MLSignalUnavailable, match="fitted for 'gbm_mf'"):
        SignalSetup.from_published(spec, None, runtime, gold, model={**entry, "signal": "gbm_mf"}, lake=tmp_path)


def test_a_gold_dsl_output_is_read_from_the_versions_dsl() -> None:
    """`gold_column` on a Gold DSL output streams only when the version's DSL defines it (the DSL follower feeds
    it per bin: `feed` refuses to score without it); its identity then names the DSL spec."""
    dump = _dump(signal={"name": "gold_column", "params": {"column": "book_depth_imbalance_z"}, "weights": {}})
    runtime = locked_instrument()
    gold = GoldFeatureConfig.from_instrument(runtime).model_dump()
    with pytest.raises(SignalUnavailable, match="'book_depth_imbalance_z': not a silver or built-in gold column, "
                                                "and its pipeline has no Gold DSL"):
        SignalSetup.from_published(dump, None, runtime, gold)
    with pytest.raises(SignalUnavailable, match=r"its Gold DSL's outputs are local_depth_imbalance$"):
        SignalSetup.from_published(dump, None, runtime, gold, {"outputs": ["local_depth_imbalance"], "spec_hash": "a"})
    section = {"outputs": ["local_depth_imbalance", "book_depth_imbalance_z"], "spec_hash": "a"}
    setup = SignalSetup.from_published(dump, None, runtime, gold, section)
    assert setup.dsl_columns() == ("book_depth_imbalance_z",) and setup.lookback().bins == 1
    assert setup.describe()["gold_dsl"] == {"spec_hash": "a", "columns": ["book_depth_imbalance_z"]}
    other = SignalSetup.from_published(dump, None, runtime, gold, {**section, "spec_hash": "b"})
    stream = SignalStream(setup)
    assert stream.reads_dsl and stream.identity != SignalStream(other).identity
    assert "gold_dsl" not in _setup(_dump()).describe() and not SignalStream(_setup(_dump())).reads_dsl
    r = runtime.grid_radius_ticks
    spot = 5000 * round(1 / runtime.price_scale)
    bins = {"bin_seq": [0], "bin_start_ns": [0], "ts_ns": [100_000_000], "spot_ref_price_int": [spot],
            "book_valid": [True], "ask_reprice_sign": [0], "bid_reprice_sign": [0], "mid_price": [5000.0],
            "best_bid_price_int": [spot - runtime.tick_int], "best_ask_price_int": [spot + runtime.tick_int]}
    bins = {k: np.asarray(v) for k, v in bins.items()}
    grid = {n: np.zeros(2 * r + 1, dt) for n, dt in silver.GRID_COLUMNS}
    grid["k"] = np.arange(-r, r + 1, dtype=np.int32)
    with pytest.raises(ValueError, match="needs the bin's DSL outputs"):
        stream.feed(bins, grid)
    z = np.linspace(-1, 1, 2 * r + 1)
    z[r] = 2.5
    out = stream.feed(bins, grid, {"local_depth_imbalance": np.zeros(2 * r + 1), "book_depth_imbalance_z": z})
    assert [b.score for b in out] == [2.5]  # the DSL output at k = 0
