/**
 * Renderer smoke test without a browser: a recording fake 2D context (the pixels are the Playwright suite's
 * job). Checks that the EMA ensemble config draws in candle mode from 1-row frames: EMA lines solid, SMA
 * lines dashed with the configured width, in overlay z-order, the legend labels, and projection bands from
 * ema_signal.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMA_SIGNAL_FIELD } from './ema';
import { fieldInfo } from './fields';
import { buildLines } from './model';
import { Normalizer } from './normalize';
import { BUY_COLOR, plotRect, Renderer, SELL_COLOR, type DrawModel } from './renderer';
import { SignalTrack } from './signals';
import { BinRing } from './ring';
import { TradeLog } from './trades';
import { Viewport } from './viewport';
import { parseVisualization } from './vizconfig';

interface Call {
  readonly name: string;
  readonly args: unknown[];
  readonly state: Record<string, unknown>;
}

function fakeContext(calls: Call[]): CanvasRenderingContext2D {
  const state: Record<string, unknown> = { lineDash: [] };
  const methods: Record<string, (...a: unknown[]) => unknown> = {
    measureText: (t) => ({ width: String(t).length * 6 }),
    setLineDash: (d) => {
      state.lineDash = [...(d as number[])];
    },
    getLineDash: () => state.lineDash,
  };
  return new Proxy({} as Record<string, unknown>, {
    get(_t, key: string) {
      if (key in methods) {
        return (...args: unknown[]) => {
          calls.push({ name: key, args, state: { ...state } });
          return methods[key](...args);
        };
      }
      if (key in state) return state[key];
      return (...args: unknown[]) => {
        calls.push({ name: key, args, state: { ...state } });
      };
    },
    set(_t, key: string, v) {
      state[key] = v;
      return true;
    },
  }) as unknown as CanvasRenderingContext2D;
}

function fakeCanvas(calls: Call[]): HTMLCanvasElement {
  const ctx = fakeContext(calls);
  return { width: 800, height: 400, clientWidth: 800, clientHeight: 400, getContext: () => ctx } as unknown as HTMLCanvasElement;
}

const g = globalThis as Record<string, unknown>;
const saved = { document: g.document, window: g.window, ImageData: g.ImageData };
beforeAll(() => {
  g.window = { devicePixelRatio: 1 };
  g.document = { createElement: () => fakeCanvas([]) };
  g.ImageData = class {
    readonly data: Uint8ClampedArray;
    constructor(readonly width: number, readonly height: number) {
      this.data = new Uint8ClampedArray(width * height * 4);
    }
  };
});
afterAll(() => Object.assign(g, saved));

const R = 3;
const EMA_VIZ = {
  display_mode: 'candle',
  overlays: [
    { id: 'projection_bands', type: 'projection_bands', z_order: 30, params: { signal_field: 'ema_signal', composite_scale: 6.0 } },
    { id: 'spot_trail', type: 'spot_trail', z_order: 10 },
    {
      id: 'ema_lines', type: 'ema_lines', z_order: 20, params: {
        periods: [5, 10, 20, 50], weights: [0.4, 0.3, 0.2, 0.1], sma_periods: [10, 20], signal_tanh_scale: 1.5,
        line_width: 2.5, lines_label: 'EMA-L', sma_label: 'SMA-L',
      },
    },
  ],
};

function emaDrawModel(): DrawModel {
  const viz = parseVisualization(EMA_VIZ);
  const lines = buildLines(viz);
  const ring = new BinRing(20, 2 * R + 1, ['fill_mass', 'rest_depth', ...lines.derivedFields]);
  const tickDollars = 0.25;
  for (let i = 0; i < 12; i++) {
    const spotTick = 19200 + i;
    const close = spotTick * tickDollars;
    const st = lines.ema!.step(close);
    const at = (v: number) => [v]; // 1-row frame: pushed at offset R
    const values: Record<string, number[]> = { fill_mass: at(i % 3 === 0 ? 1 : 0), rest_depth: at(5), ema_signal: at(st.signal) };
    lines.ema!.params.periods.forEach((p, j) => { values[`ema_${p}`] = at(st.emas[j]); });
    lines.ema!.params.sma_periods.forEach((p, j) => { values[`sma_${p}`] = at(st.smas[j]); });
    ring.push({ binSeq: i, spotTick, bidTick: spotTick - 1, askTick: spotTick + 1, bookValid: true, tsMs: i * 100 }, values, R);
  }
  const view = new Viewport({ cellMs: 100, historyBins: 20, spanMs: 2000, rows: 2 * R + 1, futureMs: 1000 });
  view.onBin(1100, 0, 19211);
  return {
    ring, trades: new TradeLog(20), mode: 'candle', field: 'rest_depth', info: fieldInfo('rest_depth'),
    normalizer: new Normalizer('adaptive_running_max'), gamma: 0.7, scheme: 'pressure_vacuum', view, cache: null,
    radius: R, cellMs: 100, overlays: viz.overlays, horizonsBins: [1, 2, 4, 8], tickDollars, goldReady: false,
    candles: [], lineSets: lines.lineSets, showTrades: true, markers: [], gaps: [], banner: '',
  };
}

describe('Renderer (fake 2D context)', () => {
  it('ema_lines: solid EMA and dashed SMA strokes with the line width, legend, bands from ema_signal', () => {
    const calls: Call[] = [];
    const r = new Renderer(fakeCanvas(calls));
    const m = emaDrawModel();
    expect(m.ring.value(EMA_SIGNAL_FIELD, m.ring.size - 1, R)).toBeGreaterThan(0);
    r.draw(m);
    const strokes = calls.filter((c) => c.name === 'stroke');
    const lineStrokes = strokes.filter((c) => c.state.lineWidth === 2.5);
    expect(lineStrokes).toHaveLength(6); // 4 EMAs + 2 SMAs
    expect(lineStrokes.slice(0, 4).every((c) => (c.state.lineDash as number[]).length === 0)).toBe(true);
    expect(lineStrokes.slice(4).every((c) => (c.state.lineDash as number[]).length === 2)).toBe(true);
    expect(new Set(lineStrokes.map((c) => c.state.strokeStyle)).size).toBe(6);
    // z-order: spot trail (10) before the lines (20) before the bands (30)
    const idx = (pred: (c: Call) => boolean) => calls.findIndex(pred);
    const spot = idx((c) => c.name === 'stroke' && c.state.strokeStyle === 'rgba(255,230,120,0.95)');
    const firstLine = calls.indexOf(lineStrokes[0]);
    const band = idx((c) => c.name === 'fillRect' && c.state.fillStyle === 'rgba(160,120,255,0.22)');
    expect(spot).toBeGreaterThanOrEqual(0);
    expect(spot).toBeLessThan(firstLine);
    expect(firstLine).toBeLessThan(band);
    // every line vertex is a finite y (dollars → ticks → px)
    const lineTos = calls.filter((c) => c.name === 'lineTo' || c.name === 'moveTo');
    expect(lineTos.every((c) => c.args.every((a) => Number.isFinite(a)))).toBe(true);
    // legend
    const texts = calls.filter((c) => c.name === 'fillText').map((c) => String(c.args[0]));
    expect(texts).toEqual(expect.arrayContaining(['EMA-L', 'SMA-L', '5', '10', '20', '50']));
    expect(texts.some((t) => /^signal \+0\.\d{3}$/.test(t))).toBe(true);
    expect(calls.filter((c) => c.name === 'getLineDash')).toHaveLength(0);
    // the dash is reset after drawing
    expect(calls.filter((c) => c.name === 'setLineDash').at(-1)!.args[0]).toEqual([]);
  });

  it('bands are not drawn when signal_field is not buffered; heatmap mode draws with 1-row data', () => {
    const calls: Call[] = [];
    const r = new Renderer(fakeCanvas(calls));
    const m = emaDrawModel();
    const overlays = m.overlays.map((o) => (o.type === 'projection_bands' ? { ...o, params: { signal_field: 'flow_score' } } : o));
    r.draw({ ...m, overlays, mode: 'heatmap' });
    expect(calls.some((c) => c.name === 'fillRect' && c.state.fillStyle === 'rgba(160,120,255,0.22)')).toBe(false);
    expect(calls.filter((c) => c.name === 'stroke' && c.state.lineWidth === 2.5)).toHaveLength(6);
  });

  it('signal markers from a SignalTrack: ▲/▼ filled at their bin close and price, ■ exits labelled, off-view ones skipped', () => {
    const calls: Call[] = [];
    const r = new Renderer(fakeCanvas(calls));
    const m = emaDrawModel(); // bins end at 0 … 1100 ms, spot ticks 19200 … 19211 ($4800 … $4802.75)
    const track = new SignalTrack(100);
    const ns = (tsMs: number) => String(BigInt(tsMs) * 1_000_000n);
    track.add({ bin_seq: 5, ts_ns: ns(500), score: 0.4, events: [{ event: 'entry', bin_seq: 5, ts_ns: ns(500), direction: 1, price: 4801.25 }] }, 0.25);
    track.add({ bin_seq: 8, ts_ns: ns(800), score: -0.2, events: [
      { event: 'exit', bin_seq: 8, ts_ns: ns(800), direction: 1, price: 4802, outcome: 'tp', pnl_ticks: 3 },
      { event: 'entry', bin_seq: 8, ts_ns: ns(800), direction: -1, price: 4802 },
    ] }, 0.25);
    track.add({ bin_seq: 9, ts_ns: ns(900), score: 0, events: [{ event: 'exit', bin_seq: -90, ts_ns: ns(-9000), direction: -1, price: 4802, outcome: 'timeout', pnl_ticks: 0 }] }, 0.25);
    r.draw({ ...m, markers: track.markers });
    expect(r.drawnMarkers.map((d) => d.kind)).toEqual(['entry_long', 'exit', 'entry_short']); // the -9 s exit is out of view
    const fills = calls.filter((c) => c.name === 'fill').map((c) => c.state.fillStyle);
    expect(fills).toEqual(expect.arrayContaining([BUY_COLOR, SELL_COLOR, '#f5f5f5']));
    const v = m.view;
    const P = plotRect(800, 400, 1);
    expect(r.drawnMarkers[0].x).toBeCloseTo(v.x(500, P.w), 6);
    expect(r.drawnMarkers[0].y).toBeCloseTo(v.y(19205, P.h), 6); // $4801.25 / $0.25
    const texts = calls.filter((c) => c.name === 'fillText').map((c) => String(c.args[0]));
    expect(texts).toEqual(expect.arrayContaining(['long', 'tp +3t', 'short']));
    r.draw(m); // no markers: none recorded
    expect(r.drawnMarkers).toEqual([]);
  });

  it('SUPPORTED lists the line overlays', () => {
    expect(Renderer.SUPPORTED.has('ema_lines')).toBe(true);
    expect(Renderer.SUPPORTED.has('sma_lines')).toBe(true);
  });
});
