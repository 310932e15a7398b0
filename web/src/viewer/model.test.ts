import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { StreamDecoder, type GridSchemaField, type StreamBin } from '../stream/contract';
import { GOLD_FIELDS, createViewerModel, ingestBin } from './model';

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

function config(model: string, fields: GridSchemaField[]) {
  return JSON.stringify({
    type: 'runtime_config', product_type: 'future_mbo', symbol: 'ESH4', price_scale: 1e-9, tick_size: 0.25,
    grid_radius_ticks: R, cell_width_ms: 100, projection_horizons_bins: [1, 2], projection_horizons_ms: [100, 200],
    stream_format: 'dense_grid', grid_rows: 2 * R + 1, model_config: { model }, gold_config: GOLD_CONFIG, grid_schema_fields: fields,
  });
}

function update(seq: number, spot: bigint, over: Record<string, unknown> = {}) {
  return JSON.stringify({
    type: 'grid_update', ts_ns: '1', bin_seq: seq, bin_start_ns: '1700000000000000000', bin_end_ns: '1700000000100000000',
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
});
