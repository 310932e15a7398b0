/** Axes (ET time ticks, price ladder), the Viewport (zoom, pan, follow live, price tracking) and the hotkeys. */

import { describe, expect, it } from 'vitest';
import { etDate, etOffsetMs, formatEt, formatPrice, priceDecimals, priceTicks, timeStep, timeTicks } from './axes';
import { actionFor, cycle, HOTKEYS, keyLabel } from './hotkeys';
import { Viewport } from './viewport';

// 2023-12-25 23:00:00 UTC = 18:00:00 EST (UTC−5); 2024-07-01 13:30:00 UTC = 09:30:00 EDT (UTC−4)
const SUNDAY_OPEN = Date.UTC(2023, 11, 25, 23, 0, 0);
const RTH_OPEN_SUMMER = Date.UTC(2024, 6, 1, 13, 30, 0);

describe('time axis (ET)', () => {
  it('formats ET wall time across standard and daylight time', () => {
    expect(etOffsetMs(SUNDAY_OPEN)).toBe(-5 * 3_600_000);
    expect(etOffsetMs(RTH_OPEN_SUMMER)).toBe(-4 * 3_600_000);
    expect(formatEt(SUNDAY_OPEN)).toBe('18:00:00');
    expect(formatEt(RTH_OPEN_SUMMER + 1234, 3)).toBe('09:30:01.234');
    expect(formatEt(RTH_OPEN_SUMMER + 1234, 1)).toBe('09:30:01.2');
    expect(etDate(SUNDAY_OPEN)).toBe('2023-12-25');
  });

  it('picks the smallest step that keeps labels apart, ticks aligned on the ET clock', () => {
    expect(timeStep(1 / 100, 90)).toBe(10_000); // 0.01 px/ms: 10 s = 100 px
    expect(timeStep(1, 90)).toBe(100);
    const ticks = timeTicks(SUNDAY_OPEN + 3_000, SUNDAY_OPEN + 123_000, 1200); // 2 min over 1200 px: 10 s steps
    expect(ticks.map((t) => t.label).slice(0, 3)).toEqual(['18:00:10', '18:00:20', '18:00:30']);
    expect(ticks.every((t, i) => i === 0 || t.value - ticks[i - 1].value === 10_000)).toBe(true);
    expect(ticks.find((t) => t.label === '18:01:00')!.major).toBe(true);
    expect(ticks.find((t) => t.label === '18:00:30')!.major).toBe(false);
    const wide = timeTicks(SUNDAY_OPEN, SUNDAY_OPEN + 30 * 60_000, 1000); // 30 min: minute labels
    expect(wide[1].label).toMatch(/^18:0\d$/);
    const fine = timeTicks(SUNDAY_OPEN, SUNDAY_OPEN + 2_000, 1000); // 2 s: tenths
    expect(fine[1].label).toMatch(/^18:00:00\.\d$/);
    expect(timeTicks(10, 10, 100)).toEqual([]);
  });
});

describe('price ladder', () => {
  it('prints prices at the tick size decimals, steps of 1, 2, 4 (a point for ES), 5, 10 … ticks', () => {
    expect(priceDecimals(0.25)).toBe(2);
    expect(priceDecimals(1)).toBe(0);
    expect(priceDecimals(0.005)).toBe(3);
    expect(formatPrice(19201, 0.25)).toBe('4800.25');
    const dense = priceTicks(19180, 19220, 800, 0.25); // 41 ticks over 800 px: every tick has room
    expect(dense).toHaveLength(41);
    const sparse = priceTicks(19000, 19400, 400, 0.25); // 401 ticks over 400 px: 20 ticks = 5 points
    expect(sparse.every((t) => t.value % 20 === 0)).toBe(true);
    expect(sparse.find((t) => t.value === 19200)!.label).toBe('4800.00');
  });
});

describe('Viewport', () => {
  const make = () => new Viewport({ cellMs: 100, historyBins: 18_000, spanMs: 60_000, rows: 100, futureMs: 1_000 });

  it('follows the newest bin with the future margin and tracks the mid with hysteresis', () => {
    const v = make();
    v.onBin(1_000_000, 1_000_000, 19200);
    expect([v.t0, v.t1]).toEqual([1_000_000 + 1_000 - 60_000, 1_001_000]);
    expect((v.lo + v.hi) / 2).toBe(19200);
    v.onBin(1_000_100, 1_000_000, 19220); // 20 ticks: inside the inner 60 % of ±50: no move
    expect((v.lo + v.hi) / 2).toBe(19200);
    v.onBin(1_000_200, 1_000_000, 19240); // 40 ticks: recentre
    expect((v.lo + v.hi) / 2).toBe(19240);
    expect(v.t1).toBe(1_001_200);
  });

  it('a pan into the past stops following; new bins do not move the view; reaching the live edge resumes', () => {
    const v = make();
    for (let t = 0; t <= 100_000; t += 100) v.onBin(t, 0, 19200);
    v.pan(-30_000, 0);
    expect(v.following).toBe(false);
    const [a, b] = [v.t0, v.t1];
    v.onBin(100_100, 0, 19200);
    expect([v.t0, v.t1]).toEqual([a, b]); // history stays put while bins keep arriving
    v.pan(+60_000, 0);
    expect(v.following).toBe(true);
    expect(v.t1).toBe(100_100 + 1_000);
    v.pan(-1e9, 0); // clamped near the oldest bin
    expect(v.t0).toBeGreaterThanOrEqual(-100 - v.spanMs * 0.5);
    const short = make(); // 10 s of history in a 60 s view: there is nothing to pan to
    for (let t = 0; t <= 10_000; t += 100) short.onBin(t, 0, 19200);
    short.pan(-20_000, 0);
    expect([short.following, short.t1]).toEqual([true, 11_000]);
  });

  it('zooms time around the anchor (the live edge while following), clamped to 20 bins … the history', () => {
    const v = make();
    for (let t = 0; t <= 100_000; t += 100) v.onBin(t, 0, 19200);
    v.zoomTime(0.5, 50_000);
    expect(v.spanMs).toBe(30_000);
    expect(v.t1).toBe(101_000); // following: the right edge stays live
    v.pan(-40_000, 0);
    const anchor = v.t0 + v.spanMs / 4;
    v.zoomTime(0.5, anchor);
    expect(v.spanMs).toBe(15_000);
    expect(v.t0 + v.spanMs / 4).toBeCloseTo(anchor, 6); // the anchor keeps its place
    v.zoomTime(1e-6, anchor);
    expect(v.spanMs).toBe(2_000);
    v.zoomTime(1e9, anchor);
    expect(v.spanMs).toBe(18_000 * 100 + 1_000);
  });

  it('price zoom / pan stop the tracking; reset restores both and follows', () => {
    const v = make();
    v.onBin(0, 0, 19200);
    v.zoomPrice(0.5, 19210);
    expect(v.rows).toBe(50);
    expect(v.priceAuto).toBe(false);
    v.onBin(100, 0, 19400); // far away, but the user owns the price axis now
    expect((v.lo + v.hi) / 2).toBeLessThan(19300);
    v.pan(-5_000, 10);
    v.reset();
    expect([v.following, v.priceAuto, v.rows, v.spanMs]).toEqual([true, true, 100, 60_000]);
  });

  it('maps time and ticks to pixels and back; candle fit pads the range', () => {
    const v = make();
    v.onBin(60_000, 0, 19200);
    expect(v.x(v.t0, 1000)).toBe(0);
    expect(v.timeAt(500, 1000)).toBeCloseTo((v.t0 + v.t1) / 2, 6);
    expect(v.tickAt(v.y(19213, 600), 600)).toBe(19213);
    expect(v.y(19201, 600)).toBeLessThan(v.y(19200, 600)); // higher prices up
    v.fit(19190, 19210);
    expect(v.lo).toBeLessThan(19190);
    expect(v.hi).toBeGreaterThan(19210);
    expect(v.rows).toBeLessThan(30);
  });
});

describe('hotkeys', () => {
  it('maps keys to actions, ignores modified keys and typing in fields', () => {
    expect(actionFor({ key: ' ' })).toBe('pause');
    expect(actionFor({ key: 'F' })).toBe('follow');
    expect(actionFor({ key: '0' })).toBe('reset');
    expect(actionFor({ key: ']' })).toBe('next_field');
    expect(actionFor({ key: '?' })).toBe('help');
    expect(actionFor({ key: 'f', ctrlKey: true })).toBeNull();
    expect(actionFor({ key: 'f' }, 'INPUT')).toBeNull();
    expect(actionFor({ key: 'Escape' }, 'INPUT')).toBe('close');
    expect(actionFor({ key: ' ' }, 'BUTTON')).toBeNull();
    expect(actionFor({ key: 'x' })).toBeNull();
  });

  it('every action has one help line; labels; field cycling wraps', () => {
    const actions = HOTKEYS.map((h) => h.action);
    expect(new Set(actions).size).toBe(actions.length);
    expect(keyLabel(' ')).toBe('Space');
    expect(keyLabel('ArrowLeft')).toBe('←');
    expect(cycle(['a', 'b', 'c'], 'c', 1)).toBe('a');
    expect(cycle(['a', 'b', 'c'], 'a', -1)).toBe('c');
    expect(cycle(['a', 'b'], 'zz', 1)).toBe('a'); // an unknown current field starts at the first
  });
});
