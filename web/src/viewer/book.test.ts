/**
 * Order-book reading: trades from fill_mass (volume, aggressor side), the trade log and volume profile, the book
 * field and its colours, the p99_clamp normalisation, the tiered history ring, the heat cache's pure parts and
 * time-aligned candles.
 */

import { describe, expect, it } from 'vitest';
import { timeCandles } from './candles';
import { buildLut, colorFor } from './colormap';
import { BOOK_FIELD, bookColumn, fieldInfo } from './fields';
import { OUTSIDE, paintColumn, TILE_W, visibleRuns } from './heatcache';
import { Normalizer, p99Abs } from './normalize';
import { BinRing, type BinScalars } from './ring';
import { BUY, SELL, TradeLog, tradesOfBin, volumeProfile } from './trades';

const R = 3;
const TAU = 30;
const DECAY = Math.exp(-0.1 / TAU);
const IN_BIN = Math.exp(-0.05 / TAU);

describe('trades from fill_mass', () => {
  const bin = (spot: number, fill: number[], bid = spot - 1, ask = spot + 1) => ({ spotTick: spot, bidTick: bid, askTick: ask, fill });

  it('volume = fill_n − fill_{n−1}·e^(−cell/τ) at the same absolute tick, side from the previous BBO', () => {
    const prev = bin(100, [0, 0, 5, 0, 10, 0, 0]); // ticks 97..103; bid 99, ask 101
    // tick 101 (ask): 10 decays and 4 contracts trade; tick 99 (bid): 3 trade; tick 100: a decayed mass, no trade
    const next = bin(100, [0, 0, 5 * DECAY + 3 * IN_BIN, 0, 10 * DECAY + 4 * IN_BIN, 0, 0]);
    next.fill[3] = 0;
    const t = tradesOfBin(prev, next, R, 100, TAU);
    expect(t).toEqual([{ tick: 99, volume: 3, side: SELL }, { tick: 101, volume: 4, side: BUY }]);
  });

  it('aligns rows when the spot moves; ticks outside the previous grid and the first bin give nothing', () => {
    const prev = bin(100, [1, 1, 1, 1, 1, 1, 1], 99, 101);
    const moved = bin(102, [1 * DECAY + 2 * IN_BIN, 1 * DECAY, 1 * DECAY, 1 * DECAY, 1 * DECAY, 7, 9], 101, 103);
    // row 0 of the new bin = tick 99 = row 2 of the previous one; rows 5, 6 (ticks 104, 105) were outside it
    expect(tradesOfBin(prev, moved, R, 100, TAU)).toEqual([{ tick: 99, volume: 2, side: SELL }]);
    expect(tradesOfBin(null, moved, R, 100, TAU)).toEqual([]);
    expect(tradesOfBin(prev, bin(NaN, [1, 1, 1, 1, 1, 1, 1]), R, 100, TAU)).toEqual([]);
  });

  it('a fill between the previous bid and ask takes the side of the previous mid', () => {
    const prev = bin(100, [0, 0, 0, 0, 0, 0, 0], 98, 102); // mid 100
    const up = bin(100, [0, 0, 0, 0, 2, 0, 0]); // tick 101 > mid: buyer
    const down = bin(100, [0, 0, 2, 0, 0, 0, 0]); // tick 99 < mid: seller
    expect(tradesOfBin(prev, up, R, 100, TAU)[0].side).toBe(BUY);
    expect(tradesOfBin(prev, down, R, 100, TAU)[0].side).toBe(SELL);
  });
});

describe('TradeLog and the volume profile', () => {
  it('keeps the trades of the last N bins, visits a bin range, grows past its initial size', () => {
    const log = new TradeLog(3, 2);
    for (let p = 0; p < 6; p++) log.add(p, [{ tick: 100 + p, volume: p + 1, side: BUY }, { tick: 100, volume: 1, side: SELL }]);
    expect(log.count).toBe(6); // bins 3, 4, 5
    const seen: number[] = [];
    log.forEach(0, 5, (p) => seen.push(p));
    expect(seen).toEqual([3, 3, 4, 4]);
    expect(log.last()).toEqual({ p: 5, tick: 100, volume: 1, side: SELL });
    const prof = volumeProfile(log, 3, 6);
    expect(prof.lo).toBe(100);
    expect(Array.from(prof.sell)).toEqual([3, 0, 0, 0, 0, 0]);
    expect(Array.from(prof.buy)).toEqual([0, 0, 0, 4, 5, 6]);
    expect([prof.max, prof.total]).toEqual([6, 18]);
    expect(volumeProfile(log, 10, 20).total).toBe(0);
    log.clear();
    expect(log.last()).toBeNull();
  });
});

describe('the book field and its colours', () => {
  it('book = ask_depth − bid_depth; the bid_ask scheme keeps the sides in two families', () => {
    expect(Array.from(bookColumn([5, 0, 0], [0, 0, 7], 3))).toEqual([-5, 0, 7]);
    expect(Array.from(bookColumn(undefined, [1], 2)).every(Number.isNaN)).toBe(true);
    const bid = colorFor('bid_ask', -0.8);
    const ask = colorFor('bid_ask', 0.8);
    expect(bid[2]).toBeGreaterThan(bid[0]); // cold: blue dominates
    expect(ask[0]).toBeGreaterThan(ask[2]); // warm: red dominates
    const lut = buildLut('bid_ask', 2); // gamma in the table: a small level is dimmer than linear
    const lin = buildLut('bid_ask', 1);
    expect(lut[160] & 0xff).toBeLessThan(lin[160] & 0xff);
    expect(fieldInfo(BOOK_FIELD).scheme).toBe('bid_ask');
  });

  it('field info is data-driven: units from the silver role, gold names, any other field unitless', () => {
    expect(fieldInfo('v_add', 'velocity').units).toBe('contracts/s');
    expect(fieldInfo('j_rest_depth', 'jerk')).toMatchObject({ units: 'contracts/s³', signed: true, scheme: 'pressure_vacuum' });
    expect(fieldInfo('rest_depth', 'force')).toMatchObject({ signed: false, scheme: 'thermal', normalization: 'p99_clamp' });
    expect(fieldInfo('flow_score').units).toMatch(/score/);
    expect(fieldInfo('my_dsl_output')).toMatchObject({ units: 'unitless', signed: true, normalization: null });
  });

  it('p99_clamp scales by an EW of each update\'s p99 of the non-zero |x|', () => {
    expect(p99Abs([0, 0, 3, -5, NaN, 1])).toBe(5);
    expect(Number.isNaN(p99Abs([0, NaN]))).toBe(true);
    const n = new Normalizer('p99_clamp', { quantileAlpha: 0.5 });
    n.update([10, -20, 0]);
    expect(n.scale).toBe(20);
    expect([n.apply(10), n.apply(-40), n.apply(0)]).toEqual([0.5, -1, 0]);
    n.update([40]);
    expect(n.scale).toBe(30);
    expect(n.describe().full).toBe(30);
  });
});

const sc = (binSeq: number, tsMs = binSeq * 100, spotTick = 100): BinScalars => ({
  binSeq, spotTick, bidTick: spotTick - 1, askTick: spotTick + 1, bookValid: true, tsMs,
});

describe('BinRing tiers', () => {
  it('shallow fields keep the last bins only; pinned and promoted ones the whole history', () => {
    const r = new BinRing(6, 1, ['deep', 'a', 'b'], { shallow: 2, pinned: ['deep'], maxDeep: 2 });
    for (let s = 0; s < 8; s++) r.push(sc(s), { deep: [s], a: [10 + s], b: [20 + s] });
    expect([r.size, r.first, r.depth('deep'), r.depth('a')]).toEqual([6, 2, 6, 2]);
    expect(r.value('deep', 0, 0)).toBe(2);
    expect(r.holds('a', 3)).toBe(false);
    expect(Number.isNaN(r.value('a', 3, 0))).toBe(true); // evicted from the shallow tier: NaN, not stale
    expect(r.value('a', 5, 0)).toBe(17);
    expect(r.promote('a')).toBeNull(); // copies the 2 held bins, keeps everything from now on
    for (let s = 8; s < 12; s++) r.push(sc(s), { deep: [s], a: [10 + s], b: [20 + s] });
    expect(r.depth('a')).toBe(6);
    expect(Array.from({ length: 6 }, (_, i) => r.value('a', i, 0))).toEqual([16, 17, 18, 19, 20, 21]);
    expect(r.promote('b')).toBe('a'); // maxDeep 2: the oldest promoted field goes back to the shallow tier
    expect([r.isDeep('a'), r.isDeep('b'), r.isDeep('deep')]).toEqual([false, true, true]);
    expect(r.value('a', 5, 0)).toBe(21);
    expect(r.seqOf(0)).toBe(6);
  });

  it('finds bins by time', () => {
    const r = new BinRing(4, 1, ['a']);
    for (const t of [100, 200, 400, 500]) r.push(sc(t / 100, t), {});
    expect([r.indexAtOrBefore(50), r.indexAtOrBefore(100), r.indexAtOrBefore(350), r.indexAtOrBefore(9e9)]).toEqual([-1, 0, 1, 3]);
  });
});

describe('heat cache (pure parts)', () => {
  it('paints a bin\'s grid rows at their absolute ticks, OUTSIDE elsewhere', () => {
    const px = new Uint32Array(2 * 10);
    const lut = Uint32Array.from({ length: 256 }, (_, i) => i);
    // top tick 109: rows 0..9 = ticks 109..100; the bin's spot 104, R 3: ticks 101..107
    paintColumn(px, 2, 1, 10, 109, [-1, 0, 1, NaN, 0.5, 0.5, 0.5], 104, R, lut, (v) => v);
    const col = Array.from({ length: 10 }, (_, y) => px[y * 2 + 1]);
    expect(col[0]).toBe(OUTSIDE); // tick 109
    expect(col[2]).toBe(lut[Math.round(0.5 * 127.5 + 127.5)]); // tick 107 (row 6)
    expect(col[5]).not.toBe(OUTSIDE); // tick 104: NaN → background, not OUTSIDE
    expect(col[8]).toBe(lut[0]); // tick 101 = row 0 = −1
    expect(col[9]).toBe(OUTSIDE); // tick 100
  });

  it('splits visible bins into runs contiguous in time and in one tile', () => {
    const cap = TILE_W + 10;
    const r = new BinRing(cap, 1, []);
    for (let s = 0; s < TILE_W + 5; s++) r.push(sc(s, s === 100 ? 100 * 100 + 50 : s * 100), {}); // a late bin at 100
    // bin 100 ends 50 ms late: its own run boundary? no: 50 ms is within half a cell; bins 0..TILE_W-1 | TILE_W..
    let runs = visibleRuns(r, 0, r.size - 1, 100);
    expect(runs.map((x) => [x.i0, x.i1, x.tile])).toEqual([[0, TILE_W - 1, 0], [TILE_W, TILE_W + 4, 1]]);
    const g = new BinRing(8, 1, []);
    for (const t of [100, 200, 300, 600, 700]) g.push(sc(t / 100, t), {}); // a 2-bin gap
    runs = visibleRuns(g, 0, 4, 100);
    expect(runs.map((x) => [x.i0, x.i1, x.x])).toEqual([[0, 2, 0], [3, 4, 3]]);
  });
});

describe('time candles', () => {
  it('fold bins ending in (t0, t1] into wall-clock intervals; open = previous close', () => {
    const bins = [1, 2, 3, 4, 5, 6, 7].map((k) => ({ binSeq: k, tsMs: k * 500, spot: 100 + k, bid: 99 + k, ask: 101 + k }));
    const c = timeCandles(bins, 1000, 95);
    expect(c.map((x) => [x.t0, x.open, x.close, x.low, x.high, x.bins])).toEqual([
      [0, 95, 102, 95, 103, 2], // bins ending 500, 1000
      [1000, 102, 104, 102, 105, 2],
      [2000, 104, 106, 104, 107, 2],
      [3000, 106, 107, 106, 108, 1],
    ]);
    expect(() => timeCandles(bins, 0)).toThrow(RangeError);
  });
});

describe('zoomed-out scalar series', () => {
  it('one pass gives per-pixel min/max of spot, bid and ask; NaN bins do not count', async () => {
    const { scalarLod } = await import('./renderer');
    const r = new BinRing(8, 1, []);
    const spots = [100, 102, 101, NaN, 99, 98];
    spots.forEach((sp, k) => r.push({ ...sc(k, k * 100, sp), bidTick: sp - 1, askTick: sp + 1 }, {}));
    const lod = scalarLod(r, 0, 5, 0, 1 / 300); // bins end every 100 ms, a pixel is 300 ms: 3 bins per column
    expect(lod.n).toBe(2);
    expect(Array.from(lod.x.subarray(0, 2))).toEqual([0, 1]);
    expect([lod.lo.spot[0], lod.hi.spot[0], lod.lo.bid[0], lod.hi.ask[0]]).toEqual([100, 102, 99, 103]);
    expect([lod.lo.spot[1], lod.hi.spot[1]]).toEqual([98, 99]);
  });
});

describe('HeatCache recolouring', () => {
  const g = globalThis as Record<string, unknown>;
  it('a scale that keeps drifting still gets every column recoloured (passes run to the end)', async () => {
    const saved = g.ImageData;
    g.ImageData = class {
      readonly data: Uint8ClampedArray;
      constructor(readonly width: number, readonly height: number) {
        this.data = new Uint8ClampedArray(width * height * 4);
      }
    };
    try {
      const { HeatCache } = await import('./heatcache');
      const puts: number[] = [];
      const canvas = () => ({ width: 0, height: 0, getContext: () => ({ fillRect() {}, drawImage() {}, putImageData: (_i: unknown, x: number) => puts.push(x) }) }) as unknown as HTMLCanvasElement;
      const ring = new BinRing(640, 7, ['f']);
      for (let s = 0; s < 640; s++) ring.push(sc(s), { f: [1, 2, 3, 4, 5, 6, 7] });
      const cache = new HeatCache(640, R, canvas);
      const lut = buildLut('thermal');
      let scale = 10;
      let clock = 0;
      const now = () => (clock += 1); // every block of 64 columns costs 1 ms: a 1.5 ms budget paints one or two
      cache.sync(ring, { field: 'f', lut, key: 'f', scale, norm: (v) => v / scale }, 1e9, now);
      expect(cache.complete(ring)).toBe(true);
      let syncs = 0;
      do { // the scale drifts 10 % before every sync
        scale *= 1.1;
        cache.sync(ring, { field: 'f', lut, key: 'f', scale, norm: (v) => v / scale }, 1.5, now);
        syncs++;
      } while (!cache.complete(ring) && syncs < 100);
      expect(cache.complete(ring)).toBe(true);
      expect(syncs).toBeLessThanOrEqual(11); // 640 columns in blocks of 64
      expect(puts.length).toBeGreaterThan(10);
    } finally {
      g.ImageData = saved;
    }
  });
});

describe('signal markers', () => {
  it('entries become ▲/▼ at their price tick, exits ■ with outcome and P&L; scores are kept by bin time', async () => {
    const { markersOf, SignalTrack } = await import('./signals');
    const msg = {
      bin_seq: 3, ts_ns: '1700000000300000000', score: 0.42,
      events: [
        { event: 'exit' as const, bin_seq: 3, ts_ns: '1700000000300000000', direction: 1, price: 4801, outcome: 'tp', pnl_ticks: 8 },
        { event: 'entry' as const, bin_seq: 3, ts_ns: '1700000000300000000', direction: -1, price: 4800.25 },
      ],
    };
    expect(markersOf(msg, 0.25)).toEqual([
      { tsMs: 1_700_000_000_300, tick: 19204, kind: 'exit', label: 'tp +8t' },
      { tsMs: 1_700_000_000_300, tick: 19201, kind: 'entry_short', label: 'short' },
    ]);
    const track = new SignalTrack(2);
    track.add(msg, 0.25);
    expect(track.position).toEqual({ direction: -1, since: 1_700_000_000_300, price: 4800.25 });
    track.add({ bin_seq: 4, ts_ns: '1700000000400000000', score: -0.1, events: [] }, 0.25);
    track.add({ bin_seq: 5, ts_ns: '1700000000500000000', score: null, events: [] }, 0.25);
    track.add({ bin_seq: 6, ts_ns: '1700000000600000000', score: 0.3, events: [] }, 0.25);
    expect([track.scoreAt(1_700_000_000_400), track.latest]).toEqual([-0.1, 0.3]);
    expect(Number.isNaN(track.scoreAt(1_700_000_000_300))).toBe(true); // beyond the capacity of 2 scores
    expect(track.markers).toHaveLength(2);
  });
});
