"""Online simulation: the bin-by-bin path (engine close_through -> GoldRuntime.step -> rolling signal buffer)
equals the batch path on a 10-minute window of a synthetic day; the report is sane; bad specs fail clearly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from qmachina_assets.core.engine.engine import Engine, SilverChunk
from qmachina_assets.core.engine.silver_partition import SilverWindow
from qmachina_assets.core.gold.features import compute_gold
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.synth import SynthParams, write_synthetic_day
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from qmachina_assets.core.research.online_sim import (
    STAGES,
    BinOutput,
    OnlineSignal,
    format_report,
    iter_bin_records,
    run_online_sim,
    signal_lookback,
)
from qmachina_assets.core.research.signals.base import GridData
from qmachina_assets.core.research.signals.catalog import make_signal
from qmachina_assets.core.research.specs import ConfigError, resolve_serving
from qmachina_assets.core.research.sweeps import signal_kwargs

DATE = dt.date(2024, 3, 15)
START, END = "10:00", "10:10"  # ET: inside the synthetic day's RTH (13:30-20:00 UTC)


@pytest.fixture(scope="module")
def day_file(tmp_path_factory) -> Path:
    params = SynthParams(n_records=300_000, seed=11, date=DATE, symbol="ESH4")
    return write_synthetic_day(tmp_path_factory.mktemp("online") / "esh4.dbn", params, locked_instrument())


@pytest.fixture(scope="module")
def flow_run(day_file):
    outs: list[BinOutput] = []
    report = run_online_sim(day_file, "vp_flow_score", start_et=START, end_et=END, on_bin=outs.append)
    return report, outs


@pytest.fixture(scope="module")
def batch(day_file):
    """The batch path: whole-file engine run over the window + batch gold, with the serving spec's config."""
    serving, pipeline = resolve_serving("vp_flow_score")
    inst = serving.runtime(pipeline)
    start_ns, end_ns = SilverWindow(start_et=START, end_et=END).bounds_ns(DATE)
    eng = Engine(inst, start_ns, end_ns)
    chunks = [eng.feed(r) for r in dbn.iter_mbo_chunks(day_file, chunk_records=100_000)]
    chunks.append(eng.flush())
    silver = SilverChunk.concat(chunks, int(inst.grid_radius_ticks))
    gold = compute_gold(silver.bins, silver.grid, serving.gold_config(pipeline), int(inst.grid_radius_ticks),
                        inst.tick_int)
    return inst, silver, gold


def _batch_grid_data(inst, silver: SilverChunk, gold: dict, columns) -> GridData:
    """What `datasets.load_grid_data` builds from a dataset day (dense (n, 2R+1), invalid bins zeroed)."""
    b, r = silver.bins, int(inst.grid_radius_ticks)
    n, w = silver.n_bins, 2 * r + 1
    mid = b["mid_price"].astype(np.float64)
    valid = b["book_valid"].astype(bool) & (mid > 0)
    cols = {}
    for c in columns:
        x = np.array((gold[c] if c in gold else silver.grid[c]), dtype=np.float64).reshape(n, w)
        x[~valid] = 0.0
        cols[c] = x
    return GridData(b["ts_ns"].astype(np.int64), np.where(valid, mid, 0.0), b["best_bid_price_int"] * inst.price_scale,
                    b["best_ask_price_int"] * inst.price_scale, valid, np.zeros(n, np.int64), r,
                    int(inst.cell_width_ms), cols)


def test_online_silver_and_gold_equal_batch(flow_run, batch):
    report, outs = flow_run
    _, silver, gold = batch
    assert report.bins == len(outs) == silver.n_bins == 6000  # 10 minutes of 100 ms bins
    online = SilverChunk.concat([o.silver for o in outs], 50)
    for k, v in silver.bins.items():
        np.testing.assert_array_equal(online.bins[k], v, err_msg=f"bins.{k}")
    for k, v in silver.grid.items():
        np.testing.assert_array_equal(online.grid[k], v, err_msg=f"grid.{k}")
    for k, v in gold.items():
        np.testing.assert_array_equal(np.concatenate([o.gold[k] for o in outs]), v, err_msg=f"gold.{k}")
    assert silver.bins["book_valid"].mean() > 0.9 and np.abs(gold["flow_score"]).max() > 0  # not a trivial day


@pytest.mark.parametrize(("name", "params"), [
    ("flow_score", {}),
    ("ads", {}),
    ("derivative", {"zscore_window_bins": 120, "zscore_min_periods": 30, "d2_weight": 0.5, "d3_weight": 0.25}),
    ("iirc", {}),
    ("jad", {"zscore_window": 150}),
    ("gold_column", {"column": "pressure_variant", "k": 2, "sign": -1}),
])
def test_online_signal_equals_batch_score(flow_run, batch, name, params):
    """Rolling buffer of `signal_lookback` bins, last value == the batch score at every bin."""
    inst, silver, gold = batch
    _, outs = flow_run
    sig = make_signal(name, params)
    lb = signal_lookback(sig, int(inst.cell_width_ms))
    assert lb.exact
    want = sig.score(_batch_grid_data(inst, silver, gold, sig.columns))
    if name == "flow_score":
        got = np.array([o.signal for o in outs])  # the value run_online_sim itself produced
    else:
        def fresh() -> OnlineSignal:
            return OnlineSignal(sig, lb.bins, int(inst.grid_radius_ticks), int(inst.cell_width_ms), inst.price_scale)

        buf, half = fresh(), len(outs) // 2
        vals = [buf.push(o.silver.bins, o.silver.grid, o.gold) for o in outs[:half]]
        state, buf = buf.state(), fresh()  # a checkpoint mid-way (a stream's mid-day start) changes nothing
        buf.load_state(state)
        got = np.array(vals + [buf.push(o.silver.bins, o.silver.grid, o.gold) for o in outs[half:]])
    assert np.isfinite(want).sum() > 0.5 * len(want) and np.nanstd(want) > 0
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)


def test_short_buffer_differs(flow_run, batch):
    """The lookback is not generous by accident: one bin less and ads differs from the batch score."""
    inst, silver, gold = batch
    _, outs = flow_run
    sig = make_signal("ads")
    lb = signal_lookback(sig, int(inst.cell_width_ms))
    want = sig.score(_batch_grid_data(inst, silver, gold, sig.columns))
    buf = OnlineSignal(sig, lb.bins - 1, int(inst.grid_radius_ticks), int(inst.cell_width_ms), inst.price_scale)
    got = np.array([buf.push(o.silver.bins, o.silver.grid, o.gold) for o in outs])
    assert not np.allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_report_fields(flow_run):
    report, _ = flow_run
    assert report.signal == "flow_score" and report.lookback_bins == 1 and report.lookback_exact
    assert report.timed_bins + report.warmup_bins == report.bins == 6000
    assert report.warmup_bins == 1  # default: the lookback
    assert report.records > 0 and report.warmup_records > 0
    assert set(report.stages) == set(STAGES)
    for st in report.stages.values():
        assert 0 < st.p50_us <= st.p95_us <= st.p99_us <= st.max_us
    assert report.stages["total"].p50_us >= report.stages["engine"].p50_us
    assert report.bin_budget_ms == 100.0 and 0 <= report.over_budget_share <= 1
    assert report.over_budget_bins == round(report.over_budget_share * report.timed_bins)
    assert report.peak_rss_mb > 0 and report.valid_bins <= report.bins
    text = format_report(report)
    assert "p99" in text and "signal" in text and "vp_flow_score" in text


def test_derivative_serving_run(day_file):
    """A spec with a longer lookback through run_online_sim itself; a smaller budget counts over-budget bins."""
    serving, _ = resolve_serving("vp_derivative")
    r = run_online_sim(day_file, "vp_derivative", start_et="10:00", end_et="10:02", warmup_bins=100,
                       bin_budget_ms=0.001)
    assert r.signal == "derivative"
    assert r.lookback_bins == serving.signal.params["zscore_window_bins"] + 3
    assert r.bins == 1200 and r.warmup_bins == 100 and r.timed_bins == 1100
    assert r.over_budget_bins == r.timed_bins and r.over_budget_share == 1.0  # 1 µs: every bin is over
    assert r.signal_defined_bins == r.valid_bins
    sig = make_signal("derivative", signal_kwargs(serving))
    assert signal_lookback(sig, 100).bins == r.lookback_bins


def test_iter_bin_records_split():
    rng = np.random.default_rng(0)
    cell = 100
    ts = np.sort(rng.integers(1_000, 5_000, 400)).astype(np.int64)
    ts[[50, 200]] -= 300  # two backwards records: they stay with the bin of the clock (running max)
    recs = np.zeros(len(ts), dbn.MBO_DTYPE)
    recs["ts_recv"] = ts.astype(np.uint64)
    chunks = [recs[:130], recs[130:131], recs[131:]]
    out = list(iter_bin_records(chunks, cell, start_ns=2_050, end_ns=4_001))
    pre = [r for e, r in out if e is None]
    bins = [(e, r) for e, r in out if e is not None]
    eff = np.maximum.accumulate(ts)
    assert sum(len(r) for r in pre) == int((eff < 2_000).sum())
    assert [e for e, _ in bins] == list(range(2_100, 4_101, 100))  # every bin through the window's end
    for e, r in bins:
        got = r["ts_recv"].astype(np.int64)
        want = ts[(eff >= e - cell) & (eff < e)]
        np.testing.assert_array_equal(got, want)
    # no window: from the first record's bin through the last record's bin
    whole = list(iter_bin_records([recs], cell))
    assert all(e is not None for e, _ in whole)
    assert whole[0][0] == (eff[0] // cell + 1) * cell and whole[-1][0] == (eff[-1] // cell + 1) * cell
    assert sum(len(r) for _, r in whole) == len(recs)


def _spec_with_signal(tmp_path: Path, name: str) -> Path:
    text = (PROJECT_ROOT / "configs" / "serving" / "vp_flow_score.yaml").read_text()
    text = text.replace("name: vp_flow_score", f"name: sim_{name}").replace("  name: flow_score", f"  name: {name}")
    path = tmp_path / f"sim_{name}.yaml"
    path.write_text(text)
    return path


def test_unknown_signal_fails_clearly(day_file, tmp_path):
    with pytest.raises(ConfigError, match=r"signal\.name: unknown signal 'nope'"):
        run_online_sim(day_file, str(_spec_with_signal(tmp_path, "nope")))
    with pytest.raises(ValueError, match=r"'gbm_mf' is an ML signal"):
        run_online_sim(day_file, str(_spec_with_signal(tmp_path, "gbm_mf")))
    with pytest.raises(ValueError, match="has no signal"):
        run_online_sim(day_file, "ema_ensemble")
