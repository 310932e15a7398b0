import { describe, expect, it } from 'vitest';
import { Backoff, shouldReconnect } from './backoff';
import { timeCandles } from './candles';
import { buildLut, colorFor, COLOR_SCHEMES, BACKGROUND, lutIndex } from './colormap';
import { priceIntToTick } from './geometry';
import { applyGamma, Normalizer } from './normalize';
import { buildStreamUrl, parseViewerParams, ViewerParamError, withReplay } from './params';
import { BinRing, type BinScalars } from './ring';
import { percentile, RollingStats } from './stats';
import { DEFAULT_CELL_SHADER, parseVisualization, projectionCenterTick, projectionSpread } from './vizconfig';

const sc = (binSeq: number, spotTick = 100): BinScalars => ({
  binSeq, spotTick, bidTick: spotTick - 1, askTick: spotTick + 1, bookValid: true, tsMs: binSeq * 100,
});

describe('BinRing', () => {
  it('keeps the last N bins oldest first and overwrites the oldest', () => {
    const r = new BinRing(3, 2, ['a', 'b']);
    for (let s = 0; s < 5; s++) r.push(sc(s), { a: [s, s + 0.5], b: [10 * s, 10 * s] });
    expect(r.size).toBe(3);
    expect(r.pushed).toBe(5);
    expect([0, 1, 2].map((i) => r.scalarsAt(i).binSeq)).toEqual([2, 3, 4]);
    expect(Array.from(r.column('a', 0))).toEqual([2, 2.5]);
    expect(r.value('b', 2, 1)).toBe(40);
    expect(r.newest()!.binSeq).toBe(4);
  });

  it('stores missing fields and rows as NaN, short arrays at an offset', () => {
    const r = new BinRing(2, 3, ['a', 'b']);
    r.push(sc(0), { a: [7] }, 1);
    expect(Array.from(r.column('a', 0))).toEqual([NaN, 7, NaN]);
    expect(Array.from(r.column('b', 0)).every(Number.isNaN)).toBe(true);
    // a reused slot does not leak old values
    r.push(sc(1), { a: [1, 2, 3] });
    r.push(sc(2), { b: [1, 1, 1] });
    expect(Number.isNaN(r.value('a', 1, 0))).toBe(true);
    expect(Number.isNaN(r.value('a', 1, -1))).toBe(true);
  });

  it('rejects bad indices, unknown fields and capacities', () => {
    const r = new BinRing(2, 1, ['a']);
    expect(() => r.scalarsAt(0)).toThrow(RangeError);
    r.push(sc(0), {});
    expect(() => r.column('zz', 0)).toThrow(/not buffered/);
    expect(() => r.scalarsAt(1)).toThrow(RangeError);
    expect(() => new BinRing(0, 1, [])).toThrow(RangeError);
    r.clear();
    expect(r.size).toBe(0);
    expect(r.newest()).toBeUndefined();
  });
});

describe('Normalizer', () => {
  it('identity_clamp clamps', () => {
    const n = new Normalizer('identity_clamp');
    n.update([100]);
    expect([n.apply(0.5), n.apply(3), n.apply(-3)]).toEqual([0.5, 1, -1]);
    expect(Number.isNaN(n.apply(NaN))).toBe(true);
  });

  it('adaptive_running_max jumps up at once and decays slowly', () => {
    const n = new Normalizer('adaptive_running_max', { decay: 0.5 });
    expect(n.apply(5)).toBe(0); // nothing seen yet
    n.update([1, -4, NaN, 2]);
    expect(n.stats.runMax).toBe(4);
    expect(n.apply(2)).toBe(0.5);
    expect(n.apply(-8)).toBe(-1);
    n.update([1]);
    expect(n.stats.runMax).toBe(2);
    n.update([10]);
    expect(n.stats.runMax).toBe(10);
  });

  it('zscore_clamp centres on the running mean and scales by clampSigma·std', () => {
    const n = new Normalizer('zscore_clamp', { clampSigma: 2 });
    n.update([1, 3]); // mean 2, std 1
    expect(n.stats.mean).toBe(2);
    expect(n.stats.std).toBe(1);
    expect(n.apply(3)).toBe(0.5);
    expect(n.apply(100)).toBe(1);
    expect(n.apply(2)).toBe(0);
    const flat = new Normalizer('zscore_clamp');
    flat.update([5, 5, 5]);
    expect(flat.apply(9)).toBe(0);
    flat.reset();
    expect(flat.stats.mean).toBe(0);
  });

  it('rejects unknown modes; gamma works on the magnitude', () => {
    expect(() => new Normalizer('bogus' as never)).toThrow(RangeError);
    expect(applyGamma(0.25, 0.5)).toBe(0.5);
    expect(applyGamma(-0.25, 0.5)).toBe(-0.5);
    expect(applyGamma(1, 0.7)).toBe(1);
    expect(() => applyGamma(0.5, 0)).toThrow(RangeError);
    expect(() => applyGamma(0.5, 6)).toThrow(RangeError);
  });
});

describe('colour maps', () => {
  it('background at 0 and NaN, distinct extremes per scheme', () => {
    for (const s of COLOR_SCHEMES) {
      expect(colorFor(s, 0)).toEqual([...BACKGROUND]);
      expect(colorFor(s, NaN)).toEqual([...BACKGROUND]);
      expect(colorFor(s, 1)).not.toEqual([...BACKGROUND]);
    }
    // pressure_vacuum is signed: red-ish for +, blue-ish for -
    const [pr, , pb] = colorFor('pressure_vacuum', 1);
    const [vr, , vb] = colorFor('pressure_vacuum', -1);
    expect(pr).toBeGreaterThan(pb);
    expect(vb).toBeGreaterThan(vr);
    // unsigned schemes are symmetric
    expect(colorFor('thermal', -0.6)).toEqual(colorFor('thermal', 0.6));
    expect(colorFor('mono_green', 2)).toEqual(colorFor('mono_green', 1));
  });

  it('LUT is opaque RGBA and lutIndex spans it', () => {
    const lut = buildLut('mono_red');
    expect(lut.length).toBe(256);
    expect(lut[255] >>> 24).toBe(255);
    expect(lut[255] & 0xff).toBe(240);
    expect([lutIndex(-1), lutIndex(1), lutIndex(NaN), lutIndex(5)]).toEqual([0, 255, 128, 255]);
  });
});

describe('price rows', () => {
  it('integer prices to ticks', () => {
    expect(priceIntToTick(21_000_250_000_000n, 250_000_000n)).toBe(84001);
    expect(priceIntToTick(0n, 250_000_000n)).toBeNaN();
    expect(priceIntToTick(375n, 250n)).toBe(1.5);
  });
});

describe('candles (SPEC §9)', () => {
  const bins = [
    { binSeq: 1, tsMs: 100, spot: 100, bid: 99, ask: 101 },
    { binSeq: 2, tsMs: 200, spot: 102, bid: 101, ask: 103 },
    { binSeq: 3, tsMs: 300, spot: NaN, bid: NaN, ask: NaN },
    { binSeq: 4, tsMs: 400, spot: 98, bid: 97, ask: 99 },
  ];
  const ohlc = (c: { firstSeq: number; lastSeq: number; open: number; high: number; low: number; close: number }) => (
    { firstSeq: c.firstSeq, lastSeq: c.lastSeq, open: c.open, high: c.high, low: c.low, close: c.close });

  it('open = previous close, close = spot, high = ask, low = bid (widened to the body)', () => {
    const c = timeCandles(bins, 100).map(ohlc); // one bin per 100 ms candle
    expect(c).toEqual([
      { firstSeq: 1, lastSeq: 1, open: 100, high: 101, low: 99, close: 100 },
      { firstSeq: 2, lastSeq: 2, open: 100, high: 103, low: 100, close: 102 },
      { firstSeq: 4, lastSeq: 4, open: 102, high: 102, low: 97, close: 98 },
    ]);
  });

  it('groups bins per candle interval', () => {
    const c = timeCandles(bins, 200).map(ohlc); // (0, 200], (200, 400]
    expect(c).toEqual([
      { firstSeq: 1, lastSeq: 2, open: 100, high: 103, low: 99, close: 102 },
      { firstSeq: 4, lastSeq: 4, open: 102, high: 102, low: 97, close: 98 },
    ]);
    expect(() => timeCandles(bins, -1)).toThrow(RangeError);
  });
});

describe('reconnect backoff', () => {
  it('grows exponentially to the cap, with jitter removing at most its fraction', () => {
    const b = new Backoff({ baseMs: 100, maxMs: 1000, factor: 2, jitter: 0 });
    expect([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()]).toEqual([100, 200, 400, 800, 1000, 1000]);
    b.reset();
    expect(b.next()).toBe(100);
    const j = new Backoff({ baseMs: 100, jitter: 0.5 }, () => 1);
    expect(j.next()).toBe(50);
    const lim = new Backoff({ maxAttempts: 2, jitter: 0 });
    expect([lim.next() !== null, lim.next() !== null, lim.next()]).toEqual([true, true, null]);
    expect(() => new Backoff({ baseMs: 0 })).toThrow(RangeError);
  });

  it('does not reconnect after end of stream or a request error', () => {
    expect(shouldReconnect(1006, false)).toBe(true); // abnormal drop
    expect(shouldReconnect(1011, false)).toBe(true);
    expect(shouldReconnect(4429, false)).toBe(true); // slow consumer: try again
    expect(shouldReconnect(4503, false)).toBe(true);
    expect(shouldReconnect(1000, false)).toBe(false);
    expect(shouldReconnect(4404, false)).toBe(false);
    expect(shouldReconnect(1006, true)).toBe(false);
  });
});

describe('page params → stream URL', () => {
  it('uses the page host and passes the replay params', () => {
    const p = parseViewerParams('?serving=demo&date=2026-03-02&start=09:45&speed=4&field=flow_score');
    expect(p.field).toBe('flow_score');
    expect(buildStreamUrl('http://host:8002/ui/?serving=demo', p))
      .toBe('ws://host:8002/v1/stream?serving=demo&date=2026-03-02&start=09%3A45&speed=4');
    expect(buildStreamUrl('https://x.org/', { serving: 'a', replay: {}, stream: null })).toBe('wss://x.org/v1/stream?serving=a');
    expect(buildStreamUrl('http://x/', { serving: 'a', replay: {}, stream: 'http://h:9' })).toBe('ws://h:9/v1/stream?serving=a');
  });

  it('rejects bad params', () => {
    expect(() => parseViewerParams('')).toThrow(ViewerParamError);
    expect(() => parseViewerParams('?serving=a b')).toThrow(/not an alias/);
    expect(() => parseViewerParams('?serving=a&speed=0')).toThrow(/speed/);
    expect(() => parseViewerParams('?serving=a&start=9:45')).toThrow(/start/);
    expect(() => parseViewerParams('?serving=a&date=2026-3-2')).toThrow(/date/);
    expect(() => parseViewerParams('?serving=a&mode=bars')).toThrow(/mode/);
    expect(() => parseViewerParams('?serving=a&source=tape')).toThrow(/replay or live/);
    expect(() => parseViewerParams('?serving=a&candle=2h')).toThrow(/candle/);
  });

  it('source=live sends only serving and source; viewer params: tooltip fields, candle interval', () => {
    const p = parseViewerParams('?serving=a&source=live&speed=4&tip=flow_score,v_add&candle=15s');
    expect(buildStreamUrl('http://h/', p)).toBe('ws://h/v1/stream?serving=a&source=live');
    expect([p.tip, p.candle]).toEqual([['flow_score', 'v_add'], 15_000]);
    expect(parseViewerParams('?serving=a&candle=5m').candle).toBe(300_000);
  });

  it('withReplay rewrites only the replay params', () => {
    expect(withReplay('http://h/?serving=a&speed=2&field=x', { speed: '8', start: '10:00' }))
      .toBe('http://h/?serving=a&speed=8&field=x&start=10%3A00');
    expect(withReplay('http://h/?serving=a&speed=2', { speed: '' })).toBe('http://h/?serving=a');
  });
});

describe('frame stats', () => {
  it('nearest-rank p95 and rolling mean over the window', () => {
    expect(percentile([], 95)).toBeNaN();
    expect(percentile([3, 1, 2], 50)).toBe(2);
    const s = new RollingStats(20);
    for (let i = 1; i <= 40; i++) s.add(i); // keeps 21..40
    expect(s.count).toBe(20);
    expect(s.mean).toBe(30.5);
    expect(s.p95).toBe(39);
  });
});

describe('visualization config', () => {
  it('defaults to the SPEC heatmap overlays in z order', () => {
    const v = parseVisualization(undefined);
    expect(v.display_mode).toBe('heatmap');
    expect(v.cell_shader).toEqual(DEFAULT_CELL_SHADER);
    expect(v.overlays.map((o) => o.type)).toEqual(['vp_gold', 'spot_trail', 'bbo_spread', 'bbo_trail', 'projection_bands']);
  });

  it('sorts enabled overlays by z_order, skips disabled/malformed, warns on bad shader values', () => {
    const v = parseVisualization({
      display_mode: 'candle',
      cell_shader: { color_scheme: 'rainbow', normalization: 'zscore_clamp', gamma: 9 },
      overlays: [
        { id: 'b', type: 'bbo_trail', z_order: 20 },
        { id: 'p', type: 'projection_bands', z_order: 5, params: { signal_field: 'ema_signal', composite_scale: 6 } },
        { id: 'x', type: 'spot_trail', z_order: 1, enabled: false },
        'junk',
        { id: 'b', type: 'spot_trail', z_order: 3 },
      ],
    });
    expect(v.display_mode).toBe('candle');
    expect(v.cell_shader.normalization).toBe('zscore_clamp');
    expect(v.cell_shader.color_scheme).toBe('pressure_vacuum');
    expect(v.cell_shader.gamma).toBe(0.7);
    expect(v.overlays.map((o) => o.id)).toEqual(['p', 'b']);
    expect(v.overlays[0].params.composite_scale).toBe(6);
    expect(v.warnings).toHaveLength(4);
  });

  it('the ema_ensemble visualization: candle mode, line overlays kept with their params in z order', () => {
    const ema = { periods: [5, 10, 20, 50], weights: [0.4, 0.3, 0.2, 0.1], sma_periods: [10, 20], signal_tanh_scale: 1.5 };
    const v = parseVisualization({
      display_mode: 'candle',
      overlays: [
        { id: 'projection_bands', type: 'projection_bands', z_order: 30, params: { signal_field: 'ema_signal', composite_scale: 6.0 } },
        { id: 'ema_lines', type: 'ema_lines', label: 'EMA ensemble', z_order: 20, params: ema },
        { id: 'spot_trail', type: 'spot_trail', z_order: 10 },
        { id: 'sma', type: 'sma_lines', z_order: 25, params: { periods: [100] } },
      ],
    });
    expect(v.display_mode).toBe('candle');
    expect(v.warnings).toEqual([]);
    expect(v.overlays.map((o) => o.type)).toEqual(['spot_trail', 'ema_lines', 'sma_lines', 'projection_bands']);
    expect(v.overlays[1].params).toEqual(ema);
  });

  it('projection spread interpolates {1:6, 2:10, 4:16, 8:24}; centre moves with the signal', () => {
    expect([1, 2, 3, 4, 6, 8, 16].map(projectionSpread)).toEqual([6, 10, 13, 16, 20, 24, 24]);
    expect(projectionSpread(0)).toBeNaN();
    expect(projectionCenterTick(100, 1, 8, 8)).toBe(108);
    expect(projectionCenterTick(100, -0.5, 8, 1)).toBe(99);
    expect(projectionCenterTick(100, 5, 8, 8)).toBe(108);
  });
});
