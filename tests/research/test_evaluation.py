"""TP/SL evaluation: hand-built price paths with known trades, hand-computed metrics, the sweep against
single runs, and a hypothesis property (barrier exits earn exactly tp − cost / −sl − cost)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from qmachina_assets.core.research.evaluation import (
    METRIC_NAMES,
    NS_PER_DAY,
    EvalParams,
    EvalResult,
    evaluate,
    evaluate_grid,
)

TICK = 0.25
BASE = 5000.0
DAY0 = 19676 * NS_PER_DAY  # a UTC midnight
BIN_NS = 100_000_000


def _px(ticks) -> np.ndarray:
    return BASE + TICK * np.asarray(ticks, np.float64)


def _sig(n: int, values: dict[int, float] | None = None, spans: list[tuple[int, int, float]] | None = None):
    s = np.zeros(n)
    for a, b, v in spans or []:
        s[a:b] = v
    for i, v in (values or {}).items():
        s[i] = v
    return s


def _run(mid_ticks, s, *, valid=None, bid=None, ask=None, ts=None, high=None, low=None, day=None,
         **kw) -> EvalResult:
    """Mid-mode evaluation of a path given in ticks (bid/ask/high/low in ticks too, when given)."""
    mid = _px(mid_ticks)
    n = mid.shape[0]
    params = {"threshold": 1.0, "tp_ticks": 2, "sl_ticks": 2, "max_hold_bins": 10, "cooldown_bins": 1,
              "tick_size": TICK, "entry_mode": "mid", "latency_bins": 0, **kw}
    return evaluate(
        s, mid,
        _px(bid) if bid is not None else mid - TICK / 2,
        _px(ask) if ask is not None else mid + TICK / 2,
        ts if ts is not None else DAY0 + 12 * 3600 * 10**9 + BIN_NS * np.arange(n, dtype=np.int64),
        np.ones(n, bool) if valid is None else np.asarray(valid, bool),
        EvalParams(**params),
        high=None if high is None else _px(high),
        low=None if low is None else _px(low),
        day=None if day is None else np.asarray(day),
    )


def _rows(r: EvalResult) -> list[tuple]:
    t = r.trades
    return [(int(a), int(b), int(d), int(o), float(p)) for a, b, d, o, p in
            zip(t["entry_bin"], t["exit_bin"], t["direction"], t["outcome"], t["pnl_ticks"], strict=True)]


# ---- exits ------------------------------------------------------------------------------------------------


def test_long_hits_tp_exactly() -> None:
    r = _run([0, 0, 1, 2, 1, 0, 0, 0], _sig(8, {1: 1.5}))
    assert _rows(r) == [(1, 3, 1, 1, 2.0)]
    assert r.trades["entry_price"][0] == BASE and r.trades["exit_price"][0] == BASE + 2 * TICK
    assert r.trades["hold_bins"][0] == 2


def test_overshoot_is_filled_at_the_barrier() -> None:
    r = _run([0, 0, 1, 7, 7, 7], _sig(6, {1: 1.5}))  # jumps 7 ticks through a 2-tick TP
    assert _rows(r) == [(1, 3, 1, 1, 2.0)]
    assert r.trades["exit_price"][0] == BASE + 2 * TICK
    r = _run([0, 0, 6, 6, 6, 6], _sig(6, {1: -1.5}), sl_ticks=3)  # short gaps through its 3-tick stop
    assert _rows(r) == [(1, 2, -1, -1, -3.0)]
    assert r.trades["exit_price"][0] == BASE + 3 * TICK


def test_stop_loss_long_and_short() -> None:
    assert _rows(_run([0, 0, -1, -2, 0, 0], _sig(6, {1: 1.0}))) == [(1, 3, 1, -1, -2.0)]
    assert _rows(_run([0, 0, 1, 2, 0, 0], _sig(6, {1: -1.0}))) == [(1, 3, -1, -1, -2.0)]
    # a short's TP is a fall
    assert _rows(_run([0, 0, -1, -2, 0, 0], _sig(6, {1: -1.0}))) == [(1, 3, -1, 1, 2.0)]


def test_timeout_at_last_bin_of_the_window() -> None:
    r = _run([0, 0, 1, -1, 1, 1, 5, 5], _sig(8, {1: 1.0}), max_hold_bins=4, tp_ticks=3)
    assert _rows(r) == [(1, 5, 1, 0, 1.0)]  # bin 6 would have hit TP but is past the window
    assert r.trades["exit_price"][0] == BASE + TICK


def test_truncated_when_data_ends() -> None:
    r = _run([0, 0, 1, -1, 1], _sig(5, {1: 1.0}), max_hold_bins=10)
    assert _rows(r) == [(1, 4, 1, 2, 1.0)]
    assert r.metrics.n_truncated == 1 and r.metrics.n_timeout == 0 and r.metrics.timeout_rate == 1.0
    # the last bin is invalid: closed at the last valid one
    r = _run([0, 0, 1, -1, 1], _sig(5, {1: 1.0}), valid=[1, 1, 1, 1, 0], max_hold_bins=10)
    assert _rows(r) == [(1, 3, 1, 2, -1.0)]
    # exactly enough data for the window: a timeout, not truncated
    r = _run([0, 0, 1, -1, 1], _sig(5, {1: 1.0}), max_hold_bins=3)
    assert _rows(r) == [(1, 4, 1, 0, 1.0)]


def test_no_valid_bin_after_entry_closes_in_place() -> None:
    r = _run([0, 0, 0, 0], _sig(4, {1: 1.0}), valid=[1, 1, 0, 0], entry_mode="cross",
             bid=[0, 0, 0, 0], ask=[1, 1, 1, 1])
    assert _rows(r) == [(1, 1, 1, 2, -1.0)]  # bought the ask, sold the bid of the same bin


# ---- latency and sessions ---------------------------------------------------------------------------------


def test_latency_fills_at_a_later_bin() -> None:
    path = [0, 0, 1, 2, 3, 4, 4, 4]
    s = _sig(8, {1: 1.5})
    assert _rows(_run(path, s)) == [(1, 3, 1, 1, 2.0)]  # zero latency: bought bin 1's close
    r = _run(path, s, latency_bins=1)  # the fill is bin 2's close (one tick higher): TP at bin 4
    assert _rows(r) == [(2, 4, 1, 1, 2.0)]
    assert r.trades["signal_bin"][0] == 1 and r.trades["entry_price"][0] == BASE + TICK
    # the fill waits for the first tradable bin at or after signal + latency
    assert _rows(_run(path, s, latency_bins=1, valid=[1, 1, 0, 1, 1, 1, 1, 1]))[0][:2] == (3, 5)
    # no tradable bin left: never filled
    assert _rows(_run(path, s, latency_bins=7)) == []


def test_latency_defaults_to_one_bin() -> None:
    assert EvalParams(threshold=1, tp_ticks=1, sl_ticks=1, max_hold_bins=1, cooldown_bins=1,
                      tick_size=TICK).latency_bins == 1


def test_no_position_crosses_a_session() -> None:
    path = [0, 0, 0, 0, 0, 0, 9, 9, 9, 9]
    s = _sig(10, {3: 1.5, 7: -1.5})
    day = [0] * 5 + [1] * 5
    # one session: the long opened at bin 3 runs into the next day's jump and takes profit there
    assert _rows(_run(path, s, max_hold_bins=6)) == [(3, 6, 1, 1, 2.0), (7, 9, -1, 2, 0.0)]
    # two sessions: it closes at day 0's last bin (truncated), and day 1 trades as if evaluated alone
    r = _run(path, s, max_hold_bins=6, day=day)
    assert _rows(r) == [(3, 4, 1, 2, 0.0), (7, 9, -1, 2, 0.0)]
    alone = _run(path[5:], s[5:], max_hold_bins=6)
    assert [(a + 5, b + 5, *rest) for a, b, *rest in _rows(alone)] == _rows(r)[1:]
    # warmup restarts every session
    assert _rows(_run(path, s, max_hold_bins=6, day=day, warmup_bins=3)) == [(3, 4, 1, 2, 0.0)]


# ---- firing -----------------------------------------------------------------------------------------------


def test_cooldown_counts_from_exit() -> None:
    path = [0, 0, 2, 0, 0, 0, 0, 0, 0, 0]
    s = _sig(10, {1: 1.0, 3: -1.0})  # long exits by TP at bin 2, a short signal at bin 3
    assert _rows(_run(path, s, cooldown_bins=1, max_hold_bins=3)) == [(1, 2, 1, 1, 2.0), (3, 6, -1, 0, 0.0)]
    assert _rows(_run(path, s, cooldown_bins=2, max_hold_bins=3)) == [(1, 2, 1, 1, 2.0)]


def test_state_must_change_to_fire_again() -> None:
    s = _sig(10, spans=[(1, 10, 1.0)])  # stays long-signal after the first trade closes
    assert _rows(_run([0, 0, 2, 0, 0, 0, 0, 0, 0, 0], s, max_hold_bins=3)) == [(1, 2, 1, 1, 2.0)]


def test_one_position_at_a_time_unless_overlap_allowed() -> None:
    path = [0] * 12
    s = _sig(12, {1: 1.0, 3: -1.0, 5: 1.0})
    assert _rows(_run(path, s, max_hold_bins=6)) == [(1, 7, 1, 0, 0.0)]
    both = [(1, 7, 1, 0, 0.0), (3, 9, -1, 0, 0.0), (5, 11, 1, 0, 0.0)]
    assert _rows(_run(path, s, max_hold_bins=6, allow_overlap=True)) == both
    # with overlap the cooldown counts from the last fire
    assert _rows(_run(path, s, max_hold_bins=6, allow_overlap=True, cooldown_bins=3)) == [both[0], both[2]]


def test_mid_zero_bin_is_never_entry_or_exit() -> None:
    # bin 2 has mid = 0 (the 09:30 clear) although `valid` says true: no entry there, and the state it set
    # (+1) is not a change at bin 3, so nothing fires until the signal changes
    mid = _px([0, 0, 0, 0, 0, 0, 0, 0])
    mid[2] = 0.0
    s = _sig(8, spans=[(2, 5, 1.0)])
    r = evaluate(s, mid, mid - 0.125, mid + 0.125, DAY0 + BIN_NS * np.arange(8), np.ones(8, bool),
                 EvalParams(threshold=1, tp_ticks=2, sl_ticks=2, max_hold_bins=4, cooldown_bins=1, tick_size=TICK,
                            entry_mode="mid", latency_bins=0))
    assert r.trades.size == 0
    # exit side: a long open across a mid = 0 bin is not stopped out there, and a timeout whose last bin
    # has mid = 0 exits at the previous valid bin
    mid = _px([0, 0, 1, 0, 1, 0, 0, 0])
    mid[3] = 0.0
    mid[5] = 0.0
    r = evaluate(_sig(8, {1: 1.0}), mid, mid - 0.125, mid + 0.125, DAY0 + BIN_NS * np.arange(8),
                 np.ones(8, bool), EvalParams(threshold=1, tp_ticks=2, sl_ticks=2, max_hold_bins=4,
                                              cooldown_bins=1, tick_size=TICK, entry_mode="mid",
                                              latency_bins=0))
    assert _rows(r) == [(1, 4, 1, 0, 1.0)]
    # and an explicitly invalid bin with a perfectly good mid is skipped the same way
    r = _run([0, 0, -3, 1, 0], _sig(5, {1: 1.0}), valid=[1, 1, 0, 1, 1], max_hold_bins=2)
    assert _rows(r) == [(1, 3, 1, 0, 1.0)]


def test_warmup_respected() -> None:
    s = _sig(12, spans=[(2, 6, 1.0)])
    assert [t[0] for t in _rows(_run([0] * 12, s, max_hold_bins=2))] == [2]
    assert [t[0] for t in _rows(_run([0] * 12, s, max_hold_bins=2, warmup_bins=4))] == [4]  # prev flat at warmup
    assert _rows(_run([0] * 12, s, max_hold_bins=2, warmup_bins=6)) == []
    r = _run([0] * 12, s, max_hold_bins=2, warmup_bins=4)
    assert r.metrics.exposure == pytest.approx(2 / 8)  # exposure is over the 8 bins from warmup on


def test_nan_signal_is_flat() -> None:
    s = _sig(8, {1: 1.0, 2: np.nan, 3: 1.0})
    assert [t[0] for t in _rows(_run([0] * 8, s, max_hold_bins=1))] == [1, 3]


# ---- fills and costs ---------------------------------------------------------------------------------------


def test_both_barriers_in_one_bin_takes_the_stop() -> None:
    path = [0, 0, 0, 0, 0]
    s = _sig(5, {1: 1.0})
    r = _run(path, s, high=[0, 0, 3, 0, 0], low=[0, 0, -3, 0, 0])
    assert _rows(r) == [(1, 2, 1, -1, -2.0)]
    assert r.trades["exit_price"][0] == BASE - 2 * TICK
    r = _run(path, s, high=[0, 0, 3, 0, 0], low=[0, 0, -1, 0, 0])  # only the TP is touched
    assert _rows(r) == [(1, 2, 1, 1, 2.0)]
    r = _run(path, _sig(5, {1: -1.0}), high=[0, 0, 3, 0, 0], low=[0, 0, -3, 0, 0])  # short: stop is the high
    assert _rows(r) == [(1, 2, -1, -1, -2.0)]


def test_cross_mode_pays_the_spread() -> None:
    bid = [0, 0, 0, 1, 2, 2, 0, 0]
    ask = [b + 1 for b in bid]
    mid = [b + 0.5 for b in bid]
    s = _sig(8, {1: 1.0})
    # mid: entry 0.5, TP at 2.5 reached by the mid at bin 4
    assert _rows(_run(mid, s, bid=bid, ask=ask)) == [(1, 4, 1, 1, 2.0)]
    # cross: entry at the ask (1), TP at 3 must be reached by the bid: never, timeout at the bid
    r = _run(mid, s, bid=bid, ask=ask, entry_mode="cross", max_hold_bins=4)
    assert _rows(r) == [(1, 5, 1, 0, 1.0)]
    assert r.trades["entry_price"][0] == BASE + TICK and r.trades["exit_price"][0] == BASE + 2 * TICK
    # a flat round trip costs exactly the spread; a short sells the bid and buys back the ask
    flat_b = [0] * 6
    flat_a = [1] * 6
    assert _rows(_run([0.5] * 6, _sig(6, {1: 1.0}), bid=flat_b, ask=flat_a, entry_mode="cross",
                      max_hold_bins=2)) == [(1, 3, 1, 0, -1.0)]
    r = _run([0.5] * 6, _sig(6, {1: -1.0}), bid=flat_b, ask=flat_a, entry_mode="cross", max_hold_bins=2)
    assert _rows(r) == [(1, 3, -1, 0, -1.0)]
    assert r.trades["entry_price"][0] == BASE and r.trades["exit_price"][0] == BASE + TICK
    # cross mode needs both sides: a bin without an ask is not tradable
    bad_ask = np.array(flat_a, float)
    bad_ask[1] = -BASE / TICK  # ask price 0
    r = _run([0.5] * 6, _sig(6, {1: -1.0, 2: 1.0}), bid=flat_b, ask=bad_ask, entry_mode="cross", max_hold_bins=2)
    assert [t[0] for t in _rows(r)] == [2]


def test_cost_ticks_reduce_pnl() -> None:
    tp = _run([0, 0, 1, 2, 1, 0], _sig(6, {1: 1.0}), cost_ticks_per_trade=0.75)
    assert _rows(tp) == [(1, 3, 1, 1, 1.25)]
    to = _run([0, 0, 1, 1, 1, 1], _sig(6, {1: 1.0}), cost_ticks_per_trade=0.75, max_hold_bins=3)
    assert _rows(to) == [(1, 4, 1, 0, 0.25)]


# ---- metrics ----------------------------------------------------------------------------------------------


def _three_trades() -> EvalResult:
    """SL (−2) and TP (+3) on day 1, a timeout (+2) on day 2; tp 3, sl 2, max hold 4, 30 bins of 100 ms."""
    mid = [0, 0, -1, -2, 0, 0, -1, -3, 0, 0, 0, 0, 0, 0, 0,
           0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    s = _sig(30, {1: 1.0, 5: -1.0, 15: 1.0})
    ts = np.concatenate([DAY0 + 12 * 3600 * 10**9 + BIN_NS * np.arange(15),
                         DAY0 + NS_PER_DAY + 12 * 3600 * 10**9 + BIN_NS * np.arange(15)]).astype(np.int64)
    return _run(mid, s, ts=ts, tp_ticks=3, sl_ticks=2, max_hold_bins=4)


def test_three_trade_metrics_by_hand() -> None:
    r = _three_trades()
    assert _rows(r) == [(1, 3, 1, -1, -2.0), (5, 7, -1, 1, 3.0), (15, 19, 1, 0, 2.0)]
    m = r.metrics
    assert (m.n_trades, m.n_long, m.n_short, m.n_tp, m.n_sl, m.n_timeout, m.n_truncated) == (3, 2, 1, 1, 1, 1, 0)
    assert m.hit_rate == pytest.approx(1 / 3) and m.sl_rate == pytest.approx(1 / 3)
    assert m.timeout_rate == pytest.approx(1 / 3)
    assert m.total_pnl_ticks == 3.0 and m.mean_pnl_ticks == 1.0
    assert m.profit_factor == pytest.approx(5 / 2)
    assert m.max_drawdown_ticks == 2.0  # cum −2, 1, 3 from a peak of 0
    # daily sums [−2 + 3, 2] = [1, 2]: mean 1.5, sd √0.5, × √2 → 3
    assert m.sharpe_like_per_day == pytest.approx(3.0)
    assert m.exposure == pytest.approx(8 / 30)  # bins 2-3, 6-7, 16-19
    assert m.trades_per_hour == pytest.approx(3 / (30 * 0.1 / 3600))  # 30 valid bins of 100 ms, not 24 h
    assert m.median_hold_bins == 2.0
    eq = r.equity
    assert eq.shape == (30,) and eq[2] == 0 and eq[3] == -2 and eq[7] == 1 and eq[18] == 1 and eq[-1] == 3


def test_metrics_undefined_cases() -> None:
    m = _run([0] * 6, _sig(6)).metrics
    assert m.n_trades == 0 and m.hit_rate is None and m.mean_pnl_ticks is None and m.profit_factor is None
    assert m.total_pnl_ticks == 0 and m.max_drawdown_ticks == 0 and m.trades_per_hour == 0
    assert m.sharpe_like_per_day is None and m.exposure == 0 and m.median_hold_bins is None
    m = _run([0, 0, 1, 2, 1, 0], _sig(6, {1: 1.0})).metrics  # a single winner: no losses, one day
    assert m.profit_factor is None and m.sharpe_like_per_day is None and m.max_drawdown_ticks == 0


def test_params_validation() -> None:
    ok = {"threshold": 1, "tp_ticks": 2, "sl_ticks": 2, "max_hold_bins": 5, "cooldown_bins": 1, "tick_size": TICK}
    EvalParams(**ok)
    for bad in ({"tp_ticks": 0}, {"sl_ticks": -1}, {"max_hold_bins": 0}, {"cooldown_bins": 0}, {"tick_size": 0},
                {"threshold": 0}, {"warmup_bins": -1}, {"cost_ticks_per_trade": -0.1}, {"entry_mode": "bid"},
                {"bins_per_day": 10}):
        with pytest.raises(ValidationError):
            EvalParams(**{**ok, **bad})
    with pytest.raises(ValidationError):
        EvalParams(**ok).tp_ticks = 3  # frozen


# ---- the sweep ---------------------------------------------------------------------------------------------


def _random_day(n: int, seed: int):
    rng = np.random.default_rng(seed)
    bid_t = np.cumsum(rng.choice([-1, 0, 0, 0, 1], n))
    spread = rng.choice([1, 1, 1, 2], n)
    bid = BASE + TICK * bid_t
    ask = bid + TICK * spread
    mid = (bid + ask) / 2
    valid = rng.random(n) > 0.03
    mid[rng.random(n) < 0.01] = 0.0
    s = np.convolve(rng.standard_normal(n), np.ones(5) / 2, mode="full")[:n]
    s[rng.random(n) < 0.02] = np.nan
    ts = DAY0 + 14 * 3600 * 10**9 + np.arange(n, dtype=np.int64) * 2_000_000_000  # 2 s bins: crosses midnight
    high = mid + TICK * rng.integers(0, 3, n)
    low = mid - TICK * rng.integers(0, 3, n)
    return s, mid, bid, ask, ts, valid, high, low


@pytest.mark.parametrize(("entry_mode", "overlap", "use_hl", "cost"),
                         [("mid", False, False, 0.0), ("cross", False, True, 0.5), ("cross", True, False, 0.25),
                          ("mid", True, True, 0.0)])
def test_grid_equals_single_evaluate(entry_mode, overlap, use_hl, cost) -> None:
    s, mid, bid, ask, ts, valid, high, low = _random_day(60_000, seed=7)
    hl = {"high": high, "low": low} if use_hl else {}
    grid = {"thresholds": [0.8, 1.5, 2.5], "tp_list": [2, 5], "sl_list": [3, 4.5], "cooldown_list": [1, 7]}
    fixed = {"max_hold_bins": 40, "tick_size": TICK, "warmup_bins": 100, "entry_mode": entry_mode,
             "cost_ticks_per_trade": cost, "allow_overlap": overlap}
    g = evaluate_grid(s, mid, bid, ask, ts, valid, **grid, **fixed, **hl)
    assert len(g["threshold"]) == 24
    assert set(METRIC_NAMES) <= set(g)
    for row in range(24):
        p = EvalParams(threshold=g["threshold"][row], tp_ticks=g["tp_ticks"][row], sl_ticks=g["sl_ticks"][row],
                       cooldown_bins=int(g["cooldown_bins"][row]), **fixed)
        m = evaluate(s, mid, bid, ask, ts, valid, p, **hl).metrics
        assert m.n_trades > 0 and m.sharpe_like_per_day is not None
        for name in METRIC_NAMES:
            v = getattr(m, name)
            if v is None:
                assert math.isnan(g[name][row]), (row, name)
            else:
                assert g[name][row] == v, (row, name)


def test_grid_rejects_bad_lists() -> None:
    s, mid, bid, ask, ts, valid, _, _ = _random_day(100, seed=1)
    kw = {"thresholds": [1.0], "tp_list": [2], "sl_list": [2], "cooldown_list": [1], "max_hold_bins": 5,
          "tick_size": TICK}
    for bad in ({"tp_list": [0]}, {"thresholds": [1.0, -1.0]}, {"cooldown_list": [0]}, {"cooldown_list": [1.5]},
                {"sl_list": []}):
        with pytest.raises((ValueError, ValidationError)):
            evaluate_grid(s, mid, bid, ask, ts, valid, **{**kw, **bad})


# ---- properties --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.integers(-3, 3), min_size=5, max_size=120),
    sig=st.lists(st.sampled_from([0.0, 0.0, 1.0, -1.0, np.nan]), min_size=120, max_size=120),
    invalid=st.lists(st.booleans(), min_size=120, max_size=120),
    tp=st.sampled_from([1, 2, 3, 0.5, 7]),
    sl=st.sampled_from([1, 2, 4, 1.5]),
    cost=st.sampled_from([0.0, 0.25, 1.3]),
    hold=st.integers(1, 15),
    tick=st.sampled_from([0.25, 0.01, 0.1, 1 / 3]),
)
def test_barrier_pnl_is_exact(steps, sig, invalid, tp, sl, cost, hold, tick) -> None:
    n = len(steps)
    mid = 4321.0 + tick * np.cumsum(steps)
    valid = ~np.asarray(invalid[:n]) | (np.arange(n) % 4 == 0)
    p = EvalParams(threshold=0.5, tp_ticks=tp, sl_ticks=sl, max_hold_bins=hold, cooldown_bins=1, tick_size=tick,
                   entry_mode="mid", cost_ticks_per_trade=cost)
    r = evaluate(np.asarray(sig[:n]), mid, mid, mid, DAY0 + BIN_NS * np.arange(n), valid, p)
    t = r.trades
    assert np.all(t["pnl_ticks"][t["outcome"] == 1] == tp - cost)
    assert np.all(t["pnl_ticks"][t["outcome"] == -1] == -sl - cost)
    assert np.all(valid[t["entry_bin"]]) and np.all(valid[t["exit_bin"]])
    assert np.all(t["entry_bin"][1:] > t["exit_bin"][:-1])  # no overlap by default
    held = t["outcome"] != -1
    assert np.all(t["pnl_ticks"][held] + cost > -sl - 1e-9)  # nothing but a stop loses a full stop
    assert np.all(t["hold_bins"] <= hold)
    assert r.equity[-1] == pytest.approx(t["pnl_ticks"].sum())


def _reference(s, mid, bid, ask, valid, high, low, p: EvalParams, day=None) -> list[tuple]:
    """The rules of the module docstring as a plain per-bin Python loop (no jumps, no shared code): each
    session on its own, the fill `latency_bins` after the signal at the first tradable bin of the session."""
    n = len(s)
    day = [0] * n if day is None else list(day)
    cross = p.entry_mode == "cross"

    def tradable(j):
        good = valid[j] and math.isfinite(mid[j]) and mid[j] > 0
        if cross:
            good = good and all(math.isfinite(x) and x > 0 for x in (bid[j], ask[j]))
        return good

    def exit_side(j, d):
        return (bid[j] if d > 0 else ask[j]) if cross else mid[j]

    trades = []
    tol = 1e-9 * p.tick_size
    starts = [i for i in range(n) if i == 0 or day[i] != day[i - 1]]
    for a, b in zip(starts, [*starts[1:], n], strict=True):
        open_until, last, prev = -1, None, 0
        for i in range(a + p.warmup_bins, b):
            x = s[i]
            state = 1 if x >= p.threshold else -1 if x <= -p.threshold else 0
            cool = last is None or i - last >= p.cooldown_bins
            free = p.allow_overlap or i > open_until
            fire = state != 0 and state != prev and tradable(i) and cool and free
            prev = state
            if not fire:
                continue
            e = next((j for j in range(i + p.latency_bins, b) if tradable(j)), None)
            if e is None:
                continue
            d = state
            entry = (ask[e] if d > 0 else bid[e]) if cross else mid[e]
            tp_px, sl_px = entry + d * p.tp_ticks * p.tick_size, entry - d * p.sl_ticks * p.tick_size
            outcome, exit_bin = (2 if e + p.max_hold_bins > b - 1 else 0), e
            for j in range(e + 1, min(e + p.max_hold_bins, b - 1) + 1):
                if not tradable(j):
                    continue
                exit_bin = j
                px = exit_side(j, d)
                off = px - mid[j]
                hi = max(px, (high[j] if high is not None and not math.isnan(high[j]) else mid[j]) + off)
                lo = min(px, (low[j] if low is not None and not math.isnan(low[j]) else mid[j]) + off)
                best, worst = (hi, lo) if d > 0 else (lo, hi)
                if d * (worst - sl_px) <= tol:
                    outcome = -1
                    break
                if d * (best - tp_px) >= -tol:
                    outcome = 1
                    break
            if outcome == 1:
                pnl = p.tp_ticks - p.cost_ticks_per_trade
            elif outcome == -1:
                pnl = -p.sl_ticks - p.cost_ticks_per_trade
            else:
                pnl = d * (exit_side(exit_bin, d) - entry) / p.tick_size - p.cost_ticks_per_trade
            trades.append((e, exit_bin, d, outcome, pnl))
            open_until = exit_bin
            last = i if p.allow_overlap else exit_bin
    return trades


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 150),
    thr=st.sampled_from([0.3, 0.8, 1.5]),
    tp=st.sampled_from([1, 2, 3.5]),
    sl=st.sampled_from([1, 2, 5]),
    hold=st.integers(1, 25),
    cooldown=st.integers(1, 12),
    warmup=st.integers(0, 20),
    mode=st.sampled_from(["mid", "cross"]),
    overlap=st.booleans(),
    use_hl=st.booleans(),
    cost=st.sampled_from([0.0, 0.5]),
    latency=st.sampled_from([0, 1, 3]),
    n_days=st.integers(1, 3),
)
def test_kernel_matches_plain_python_rules(seed, n, thr, tp, sl, hold, cooldown, warmup, mode, overlap, use_hl,
                                          cost, latency, n_days) -> None:
    rng = np.random.default_rng(seed)
    bid = BASE + TICK * np.cumsum(rng.integers(-2, 3, n))
    ask = bid + TICK * rng.integers(1, 3, n)
    mid = (bid + ask) / 2
    mid[rng.random(n) < 0.05] = 0.0
    bid[rng.random(n) < 0.03] = np.nan
    valid = rng.random(n) > 0.1
    s = rng.standard_normal(n)
    s[rng.random(n) < 0.1] = np.nan
    high = mid + TICK * rng.integers(0, 4, n) if use_hl else None
    low = mid - TICK * rng.integers(0, 4, n) if use_hl else None
    if use_hl:
        high[rng.random(n) < 0.1] = np.nan
    p = EvalParams(threshold=thr, tp_ticks=tp, sl_ticks=sl, max_hold_bins=hold, cooldown_bins=cooldown,
                   tick_size=TICK, warmup_bins=warmup, entry_mode=mode, allow_overlap=overlap,
                   cost_ticks_per_trade=cost, latency_bins=latency)
    ts = DAY0 + BIN_NS * np.arange(n)
    day = np.sort(rng.integers(0, n_days, n))
    got = _rows(evaluate(s, mid, bid, ask, ts, valid, p, high=high, low=low, day=day))
    want = _reference(s, mid, bid, ask, valid, high, low, p, day)
    assert [g[:4] for g in got] == [w[:4] for w in want]
    assert [g[4] for g in got] == pytest.approx([w[4] for w in want], abs=1e-9)


# ---- the incremental form ----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 300),
    thr=st.sampled_from([0.3, 0.8, 1.5]),
    tp=st.sampled_from([1, 2, 3.5]),
    sl=st.sampled_from([1, 2, 5]),
    hold=st.integers(1, 25),
    cooldown=st.integers(1, 12),
    warmup=st.integers(0, 20),
    mode=st.sampled_from(["mid", "cross"]),
    use_hl=st.booleans(),
    latency=st.sampled_from([0, 1, 3]),
)
def test_trader_steps_to_the_batch_trades(seed, n, thr, tp, sl, hold, cooldown, warmup, mode, use_hl, latency):
    """Issue 14 item 4: the stream's incremental Trader, fed one bin at a time, makes exactly `evaluate`'s
    trades, and announces each event no earlier than the bin that makes it known."""
    from qmachina_assets.core.research.evaluation import Trader

    rng = np.random.default_rng(seed)
    bid = BASE + TICK * np.cumsum(rng.integers(-2, 3, n))
    ask = bid + TICK * rng.integers(1, 3, n)
    mid = (bid + ask) / 2
    mid[rng.random(n) < 0.05] = 0.0
    bid[rng.random(n) < 0.03] = np.nan
    valid = rng.random(n) > 0.1
    s = rng.standard_normal(n)
    s[rng.random(n) < 0.1] = np.nan
    high = mid + TICK * rng.integers(0, 4, n) if use_hl else None
    low = mid - TICK * rng.integers(0, 4, n) if use_hl else None
    if use_hl:
        high[rng.random(n) < 0.1] = np.nan
    p = EvalParams(threshold=thr, tp_ticks=tp, sl_ticks=sl, max_hold_bins=hold, cooldown_bins=cooldown,
                   tick_size=TICK, warmup_bins=warmup, entry_mode=mode, cost_ticks_per_trade=0.5,
                   latency_bins=latency)
    want = evaluate(s, mid, bid, ask, DAY0 + BIN_NS * np.arange(n), valid, p, high=high, low=low).trades
    tr = Trader(p)
    events = []
    for b in range(n):
        if b == n // 2:  # a checkpoint through JSON mid-way (what a stream's engine checkpoint stores) changes nothing
            tr, state = Trader(p), json.loads(json.dumps(tr.state()))
            tr.load_state(state)
        events += tr.step(s[b], mid[b], bid[b], ask[b], valid[b], None if high is None else high[b],
                          None if low is None else low[b])
    events += tr.finish()
    got = tr.trade_array()
    assert got.dtype == want.dtype and len(got) == len(want)
    for name in want.dtype.names:
        np.testing.assert_allclose(got[name], want[name], atol=1e-9, err_msg=name)
    assert [(e.event, e.bin) for e in events] == [x for t in want for x in (("entry", t["entry_bin"]),
                                                                            ("exit", t["exit_bin"]))]
    assert all(e.known_at >= e.bin for e in events)
    assert all(e.known_at == e.bin for e in events if e.event == "entry" or e.outcome in (1, -1))
