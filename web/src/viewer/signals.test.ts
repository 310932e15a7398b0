/**
 * The served signal in the viewer: `signal` messages decoded by the stream contract → SignalTrack (markers at the
 * event's bin close and price tick, the open position, scores per bin, closed trades), the HUD's legend line, and
 * the page parameters that ask for `signals=1`.
 */

import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { StreamDecoder, type SignalMessage } from '../stream/contract';
import { buildStreamUrl, parseViewerParams, withSignals } from './params';
import { declaresSignal, formatTicks, markersOf, SIGNAL_FALLBACK_CODES, signalLegend, SignalTrack } from './signals';

const GOLD_CONFIG = {
  cell_width_ms: 100, c1: 1.0, c2: 0.5, c3: 0.3, c4: 1.0, c5: 1.5, c6: 0.5, c7: 0.3,
  flow_windows: [5, 10, 20, 40], flow_rollup_weights: [1.0, 1.0, 1.0, 1.0], flow_derivative_weights: [0.55, 0.3, 0.15],
  flow_tanh_scale: 3.0, flow_neutral_threshold: 0.15, flow_zscore_window_bins: 300, flow_zscore_min_periods: 75,
  composite_eps: 1e-12, scale_eps: 1e-12, series: 'absolute_tick',
};
const EVAL = {
  threshold: 0.15, tp_ticks: 8, sl_ticks: 4, max_hold_bins: 300, cooldown_bins: 20, tick_size: 0.25, warmup_bins: 0,
  entry_mode: 'cross', cost_ticks_per_trade: 0.5, latency_bins: 1, allow_overlap: false,
};
const HELLO = {
  type: 'runtime_config', product_type: 'future_mbo', symbol: 'ESH4', price_scale: 1e-9, tick_size: 0.25,
  grid_radius_ticks: 1, cell_width_ms: 100, projection_horizons_bins: [1], projection_horizons_ms: [100],
  stream_format: 'dense_grid', grid_rows: 3, model_config: { model: 'vacuum_pressure' }, gold_config: GOLD_CONFIG,
  grid_schema_fields: [{ name: 'k', dtype: 'int32', role: 'grid_index' }, { name: 'rest_depth', dtype: 'float64', role: 'force' }],
  signal: { name: 'flow_score', threshold: 0.15, tp_ticks: 8, sl_ticks: 4 },
  replay: { date: '2023-12-25', signals: { signal: 'flow_score', signal_params: { k: -1 }, eval: EVAL, eval_source: 'experiment', lookback_bins: 1, lookback_exact: true } },
};
const T0 = 1_703_545_200_000_000_000n; // 2023-12-25 18:00 ET
const ts = (seq: number) => String(T0 + BigInt(seq) * 100_000_000n);
const FRAME = tableToIPC(tableFromArrays({ k: Int32Array.from([-1, 0, 1]), rest_depth: Float64Array.from([1, 2, 3]) }), 'stream');

function update(seq: number) {
  return JSON.stringify({
    type: 'grid_update', ts_ns: ts(seq), bin_seq: seq, bin_start_ns: ts(seq - 1), bin_end_ns: ts(seq), bin_event_count: 1,
    event_id: seq, mid_price: 4800.125, spot_ref_price_int: '4800000000000', best_bid_price_int: '4800000000000',
    best_ask_price_int: '4800250000000', book_valid: true,
  });
}

const entry = (seq: number, direction: number, price: number) => ({ event: 'entry', bin_seq: seq, ts_ns: ts(seq), direction, price });
const exit = (seq: number, direction: number, price: number, outcome: string, pnl: number) => ({ ...entry(seq, direction, price), event: 'exit', outcome, pnl_ticks: pnl });

/** Decode a signals=1 stream: per bin [score, events]; `final` events close it. Returns the decoded signal messages. */
function decode(bins: [number, number | null, unknown[]][], final: unknown[] | null): { tickDollars: number; messages: SignalMessage[] } {
  const d = new StreamDecoder();
  const hello = d.push(JSON.stringify(HELLO));
  if (hello.kind !== 'runtime_config') throw new Error('hello');
  const out: SignalMessage[] = [];
  const take = (m: unknown) => {
    const ev = d.push(JSON.stringify(m));
    if (ev.kind !== 'signal') throw new Error(`signal expected, got ${ev.kind}`);
    out.push(ev.signal);
  };
  for (const [seq, score, events] of bins) {
    d.push(update(seq));
    d.push(FRAME);
    take({ type: 'signal', bin_seq: seq, ts_ns: ts(seq), score, events });
  }
  if (final) {
    take({ type: 'signal', bin_seq: bins[bins.length - 1][0], ts_ns: ts(bins[bins.length - 1][0]), score: null, events: final, final: true });
    d.checkEnd(); // the stream may end now
  }
  return { tickDollars: Number(hello.config.tick_int) * hello.config.price_scale, messages: out };
}

const ms = (seq: number) => Number((T0 + BigInt(seq) * 100_000_000n) / 1_000_000n);

describe('SignalTrack fed by decoded signal messages', () => {
  it('markers at the event bin close and price tick, the position, scores per bin, trades and P&L', () => {
    const { tickDollars, messages } = decode([
      [0, null, []],
      [1, 0.2, []],
      [2, 0.31, [entry(2, 1, 4800.25)]],
      [3, -0.05, []],
      // a TP exit and a short entry known at the same bin close
      [4, -0.4, [exit(4, 1, 4802.25, 'tp', 7.5), entry(4, -1, 4802)]],
      // a timeout's exit is known when its hold window ends: it names its own (earlier) bin
      [6, 0.01, [exit(5, -1, 4802.5, 'timeout', -2.5)]],
      [7, 0.5, [entry(7, 1, 4801)]],
    ], [exit(7, 1, 4801.25, 'truncated', 0.5)]);
    expect(tickDollars).toBe(0.25);
    const t = new SignalTrack(100);
    const states: (string | null)[] = [];
    for (const m of messages) {
      expect(t.add(m, tickDollars)).toBe(true);
      states.push(t.position === null ? null : `${t.position.direction > 0 ? 'long' : 'short'}@${t.position.price}`);
    }
    expect(states).toEqual([null, null, 'long@4800.25', 'long@4800.25', 'short@4802', null, 'long@4801', null]);
    expect(t.markers).toEqual([
      { tsMs: ms(2), tick: 19201, kind: 'entry_long', label: 'long' },
      { tsMs: ms(4), tick: 19209, kind: 'exit', label: 'tp +7.5t' },
      { tsMs: ms(4), tick: 19208, kind: 'entry_short', label: 'short' },
      { tsMs: ms(5), tick: 19210, kind: 'exit', label: 'timeout -2.5t' },
      { tsMs: ms(7), tick: 19204, kind: 'entry_long', label: 'long' },
      { tsMs: ms(7), tick: 19205, kind: 'exit', label: 'truncated +0.5t' },
    ]);
    expect([t.scoreAt(ms(1)), t.scoreAt(ms(4)), t.scoreAt(ms(7))]).toEqual([0.2, -0.4, 0.5]);
    expect(Number.isNaN(t.scoreAt(ms(0)))).toBe(true); // score null: undefined there
    expect(Number.isNaN(t.scoreAt(ms(5)))).toBe(true); // no bin 5 message (the server skipped it)
    expect(t.latest).toBe(0.5); // the final message (score null) does not clear the newest bin's score
    expect([t.trades, t.pnlTicks, t.messages, t.ended]).toEqual([3, 5.5, 8, true]);
    expect(t.add(messages[7], tickDollars)).toBe(false); // nothing after the final message
  });

  it('a continued replay resends the overlap: those messages are skipped, so markers are not doubled', () => {
    const first = decode([[1, 0.1, []], [2, 0.3, [entry(2, 1, 4800.25)]], [3, 0.2, []]], null).messages;
    // the reopened stream starts from the newest bin's second: bins 2..3 again, then new ones
    const again = decode([[2, 0.3, [entry(2, 1, 4800.25)]], [3, 0.2, []], [4, -0.1, [exit(4, 1, 4799.25, 'sl', -4)]]], null).messages;
    const t = new SignalTrack(100);
    for (const m of first) t.add(m, 0.25);
    expect(again.map((m) => t.add(m, 0.25))).toEqual([false, false, true]);
    expect(t.markers.map((m) => m.kind)).toEqual(['entry_long', 'exit']);
    expect([t.trades, t.pnlTicks, t.position]).toEqual([1, -4, null]);
  });

  it('the newest score is undefined while the newest bin has none; scores are bounded to the capacity', () => {
    const t = new SignalTrack(2);
    const { messages } = decode([[1, 0.1, []], [2, 0.2, []], [3, 0.3, []], [4, null, []]], null);
    for (const m of messages.slice(0, 3)) t.add(m, 0.25);
    expect(t.latest).toBe(0.3);
    expect(Number.isNaN(t.scoreAt(ms(1)))).toBe(true); // dropped: capacity 2
    t.add(messages[3], 0.25);
    expect(Number.isNaN(t.latest)).toBe(true);
    expect(t.scoreAt(ms(3))).toBe(0.3); // the crosshair still finds it
    const many = new SignalTrack(10, 3);
    for (let i = 0; i < 5; i++) many.add({ bin_seq: i, ts_ns: ts(i), score: 0, events: [entry(i, 1, 4800)] as never }, 0.25);
    expect(many.markers.map((m) => m.tsMs)).toEqual([ms(2), ms(3), ms(4)]); // the newest maxMarkers
  });

  it('markersOf rounds the price to its tick and formats P&L', () => {
    expect(markersOf({ bin_seq: 1, ts_ns: ts(1), score: 0, events: [exit(1, -1, 4800.2500000001, 'sl', -4.000000001)] as never }, 0.25))
      .toEqual([{ tsMs: ms(1), tick: 19201, kind: 'exit', label: 'sl -4t' }]);
    expect([formatTicks(8), formatTicks(-0.25), formatTicks(0)]).toEqual(['+8t', '-0.25t', '0t']);
  });
});

describe('the viewer asks for signals=1', () => {
  it('signals=1|0 on the page; the stream URL carries signals=1, never with source=live', () => {
    expect(parseViewerParams('?serving=a').signals).toBeNull();
    expect(parseViewerParams('?serving=a&signals=1').signals).toBe(true);
    expect(parseViewerParams('?serving=a&signals=0').signals).toBe(false);
    expect(() => parseViewerParams('?serving=a&signals=yes')).toThrow(/signals "yes": 1 \(stream the served signal\) or 0/);
    expect(() => parseViewerParams('?serving=a&source=live&signals=1')).toThrow(/not with source=live/);
    const p = parseViewerParams('?serving=a&speed=4&signals=1');
    expect(buildStreamUrl('http://h:8002/?serving=a', p, true)).toBe('ws://h:8002/v1/stream?serving=a&speed=4&signals=1');
    expect(buildStreamUrl('http://h:8002/', p)).toBe('ws://h:8002/v1/stream?serving=a&speed=4');
    expect(buildStreamUrl('http://h/', { serving: 'a', replay: { source: 'live' }, stream: null }, true)).toBe('ws://h/v1/stream?serving=a&source=live');
    expect(withSignals('http://h/?serving=a&signals=1', false)).toBe('http://h/?serving=a&signals=0');
    expect(withSignals('http://h/?serving=a&signals=1', null)).toBe('http://h/?serving=a');
  });

  it('the default follows the version\'s signal; 4422/4501 fall back to the plain stream; the HUD legend line', () => {
    expect(declaresSignal({ signal: { name: 'flow_score' } })).toBe(true);
    expect(declaresSignal({ signal: null })).toBe(false);
    expect(declaresSignal({})).toBe(false);
    expect(declaresSignal(null)).toBe(false);
    expect([...SIGNAL_FALLBACK_CODES].sort()).toEqual([4422, 4501]);
    const d = new StreamDecoder();
    const hello = d.push(JSON.stringify(HELLO));
    if (hello.kind !== 'runtime_config') throw new Error('hello');
    expect(declaresSignal(hello.config.raw)).toBe(true);
    expect(signalLegend(hello.config.signals!)).toBe(
      'flow_score · threshold 0.15 · TP 8 / SL 4 ticks · hold ≤ 300 bins · cooldown 20 · cross fill +1 bin · cost 0.5 t · eval experiment');
  });
});
