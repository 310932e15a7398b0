import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Float32, Int64, Table, tableFromArrays, tableFromIPC, tableToIPC, vectorFromArray, type Vector } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { GOLD_CODE_COLUMNS, GOLD_FLOAT_COLUMNS } from '../gold/config';
import {
  checkStreamUrl, createGoldRuntime, goldInput, parseRuntimeConfig, StreamContractError, StreamDecoder, streamUrl,
  type GridSchemaField, type SignalMessage,
} from './index';

const GOLD_CONFIG = {
  cell_width_ms: 100, c1: 1.0, c2: 0.5, c3: 0.3, c4: 1.0, c5: 1.5, c6: 0.5, c7: 0.3,
  flow_windows: [5, 10, 20, 40], flow_rollup_weights: [1.0, 1.0, 1.0, 1.0], flow_derivative_weights: [0.55, 0.3, 0.15],
  flow_tanh_scale: 3.0, flow_neutral_threshold: 0.15, flow_zscore_window_bins: 300, flow_zscore_min_periods: 75,
  composite_eps: 1e-12, scale_eps: 1e-12, series: 'absolute_tick',
};

/** The gold fields of InstrumentConfig (the runtime_config body carries them at top level too). */
const { composite_eps: _ce, scale_eps: _se, series: _s, ...INSTRUMENT_GOLD_FIELDS } = GOLD_CONFIG;

const FLOATS = ['v_add', 'v_rest_depth', 'a_add', 'v_pull', 'v_fill', 'a_pull', 'rest_depth'];
const SCHEMA: GridSchemaField[] = [
  { name: 'k', dtype: 'int32', role: 'grid_index' },
  ...FLOATS.map((name) => ({ name, dtype: 'float64' as const, role: name.startsWith('a_') ? 'acceleration' : name.startsWith('v_') ? 'velocity' : 'force' })),
  { name: 'last_event_id', dtype: 'int64', role: 'metadata' },
  { name: 'ask_reprice_sign', dtype: 'int8', role: 'indicator' },
  { name: 'bid_reprice_sign', dtype: 'int8', role: 'indicator' },
];

/** A runtime_config as qmachina_assets/core/registry/snapshot.py `runtime_config_message` builds it. */
function runtimeConfig(radius = 2, over: Record<string, unknown> = {}, fields: GridSchemaField[] = SCHEMA) {
  return {
    type: 'runtime_config', product_type: 'future_mbo', dataset: 'GLBX.MDP3', symbol: 'ESH4', symbol_root: 'ES',
    price_scale: 1e-9, tick_size: 0.25, bucket_size_dollars: 0.25, rel_tick_size: 0.25, grid_radius_ticks: radius,
    n_absolute_ticks: 8192, ...INSTRUMENT_GOLD_FIELDS, projection_horizons_bins: [1, 2, 3, 4],
    model_id: 'vacuum_pressure', projection_horizons_ms: [100, 200, 300, 400], config_version: 'abc123def456',
    stream_format: 'dense_grid', grid_schema_fields: fields, grid_rows: 2 * radius + 1,
    model_config: { model: 'vacuum_pressure', state_model: { name: 'derivative' } },
    serving: { serving_name: 'demo', serving_id: 'srv_demo_x', alias: 'demo', source: {} },
    gold_config: GOLD_CONFIG, display_name: 'Demo', visualization: {}, signal: null,
    projection: { horizons_bins: [1, 2, 3, 4], horizons_ms: [100, 200, 300, 400], use_cubic: false },
    ...over,
  };
}

function gridUpdate(binSeq: number, over: Record<string, unknown> = {}) {
  const end = 1_700_000_000_000_000_000n + BigInt(binSeq) * 100_000_000n;
  return {
    type: 'grid_update', ts_ns: String(end), bin_seq: binSeq, bin_start_ns: String(end - 100_000_000n),
    bin_end_ns: String(end), bin_event_count: 12, event_id: 1000 + binSeq, mid_price: 4800.125,
    spot_ref_price_int: '4800000000000', best_bid_price_int: '4800000000000', best_ask_price_int: '4800250000000',
    book_valid: true, ...over,
  };
}

/** An Arrow IPC stream frame with the SCHEMA columns; `cols` overrides/extends columns. */
function frame(radius = 2, cols: Record<string, ArrayLike<unknown>> = {}, drop: string[] = []): Uint8Array {
  const n = 2 * radius + 1;
  const base: Record<string, ArrayLike<unknown>> = {
    k: Int32Array.from({ length: n }, (_, j) => j - radius),
    ...Object.fromEntries(FLOATS.map((c, i) => [c, Float64Array.from({ length: n }, (_, j) => (j - radius) * (i + 1) * 0.5)])),
    last_event_id: BigInt64Array.from({ length: n }, () => 987654321012n),
    ask_reprice_sign: Int8Array.from({ length: n }, () => 1),
    bid_reprice_sign: Int8Array.from({ length: n }, () => 0),
    ...cols,
  };
  for (const d of drop) delete base[d];
  return tableToIPC(tableFromArrays(base as Parameters<typeof tableFromArrays>[0]), 'stream');
}

const text = (o: unknown) => JSON.stringify(o);

function started(radius = 2): StreamDecoder {
  const d = new StreamDecoder();
  d.push(text(runtimeConfig(radius)));
  return d;
}

function expectError(fn: () => unknown, pattern: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a StreamContractError').toBeInstanceOf(StreamContractError);
  expect((err as Error).message).toMatch(pattern);
}

describe('StreamDecoder: message order', () => {
  it('decodes runtime_config, then grid_update + binary frame per bin, into typed objects', () => {
    const d = new StreamDecoder();
    const e0 = d.push(text(runtimeConfig()));
    expect(e0.kind).toBe('runtime_config');
    if (e0.kind !== 'runtime_config') return;
    expect(e0.config.grid_rows).toBe(5);
    expect(e0.config.tick_int).toBe(250_000_000n);
    expect(e0.config.gold_config.flow_windows).toEqual([5, 10, 20, 40]);
    expect(e0.config.raw.serving).toEqual({ serving_name: 'demo', serving_id: 'srv_demo_x', alias: 'demo', source: {} });
    for (const seq of [7, 8]) {
      const e1 = d.push(text(gridUpdate(seq)));
      expect(e1.kind).toBe('grid_update');
      const e2 = d.push(frame().buffer);
      expect(e2.kind).toBe('bin');
      if (e2.kind !== 'bin') return;
      const { update, frame: f } = e2.bin;
      expect(update.bin_seq).toBe(seq);
      expect(update.spot_ref_price_int).toBe(4_800_000_000_000n);
      expect(update.bin_end_ns - update.bin_start_ns).toBe(100_000_000n);
      expect(f.numRows).toBe(5);
      expect(Array.from(f.column('k') as Int32Array)).toEqual([-2, -1, 0, 1, 2]);
      expect(f.column('v_add')).toBeInstanceOf(Float64Array);
      expect(f.column('last_event_id')[0]).toBe(987654321012n);
      expect(f.has('v_add')).toBe(true);
      expect(f.has('j_add')).toBe(false);
      expectError(() => f.column('j_add'), /j_add is not streamed/);
    }
    expect(d.bins).toBe(2);
  });

  it('accepts a Uint8Array view with an offset as the binary frame', () => {
    const d = started();
    d.push(text(gridUpdate(1)));
    const bytes = frame();
    const padded = new Uint8Array(bytes.length + 8);
    padded.set(bytes, 8);
    expect(d.push(padded.subarray(8)).kind).toBe('bin');
  });

  it('grid_update before runtime_config is an error', () => {
    expectError(() => new StreamDecoder().push(text(gridUpdate(1))), /grid_update before runtime_config/);
  });

  it('binary frame before runtime_config or without a preceding grid_update is an error', () => {
    expectError(() => new StreamDecoder().push(frame()), /binary frame before runtime_config/);
    expectError(() => started().push(frame()), /binary frame without a preceding grid_update/);
    const d = started();
    d.push(text(gridUpdate(1)));
    d.push(frame());
    expectError(() => d.push(frame()), /without a preceding grid_update/);
  });

  it('a grid_update must be followed by its binary frame', () => {
    const d = started();
    d.push(text(gridUpdate(1)));
    expectError(() => d.push(text(gridUpdate(2))), /grid_update while the binary frame of grid_update bin_seq 1 was expected/);
  });

  it('runtime_config is sent once; unknown types and non-JSON are errors', () => {
    expectError(() => started().push(text(runtimeConfig())), /second runtime_config/);
    expectError(() => started().push(text({ type: 'hello' })), /unknown message type "hello"/);
    expectError(() => started().push('not json'), /not JSON/);
    expectError(() => started().push('[1]'), /not a JSON object/);
  });

  it('a failed decoder stays failed', () => {
    const d = new StreamDecoder();
    expectError(() => d.push(text(gridUpdate(1))), /before runtime_config/);
    expectError(() => d.push(text(runtimeConfig())), /before runtime_config/);
    expect(d.error).toBeInstanceOf(StreamContractError);
  });

  it('a server error message is reported, and nothing may follow it', () => {
    const d = new StreamDecoder();
    expect(d.push(text({ type: 'error', message: 'unknown serving foo' }))).toEqual({ kind: 'server_error', message: 'unknown serving foo' });
    expectError(() => d.push(text(runtimeConfig())), /after the server ended the stream/);
  });

  it('end_of_stream ends the stream after runtime_config, and nothing may follow it', () => {
    expectError(() => new StreamDecoder().push(text({ type: 'end_of_stream' })), /before runtime_config/);
    const d = started(2);
    expect(d.push(text({ type: 'end_of_stream' }))).toEqual({ kind: 'end_of_stream', bins: 0 });
    expectError(() => d.push(text(gridUpdate(1))), /after the server ended the stream/);
  });
});

describe('StreamDecoder: live streams (source=live)', () => {
  it('a live runtime_config may be replaced; gap and source_status messages are decoded', () => {
    const d = new StreamDecoder();
    expect(d.push(text({ type: 'source_status', source: 'live', status: 'unavailable', reason: 'no live process' })))
      .toEqual({ kind: 'source_status', status: { available: false, reason: 'no live process' } });
    d.push(text(runtimeConfig(2, { source: 'live' })));
    d.push(text(gridUpdate(1)));
    d.push(frame().buffer);
    const g = d.push(text({ type: 'gap', start_ns: '1700000000000000000', end_ns: '1700000002000000000', reason: 'x' }));
    expect(g.kind === 'gap' && [g.gap.start_ns, g.gap.end_ns]).toEqual([1_700_000_000_000_000_000n, 1_700_000_002_000_000_000n]);
    const unknown = d.push(text({ type: 'gap', start_ns: 'None', end_ns: 'None' })); // the live process could not tell
    expect(unknown.kind === 'gap' && unknown.gap.start_ns).toBeNull();
    const again = d.push(text(runtimeConfig(2, { source: 'live', symbol: 'ESM4' })));
    expect(again.kind === 'runtime_config' && again.config.symbol).toBe('ESM4');
    expect(d.push(text({ type: 'source_status', source: 'live', status: 'available' })).kind).toBe('source_status');
    expectError(() => d.push(text({ type: 'gap', start_ns: '5', end_ns: '1' })), /before start_ns/);
  });

  it('a replay still refuses a second runtime_config and gap messages', () => {
    expectError(() => started().push(text(runtimeConfig())), /second runtime_config/);
    expectError(() => started().push(text({ type: 'gap', start_ns: '1', end_ns: '2' })), /gap outside a live stream/);
    expectError(() => started().push(text({ type: 'source_status', status: 'maybe' })), /"available" or "unavailable"/);
  });
});

describe('StreamDecoder: frame schema against grid_schema_fields', () => {
  function bad(bytes: Uint8Array, pattern: RegExp, radius = 2) {
    const d = started(radius);
    d.push(text(gridUpdate(1)));
    expectError(() => d.push(bytes), pattern);
  }

  it('names and order must match', () => {
    bad(frame(2, {}, ['v_fill']), /schema fields \[.*\] differ from runtime_config.grid_schema_fields/);
    bad(frame(2, { j_add: new Float64Array(5) }), /differ from runtime_config.grid_schema_fields/);
    const n = 5;
    const reordered = tableFromArrays({
      v_add: new Float64Array(n), k: Int32Array.from([-2, -1, 0, 1, 2]),
    });
    const cfgFields: GridSchemaField[] = [{ name: 'k', dtype: 'int32', role: 'grid_index' }, { name: 'v_add', dtype: 'float64', role: 'velocity' }];
    const d = new StreamDecoder();
    d.push(text(runtimeConfig(2, {}, cfgFields)));
    d.push(text(gridUpdate(1)));
    expectError(() => d.push(tableToIPC(reordered, 'stream')), /schema fields \[v_add, k\]/);
  });

  it('types must match', () => {
    bad(frame(2, { k: BigInt64Array.from([-2n, -1n, 0n, 1n, 2n]) }), /field k is Arrow Int64, grid_schema_fields says int32/);
    bad(frame(2, { ask_reprice_sign: Int32Array.from([1, 1, 1, 1, 1]) }), /field ask_reprice_sign is Arrow Int32.*int8/);
    const f32 = tableFromIPC(frame());
    const cols = Object.fromEntries(f32.schema.fields.map((f) => [f.name, f32.getChild(f.name)!]));
    cols.v_add = vectorFromArray([0, 0, 0, 0, 0], new Float32());
    bad(tableToIPC(makeTableFrom(cols), 'stream'), /field v_add is Arrow Float32, grid_schema_fields says float64/);
  });

  it('row count, k order, one batch, stream (not file) format, no nulls', () => {
    bad(frame(1), /3 rows, expected 5/);
    bad(frame(2, { k: Int32Array.from([2, 1, 0, -1, -2]) }), /k = -2..2 ascending; row 0 has k = 2/);
    bad(tableToIPC(tableFromIPC(frame()), 'file'), /IPC stream expected, got the IPC file format/);
    const t = tableFromIPC(frame());
    bad(tableToIPC(t.concat(t), 'stream'), /one record batch expected, got 2/);
    bad(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), /not a decodable Arrow IPC stream/);
    const withNull = tableFromIPC(frame());
    const nulls = Object.fromEntries(withNull.schema.fields.map((f) => [f.name, withNull.getChild(f.name)!]));
    nulls.last_event_id = vectorFromArray([1n, null, 3n, 4n, 5n], new Int64());
    bad(tableToIPC(makeTableFrom(nulls), 'stream'), /last_event_id has 1 nulls/);
  });

  it('ema_ensemble frames are one k = 0 row', () => {
    const fields: GridSchemaField[] = [
      { name: 'k', dtype: 'int32', role: 'grid_index' }, { name: 'fill_mass', dtype: 'float64', role: 'force' },
      { name: 'rest_depth', dtype: 'float64', role: 'force' }, { name: 'last_event_id', dtype: 'int64', role: 'metadata' },
    ];
    const d = new StreamDecoder();
    d.push(text(runtimeConfig(2, { model_config: { model: 'ema_ensemble' } }, fields)));
    d.push(text(gridUpdate(1)));
    const one = tableFromArrays({ k: Int32Array.of(0), fill_mass: Float64Array.of(3), rest_depth: Float64Array.of(9), last_event_id: BigInt64Array.of(5n) });
    const e = d.push(tableToIPC(one, 'stream'));
    expect(e.kind === 'bin' && e.bin.frame.column('rest_depth')[0]).toBe(9);
  });
});

/** A table from named vectors (keeps each vector's Arrow type). */
function makeTableFrom(cols: Record<string, Vector | null>): Table {
  return new Table(cols as Record<string, Vector>);
}

describe('runtime_config and grid_update validation', () => {
  const cfgError = (over: Record<string, unknown>, pattern: RegExp, radius = 2) =>
    expectError(() => new StreamDecoder().push(text(runtimeConfig(radius, over))), pattern);

  it('projection horizons: ms[i] = bins[i] x cell_width_ms, same lengths, unique bins, projection block agrees', () => {
    cfgError({ projection_horizons_ms: [100, 200, 300, 500] }, /projection_horizons_ms\[3\]: 500 ms, but projection_horizons_bins\[3\] = 4 bins x cell_width_ms 100 = 400 ms/);
    cfgError({ projection_horizons_ms: [100, 200, 300] }, /projection_horizons_ms: 3 horizons, projection_horizons_bins has 4/);
    cfgError({ projection_horizons_bins: [1, 1], projection_horizons_ms: [100, 100] }, /must be unique/);
    cfgError({ projection_horizons_bins: [0], projection_horizons_ms: [0] }, />= 1 bin/);
    cfgError({ projection: { horizons_bins: [1, 2, 3, 4], horizons_ms: [100, 200, 300, 401] } }, /projection.horizons_ms: .* differs/);
    cfgError({ projection_horizons_bins: undefined }, /projection_horizons_bins: a list of integers expected, got nothing/);
  });

  it('grid geometry, schema fields, model and gold config', () => {
    cfgError({ grid_rows: 7 }, /grid_rows: 7 rows, but grid_radius_ticks 2 means 2R\+1 = 5/);
    cfgError({ stream_format: 'sparse' }, /only "dense_grid"/);
    cfgError({ grid_schema_fields: [] }, /grid_schema_fields: a non-empty list/);
    cfgError({ grid_schema_fields: [{ name: 'k', dtype: 'double' }] }, /grid_schema_fields\[0\].dtype: one of int8, int32, int64, float64/);
    cfgError({ grid_schema_fields: [{ name: 'k', dtype: 'int32' }, { name: 'k', dtype: 'int32' }] }, /listed twice/);
    cfgError({ grid_schema_fields: [{ name: 'v_add', dtype: 'float64' }] }, /grid index field k is missing/);
    cfgError({ model_config: {} }, /model_config: an object with a "model" name/);
    cfgError({ gold_config: { ...GOLD_CONFIG, flow_neutral_threshold: 1.5 } }, /runtime_config.gold_config: flow_neutral_threshold: must be in \(0, 1\)/);
    cfgError({ gold_config: { ...GOLD_CONFIG, cell_width_ms: 250 } }, /gold_config.cell_width_ms: 250, but the stream's cell_width_ms is 100/);
    cfgError({ product_type: 'equity_mbo', bucket_size_dollars: undefined }, /bucket_size_dollars: required/);
    const eq = parseRuntimeConfig(runtimeConfig(2, { product_type: 'equity_mbo', bucket_size_dollars: 0.01 }));
    expect(eq.tick_int).toBe(10_000_000n);
  });

  it('grid_update: big integers are decimal strings, the rest typed', () => {
    const bad = (over: Record<string, unknown>, pattern: RegExp) => {
      const d = started();
      expectError(() => d.push(text(gridUpdate(1, over))), pattern);
    };
    bad({ spot_ref_price_int: 4800000000000 }, /grid_update.spot_ref_price_int: a decimal integer string expected, got 4800000000000/);
    bad({ ts_ns: '1.5' }, /ts_ns: a decimal integer string/);
    bad({ bin_seq: '3' }, /bin_seq: an integer expected/);
    bad({ book_valid: 1 }, /book_valid: a boolean expected/);
    bad({ mid_price: undefined }, /mid_price: a number expected, got nothing/);
    bad({ bin_start_ns: '1700000000000000000', bin_end_ns: '1' }, /bin_end_ns 1 is before bin_start_ns/);
  });

  it('stream URL carries only serving', () => {
    expect(streamUrl('http://localhost:8002', 'es_live')).toBe('ws://localhost:8002/v1/stream?serving=es_live');
    expect(checkStreamUrl('ws://h:8002/v1/stream?serving=srv_a_b')).toBe('srv_a_b');
    expectError(() => checkStreamUrl('ws://h:8002/v1/stream?serving=a&speed=2'), /only the serving parameter is allowed, got speed/);
    expectError(() => checkStreamUrl('ws://h:8002/v1/stream'), /exactly one non-empty serving/);
    expectError(() => streamUrl('ws://h', 'a b'), /not an alias or serving_id/);
  });
});

/** `runtime_config.replay.signals` as qmachina_serving sends it (served_signal.SignalSetup.describe, flow_score). */
const REPLAY_SIGNALS = {
  signal: 'flow_score', signal_params: { k: 0 },
  eval: {
    threshold: 0.15, tp_ticks: 8, sl_ticks: 4, max_hold_bins: 300, cooldown_bins: 20, tick_size: 0.25, warmup_bins: 0,
    entry_mode: 'cross', cost_ticks_per_trade: 0, latency_bins: 1, allow_overlap: false,
  },
  eval_source: 'defaults', lookback_bins: 1, lookback_exact: true,
};

function signalsConfig(signals: unknown = REPLAY_SIGNALS) {
  return runtimeConfig(2, { replay: { date: '2023-11-14', speed: 1, signals } });
}

/** The signal message of bin `seq` (gridUpdate's ts_ns), as replay.py `_signal_message` builds it. */
function signalMsg(seq: number, over: Record<string, unknown> = {}) {
  const ts = String(1_700_000_000_000_000_000n + BigInt(seq) * 100_000_000n);
  return { type: 'signal', bin_seq: seq, ts_ns: ts, score: 0.25, events: [], ...over };
}

const entry = (seq: number, over: Record<string, unknown> = {}) => ({
  event: 'entry', bin_seq: seq, ts_ns: String(1_700_000_000_000_000_000n + BigInt(seq) * 100_000_000n), direction: 1,
  price: 4800.25, ...over,
});
const exit = (seq: number, over: Record<string, unknown> = {}) => ({
  ...entry(seq), event: 'exit', price: 4802.25, outcome: 'tp', pnl_ticks: 8, ...over,
});

/** A decoder after the signals=1 hello and bins `seqs` (grid_update + frame + signal each). */
function signalStream(seqs: number[]): StreamDecoder {
  const d = new StreamDecoder();
  d.push(text(signalsConfig()));
  for (const seq of seqs) {
    d.push(text(gridUpdate(seq)));
    d.push(frame());
    d.push(text(signalMsg(seq)));
  }
  return d;
}

describe('StreamDecoder: signal messages (signals=1)', () => {
  it('types replay.signals and each bin\'s signal message; the final one precedes end_of_stream', () => {
    const d = new StreamDecoder();
    const hello = d.push(text(signalsConfig()));
    if (hello.kind !== 'runtime_config') throw new Error('runtime_config expected');
    const info = hello.config.signals!;
    expect(info.signal).toBe('flow_score');
    expect([info.eval.threshold, info.eval.tp_ticks, info.eval.sl_ticks, info.eval.max_hold_bins]).toEqual([0.15, 8, 4, 300]);
    expect([info.eval_source, info.lookback_bins, info.lookback_exact, info.eval.entry_mode]).toEqual(['defaults', 1, true, 'cross']);
    expect(info.eval.raw.allow_overlap).toBe(false);
    const got: SignalMessage[] = [];
    for (const [seq, over] of [[5, { score: null }], [6, { events: [entry(6)] }], [7, { score: -0.5, events: [exit(7, { direction: -1, outcome: 'sl', pnl_ticks: -4.5 })] }]] as const) {
      expect(d.push(text(gridUpdate(seq))).kind).toBe('grid_update');
      expect(d.push(frame()).kind).toBe('bin');
      const ev = d.push(text(signalMsg(seq, over)));
      if (ev.kind !== 'signal') throw new Error('signal expected');
      got.push(ev.signal);
    }
    expect(got.map((m) => m.score)).toEqual([null, 0.25, -0.5]);
    expect(got[1].events).toEqual([{ event: 'entry', bin_seq: 6, ts_ns: '1700000000600000000', direction: 1, price: 4800.25 }]);
    expect(got[2].events[0]).toMatchObject({ event: 'exit', direction: -1, outcome: 'sl', pnl_ticks: -4.5, price: 4802.25 });
    expect(got.every((m) => !m.final)).toBe(true);
    // the session end: a truncated exit of an earlier bin (an event may name a bin before the stream's first: < 0)
    const fin = d.push(text(signalMsg(7, { final: true, score: null, events: [exit(-3, { outcome: 'truncated', pnl_ticks: 0.5 })] })));
    if (fin.kind !== 'signal') throw new Error('signal expected');
    expect([fin.signal.final, fin.signal.events[0].bin_seq, fin.signal.events[0].outcome]).toEqual([true, -3, 'truncated']);
    d.checkEnd(); // end_of_stream is fine now
    expect(d.error).toBeNull();
  });

  it('a plain stream has no replay.signals and refuses a signal message', () => {
    const d = started();
    expect(d.config!.signals).toBeNull();
    d.push(text(gridUpdate(1)));
    d.push(frame());
    expectError(() => d.push(text(signalMsg(1))), /signal message, but runtime_config\.replay\.signals is absent/);
  });

  it('malformed replay.signals is a contract violation naming the field', () => {
    const bad = (signals: unknown, pattern: RegExp) => expectError(() => new StreamDecoder().push(text(signalsConfig(signals))), pattern);
    bad('flow_score', /replay\.signals: an object/);
    bad({ ...REPLAY_SIGNALS, signal: 3 }, /replay\.signals\.signal: a signal name expected, got 3/);
    bad({ ...REPLAY_SIGNALS, eval: { ...REPLAY_SIGNALS.eval, threshold: 0 } }, /replay\.signals\.eval\.threshold: a number > 0 expected, got 0/);
    bad({ ...REPLAY_SIGNALS, eval: { ...REPLAY_SIGNALS.eval, tp_ticks: undefined } }, /replay\.signals\.eval\.tp_ticks: a number > 0 expected, got nothing/);
    bad({ ...REPLAY_SIGNALS, eval: { ...REPLAY_SIGNALS.eval, max_hold_bins: 2.5 } }, /eval\.max_hold_bins: an integer >= 1/);
    bad({ ...REPLAY_SIGNALS, eval: { ...REPLAY_SIGNALS.eval, entry_mode: 'limit' } }, /eval\.entry_mode: "mid" or "cross" expected, got "limit"/);
    bad({ ...REPLAY_SIGNALS, eval_source: 'guess' }, /eval_source: "experiment" or "defaults" expected/);
    bad({ ...REPLAY_SIGNALS, lookback_exact: 'yes' }, /lookback_exact: a boolean expected/);
    expect(parseRuntimeConfig(signalsConfig(null)).signals).toBeNull(); // null: no signals
  });

  it('a malformed signal message is a contract violation naming the field', () => {
    const bad = (over: Record<string, unknown>, pattern: RegExp) => {
      const d = signalStream([1]);
      d.push(text(gridUpdate(2)));
      d.push(frame());
      expectError(() => d.push(text(signalMsg(2, over))), pattern);
      expectError(() => d.push(text(signalMsg(2))), pattern); // and the decoder stays failed
    };
    bad({ score: 'high' }, /signal\.score: a finite number or null expected, got "high"/);
    bad({ score: undefined }, /signal\.score: a number or null expected, got nothing/);
    bad({ ts_ns: 1700000000200000000 }, /signal\.ts_ns: a decimal integer string expected/);
    bad({ events: {} }, /signal\.events: a list expected/);
    bad({ final: false }, /signal\.final: true or absent expected/);
    bad({ events: [entry(2, { direction: 0 })] }, /events\[0\]\.direction: \+1 or -1 expected, got 0/);
    bad({ events: [entry(2, { event: 'hold' })] }, /events\[0\]\.event: "entry" or "exit" expected, got "hold"/);
    bad({ events: [entry(2, { price: -1 })] }, /events\[0\]\.price: a price in dollars > 0 expected/);
    bad({ events: [entry(3)] }, /events\[0\]\.bin_seq: 3 is after the message's bin 2/);
    bad({ events: [entry(2, { outcome: 'tp' })] }, /events\[0\]: an entry carries no outcome or pnl_ticks/);
    bad({ events: [entry(2), exit(2, { outcome: undefined })] }, /events\[1\]\.outcome: one of tp, sl, timeout, truncated expected, got nothing/);
    bad({ events: [exit(2, { outcome: 'stop' })] }, /events\[0\]\.outcome: one of tp, sl, timeout, truncated expected, got "stop"/);
    bad({ events: [exit(2, { pnl_ticks: null })] }, /events\[0\]\.pnl_ticks: a number \(ticks\) expected, got null/);
  });

  it('order: one signal right after each bin\'s frame, naming that bin; nothing but end_of_stream after the final one', () => {
    let d = new StreamDecoder();
    d.push(text(signalsConfig()));
    expectError(() => d.push(text(signalMsg(1))), /signal for bin_seq 1 before any bin/);
    d = signalStream([1]);
    expectError(() => d.push(text(signalMsg(1))), /a second signal message for bin_seq 1/);
    d = signalStream([1]);
    d.push(text(gridUpdate(2)));
    expectError(() => d.push(text(signalMsg(2))), /signal while the binary frame of grid_update bin_seq 2 was expected/);
    d = signalStream([1]);
    d.push(text(gridUpdate(2)));
    d.push(frame());
    expectError(() => d.push(text(signalMsg(3))), /bin_seq 3 .* right after the frame of bin_seq 2/);
    d = signalStream([1]);
    d.push(text(gridUpdate(2)));
    d.push(frame());
    expectError(() => d.push(text(gridUpdate(3))), /grid_update while the signal message of bin_seq 2 was expected/);
    d = signalStream([1, 2]);
    d.push(text(signalMsg(2, { final: true, score: null })));
    expectError(() => d.push(text(gridUpdate(3))), /grid_update after the final signal message/);
    d = signalStream([1, 2]);
    expectError(() => d.push(text(signalMsg(1, { final: true, score: null }))), /final.*bin_seq 1 is before the last bin 2/);
    d = signalStream([1, 2]);
    expectError(() => d.checkEnd(), /end_of_stream without the final signal message/);
    d = signalStream([1]);
    d.push(text(gridUpdate(2)));
    d.push(frame());
    expectError(() => d.checkEnd(), /end_of_stream while the signal message of bin_seq 2 was expected/);
    const empty = new StreamDecoder(); // a window without bins: no final message either
    empty.push(text(signalsConfig()));
    empty.checkEnd();
    started().checkEnd(); // a plain stream never needs one
  });
});

describe('stream -> GoldFeatureRuntime (the parity fixture replayed as WebSocket messages)', () => {
  it('decoded frames feed the gold runtime and reproduce expected.arrow', () => {
    const dir = fileURLToPath(new URL('../../../tests/fixtures/gold_parity/', import.meta.url));
    const meta = JSON.parse(readFileSync(dir + 'config.json', 'utf8'));
    const bins = tableFromIPC(readFileSync(dir + 'bins.arrow'));
    const grid = tableFromIPC(readFileSync(dir + 'grid.arrow'));
    const expected = tableFromIPC(readFileSync(dir + 'expected.arrow'));
    const R: number = meta.grid_radius_ticks;
    const rows = 2 * R + 1;
    const fields: GridSchemaField[] = SCHEMA.filter((f) => f.name !== 'rest_depth' && f.name !== 'last_event_id');
    const d = new StreamDecoder();
    const e = d.push(text(runtimeConfig(R, { gold_config: meta.gold_config }, fields)));
    if (e.kind !== 'runtime_config') throw new Error('no config');
    expect(e.config.tick_int).toBe(BigInt(meta.tick_int));
    const gold = createGoldRuntime(e.config);
    const nBins = 200;
    let maxDiff = 0;
    const gridCols = new Map(grid.schema.fields.map((f) => [f.name, grid.getChild(f.name)!.toArray() as Float64Array]));
    for (let b = 0; b < nBins; b++) {
      const slice = (c: string) => gridCols.get(c)!.slice(b * rows, (b + 1) * rows);
      const sign = (c: string) => new Int8Array(rows).fill(Number(bins.getChild(c)!.get(b)));
      const t = tableFromArrays({
        k: (gridCols.get('k') as unknown as Int32Array).slice(b * rows, (b + 1) * rows),
        ...Object.fromEntries(fields.filter((f) => f.dtype === 'float64').map((f) => [f.name, slice(f.name)])),
        ask_reprice_sign: sign('ask_reprice_sign'), bid_reprice_sign: sign('bid_reprice_sign'),
      });
      d.push(text(gridUpdate(Number(bins.getChild('bin_seq')!.get(b)), {
        spot_ref_price_int: String(bins.getChild('spot_ref_price_int')!.get(b)), book_valid: bins.getChild('book_valid')!.get(b),
      })));
      const ev = d.push(tableToIPC(t, 'stream'));
      if (ev.kind !== 'bin') throw new Error('no bin');
      const out = gold.step(goldInput(ev.bin));
      for (const c of GOLD_FLOAT_COLUMNS) {
        const x = expected.getChild(c)!.toArray() as Float64Array;
        for (let j = 0; j < rows; j++) maxDiff = Math.max(maxDiff, Math.abs(out[c][j] - x[b * rows + j]));
      }
      for (const c of GOLD_CODE_COLUMNS) {
        expect(Array.from(out[c])).toEqual(Array.from((expected.getChild(c)!.toArray() as Int8Array).slice(b * rows, (b + 1) * rows)));
      }
    }
    expect(maxDiff).toBeLessThanOrEqual(1e-9);
  });

  it('createGoldRuntime refuses a stream without the gold inputs', () => {
    const d = new StreamDecoder();
    const e = d.push(text(runtimeConfig(2, {}, SCHEMA.filter((f) => f.name !== 'a_pull'))));
    if (e.kind !== 'runtime_config') throw new Error('no config');
    expectError(() => createGoldRuntime(e.config), /does not carry a_pull/);
  });
});
