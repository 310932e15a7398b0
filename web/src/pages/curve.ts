/** Equity-curve geometry for the run detail plot: API curves → time series, a time axis without overnight
 * gaps (in-sample spans several capture days), "nice" ticks and the pixel layout of the two panels.
 * DOM-free so every number here is testable; `plot.ts` only strokes what this computes. */

import type { EquityCurve } from './api';

export interface Series {
  /** ms since the epoch (ns / 1e6; sub-ms precision is below a pixel) */
  t: number[];
  y: number[];
}

export function toSeries(c: EquityCurve): Series {
  const n = Math.min(c.ts_ns.length, c.pnl_ticks.length);
  const t: number[] = [];
  const y: number[] = [];
  for (let i = 0; i < n; i++) {
    const ns = c.ts_ns[i]!;
    t.push(/^-?\d+$/.test(ns) ? Number(BigInt(ns) / 1_000_000n) : Number.NaN);
    y.push(c.pnl_ticks[i]!);
  }
  return { t, y };
}

/** Linear map of [d0, d1] onto [r0, r1]; a degenerate domain maps to the middle of the range. */
export function linear(d0: number, d1: number, r0: number, r1: number): (x: number) => number {
  if (!(d1 !== d0) || !Number.isFinite(d1 - d0)) return () => (r0 + r1) / 2;
  const k = (r1 - r0) / (d1 - d0);
  return (x) => r0 + (x - d0) * k;
}

/** Ticks at 1/2/5 × 10^k steps covering [min, max], about `count` of them. */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [];
  if (min === max) return [min];
  const lo = Math.min(min, max);
  const hi = Math.max(min, max);
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

/** Time → "trading time": every gap longer than `maxGapMs` between consecutive points (a night, a weekend)
 * is shortened to `maxGapMs`, so several capture days sit next to each other. */
export class TimeAxis {
  /** segment starts in real time and their offsets into trading time */
  private readonly starts: number[] = [];
  private readonly offsets: number[] = [];
  readonly breaks: number[] = []; // trading-time positions where a gap was cut
  readonly span: number;

  constructor(times: number[], maxGapMs = 2 * 3_600_000) {
    const t = times.filter(Number.isFinite);
    if (!t.length) {
      this.span = 0;
      return;
    }
    let offset = 0;
    this.starts.push(t[0]!);
    this.offsets.push(0);
    for (let i = 1; i < t.length; i++) {
      const gap = t[i]! - t[i - 1]!;
      if (gap > maxGapMs) {
        offset += t[i - 1]! - this.starts[this.starts.length - 1]! + maxGapMs;
        this.breaks.push(offset - maxGapMs / 2);
        this.starts.push(t[i]!);
        this.offsets.push(offset);
      }
    }
    this.span = offset + t[t.length - 1]! - this.starts[this.starts.length - 1]!;
  }

  /** trading time of a real time (ms) */
  toTrading(ms: number): number {
    let j = 0;
    while (j + 1 < this.starts.length && this.starts[j + 1]! <= ms) j++;
    return this.offsets[j]! + (ms - this.starts[j]!);
  }

  /** real time (ms) of a trading time (inverse of toTrading within a segment) */
  toReal(x: number): number {
    let j = 0;
    while (j + 1 < this.offsets.length && this.offsets[j + 1]! <= x) j++;
    return this.starts[j]! + (x - this.offsets[j]!);
  }
}

export interface Box {
  left: number;
  top: number;
  width: number;
  height: number;
}

export interface PanelLayout {
  label: string;
  box: Box;
  /** polyline in pixels, drawn as steps (pnl is booked at exits) */
  points: [number, number][];
  /** x tick pixel → real time (ms) */
  xTicks: { px: number; ms: number }[];
  /** pixel x of each cut gap (day boundaries) */
  breaks: number[];
}

export interface PlotLayout {
  yTicks: { py: number; value: number }[];
  zeroY: number | null;
  panels: PanelLayout[];
}

/** The two panels (in-sample left, out-of-sample right) sharing one y scale, inside `width` × `height`. */
export function plotLayout(width: number, height: number, curves: { label: string; series: Series }[],
  margin = { left: 56, right: 12, top: 18, bottom: 34 }, gap = 24): PlotLayout {
  const ys = curves.flatMap((c) => c.series.y).filter(Number.isFinite);
  let lo = Math.min(0, ...ys);
  let hi = Math.max(0, ...ys);
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const pad = (hi - lo) * 0.05;
  lo -= pad;
  hi += pad;
  const top = margin.top;
  const bottom = height - margin.bottom;
  const y = linear(lo, hi, bottom, top);
  const yTicks = niceTicks(lo, hi, 5).map((value) => ({ py: y(value), value }));
  const plotW = Math.max(1, width - margin.left - margin.right - gap * (curves.length - 1));
  const panelW = plotW / Math.max(1, curves.length);
  const panels = curves.map((c, i) => {
    const left = margin.left + i * (panelW + gap);
    const axis = new TimeAxis(c.series.t);
    const x = linear(0, axis.span, left, left + panelW);
    const points: [number, number][] = [];
    c.series.t.forEach((t, k) => {
      const v = c.series.y[k]!;
      if (Number.isFinite(t) && Number.isFinite(v)) points.push([x(axis.toTrading(t)), y(v)]);
    });
    const xTicks = axis.span > 0 ? niceTicks(0, axis.span, Math.max(2, Math.floor(panelW / 90))).map((tt) => ({ px: x(tt), ms: axis.toReal(tt) })) : [];
    return { label: c.label, box: { left, top, width: panelW, height: bottom - top }, points, xTicks, breaks: axis.breaks.map(x) };
  });
  return { yTicks, zeroY: y(0), panels };
}
