import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tableFromIPC, type Table } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import {
  GOLD_CODE_COLUMNS, GOLD_FLOAT_COLUMNS, GOLD_INPUTS, GoldConfigError, GoldFeatureRuntime, mad, median, MAD_SCALE,
  parseGoldConfig, robustZ, sortedMad, sortedMedian, state5, windowMean, windowPush, type GoldBinInput,
  type GoldFeatureConfig, type GoldGridInput,
} from './index';

const FIXTURES = fileURLToPath(new URL('../../../tests/fixtures/gold_parity/', import.meta.url));

function readTable(name: string): Table {
  return tableFromIPC(readFileSync(FIXTURES + name));
}

function col<T extends ArrayLike<unknown>>(t: Table, name: string): T {
  const c = t.getChild(name);
  if (c === null) throw new Error(`fixture column ${name} missing`);
  return c.toArray() as unknown as T;
}

describe('gold parity with the Python golden vectors (tests/fixtures/gold_parity)', () => {
  const meta = JSON.parse(readFileSync(FIXTURES + 'config.json', 'utf8'));
  const cfg = parseGoldConfig(meta.gold_config);
  const bins = readTable('bins.arrow');
  const grid = readTable('grid.arrow');
  const expected = readTable('expected.arrow');
  const radius: number = meta.grid_radius_ticks;
  const rows = 2 * radius + 1;
  const nBins = bins.numRows;

  it('fixture shape matches config.json', () => {
    expect(meta.gold_version).toBe('gold-1');
    expect(nBins).toBe(meta.bins);
    expect(grid.numRows).toBe(nBins * rows);
    expect(expected.numRows).toBe(nBins * rows);
  });

  it('reproduces every gold column bin by bin (1e-9, codes exact)', () => {
    const rt = new GoldFeatureRuntime(cfg, radius, BigInt(meta.tick_int));
    const seqs = col<BigInt64Array>(bins, 'bin_seq');
    const spots = col<BigInt64Array>(bins, 'spot_ref_price_int');
    const valid = bins.getChild('book_valid')!;
    const ask = col<Int8Array>(bins, 'ask_reprice_sign');
    const bid = col<Int8Array>(bins, 'bid_reprice_sign');
    const gk = col<Int32Array>(grid, 'k');
    const gcols = Object.fromEntries(GOLD_INPUTS.map((c) => [c, col<Float64Array>(grid, c)]));
    const exp = Object.fromEntries([...GOLD_FLOAT_COLUMNS, ...GOLD_CODE_COLUMNS].map((c) => [c, col<Float64Array | Int8Array>(expected, c)]));
    const expValid = expected.getChild('gold_valid')!;
    const expK = col<Int32Array>(expected, 'k');
    const expSeq = col<BigInt64Array>(expected, 'bin_seq');

    const maxDiff: Record<string, number> = Object.fromEntries(GOLD_FLOAT_COLUMNS.map((c) => [c, 0]));
    const codeMismatch: Record<string, number> = Object.fromEntries(GOLD_CODE_COLUMNS.map((c) => [c, 0]));
    const codeCounts = new Map<number, number>();
    let invalidBins = 0;
    let resetsSeen = false;
    let prevSpotTick: number | null = null;
    for (let b = 0; b < nBins; b++) {
      const lo = b * rows;
      const hi = lo + rows;
      const g = { k: gk.subarray(lo, hi) } as Record<string, ArrayLike<number>>;
      for (const c of GOLD_INPUTS) g[c] = gcols[c].subarray(lo, hi);
      const input: GoldBinInput = {
        binSeq: seqs[b], spotRefPriceInt: spots[b], bookValid: valid.get(b) as boolean,
        askRepriceSign: ask[b], bidRepriceSign: bid[b], grid: g as unknown as GoldGridInput,
      };
      const out = rt.step(input);
      expect(out.binSeq).toBe(Number(seqs[b]));
      if (!out.goldValid) invalidBins++;
      if (out.spotTick !== null && prevSpotTick !== null && out.spotTick !== prevSpotTick) resetsSeen = true;
      prevSpotTick = out.spotTick;
      for (let j = 0; j < rows; j++) {
        const r = lo + j;
        if (out.k[j] !== expK[r] || BigInt(out.binSeq) !== expSeq[r] || out.goldValid !== expValid.get(r)) {
          throw new Error(`row ${r}: key/valid mismatch`);
        }
        for (const c of GOLD_FLOAT_COLUMNS) {
          const d = Math.abs(out[c][j] - (exp[c][r] as number));
          if (!(d <= maxDiff[c])) maxDiff[c] = Number.isNaN(d) ? Infinity : d;
        }
        for (const c of GOLD_CODE_COLUMNS) if (out[c][j] !== exp[c][r]) codeMismatch[c]++;
        const fc = out.flow_state_code[j];
        codeCounts.set(fc, (codeCounts.get(fc) ?? 0) + 1);
      }
    }
    console.info(`gold parity over ${nBins} bins x ${rows} rows: max |diff| per column`, maxDiff,
      'code mismatches', codeMismatch, 'flow_state_code counts', Object.fromEntries(codeCounts),
      'invalid bins', invalidBins);
    for (const c of GOLD_FLOAT_COLUMNS) expect(maxDiff[c], c).toBeLessThanOrEqual(meta.tolerance);
    for (const c of GOLD_CODE_COLUMNS) expect(codeMismatch[c], c).toBe(0);
    // the fixture is a real test: the scorer fires both ways and the spot moves (series resets)
    expect(codeCounts.get(1) ?? 0).toBeGreaterThan(0);
    expect(codeCounts.get(-1) ?? 0).toBeGreaterThan(0);
    expect(resetsSeen).toBe(true);
    expect(rt.ready).toBe(true);
  });
});

describe('median / MAD helpers (numpy definitions)', () => {
  it('median of odd and even counts, NaN skipped', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([5])).toBe(5);
    expect(median([NaN, 7, 1])).toBe(4);
    expect(median([])).toBeNaN();
  });

  it('MAD by hand', () => {
    // x = [1, 2, 3, 4, 100]: median 3, |x - 3| = [2, 1, 0, 1, 97] -> median 1
    expect(mad([1, 2, 3, 4, 100])).toBe(1);
    // x = [1, 2, 4, 8]: median 3, |x - 3| = [2, 1, 1, 5] -> (1 + 2) / 2
    expect(mad([1, 2, 4, 8])).toBe(1.5);
    // x = [0, 0, 0, 10]: median 0, deviations [0, 0, 0, 10] -> 0
    expect(mad([0, 0, 0, 10])).toBe(0);
    expect(mad([-1.5, 2.5])).toBe(2);
  });

  it('sorted-copy MAD (k-th deviation search) equals the sort-based reference', () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    for (let trial = 0; trial < 500; trial++) {
      const n = 1 + Math.floor(rand() * 40);
      const xs = Array.from({ length: n }, () => (rand() < 0.3 ? Math.floor(rand() * 5) : rand() * 10 - 5));
      const a = Float64Array.from(xs).sort();
      const m = sortedMedian(a, 0, n);
      expect(m).toBe(median(xs));
      expect(sortedMad(a, 0, n, m)).toBe(mad(xs));
    }
  });

  it('robust z: 0 below min_periods, for a constant window and for a tiny scale; NaN for undefined x', () => {
    const a = Float64Array.from([1, 2, 3, 4, 100]);
    expect(robustZ(10, a, 0, 5, 6, 1e-12)).toBe(0);
    expect(robustZ(10, a, 0, 5, 5, 1e-12)).toBe((10 - 3) / (MAD_SCALE * 1));
    expect(robustZ(NaN, a, 0, 5, 2, 1e-12)).toBeNaN();
    expect(robustZ(9, Float64Array.from([2, 2, 2]), 0, 3, 2, 1e-12)).toBe(0);
    expect(robustZ(9, Float64Array.from([0, 0, 0, 10]), 0, 4, 2, 1e-12)).toBe(0); // MAD 0
    expect(robustZ(9, Float64Array.from([0, 1e-14]), 0, 2, 2, 1e-12)).toBe(0); // scale <= eps
  });

  it('window FIFO keeps the last W samples and a sorted copy of the defined ones', () => {
    const cap = 4;
    const fifo = new Float64Array(cap);
    const srt = new Float64Array(cap);
    const cur = { head: 0, length: 0, nSorted: 0 };
    const pushed: number[] = [];
    for (const x of [5, NaN, 3, 9, 1, NaN, NaN, 7, 2, 2]) {
      windowPush(fifo, 0, srt, 0, cap, cur, x);
      pushed.push(x);
      const last = pushed.slice(-cap).filter((v) => !Number.isNaN(v)).sort((p, q) => p - q);
      expect(cur.length).toBe(Math.min(pushed.length, cap));
      expect(Array.from(srt.subarray(0, cur.nSorted))).toEqual(last);
    }
  });

  it('window mean sums the last min(w, count) ring samples', () => {
    const ring = Float64Array.from([4, 5, 1, 2, 3]); // written 1,2,3,4,5 into a ring of 5 -> newest at 1
    expect(windowMean(ring, 0, 5, 1, 7, 3)).toBe((3 + 4 + 5) / 3);
    expect(windowMean(ring, 0, 5, 1, 2, 3)).toBe((4 + 5) / 2);
    expect(windowMean(ring, 0, 5, 1, 7, 5)).toBe(3);
  });
});

describe('GoldFeatureRuntime series rules (hand-built input)', () => {
  const cfg: GoldFeatureConfig = parseGoldConfig({
    cell_width_ms: 100, c1: 1, c2: 0, c3: 0, c4: 1, c5: 0, c6: 0, c7: 0,
    flow_windows: [1], flow_rollup_weights: [1], flow_derivative_weights: [1, 0, 0],
    flow_tanh_scale: 1, flow_neutral_threshold: 0.5, flow_zscore_window_bins: 3, flow_zscore_min_periods: 2,
  });
  const R = 1;
  const TICK = 250;
  const zeros = () => new Float64Array(3);
  /** composite = raw = (v_add - v_pull) / (|v_add| + |v_pull| + eps): set v_add per row, v_pull 0. */
  function bin(seq: number, spotTick: number, vAdd: number[], opts: Partial<GoldBinInput> = {}): GoldBinInput {
    return {
      binSeq: seq, spotRefPriceInt: String(spotTick * TICK), bookValid: true, askRepriceSign: 0, bidRepriceSign: 0,
      grid: { k: [-1, 0, 1], v_add: Float64Array.from(vAdd), v_rest_depth: zeros(), a_add: zeros(), v_pull: zeros(),
        v_fill: zeros(), a_pull: zeros() },
      ...opts,
    };
  }
  const c = (x: number) => x / (Math.abs(x) + 1e-12); // the composite of one sample

  it('derivatives are undefined (0) until 2/3/4 samples, then finite differences / dt', () => {
    const rt = new GoldFeatureRuntime(cfg, R, TICK);
    const vals = [1, -1, 1, 1];
    const outs = vals.map((v, i) => rt.step(bin(10 + i, 100, [0, v, 0])));
    const d1 = outs.map((o) => o.composite_d1[1]);
    const d2 = outs.map((o) => o.composite_d2[1]);
    const d3 = outs.map((o) => o.composite_d3[1]);
    const dt = 0.1;
    expect(d1).toEqual([0, (c(-1) - c(1)) / dt, (c(1) - c(-1)) / dt, (c(1) - c(1)) / dt]);
    expect(d2[0]).toBe(0);
    expect(d2[1]).toBe(0);
    expect(d2[2]).toBe((d1[2] - d1[1]) / dt);
    expect(d3.slice(0, 3)).toEqual([0, 0, 0]);
    expect(d3[3]).toBe((d2[3] - d2[2]) / dt);
  });

  it('a series follows its absolute tick when the spot moves, and restarts on a gap or an invalid bin', () => {
    const rt = new GoldFeatureRuntime(cfg, R, TICK);
    rt.step(bin(1, 100, [0, 1, 0]));
    // spot up one tick: absolute tick 100 is now k = -1 and continues (n = 2 -> d1 defined)
    let o = rt.step(bin(2, 101, [-1, 0, 0]));
    expect(o.composite_d1[0]).toBe((c(-1) - c(1)) / 0.1);
    expect(o.composite_d1[1]).toBe((0 - 0) / 0.1); // tick 101 was k = +1 in bin 1
    expect(o.composite_d1[2]).toBe(0); // tick 102 is new: undefined
    expect(o.k).toEqual(Int32Array.from([-1, 0, 1]));
    expect(o.spotTick).toBe(101);
    // a bin_seq gap: every series restarts
    o = rt.step(bin(4, 101, [1, 1, 1]));
    expect(Array.from(o.composite_d1)).toEqual([0, 0, 0]);
    o = rt.step(bin(5, 101, [-1, -1, -1]));
    expect(o.composite_d1[0]).toBe((c(-1) - c(1)) / 0.1);
    // an invalid bin emits zeros and breaks the series
    for (const bad of [{ bookValid: false }, { spotRefPriceInt: 0n }]) {
      o = rt.step(bin(6, 101, [5, 5, 5], bad));
      expect(o.goldValid).toBe(false);
      expect(o.spotTick).toBeNull();
      for (const name of [...GOLD_FLOAT_COLUMNS, ...GOLD_CODE_COLUMNS]) expect(Array.from(o[name]).every((x) => x === 0)).toBe(true);
    }
    o = rt.step(bin(7, 101, [1, 1, 1]));
    expect(Array.from(o.composite_d1)).toEqual([0, 0, 0]);
    // slot reuse: a jump of 2R+1 ticks lands tick 104 in tick 101's slot; it must not continue that series
    o = rt.step(bin(8, 104, [-1, -1, -1]));
    expect(Array.from(o.composite_d1)).toEqual([0, 0, 0]);
  });

  it('flow score: z over the window, tanh, threshold codes; state5 from the BBO reprice signs', () => {
    const rt = new GoldFeatureRuntime(cfg, R, TICK);
    // d1 at k=0: c: 1, -1, -1, 1 -> d1 = NaN, -20, 0, 20 (dt 0.1). Window 3, min 2.
    const outs = [1, -1, -1, 1].map((v, i) => rt.step(bin(i, 100, [0, v, 0], { askRepriceSign: 1, bidRepriceSign: 0 })));
    const d1 = outs.map((o) => o.composite_d1[1]);
    expect(outs[0].flow_score[1]).toBe(0);
    expect(outs[1].flow_score[1]).toBe(0); // 1 defined value < min_periods 2
    // bin 2: window [NaN, d1a, d1b] -> defined [-20, 0]: median -10, MAD 10, z = (0 + 10) / 14.826
    const med = (d1[1] + d1[2]) / 2;
    const z2 = (d1[2] - med) / (MAD_SCALE * mad([d1[1], d1[2]]));
    expect(outs[2].flow_score[1]).toBe(Math.tanh(z2 / 1));
    // bin 3: window [-20, 0, 20]: median 0, MAD 20 -> z = 20 / 29.652
    const z3 = (d1[3] - median(d1.slice(1))) / (MAD_SCALE * mad(d1.slice(1)));
    expect(outs[3].flow_score[1]).toBe(Math.tanh(z3));
    expect(outs[3].flow_state_code[1]).toBe(Math.tanh(z3) >= 0.5 ? 1 : 0);
    expect(outs[2].flow_state_code[1]).toBe(Math.tanh(z2) >= 0.5 ? 1 : 0);
    expect(Array.from(outs[0].state5_code)).toEqual([1, 0, 2]);
    expect(rt.ready).toBe(true);
  });

  it('state5 table is symmetric', () => {
    for (const k of [-3, 0, 2]) for (const a of [-1, 0, 1]) for (const b of [-1, 0, 1]) {
      expect(state5(-k, -b, -a)).toBe(-state5(k, a, b) || 0);
    }
    expect(state5(1, 1, 0)).toBe(2);
    expect(state5(-1, 1, 0)).toBe(1);
    expect(state5(1, -1, 1)).toBe(0);
  });

  it('rejects a grid that is not k = -R..R and a bad config', () => {
    const rt = new GoldFeatureRuntime(cfg, R, TICK);
    const b = bin(1, 100, [0, 0, 0]);
    expect(() => rt.step({ ...b, grid: { ...b.grid, k: [1, 0, -1] } })).toThrow(/k = -R..R/);
    expect(() => parseGoldConfig({ ...cfg, flow_windows: [1, 2] })).toThrow(GoldConfigError);
    expect(() => parseGoldConfig({ ...cfg, extra: 1 })).toThrow(/unknown field/);
  });
});
