import { describe, expect, it } from 'vitest';
import { EmaLinesRuntime, EmaParamsError, parseEmaLinesParams, parseSmaLinesParams, SmaRuntime, type EmaLinesParams } from './ema';

const params = (over: Partial<EmaLinesParams> = {}): EmaLinesParams => ({
  periods: [2, 3], weights: [1], sma_periods: [2, 3], signal_tanh_scale: 1.5, line_width: 1.5,
  lines_label: 'EMA', sma_label: 'SMA', ...over,
});

const run = (rt: EmaLinesRuntime, closes: (number | null)[]) => closes.map((c) => rt.step(c));

describe('EmaLinesRuntime (SPEC §9)', () => {
  it('EMA and SMA against a hand-computed sequence', () => {
    // EMA_2: alpha 2/3; EMA_3: alpha 1/2; closes 10, 13, 7
    const [a, b, c] = run(new EmaLinesRuntime(params()), [10, 13, 7]);
    expect(Array.from(a.emas)).toEqual([10, 10]); // first value = close
    expect(b.emas[0]).toBeCloseTo(12, 12); // 10 + 2/3 · 3
    expect(b.emas[1]).toBeCloseTo(11.5, 12); // 10 + 1/2 · 3
    expect(c.emas[0]).toBeCloseTo(12 - 10 / 3, 12); // 12 + 2/3 · (7 − 12)
    expect(c.emas[1]).toBeCloseTo(9.25, 12); // 11.5 + 1/2 · (7 − 11.5)
    // SMA: mean of the last min(count, p) closes
    expect(Array.from(a.smas)).toEqual([10, 10]);
    expect(Array.from(b.smas)).toEqual([11.5, 11.5]);
    expect(c.smas[0]).toBeCloseTo(10, 12); // (13 + 7) / 2
    expect(c.smas[1]).toBeCloseTo(10, 12); // (10 + 13 + 7) / 3
  });

  it('SMA circular buffer wraps: only the last p closes count', () => {
    const s = new SmaRuntime([3, 1, 5]);
    let v: Float64Array = new Float64Array(0);
    for (const c of [1, 2, 3, 4, 5, 6, 7]) v = s.step(c);
    expect(Array.from(v)).toEqual([6, 7, 5]); // (5+6+7)/3, 7, (3+4+5+6+7)/5
    expect(s.count).toBe(7);
    expect(Array.from(s.step(null))).toEqual([6, 7, 5]);
    expect(s.count).toBe(7);
  });

  it('signal: sign of adjacent EMA pairs, weighted, tanh-scaled', () => {
    const rt = new EmaLinesRuntime(params({ signal_tanh_scale: 1.5 }));
    const [a, b, c] = run(rt, [10, 13, 7]);
    expect(a.signal).toBe(0); // all EMAs equal on the first bin
    expect(b.signal).toBeCloseTo(Math.tanh(1.5), 12); // EMA_2 12 > EMA_3 11.5
    expect(c.signal).toBeCloseTo(-Math.tanh(1.5), 12); // 8.67 < 9.25
    const flat = run(new EmaLinesRuntime(params({ signal_tanh_scale: 0.25 })), [10, 13]);
    expect(flat[1].signal).toBeCloseTo(Math.tanh(0.25), 12);
  });

  it('mixed pair signs weigh in, and only the first P−1 weights are used', () => {
    // periods 2, 4, 8 (alpha 2/3, 2/5, 2/9); closes 10, 20, 8:
    // EMA_2 10 → 16.667 → 10.889; EMA_4 10 → 14 → 11.6; EMA_8 10 → 12.222 → 11.284
    // bin 3: sign(EMA_2 − EMA_4) = −1, sign(EMA_4 − EMA_8) = +1 → (−0.6 + 0.4) / (0.6 + 0.4) = −0.2
    const three = (weights: number[]) => run(new EmaLinesRuntime(params({ periods: [2, 4, 8], weights, signal_tanh_scale: 2 })), [10, 20, 8]);
    const withLast = three([0.6, 0.4, 100]);
    const pairsOnly = three([0.6, 0.4]);
    expect(withLast[2].emas[0]).toBeCloseTo(10 + 2 / 3 * 10 + 2 / 3 * (8 - (10 + 2 / 3 * 10)), 12);
    expect(withLast[2].emas[1]).toBeCloseTo(11.6, 12);
    expect(withLast[2].emas[2]).toBeCloseTo(10 + 20 / 9 + (2 / 9) * (8 - 10 - 20 / 9), 12);
    expect(withLast[2].signal).toBeCloseTo(Math.tanh(2 * -0.2), 12);
    expect(pairsOnly.map((s) => s.signal)).toEqual(withLast.map((s) => s.signal));
    expect(withLast[1].signal).toBeCloseTo(Math.tanh(2), 12); // rising: both pairs +1
  });

  it('0 until ready: nothing before the first valid close', () => {
    const rt = new EmaLinesRuntime(params());
    expect(rt.ready).toBe(false);
    const s = rt.step(null);
    expect(s.ready).toBe(false);
    expect(s.signal).toBe(0);
    expect(Array.from(s.emas).every(Number.isNaN)).toBe(true);
    expect(Array.from(s.smas).every(Number.isNaN)).toBe(true);
    const first = rt.step(4800.25);
    expect(first.ready).toBe(true);
    expect(rt.ready).toBe(true);
    expect(Array.from(first.emas)).toEqual([4800.25, 4800.25]);
    expect(first.signal).toBe(0);
  });

  it('invalid-spot bins (null) are skipped: values held, nothing fed to the EMAs or SMAs', () => {
    const gap = run(new EmaLinesRuntime(params()), [10, 13, null, null, 7]);
    const plain = run(new EmaLinesRuntime(params()), [10, 13, 7]);
    expect(gap[2]).toEqual(gap[1]);
    expect(gap[3]).toEqual(gap[1]);
    expect(gap[4]).toEqual(plain[2]);
    // NaN / ±Infinity closes are treated like null too (never fed)
    const bad = run(new EmaLinesRuntime(params()), [10, Number.NaN, Infinity, 13]);
    expect(bad[3]).toEqual(plain[1]);
  });

  it('step returns copies; reset starts over', () => {
    const rt = new EmaLinesRuntime(params());
    const a = rt.step(10);
    rt.step(20);
    expect(Array.from(a.emas)).toEqual([10, 10]);
    rt.reset();
    expect(rt.ready).toBe(false);
    expect(rt.step(5).emas[0]).toBe(5);
  });
});

describe('ema_lines / sma_lines params', () => {
  const good = {
    periods: [5, 10, 20, 50], weights: [0.4, 0.3, 0.2, 0.1], sma_periods: [10, 20], signal_tanh_scale: 1.5,
    line_width: 1.5, lines_label: 'EMA', sma_label: 'SMA',
  };
  const bad = (over: Record<string, unknown>, re: RegExp) => {
    const raw: Record<string, unknown> = { ...good, ...over };
    for (const [k, v] of Object.entries(over)) if (v === undefined) delete raw[k];
    expect(() => parseEmaLinesParams(raw, 'ov.params')).toThrow(EmaParamsError);
    expect(() => parseEmaLinesParams(raw, 'ov.params')).toThrow(re);
  };

  it('accepts the serving config (ema_ensemble.yaml) and fills defaults', () => {
    expect(parseEmaLinesParams(good)).toEqual(good);
    const { line_width: _w, lines_label: _l, sma_label: _s, ...required } = good;
    const p = parseEmaLinesParams({ ...required, weights: [0.4, 0.3, 0.2], sma_periods: [] });
    expect([p.line_width, p.lines_label, p.sma_label, p.sma_periods]).toEqual([1.5, 'EMA', 'SMA', []]);
  });

  it('names the bad field', () => {
    expect(() => parseEmaLinesParams(undefined, 'ov.params')).toThrow(/ov\.params: an object expected, got nothing/);
    bad({ periods: undefined }, /ov\.params\.periods: a list of at least 2 unique integer periods >= 1 expected, got nothing/);
    bad({ periods: [5] }, /ov\.params\.periods: a list of at least 2/);
    bad({ periods: [5, 0, 10, 20] }, /ov\.params\.periods\[1\]: an integer period >= 1 expected, got 0/);
    bad({ periods: [5, 2.5, 10, 20] }, /ov\.params\.periods\[1\]/);
    bad({ periods: [5, 10, 5, 20] }, /ov\.params\.periods\[2\]: period 5 is listed twice/);
    bad({ weights: [0.4, 0.3] }, /ov\.params\.weights: a list of 3 pair weights \(or 4, the last unused\) for 4 periods expected/);
    bad({ weights: undefined }, /ov\.params\.weights:.*got nothing/);
    bad({ weights: [0.4, -0.3, 0.2] }, /ov\.params\.weights\[1\]: a number >= 0 expected, got -0.3/);
    bad({ weights: [0, 0, 0, 1] }, /ov\.params\.weights: the 3 pair weights must not all be 0/);
    bad({ sma_periods: undefined }, /ov\.params\.sma_periods: a list of unique integer periods >= 1 expected, got nothing/);
    bad({ sma_periods: [10, -1] }, /ov\.params\.sma_periods\[1\]/);
    bad({ signal_tanh_scale: undefined }, /ov\.params\.signal_tanh_scale: a number > 0 expected, got nothing/);
    bad({ signal_tanh_scale: 0 }, /ov\.params\.signal_tanh_scale: a number > 0 expected, got 0/);
    bad({ line_width: -1 }, /ov\.params\.line_width: a number > 0/);
    bad({ lines_label: 3 }, /ov\.params\.lines_label: a string expected, got 3/);
  });

  it('sma_lines: periods required, line width defaulted', () => {
    expect(parseSmaLinesParams({ periods: [10, 30] })).toEqual({ periods: [10, 30], line_width: 1.5 });
    expect(() => parseSmaLinesParams({}, 'sma.params')).toThrow(/sma\.params\.periods: a list of at least 1 unique integer periods >= 1 expected, got nothing/);
    expect(() => parseSmaLinesParams({ periods: [3], line_width: 0 }, 'sma.params')).toThrow(/sma\.params\.line_width/);
  });
});
