import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { StreamDecoder, type GridSchemaField, type StreamBin } from '../stream/contract';
import { EmaLinesRuntime } from './ema';
import { GOLD_FIELDS, buildLines, createViewerModel, ingestBin } from './model';
import { parseVisualization } from './vizconfig';

const GOLD_CONFIG = {
  cell_width_ms: 100, c1: 1.0, c2: 0.5, c3: 0.3, c4: 1.0, c5: 1.5, c6: 0.5, c7: 0.3,
  flow_windows: [5, 10, 20, 40], flow_rollup_weights: [1.0, 1.0, 1.0, 1.0], flow_derivative_weights: [0.55, 0.3, 0.15],
  flow_tanh_scale: 3.0, flow_neutral_threshold: 0.15, flow_zscore_window_bins: 300, flow_zscore_min_periods: 75,
  composite_eps: 1e-12, scale_eps: 1e-12, series: 'absolute_tick',
};
const R = 2;
const FLOATS = ['v_add', 'v_rest_depth', 'a_add', 'v_pull', 'v_fill', 'a_pull', 'rest_depth', 'fill_mass'];
const VP_SCHEMA: GridSchemaField[] = [
  { name: 'k', dtype: 'int32', role: 'grid_index' },
  ...FLOATS.map((name) => ({ name, dtype: 'float64' as const, role: null })),
  { name: 'last_event_id', dtype: 'int64', role: 'metadata' },
  { name: 'ask_reprice_sign', dtype: 'int8', role: 'indicator' },
  { name: 'bid_reprice_sign', dtype: 'int8', role: 'indicator' },
];

function config(model: string, fields: GridSchemaField[], extra: Record<string, unknown> = {}) {
  return JSON.stringify({
    ...extra,
    type: 'runtime_config', product_type: 'future_mbo', symbol: 'ESH4', price_scale: 1e-9, tick_size: 0.25,
    grid_radius_ticks: R, cell_width_ms: 100, projection_horizons_bins: [1, 2], projection_horizons_ms: [100, 200],
    stream_format: 'dense_grid', grid_rows: 2 * R + 1, model_config: { model }, gold_config: GOLD_CONFIG, grid_schema_fields: fields,
  });
}

function update(seq: number, spot: bigint, over: Record<string, unknown> = {}) {
  return JSON.stringify({
    type: 'grid_update', ts_ns: '1', bin_seq: seq, bin_start_ns: String(1700000000000000000n + BigInt(seq - 1) * 100_000_000n),
    bin_end_ns: String(1700000000000000000n + BigInt(seq) * 100_000_000n),
    bin_event_count: 1, event_id: seq, mid_price: 1, spot_ref_price_int: String(spot),
    best_bid_price_int: String(spot - 250_000_000n), best_ask_price_int: String(spot + 250_000_000n), book_valid: true, ...over,
  });
}

function vpFrame(seq: number): ArrayBuffer {
  const n = 2 * R + 1;
  const cols: Record<string, ArrayLike<unknown>> = { k: Int32Array.from({ length: n }, (_, j) => j - R) };
  FLOATS.forEach((c, i) => {
    cols[c] = Float64Array.from({ length: n }, (_, j) => (c === 'fill_mass' ? (j === R ? seq : 0) : (j + 1) * (i + 1) + seq));
  });
  cols.last_event_id = BigInt64Array.from({ length: n }, () => 1n);
  cols.ask_reprice_sign = Int8Array.from({ length: n }, () => 1);
  cols.bid_reprice_sign = Int8Array.from({ length: n }, () => 0);
  return tableToIPC(tableFromArrays(cols as Parameters<typeof tableFromArrays>[0]), 'stream').slice().buffer;
}

function decodeAll(d: StreamDecoder, msgs: (string | ArrayBuffer)[]): StreamBin[] {
  const bins: StreamBin[] = [];
  for (const m of msgs) {
    const ev = d.push(m);
    if (ev.kind === 'bin') bins.push(ev.bin);
  }
  return bins;
}

describe('viewer model (stream → ring)', () => {
  it('buffers silver floats and gold outputs per bin, BBO/spot in ticks', () => {
    const d = new StreamDecoder();
    d.push(config('vacuum_pressure', VP_SCHEMA));
    const m = createViewerModel(d.config!, 4);
    expect(m.goldNote).toBeNull();
    expect(m.ring.fields).toEqual([...FLOATS, ...GOLD_FIELDS]);
    const spot = 4_800_000_000_000n; // 4800.00 / 0.25 = 19200 ticks
    const bins = decodeAll(d, [update(1, spot), vpFrame(1), update(2, spot + 250_000_000n, { book_valid: false }), vpFrame(2)]);
    for (const b of bins) ingestBin(m, b);
    expect(m.ring.size).toBe(2);
    const s0 = m.ring.scalarsAt(0);
    expect([s0.spotTick, s0.bidTick, s0.askTick, s0.tsMs]).toEqual([19200, 19199, 19201, 1_700_000_000_100]);
    const s1 = m.ring.scalarsAt(1);
    expect(s1.spotTick).toBe(19201);
    expect(Number.isNaN(s1.bidTick) && Number.isNaN(s1.askTick)).toBe(true); // invalid book: no BBO drawn
    expect(Array.from(m.ring.column('rest_depth', 1))).toEqual([9, 16, 23, 30, 37]);
    expect(m.ring.value('fill_mass', 1, R)).toBe(2);
    // gold ran: finite outputs on every row (zeros while warming up / for the invalid bin)
    for (const f of ['flow_score', 'composite', 'flow_state_code']) {
      expect(Array.from(m.ring.column(f, 0)).every(Number.isFinite)).toBe(true);
    }
    expect(Array.from(m.ring.column('flow_score', 1))).toEqual([0, 0, 0, 0, 0]);
  });

  it('ema_ensemble: one k = 0 row lands on the centre row, gold is off with a reason', () => {
    const schema: GridSchemaField[] = [
      { name: 'k', dtype: 'int32', role: 'grid_index' },
      { name: 'fill_mass', dtype: 'float64', role: null },
      { name: 'rest_depth', dtype: 'float64', role: null },
    ];
    const d = new StreamDecoder();
    d.push(config('ema_ensemble', schema));
    const m = createViewerModel(d.config!, 3);
    expect(m.gold).toBeNull();
    expect(m.goldNote).toMatch(/gold off/);
    const frame = tableToIPC(tableFromArrays({
      k: Int32Array.from([0]), fill_mass: Float64Array.from([1]), rest_depth: Float64Array.from([7]),
    }), 'stream').slice().buffer;
    for (const b of decodeAll(d, [update(1, 4_800_000_000_000n), frame])) ingestBin(m, b);
    const col = Array.from(m.ring.column('rest_depth', 0));
    expect(col[R]).toBe(7);
    expect(col.filter(Number.isNaN)).toHaveLength(2 * R);
  });

  describe('ema_lines (SPEC §9)', () => {
    const EMA_SCHEMA: GridSchemaField[] = [
      { name: 'k', dtype: 'int32', role: 'grid_index' },
      { name: 'fill_mass', dtype: 'float64', role: 'force' },
      { name: 'rest_depth', dtype: 'float64', role: 'force' },
      { name: 'last_event_id', dtype: 'int64', role: 'metadata' },
    ];
    const EMA_PARAMS = {
      periods: [5, 10, 20, 50], weights: [0.4, 0.3, 0.2, 0.1], sma_periods: [10, 20], signal_tanh_scale: 1.5,
      line_width: 1.5, lines_label: 'EMA', sma_label: 'SMA',
    };
    // configs/serving/ema_ensemble.yaml's visualization
    const EMA_VIZ = {
      display_mode: 'candle',
      overlays: [
        { id: 'spot_trail', type: 'spot_trail', label: 'Spot', z_order: 10 },
        { id: 'bbo_spread', type: 'bbo_spread', label: 'Spread', z_order: 15 },
        { id: 'ema_lines', type: 'ema_lines', label: 'EMA ensemble', z_order: 20, params: EMA_PARAMS },
        { id: 'projection_bands', type: 'projection_bands', label: 'Projection (EMA signal)', z_order: 30, params: { signal_field: 'ema_signal', composite_scale: 6.0 } },
      ],
    };
    const emaFrame = (seq: number): ArrayBuffer => tableToIPC(tableFromArrays({
      k: Int32Array.from([0]), fill_mass: Float64Array.from([seq % 2]), rest_depth: Float64Array.from([10 + seq]),
      last_event_id: BigInt64Array.from([BigInt(seq)]),
    }), 'stream').slice().buffer;
    const TICK = 250_000_000n; // 0.25 at price_scale 1e-9
    const BASE = 4_800_000_000_000n;

    it('1-row ema_ensemble frames: EMA/SMA lines and ema_signal land on the centre row, invalid spots are held', () => {
      const d = new StreamDecoder();
      d.push(config('ema_ensemble', EMA_SCHEMA, { visualization: EMA_VIZ }));
      const m = createViewerModel(d.config!, 8);
      expect(m.gold).toBeNull();
      expect(m.lineNotes).toEqual([]);
      expect(m.silverFields).toEqual(['fill_mass', 'rest_depth']);
      expect(m.derivedFields).toEqual(['ema_5', 'ema_10', 'ema_20', 'ema_50', 'sma_10', 'sma_20', 'ema_signal']);
      expect(m.ring.fields).toEqual(['fill_mass', 'rest_depth', ...m.derivedFields]);
      expect(m.lineSets.get('ema_lines')).toMatchObject({ type: 'ema_lines', lineWidth: 1.5, emaPeriods: [5, 10, 20, 50], smaPeriods: [10, 20], emaLabel: 'EMA', smaLabel: 'SMA' });
      // spot rises 0, +1, +2 ticks, then an invalid book and a zero spot, then +3 ticks
      const msgs = [
        update(1, BASE), emaFrame(1),
        update(2, BASE + TICK), emaFrame(2),
        update(3, BASE + 2n * TICK), emaFrame(3),
        update(4, BASE + 9n * TICK, { book_valid: false }), emaFrame(4),
        update(5, 0n, { best_bid_price_int: '0', best_ask_price_int: '0' }), emaFrame(5),
        update(6, BASE + 3n * TICK), emaFrame(6),
      ];
      const bins = decodeAll(d, msgs);
      expect(bins.map((b) => b.frame.numRows)).toEqual([1, 1, 1, 1, 1, 1]);
      for (const b of bins) ingestBin(m, b);
      expect(m.ring.size).toBe(6);
      // the same closes through a bare runtime, the invalid bins as null
      const ref = new EmaLinesRuntime(m.ema!.params);
      const steps = [4800, 4800.25, 4800.5, null, null, 4800.75].map((c) => ref.step(c));
      const at = (f: string, i: number) => m.ring.value(f, i, R);
      steps.forEach((s, i) => {
        [5, 10, 20, 50].forEach((p, j) => expect(at(`ema_${p}`, i)).toBeCloseTo(s.emas[j], 2)); // Float32 ring
        [10, 20].forEach((p, j) => expect(at(`sma_${p}`, i)).toBeCloseTo(s.smas[j], 2));
        expect(at('ema_signal', i)).toBeCloseTo(s.signal, 6);
        // only the centre row is written
        expect(Array.from(m.ring.column('ema_signal', i)).filter(Number.isNaN)).toHaveLength(2 * R);
      });
      expect(at('ema_5', 0)).toBe(4800);
      expect(at('ema_signal', 0)).toBe(0); // all EMAs equal on the first bin
      expect(at('ema_signal', 1)).toBeCloseTo(Math.tanh(1.5), 6); // rising: every fast EMA above the slower one
      expect(at('ema_signal', 2)).toBeCloseTo(Math.tanh(1.5), 6);
      // bins 4 (book invalid) and 5 (spot 0): held, not dragged towards 0 or the bogus +9 ticks
      for (const f of ['ema_5', 'ema_50', 'sma_10', 'ema_signal']) {
        expect(at(f, 3)).toBe(at(f, 2));
        expect(at(f, 4)).toBe(at(f, 2));
      }
      expect(at('sma_10', 5)).toBeCloseTo((4800 + 4800.25 + 4800.5 + 4800.75) / 4, 2);
      expect(Number.isNaN(m.ring.scalarsAt(4).spotTick)).toBe(true);
      expect(m.ring.value('rest_depth', 5, R)).toBe(16); // the silver row is still there
      expect(m.ema!.ready).toBe(true);
    });

    it('a 2R+1-row stream with an ema_lines overlay keeps ema_signal on the centre row', () => {
      const d = new StreamDecoder();
      d.push(config('vacuum_pressure', VP_SCHEMA, { visualization: { overlays: [{ id: 'e', type: 'ema_lines', params: { ...EMA_PARAMS, periods: [2, 3], weights: [1] } }] } }));
      const m = createViewerModel(d.config!, 4);
      for (const b of decodeAll(d, [update(1, BASE), vpFrame(1), update(2, BASE + TICK), vpFrame(2)])) ingestBin(m, b);
      expect(m.ring.value('ema_signal', 1, R)).toBeCloseTo(Math.tanh(1.5), 6);
      expect(m.ring.value('ema_2', 1, R)).toBeCloseTo(4800 + (2 / 3) * 0.25, 3);
      expect(Number.isNaN(m.ring.value('ema_signal', 1, 0))).toBe(true);
      expect(m.ring.value('rest_depth', 1, 0)).toBe(9); // silver rows unaffected
    });

    it('bad params and extra overlays become notes, never errors; sma_lines draws SMAs only', () => {
      const lines = buildLines(parseVisualization({
        overlays: [
          { id: 'e1', type: 'ema_lines', z_order: 1, params: EMA_PARAMS },
          { id: 'e2', type: 'ema_lines', z_order: 2, params: EMA_PARAMS },
          { id: 's1', type: 'sma_lines', label: 'slow', z_order: 3, params: { periods: [20, 100], line_width: 2 } },
          { id: 's2', type: 'sma_lines', z_order: 4, params: {} },
        ],
      }));
      expect(lines.ema).not.toBeNull();
      expect(lines.lineNotes).toHaveLength(2);
      expect(lines.lineNotes[0]).toMatch(/overlay e2: only one ema_lines overlay is drawn \(e1/);
      expect(lines.lineNotes[1]).toMatch(/overlay s2 \(sma_lines\) params\.periods: .* expected, got nothing; not drawn/);
      expect([...lines.lineSets.keys()]).toEqual(['e1', 's1']);
      expect(lines.lineSets.get('s1')).toMatchObject({ type: 'sma_lines', emaPeriods: [], smaPeriods: [20, 100], emaLabel: null, smaLabel: 'slow', lineWidth: 2 });
      expect(lines.sma!.periods).toEqual([100]); // sma_20 already comes from the ema_lines runtime
      expect(lines.derivedFields).toEqual(['ema_5', 'ema_10', 'ema_20', 'ema_50', 'sma_10', 'sma_20', 'ema_signal', 'sma_100']);

      const bad = buildLines(parseVisualization({ overlays: [{ id: 'e', type: 'ema_lines', params: { ...EMA_PARAMS, signal_tanh_scale: -1 } }] }));
      expect(bad.ema).toBeNull();
      expect(bad.derivedFields).toEqual([]);
      expect(bad.lineNotes).toEqual(['overlay e (ema_lines) params.signal_tanh_scale: a number > 0 expected, got -1; not drawn']);
    });

    it('sma_lines alone: SMA fields stepped from the spot, no ema_signal', () => {
      const d = new StreamDecoder();
      d.push(config('ema_ensemble', EMA_SCHEMA, { visualization: { display_mode: 'candle', overlays: [{ id: 's', type: 'sma_lines', params: { periods: [2] } }] } }));
      const m = createViewerModel(d.config!, 4);
      expect(m.ema).toBeNull();
      expect(m.ring.has('ema_signal')).toBe(false);
      for (const b of decodeAll(d, [update(1, BASE), emaFrame(1), update(2, BASE + 2n * TICK), emaFrame(2)])) ingestBin(m, b);
      expect(m.ring.value('sma_2', 1, R)).toBeCloseTo(4800.25, 3);
    });
  });
});

describe('viewer model: Gold DSL outputs as fields', () => {
  const spec = {
    version: 1, name: 'tiny', nodes: {
      x: { type: 'silver_ref', field: 'v_add' },
      e: { type: 'temporal_window', source: 'x', agg: 'ewm', alpha: 0.5 },
      pv: { type: 'silver_ref', field: 'v_pull' },
      o1: { type: 'output', source: 'e', name: 'v_add_ewm', dtype: 'float64' },
      o2: { type: 'output', source: 'pv', name: 'v_pull', dtype: 'float64' },
    },
  };

  it('computes every output per bin into the ring (a name taken by a streamed field becomes dsl:<name>)', () => {
    const d = new StreamDecoder();
    d.push(config('vacuum_pressure', VP_SCHEMA, { gold_dsl: { name: 'tiny', spec } }));
    const m = createViewerModel(d.config!, 4);
    expect(m.dslNote).toBeNull();
    expect(m.dslFields).toEqual(['v_add_ewm', 'dsl:v_pull']);
    expect(m.ring.fields).toEqual([...FLOATS, ...GOLD_FIELDS, 'v_add_ewm', 'dsl:v_pull']);
    const spot = 4_800_000_000_000n;
    const bins = decodeAll(d, [update(1, spot), vpFrame(1), update(2, spot), vpFrame(2)]);
    for (const b of bins) ingestBin(m, b);
    // v_add at row j of bin s is (j + 1) * 1 + s: ewm(0.5) of [j + 2, j + 3] = 0.5 * (j + 3) + 0.5 * (j + 2)
    expect(Array.from(m.ring.column('v_add_ewm', 1))).toEqual([0, 1, 2, 3, 4].map((j) => 0.5 * (j + 3) + 0.5 * (j + 2)));
    expect(Array.from(m.ring.column('dsl:v_pull', 1))).toEqual(Array.from(m.ring.column('v_pull', 1)));
  });

  it('starts from the state the server hands over (replay.gold_dsl_state); a bad one only means a warm-up', () => {
    const d = new StreamDecoder();
    const f64 = (xs: number[]) => ({ dtype: 'float64', b64: Buffer.from(Float64Array.from(xs).buffer).toString('base64') });
    const i64 = (xs: bigint[]) => ({ dtype: 'int64', b64: Buffer.from(BigInt64Array.from(xs).buffer).toString('base64') });
    const w = 2 * R + 1;
    // ewm state per slot: count (state_i) and mean (state_f); slot ticks 19200-2..19200+2 seen at bin_start 17e18 / 1e8
    const seq = 1700000000000000000n / 100_000_000n;
    const ticks = [19198n, 19199n, 19200n, 19201n, 19202n].sort((a, b) => Number((a % 5n) - (b % 5n)));
    const state = {
      key: 'x', slot_tick: i64(ticks), slot_seq: i64(Array(w).fill(seq - 1n)), bin_state: i64([1n, seq - 1n]),
      state_i: i64(Array(w).fill(1n)), state_f: f64(Array(w).fill(100)),
    };
    d.push(config('vacuum_pressure', VP_SCHEMA, { gold_dsl: { name: 'tiny', spec }, replay: { gold_dsl_state: state } }));
    const m = createViewerModel(d.config!, 4);
    expect(m.dslNote).toBeNull();
    const bins = decodeAll(d, [update(1, 4_800_000_000_000n), vpFrame(1)]);
    ingestBin(m, bins[0]);
    // every series continues from mean 100: 0.5 * (j + 2) + 0.5 * 100
    expect(Array.from(m.ring.column('v_add_ewm', 0))).toEqual([0, 1, 2, 3, 4].map((j) => 0.5 * (j + 2) + 50));
    const d2 = new StreamDecoder();
    d2.push(config('vacuum_pressure', VP_SCHEMA, { gold_dsl: { name: 'tiny', spec }, replay: { gold_dsl_state: { ...state, state_f: f64([1]) } } }));
    expect(createViewerModel(d2.config!, 4).dslNote).toMatch(/warms up/);
  });

  it('a spec reading an unstreamed column is switched off with a note, not a crash', () => {
    const d = new StreamDecoder();
    const bad = { ...spec, nodes: { ...spec.nodes, x: { type: 'silver_ref', field: 'bid_depth' } } };
    d.push(config('vacuum_pressure', VP_SCHEMA, { gold_dsl: { name: 'tiny', spec: bad } }));
    const m = createViewerModel(d.config!, 4);
    expect(m.dsl).toBeNull();
    expect(m.dslFields).toEqual([]);
    expect(m.dslNote).toMatch(/bid_depth/);
  });
});
