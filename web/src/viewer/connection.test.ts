import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { StreamContractError, type SignalMessage } from '../stream/contract';
import { StreamConnection, type ConnState, type SocketLike } from './connection';

const GOLD_CONFIG = {
  cell_width_ms: 100, c1: 1.0, c2: 0.5, c3: 0.3, c4: 1.0, c5: 1.5, c6: 0.5, c7: 0.3,
  flow_windows: [5, 10, 20, 40], flow_rollup_weights: [1.0, 1.0, 1.0, 1.0], flow_derivative_weights: [0.55, 0.3, 0.15],
  flow_tanh_scale: 3.0, flow_neutral_threshold: 0.15, flow_zscore_window_bins: 300, flow_zscore_min_periods: 75,
  composite_eps: 1e-12, scale_eps: 1e-12, series: 'absolute_tick',
};

const R = 2;
const CONFIG = JSON.stringify({
  type: 'runtime_config', product_type: 'future_mbo', symbol: 'ESH4', price_scale: 1e-9, tick_size: 0.25,
  grid_radius_ticks: R, cell_width_ms: 100, projection_horizons_bins: [1, 2], projection_horizons_ms: [100, 200],
  stream_format: 'dense_grid', grid_rows: 2 * R + 1, model_config: { model: 'vacuum_pressure' }, gold_config: GOLD_CONFIG,
  grid_schema_fields: [{ name: 'k', dtype: 'int32', role: 'grid_index' }, { name: 'rest_depth', dtype: 'float64', role: 'force' }],
});
const UPDATE = (seq: number) => JSON.stringify({
  type: 'grid_update', ts_ns: '1', bin_seq: seq, bin_start_ns: '0', bin_end_ns: '1', bin_event_count: 1, event_id: seq,
  mid_price: 4800.125, spot_ref_price_int: '4800000000000', best_bid_price_int: '4800000000000',
  best_ask_price_int: '4800250000000', book_valid: true, due_unix_ns: '5',
});
/** The hello of a signals=1 stream: replay.signals as served_signal.SignalSetup.describe announces it. */
const SIGNALS_CONFIG = JSON.stringify({
  ...JSON.parse(CONFIG),
  replay: {
    signals: {
      signal: 'flow_score', signal_params: {}, eval_source: 'defaults', lookback_bins: 1, lookback_exact: true,
      eval: { threshold: 0.15, tp_ticks: 8, sl_ticks: 4, max_hold_bins: 300, cooldown_bins: 20, tick_size: 0.25, entry_mode: 'cross', cost_ticks_per_trade: 0, latency_bins: 1 },
    },
  },
});
const SIGNAL = (seq: number, over: Record<string, unknown> = {}) => JSON.stringify({ type: 'signal', bin_seq: seq, ts_ns: '1', score: 0.5, events: [], ...over });
const FRAME = () => tableToIPC(tableFromArrays({
  k: Int32Array.from([-2, -1, 0, 1, 2]), rest_depth: Float64Array.from([1, 2, 3, 4, 5]),
}), 'stream').slice().buffer;

class FakeSocket implements SocketLike {
  binaryType = 'blob';
  onopen: SocketLike['onopen'] = null;
  onmessage: SocketLike['onmessage'] = null;
  onclose: SocketLike['onclose'] = null;
  onerror: SocketLike['onerror'] = null;
  closedWith: number | null = null;
  constructor(readonly url: string) {}
  close(code = 1000): void {
    this.closedWith = code;
  }
  recv(data: unknown): void {
    this.onmessage?.({ data });
  }
  drop(code: number, reason = ''): void {
    this.onclose?.({ code, reason });
  }
}

function harness() {
  const sockets: FakeSocket[] = [];
  const timers: { fn: () => void; ms: number }[] = [];
  const states: ConnState[] = [];
  const errors: [string, string][] = [];
  const bins: number[] = [];
  const signals: SignalMessage[] = [];
  let configs = 0;
  let ended = 0;
  const conn = new StreamConnection('ws://h/v1/stream?serving=demo', {
    onState: (s) => states.push(s),
    onConfig: () => configs++,
    onBin: (b) => bins.push(b.update.bin_seq),
    onSignal: (m) => signals.push(m),
    onError: (e, src) => errors.push([src, e.message]),
    onEnd: () => ended++,
  }, {
    socket: (u) => {
      const s = new FakeSocket(u);
      sockets.push(s);
      return s;
    },
    setTimer: (fn, ms) => timers.push({ fn, ms }),
    clearTimer: () => {},
    backoff: { baseMs: 100, jitter: 0 },
  });
  return { conn, sockets, timers, states, errors, bins, signals, get configs() { return configs; }, get ended() { return ended; } };
}

describe('StreamConnection', () => {
  it('goes live, decodes bins, and ends on end_of_stream without reconnecting', () => {
    const t = harness();
    t.conn.start();
    const s = t.sockets[0];
    expect(s.binaryType).toBe('arraybuffer');
    expect(t.conn.state).toBe('connecting');
    s.recv(CONFIG);
    expect(t.conn.state).toBe('live');
    s.recv(UPDATE(1));
    s.recv(FRAME());
    s.recv(UPDATE(2));
    s.recv(FRAME());
    expect(t.bins).toEqual([1, 2]);
    expect(t.configs).toBe(1);
    s.recv(JSON.stringify({ type: 'end_of_stream', bins: 2 }));
    expect(t.conn.state).toBe('ended');
    s.drop(1000);
    expect(t.conn.state).toBe('ended');
    expect(t.timers).toHaveLength(0);
    expect(t.ended).toBe(1);
  });

  it('signals=1: each bin\'s signal message and the final one reach onSignal; end_of_stream then ends', () => {
    const t = harness();
    t.conn.start();
    const s = t.sockets[0];
    s.recv(SIGNALS_CONFIG);
    s.recv(UPDATE(1));
    s.recv(FRAME());
    s.recv(SIGNAL(1, { events: [{ event: 'entry', bin_seq: 1, ts_ns: '1', direction: -1, price: 4800 }] }));
    s.recv(SIGNAL(1, { final: true, score: null, events: [{ event: 'exit', bin_seq: 1, ts_ns: '1', direction: -1, price: 4800.5, outcome: 'truncated', pnl_ticks: -2 }] }));
    s.recv(JSON.stringify({ type: 'end_of_stream', bins: 1 }));
    expect(t.errors).toEqual([]);
    expect(t.signals.map((m) => [m.bin_seq, m.final, m.events[0].event])).toEqual([[1, false, 'entry'], [1, true, 'exit']]);
    expect(t.conn.state).toBe('ended');
    expect(t.ended).toBe(1);
  });

  it('signals=1: end_of_stream without the final signal message is a contract violation, not an end', () => {
    const t = harness();
    t.conn.start();
    const s = t.sockets[0];
    s.recv(SIGNALS_CONFIG);
    s.recv(UPDATE(1));
    s.recv(FRAME());
    s.recv(SIGNAL(1));
    s.recv(JSON.stringify({ type: 'end_of_stream', bins: 1 }));
    expect(t.conn.state).toBe('error');
    expect(t.ended).toBe(0);
    expect(t.errors).toEqual([['contract', 'end_of_stream without the final signal message (signals=1: it closes the session\'s open position)']]);
    expect(s.closedWith).toBe(1000);
    expect(t.timers).toHaveLength(0); // never reconnected into the same violation
  });

  it('a signal message on a plain stream stops it as a contract violation', () => {
    const t = harness();
    t.conn.start();
    t.sockets[0].recv(CONFIG);
    t.sockets[0].recv(UPDATE(1));
    t.sockets[0].recv(FRAME());
    t.sockets[0].recv(SIGNAL(1));
    expect(t.conn.state).toBe('error');
    expect(t.errors[0][1]).toMatch(/runtime_config\.replay\.signals is absent/);
    expect(t.signals).toEqual([]);
  });

  it('reconnects with growing backoff after a drop, with a fresh decoder', () => {
    const t = harness();
    t.conn.start();
    t.sockets[0].drop(1006);
    expect(t.conn.state).toBe('reconnecting');
    expect(t.timers.map((x) => x.ms)).toEqual([100]);
    t.timers[0].fn();
    expect(t.conn.state).toBe('connecting');
    t.sockets[1].drop(1006);
    expect(t.timers.map((x) => x.ms)).toEqual([100, 200]);
    t.timers[1].fn();
    t.sockets[2].recv(CONFIG); // a second runtime_config is fine on a new socket
    expect(t.conn.state).toBe('live');
    t.sockets[2].drop(1011);
    expect(t.timers[2].ms).toBe(100); // going live reset the backoff
    expect(t.conn.connects).toBe(3);
  });

  it('a contract violation is an error, reported, closes the socket and does not reconnect', () => {
    const t = harness();
    t.conn.start();
    const s = t.sockets[0];
    s.recv(FRAME()); // binary before runtime_config
    expect(t.conn.state).toBe('error');
    expect(t.errors[0][0]).toBe('contract');
    expect(t.errors[0][1]).toMatch(/binary frame before runtime_config/);
    expect(s.closedWith).toBe(1000);
    s.drop(1006);
    expect(t.timers).toHaveLength(0);
    s.recv(CONFIG); // ignored after the failure
    expect(t.configs).toBe(0);
  });

  it('a server error with a final close code stops; the message is reported', () => {
    const t = harness();
    t.conn.start();
    t.sockets[0].recv(JSON.stringify({ type: 'error', code: 4404, message: 'unknown serving nope' }));
    t.sockets[0].drop(4404, 'unknown serving');
    expect(t.errors).toEqual([['server', 'unknown serving nope']]);
    expect(t.conn.state).toBe('error');
    expect(t.timers).toHaveLength(0);
  });

  it('start() with a new URL replaces the socket; stop() ends', () => {
    const t = harness();
    t.conn.start();
    t.conn.start('ws://h/v1/stream?serving=demo&speed=4');
    expect(t.sockets[0].closedWith).toBe(1000);
    expect(t.sockets[1].url).toContain('speed=4');
    t.sockets[0].drop(1006); // the old socket's close is ignored
    expect(t.timers).toHaveLength(0);
    t.conn.stop();
    expect(t.conn.state).toBe('ended');
    expect(new StreamContractError('x').name).toBe('StreamContractError');
  });
});
