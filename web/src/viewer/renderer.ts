/**
 * Canvas 2D drawing of the viewer (the pixels are exercised by the Playwright suite; the maths is unit-tested in
 * the pure modules). Layout, in CSS px × devicePixelRatio:
 *
 *   ┌──────────────── plot ────────────────┬ ladder ┬ depth ┬ volume ┐
 *   │ heatmap (HeatCache) or candles,       │ prices │ book  │ traded │
 *   │ trades, overlays (z_order), legends   │ BBO,   │ now   │ in the │
 *   │                                       │ last   │       │ window │
 *   ├──────────────── time axis (ET) ──────┴────────┴───────┴────────┘
 *
 * Time runs along x by bin end time (Viewport: zoom, pan, follow live; a gap in the bins stays a gap), absolute
 * price ticks along y. Every layer reads only the visible bins, and aggregates per pixel column when zoomed out,
 * so a frame costs about the same for 2 minutes or 30 minutes of history. The crosshair and its tooltip live on
 * the app's overlay canvas / DOM, so moving the mouse never redraws this canvas.
 */

import { formatPrice, priceDecimals, priceTicks, timeTicks } from './axes';
import type { TimedCandle } from './candles';
import { colorFor, cssRgb, type ColorScheme } from './colormap';
import { EMA_SIGNAL_FIELD, emaField, smaField } from './ema';
import type { FieldInfo } from './fields';
import { type HeatCache, visibleRuns } from './heatcache';
import type { LineSet } from './model';
import type { Normalizer } from './normalize';
import type { BinRing } from './ring';
import { type Profile, type TradeLog, volumeProfile } from './trades';
import type { Viewport } from './viewport';
import { PROJECTION_HALF_ROWS, projectionCenterTick, type Overlay } from './vizconfig';

/** A signal event drawn on the plot (entries/exits of the served model's signal, when the stream sends them). */
export interface Marker {
  readonly tsMs: number;
  readonly tick: number;
  readonly kind: 'entry_long' | 'entry_short' | 'exit';
  readonly label: string;
}

export interface DrawModel {
  readonly ring: BinRing;
  readonly trades: TradeLog;
  readonly mode: 'heatmap' | 'candle';
  readonly field: string;
  readonly info: FieldInfo;
  readonly normalizer: Normalizer;
  readonly gamma: number;
  readonly scheme: ColorScheme;
  readonly view: Viewport;
  readonly cache: HeatCache | null;
  readonly radius: number;
  readonly cellMs: number;
  readonly overlays: readonly Overlay[];
  readonly horizonsBins: readonly number[];
  /** Price in dollars of absolute tick t: t × tickDollars. */
  readonly tickDollars: number;
  readonly goldReady: boolean;
  /** Candles of the visible range (candle mode). */
  readonly candles: readonly TimedCandle[];
  /** ema_lines / sma_lines overlays by overlay id (from the model); an overlay missing here is not drawn. */
  readonly lineSets: ReadonlyMap<string, LineSet>;
  readonly showTrades: boolean;
  readonly markers: readonly Marker[];
  /** Live feed gaps (ms): hatched bands, the book is invalid there. */
  readonly gaps: readonly { readonly t0: number; readonly t1: number }[];
  /** A line of text over the plot (e.g. "PAUSED", "history"), or ''. */
  readonly banner: string;
}

export const EMA_COLORS = ['#ffd166', '#4cc9f0', '#f72585', '#80ed99', '#c77dff', '#ff9f1c'] as const;
export const SMA_COLORS = ['#f4a261', '#a8dadc', '#e9c46a', '#b8c0ff', '#ffafcc', '#95d5b2'] as const;
export const BUY_COLOR = '#36d67e';
export const SELL_COLOR = '#ff4f6d';
export const BID_COLOR = '#2fb4e6';
export const ASK_COLOR = '#f08e28';

/** CSS px of the panels right of the plot and of the time axis. */
export const LAYOUT = { ladder: 66, depth: 58, volume: 58, time: 22 } as const;

export interface PlotRect {
  readonly w: number;
  readonly h: number;
  readonly dpr: number;
}

/** The plot area of a canvas W × H device px. */
export function plotRect(W: number, H: number, dpr: number): PlotRect {
  return { w: Math.max(10, W - (LAYOUT.ladder + LAYOUT.depth + LAYOUT.volume) * dpr), h: Math.max(10, H - LAYOUT.time * dpr), dpr };
}

/** Visible held-bin index range [i0, i1] for the view (i1 < i0 when none). */
export function visibleBins(ring: BinRing, t0: number, t1: number, cellMs: number): [number, number] {
  if (ring.size === 0) return [0, -1];
  const i0 = Math.max(0, ring.indexAtOrBefore(t0));
  const i1 = ring.indexAtOrBefore(t1 + cellMs);
  return [i0, i1];
}

/** Per pixel column (zoomed out): min / max of the spot, bid and ask ticks of the bins drawn there. */
export interface ScalarLod {
  readonly x: Float64Array;
  readonly n: number;
  readonly lo: Record<Series, Float64Array>;
  readonly hi: Record<Series, Float64Array>;
}

export type Series = 'spot' | 'bid' | 'ask';

/** One pass over bins i0..i1: the per-pixel min/max of the three scalar series (a pixel column whose bins are all
 * NaN keeps NaN: the trail breaks there). A bin's left edge is at x = xa + xb·tsMs px; its column is floor(x). */
export function scalarLod(ring: BinRing, i0: number, i1: number, xa: number, xb: number): ScalarLod {
  const cap = Math.max(0, i1 - i0 + 1);
  const lo = { spot: new Float64Array(cap), bid: new Float64Array(cap), ask: new Float64Array(cap) };
  const hi = { spot: new Float64Array(cap), bid: new Float64Array(cap), ask: new Float64Array(cap) };
  const [los, lob, loa, his, hib, hia] = [lo.spot, lo.bid, lo.ask, hi.spot, hi.bid, hi.ask];
  const x = new Float64Array(cap);
  let n = -1;
  let px = NaN;
  for (let i = i0; i <= i1; i++) {
    const xi = Math.floor(xa + xb * ring.tsAt(i));
    if (xi !== px) {
      n++;
      px = xi;
      x[n] = xi;
      los[n] = lob[n] = loa[n] = his[n] = hib[n] = hia[n] = NaN;
    }
    const s = ring.spotAt(i);
    const b = ring.bidAt(i);
    const a = ring.askAt(i);
    if (s === s) { // not NaN; comparisons with a NaN start take the first value
      if (!(s >= los[n])) los[n] = s;
      if (!(s <= his[n])) his[n] = s;
    }
    if (b === b) {
      if (!(b >= lob[n])) lob[n] = b;
      if (!(b <= hib[n])) hib[n] = b;
    }
    if (a === a) {
      if (!(a >= loa[n])) loa[n] = a;
      if (!(a <= hia[n])) hia[n] = a;
    }
  }
  return { x, n: n + 1, lo, hi };
}

export class Renderer {
  private readonly ctx: CanvasRenderingContext2D;
  /** This frame's per-pixel scalar series when zoomed out (null when a bin is ≥ 1 px wide). */
  private lod: ScalarLod | null = null;
  /** Overlay types this renderer draws; the app lists the others. */
  static readonly SUPPORTED = new Set(['vp_gold', 'spot_trail', 'bbo_spread', 'bbo_trail', 'projection_bands', 'ema_lines', 'sma_lines']);
  /** The last frame's volume profile (the tooltip reads it). */
  profile: Profile | null = null;
  /** The last frame's signal markers in the visible time range (canvas px; at most 64), for the page's stats. */
  drawnMarkers: { x: number; y: number; kind: Marker['kind'] }[] = [];

  constructor(readonly canvas: HTMLCanvasElement) {
    this.ctx = canvas.getContext('2d', { alpha: false })!;
  }

  /** Match the backing store to the element size × devicePixelRatio; returns true if it changed. */
  resize(): boolean {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.canvas.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.canvas.clientHeight * dpr));
    if (this.canvas.width === w && this.canvas.height === h) return false;
    this.canvas.width = w;
    this.canvas.height = h;
    return true;
  }

  /** A message on an empty canvas (before the runtime_config, or when a day has no bins). */
  placeholder(text: string): void {
    const { ctx, canvas } = this;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#0c0e14';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.font = `${14 * dpr}px system-ui, sans-serif`;
    ctx.fillStyle = '#8a90a0';
    ctx.textBaseline = 'middle';
    ctx.fillText(text, 20 * dpr, canvas.height / 2);
  }

  draw(m: DrawModel): void {
    const { ctx, canvas } = this;
    const dpr = window.devicePixelRatio || 1;
    const W = canvas.width;
    const H = canvas.height;
    const P = plotRect(W, H, dpr);
    const v = m.view;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#0c0e14';
    ctx.fillRect(0, 0, W, H);
    const [i0, i1] = visibleBins(m.ring, v.t0, v.t1, m.cellMs);
    const xOf = (t: number) => v.x(t, P.w);
    const yOf = (tick: number) => v.y(tick, P.h);
    const colW = (m.cellMs / (v.t1 - v.t0)) * P.w;
    const x0 = (i: number) => xOf(m.ring.tsAt(i) - m.cellMs);

    ctx.save();
    ctx.beginPath();
    ctx.rect(0, 0, P.w, P.h);
    ctx.clip();
    if (m.mode === 'heatmap') this.heatmap(m, i0, i1, P);
    this.grid(m, P);
    if (m.mode === 'candle') this.candles(m, xOf, yOf, dpr);
    const lod = { i0: Math.max(0, i0 - 1), i1: Math.min(m.ring.size - 1, i1 + 1) };
    const pxPerMs = P.w / (v.t1 - v.t0);
    this.lod = colW < 1 && lod.i1 >= lod.i0 ? scalarLod(m.ring, lod.i0, lod.i1, -(v.t0 + m.cellMs) * pxPerMs, pxPerMs) : null;
    for (const o of m.overlays) this.overlay(o, m, lod, x0, colW, yOf, P);
    if (m.showTrades) this.trades(m, i0, i1, xOf, yOf, P);
    this.markers(m, xOf, yOf, dpr);
    this.gapBands(m, xOf, P);
    ctx.restore();

    this.timeAxis(m, P, H);
    this.ladder(m, P, W);
    this.profiles(m, i0, i1, P);
    this.legend(m, P);
    this.lineLegend(m, dpr);
    if (m.banner) this.bannerText(m.banner, P);
  }

  // ---- layers ---------------------------------------------------------------------------------------

  private heatmap(m: DrawModel, i0: number, i1: number, P: PlotRect): void {
    const cache = m.cache;
    if (!cache || i1 < i0 || Number.isNaN(cache.top)) return;
    const ctx = this.ctx;
    const v = m.view;
    ctx.imageSmoothingEnabled = false;
    const sy = cache.rowOf(v.hi); // continuous: the view's top edge is tick value hi (tick centres at integers)
    const sh = v.hi - v.lo;
    for (const r of visibleRuns(m.ring, i0, i1, m.cellMs)) {
      const tile = cache.tiles[r.tile];
      if (!tile) continue;
      const n = r.i1 - r.i0 + 1;
      const xa = v.x(m.ring.tsAt(r.i0) - m.cellMs, P.w);
      const xb = v.x(m.ring.tsAt(r.i1), P.w);
      ctx.drawImage(tile.canvas, r.x, sy, n, sh, xa, 0, Math.max(xb - xa, 0.5), P.h);
    }
  }

  private grid(m: DrawModel, P: PlotRect): void {
    const ctx = this.ctx;
    const v = m.view;
    ctx.lineWidth = 1;
    for (const t of timeTicks(v.t0, v.t1, P.w / P.dpr)) {
      ctx.strokeStyle = t.major ? 'rgba(255,255,255,0.10)' : 'rgba(255,255,255,0.04)';
      const x = Math.round(v.x(t.value, P.w)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, 0);
      ctx.lineTo(x, P.h);
      ctx.stroke();
    }
    for (const t of priceTicks(Math.ceil(v.lo), Math.floor(v.hi), P.h / P.dpr, m.tickDollars)) {
      ctx.strokeStyle = t.major ? 'rgba(255,255,255,0.08)' : 'rgba(255,255,255,0.035)';
      const y = Math.round(v.y(t.value, P.h)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(0, y);
      ctx.lineTo(P.w, y);
      ctx.stroke();
    }
  }

  private candles(m: DrawModel, xOf: (t: number) => number, yOf: (t: number) => number, dpr: number): void {
    const ctx = this.ctx;
    for (const c of m.candles) {
      const left = xOf(c.t0);
      const w = xOf(c.t1) - left;
      const mid = left + w / 2;
      const up = c.close >= c.open;
      ctx.strokeStyle = ctx.fillStyle = up ? '#3ecf7a' : '#ef5a5a';
      ctx.lineWidth = Math.max(1, Math.min(w * 0.12, 2 * dpr));
      ctx.beginPath();
      ctx.moveTo(mid, yOf(c.high));
      ctx.lineTo(mid, yOf(c.low));
      ctx.stroke();
      const yo = yOf(c.open);
      const yc = yOf(c.close);
      const bw = Math.max(1, w * 0.7);
      ctx.fillRect(mid - bw / 2, Math.min(yo, yc), bw, Math.max(1, Math.abs(yc - yo)));
    }
  }

  /** Trades as bubbles (area ∝ volume) at their price, coloured by aggressor side; summed per pixel bucket. */
  private trades(m: DrawModel, i0: number, i1: number, xOf: (t: number) => number, yOf: (t: number) => number, P: PlotRect): void {
    if (i1 < i0 || m.trades.count === 0) return;
    const ring = m.ring;
    const p0 = ring.seqOf(i0);
    const p1 = ring.seqOf(i1) + 1;
    const dpr = P.dpr;
    const bucketPx = 6 * dpr;
    const buckets = new Map<number, { x: number; tick: number; buy: number; sell: number }>();
    const first = ring.first;
    let maxVol = 0;
    m.trades.forEach(p0, p1, (p, tick, vol, side) => {
      const x = xOf(ring.tsAt(p - first) - m.cellMs / 2);
      const bx = Math.floor(x / bucketPx);
      const key = bx * 1e7 + (tick % 1e7);
      let b = buckets.get(key);
      if (!b) {
        b = { x, tick, buy: 0, sell: 0 };
        buckets.set(key, b);
      }
      if (side > 0) b.buy += vol;
      else b.sell += vol;
      maxVol = Math.max(maxVol, b.buy + b.sell);
    });
    if (!buckets.size) return;
    const ctx = this.ctx;
    const rowPx = Math.abs(yOf(0) - yOf(1));
    const rMax = Math.max(3 * dpr, Math.min(16 * dpr, rowPx * 2.5));
    const rMin = 1.6 * dpr;
    const ref = Math.max(maxVol, 1);
    const sorted = [...buckets.values()].sort((a, b) => b.buy + b.sell - (a.buy + a.sell));
    ctx.lineWidth = 1 * dpr;
    for (const b of sorted) {
      const total = b.buy + b.sell;
      const r = rMin + (rMax - rMin) * Math.sqrt(total / ref);
      const y = yOf(b.tick);
      ctx.globalAlpha = 0.8;
      ctx.fillStyle = b.buy >= b.sell ? BUY_COLOR : SELL_COLOR;
      ctx.beginPath();
      ctx.arc(b.x, y, r, 0, 2 * Math.PI);
      ctx.fill();
      if (b.buy > 0 && b.sell > 0) { // mixed: the minority side as an inner disc
        ctx.fillStyle = b.buy >= b.sell ? SELL_COLOR : BUY_COLOR;
        ctx.beginPath();
        ctx.arc(b.x, y, r * Math.sqrt(Math.min(b.buy, b.sell) / total), 0, 2 * Math.PI);
        ctx.fill();
      }
      ctx.globalAlpha = 1;
      if (r > 3 * dpr) {
        ctx.strokeStyle = 'rgba(255,255,255,0.55)';
        ctx.beginPath();
        ctx.arc(b.x, y, r, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
  }

  private gapBands(m: DrawModel, xOf: (t: number) => number, P: PlotRect): void {
    if (!m.gaps.length) return;
    const ctx = this.ctx;
    const dpr = P.dpr;
    for (const g of m.gaps) {
      if (g.t1 < m.view.t0 || g.t0 > m.view.t1) continue;
      const x0 = xOf(g.t0);
      const w = Math.max(xOf(g.t1) - x0, 3 * dpr);
      ctx.fillStyle = 'rgba(255,80,80,0.12)';
      ctx.fillRect(x0, 0, w, P.h);
      ctx.strokeStyle = 'rgba(255,120,120,0.45)';
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (let y = -w; y < P.h; y += 8 * dpr) { // hatching
        ctx.moveTo(x0, y + w);
        ctx.lineTo(x0 + w, y);
      }
      ctx.stroke();
      ctx.fillStyle = '#ff9a9a';
      ctx.font = `${10 * dpr}px system-ui, sans-serif`;
      ctx.textBaseline = 'top';
      ctx.fillText('feed gap', x0 + 3 * dpr, 60 * dpr);
    }
  }

  private markers(m: DrawModel, xOf: (t: number) => number, yOf: (t: number) => number, dpr: number): void {
    this.drawnMarkers = [];
    if (!m.markers.length) return;
    const ctx = this.ctx;
    const s = 7 * dpr;
    ctx.font = `${10 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = 'middle';
    for (const mk of m.markers) {
      if (mk.tsMs < m.view.t0 - m.cellMs || mk.tsMs > m.view.t1) continue;
      const x = xOf(mk.tsMs);
      const y = yOf(mk.tick);
      if (this.drawnMarkers.length < 64) this.drawnMarkers.push({ x, y, kind: mk.kind });
      ctx.beginPath();
      if (mk.kind === 'entry_long') {
        ctx.fillStyle = BUY_COLOR;
        ctx.moveTo(x, y - s);
        ctx.lineTo(x - s, y + s);
        ctx.lineTo(x + s, y + s);
      } else if (mk.kind === 'entry_short') {
        ctx.fillStyle = SELL_COLOR;
        ctx.moveTo(x, y + s);
        ctx.lineTo(x - s, y - s);
        ctx.lineTo(x + s, y - s);
      } else {
        ctx.fillStyle = '#f5f5f5';
        ctx.rect(x - s * 0.7, y - s * 0.7, s * 1.4, s * 1.4);
      }
      ctx.closePath();
      ctx.fill();
      ctx.strokeStyle = '#000';
      ctx.lineWidth = 1;
      ctx.stroke();
      if (mk.label) {
        ctx.fillStyle = '#eee';
        ctx.fillText(mk.label, x + s + 2 * dpr, y);
      }
    }
  }

  /**
   * A polyline of `pick(i)` (ticks) over bins lod.i0..lod.i1; zoomed out (several bins per pixel) each pixel column
   * becomes one vertical min–max segment, so the path has at most ~2 points per pixel.
   */
  private trail(lod: { i0: number; i1: number }, x0: (i: number) => number, colW: number,
    y: (t: number) => number, pick: (i: number) => number, step: boolean, series?: Series): void {
    const ctx = this.ctx;
    ctx.beginPath();
    if (series && this.lod) { // zoomed out: the frame's per-pixel min/max of a scalar series
      const { x, n } = this.lod;
      const lo = this.lod.lo[series];
      const hi = this.lod.hi[series];
      let pen = false;
      for (let k = 0; k < n; k++) {
        if (Number.isNaN(lo[k])) {
          pen = false;
          continue;
        }
        if (pen) ctx.lineTo(x[k], y(lo[k]));
        else ctx.moveTo(x[k], y(lo[k]));
        ctx.lineTo(x[k], y(hi[k]));
        pen = true;
      }
    } else if (colW >= 1) {
      let pen = false;
      for (let i = lod.i0; i <= lod.i1; i++) {
        const t = pick(i);
        if (!Number.isFinite(t)) {
          pen = false;
          continue;
        }
        const yy = y(t);
        const xl = x0(i);
        if (step) {
          if (pen) ctx.lineTo(xl, yy);
          else ctx.moveTo(xl, yy);
          ctx.lineTo(xl + colW, yy);
        } else if (pen) ctx.lineTo(xl + colW / 2, yy);
        else ctx.moveTo(xl + colW / 2, yy);
        pen = true;
      }
    } else {
      let px = NaN;
      let lo = Infinity;
      let hi = -Infinity;
      let pen = false;
      const flush = () => {
        if (!Number.isFinite(px) || lo > hi) return;
        if (pen) ctx.lineTo(px, y(lo));
        else ctx.moveTo(px, y(lo));
        ctx.lineTo(px, y(hi));
        pen = true;
      };
      for (let i = lod.i0; i <= lod.i1; i++) {
        const t = pick(i);
        const xi = Math.round(x0(i));
        if (xi !== px) {
          flush();
          px = xi;
          lo = Infinity;
          hi = -Infinity;
        }
        if (!Number.isFinite(t)) {
          flush();
          lo = Infinity;
          hi = -Infinity;
          pen = false;
          continue;
        }
        if (t < lo) lo = t;
        if (t > hi) hi = t;
      }
      flush();
    }
    ctx.stroke();
  }

  private overlay(o: Overlay, m: DrawModel, lod: { i0: number; i1: number }, x0: (i: number) => number, colW: number,
    y: (t: number) => number, P: PlotRect): void {
    const ctx = this.ctx;
    const ring = m.ring;
    const dpr = P.dpr;
    if (ring.size === 0) return;
    switch (o.type) {
      case 'spot_trail':
        ctx.strokeStyle = 'rgba(255,230,120,0.95)';
        ctx.lineWidth = 1.5 * dpr;
        this.trail(lod, x0, colW, y, (i) => ring.spotAt(i), false, 'spot');
        break;
      case 'bbo_trail':
        ctx.lineWidth = 1.25 * dpr;
        ctx.strokeStyle = BID_COLOR;
        this.trail(lod, x0, colW, y, (i) => ring.bidAt(i), true, 'bid');
        ctx.strokeStyle = ASK_COLOR;
        this.trail(lod, x0, colW, y, (i) => ring.askAt(i), true, 'ask');
        break;
      case 'bbo_spread':
        if (colW < 1) break; // sub-pixel bins: the BBO trail shows the spread
        ctx.fillStyle = 'rgba(200,200,255,0.12)';
        for (let i = lod.i0; i <= lod.i1; i++) {
          const s = ring.scalarsAt(i);
          if (!Number.isFinite(s.bidTick) || !Number.isFinite(s.askTick)) continue;
          const ya = y(s.askTick);
          ctx.fillRect(x0(i), ya, colW, y(s.bidTick) - ya);
        }
        break;
      case 'projection_bands':
        this.bands(o, m, lod, x0, colW, y, dpr);
        break;
      case 'vp_gold':
        this.gauge(m, P);
        break;
      case 'ema_lines':
      case 'sma_lines': {
        const set = m.lineSets.get(o.id);
        if (set) this.lines(set, m, lod, x0, colW, y, dpr);
        break;
      }
      default:
        break; // unknown types are listed by the app
    }
  }

  private lines(set: LineSet, m: DrawModel, lod: { i0: number; i1: number }, x0: (i: number) => number, colW: number,
    y: (t: number) => number, dpr: number): void {
    const ctx = this.ctx;
    const ring = m.ring;
    const r = m.radius;
    const tickOf = (field: string) => (i: number) => ring.value(field, i, r) / m.tickDollars;
    ctx.lineWidth = set.lineWidth * dpr;
    ctx.lineJoin = 'round';
    set.emaPeriods.forEach((p, j) => {
      if (!ring.has(emaField(p))) return;
      ctx.strokeStyle = EMA_COLORS[j % EMA_COLORS.length];
      this.trail(lod, x0, colW, y, tickOf(emaField(p)), false);
    });
    ctx.setLineDash([5 * dpr, 4 * dpr]);
    set.smaPeriods.forEach((p, j) => {
      if (!ring.has(smaField(p))) return;
      ctx.strokeStyle = SMA_COLORS[j % SMA_COLORS.length];
      this.trail(lod, x0, colW, y, tickOf(smaField(p)), false);
    });
    ctx.setLineDash([]);
  }

  private bands(o: Overlay, m: DrawModel, lod: { i0: number; i1: number }, x0: (i: number) => number, colW: number,
    y: (t: number) => number, dpr: number): void {
    const field = typeof o.params.signal_field === 'string' ? o.params.signal_field : 'flow_score';
    const scale = typeof o.params.composite_scale === 'number' ? o.params.composite_scale : 8;
    const ring = m.ring;
    if (!ring.has(field) || ring.size === 0 || m.horizonsBins.length === 0) return;
    const ctx = this.ctx;
    const half = PROJECTION_HALF_ROWS;
    const rowH = y(0) - y(1);
    const signalAt = (i: number) => ring.value(field, i, m.radius);
    // historical: the first horizon's centre as drawn from each past bin (not when zoomed out past 2 bins per
    // pixel, where it is noise and costs a pass over every bin)
    const h0 = Math.min(...m.horizonsBins);
    if (colW >= 0.5) {
      ctx.strokeStyle = 'rgba(160,120,255,0.55)';
      ctx.lineWidth = 1 * dpr;
      this.trail(lod, (i) => x0(i) + h0 * colW, colW, y, (i) => {
        const s = ring.spotAt(i);
        const sig = signalAt(i);
        return Number.isFinite(s) && Number.isFinite(sig) ? projectionCenterTick(s, sig, scale, h0) : NaN;
      }, false);
    }
    // forward: bands from the newest bin
    const last = ring.size - 1;
    const spot = ring.scalarsAt(last).spotTick;
    const sig = signalAt(last);
    if (!Number.isFinite(spot) || !Number.isFinite(sig)) return;
    ctx.fillStyle = 'rgba(160,120,255,0.22)';
    ctx.strokeStyle = 'rgba(190,160,255,0.9)';
    const w = Math.max(colW, 2 * dpr);
    for (const h of m.horizonsBins) {
      const c = projectionCenterTick(spot, sig, scale, h);
      const x = x0(last) + h * colW;
      ctx.fillRect(x, y(c) - (half + 0.5) * rowH, w, (2 * half + 1) * rowH);
      ctx.beginPath();
      ctx.moveTo(x, y(c));
      ctx.lineTo(x + w, y(c));
      ctx.stroke();
    }
  }

  private gauge(m: DrawModel, P: PlotRect): void {
    const ring = m.ring;
    const dpr = P.dpr;
    if (!ring.has('flow_score') || ring.size === 0) return;
    const last = ring.size - 1;
    const score = ring.value('flow_score', last, m.radius);
    const code = ring.has('flow_state_code') ? ring.value('flow_state_code', last, m.radius) : NaN;
    const ctx = this.ctx;
    const w = 180 * dpr;
    const h = 44 * dpr;
    const x = 10 * dpr;
    const yy = 10 * dpr;
    ctx.fillStyle = 'rgba(10,12,18,0.82)';
    ctx.fillRect(x, yy, w, h);
    ctx.strokeStyle = 'rgba(255,255,255,0.25)';
    ctx.lineWidth = 1;
    ctx.strokeRect(x, yy, w, h);
    const barX = x + 8 * dpr;
    const barW = w - 16 * dpr;
    const barY = yy + 26 * dpr;
    const barH = 10 * dpr;
    ctx.fillStyle = 'rgba(255,255,255,0.12)';
    ctx.fillRect(barX, barY, barW, barH);
    const mid = barX + barW / 2;
    if (Number.isFinite(score)) {
      const s = Math.max(-1, Math.min(1, score));
      ctx.fillStyle = s >= 0 ? '#ef8a3a' : '#3a9aef';
      ctx.fillRect(Math.min(mid, mid + (s * barW) / 2), barY, Math.abs((s * barW) / 2), barH);
    }
    ctx.fillStyle = '#fff';
    ctx.fillRect(mid, barY - 2 * dpr, 1, barH + 4 * dpr);
    const state = code > 0 ? 'PRESSURE ▲' : code < 0 ? 'VACUUM ▼' : 'neutral';
    ctx.font = `${12 * dpr}px system-ui, sans-serif`;
    ctx.fillStyle = code > 0 ? '#ffb070' : code < 0 ? '#80c0ff' : '#ccc';
    ctx.textBaseline = 'top';
    ctx.fillText(`flow ${Number.isFinite(score) ? score.toFixed(3) : '—'}  ${state}${m.goldReady ? '' : ' (warming)'}`, barX, yy + 6 * dpr);
  }

  // ---- axes and panels ------------------------------------------------------------------------------

  private timeAxis(m: DrawModel, P: PlotRect, H: number): void {
    const ctx = this.ctx;
    const dpr = P.dpr;
    ctx.fillStyle = '#11141c';
    ctx.fillRect(0, P.h, P.w, H - P.h);
    ctx.strokeStyle = 'rgba(255,255,255,0.25)';
    ctx.lineWidth = 1;
    ctx.font = `${11 * dpr}px ui-monospace, monospace`;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'center';
    for (const t of timeTicks(m.view.t0, m.view.t1, P.w / dpr)) {
      const x = Math.round(m.view.x(t.value, P.w)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, P.h);
      ctx.lineTo(x, P.h + (t.major ? 6 : 3) * dpr);
      ctx.stroke();
      ctx.fillStyle = t.major ? '#dde' : '#99a';
      ctx.fillText(t.label, x, P.h + 13 * dpr);
    }
    ctx.textAlign = 'left';
    ctx.fillStyle = '#667';
    ctx.fillText('ET', 4 * dpr, P.h + 13 * dpr);
  }

  private ladder(m: DrawModel, P: PlotRect, W: number): void {
    const ctx = this.ctx;
    const dpr = P.dpr;
    const v = m.view;
    const x = P.w;
    const w = LAYOUT.ladder * dpr;
    ctx.fillStyle = '#11141c';
    ctx.fillRect(x, 0, W - x, P.h + LAYOUT.time * dpr);
    ctx.font = `${11 * dpr}px ui-monospace, monospace`;
    ctx.textBaseline = 'middle';
    ctx.textAlign = 'left';
    const dec = priceDecimals(m.tickDollars);
    for (const t of priceTicks(Math.ceil(v.lo), Math.floor(v.hi), P.h / dpr, m.tickDollars)) {
      const y = v.y(t.value, P.h);
      ctx.fillStyle = t.major ? '#dde' : '#99a';
      ctx.fillText(t.label, x + 8 * dpr, y);
      ctx.fillRect(x, Math.round(y), 4 * dpr, 1);
    }
    const s = m.ring.newest();
    const tag = (tick: number, bg: string, fg: string, text: string) => {
      if (!Number.isFinite(tick) || tick < v.lo - 0.5 || tick > v.hi + 0.5) return;
      const y = v.y(tick, P.h);
      const h = 14 * dpr;
      ctx.fillStyle = bg;
      ctx.fillRect(x + 2 * dpr, y - h / 2, w - 4 * dpr, h);
      ctx.fillStyle = fg;
      ctx.fillText(text, x + 6 * dpr, y);
    };
    if (s) {
      tag(s.bidTick, BID_COLOR, '#001018', formatPrice(s.bidTick, m.tickDollars, dec));
      tag(s.askTick, ASK_COLOR, '#1a0800', formatPrice(s.askTick, m.tickDollars, dec));
    }
    const last = m.trades.last();
    if (last) {
      tag(last.tick, '#f2f2f2', last.side > 0 ? '#0a6b35' : '#9b1030', `${formatPrice(last.tick, m.tickDollars, dec)}`);
      const y = v.y(last.tick, P.h);
      ctx.fillStyle = last.side > 0 ? BUY_COLOR : SELL_COLOR;
      ctx.beginPath(); // last-trade pointer into the plot
      ctx.moveTo(x, y);
      ctx.lineTo(x + 5 * dpr, y - 5 * dpr);
      ctx.lineTo(x + 5 * dpr, y + 5 * dpr);
      ctx.fill();
    }
  }

  /** The current book's depth by price and the traded volume of the visible window, right of the ladder. */
  private profiles(m: DrawModel, i0: number, i1: number, P: PlotRect): void {
    const ctx = this.ctx;
    const dpr = P.dpr;
    const v = m.view;
    const ring = m.ring;
    const xd = P.w + LAYOUT.ladder * dpr;
    const wd = LAYOUT.depth * dpr;
    const xv = xd + wd;
    const wv = LAYOUT.volume * dpr;
    const rowPx = Math.abs(v.y(0, P.h) - v.y(1, P.h));
    const barH = Math.max(1, rowPx - (rowPx > 3 ? 1 : 0));
    ctx.fillStyle = 'rgba(255,255,255,0.12)';
    ctx.fillRect(xd, 0, 1, P.h);
    ctx.fillRect(xv, 0, 1, P.h);
    ctx.font = `${9 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = 'top';
    ctx.fillStyle = '#889';
    ctx.fillText('DEPTH', xd + 4 * dpr, 3 * dpr);
    ctx.fillText('VOLUME', xv + 4 * dpr, 3 * dpr);
    // depth: the newest bin's bid/ask depth per tick
    const last = ring.size - 1;
    const s = ring.newest();
    if (s && Number.isFinite(s.spotTick) && ring.has('bid_depth') && ring.has('ask_depth')) {
      const bid = ring.column('bid_depth', last);
      const ask = ring.column('ask_depth', last);
      let max = 0;
      for (let r = 0; r < bid.length; r++) max = Math.max(max, bid[r] || 0, ask[r] || 0);
      if (max > 0) {
        for (let r = 0; r < bid.length; r++) {
          const tick = s.spotTick + r - m.radius;
          if (tick < v.lo - 1 || tick > v.hi + 1) continue;
          const y = v.y(tick, P.h) - barH / 2;
          if (bid[r] > 0) {
            ctx.fillStyle = BID_COLOR;
            ctx.fillRect(xd + 1, y, (wd - 2) * (bid[r] / max), barH);
          }
          if (ask[r] > 0) {
            ctx.fillStyle = ASK_COLOR;
            ctx.fillRect(xd + 1, y, (wd - 2) * (ask[r] / max), barH);
          }
        }
        ctx.fillStyle = '#aab';
        ctx.textBaseline = 'bottom';
        ctx.fillText(`max ${Math.round(max)}`, xd + 4 * dpr, P.h - 2 * dpr);
        ctx.textBaseline = 'top';
      }
    }
    // volume: traded volume per tick over the visible bins, buy | sell stacked
    const prof = i1 >= i0 ? volumeProfile(m.trades, ring.seqOf(i0), ring.seqOf(i1) + 1) : null;
    this.profile = prof;
    if (prof && prof.max > 0) {
      for (let k = 0; k < prof.buy.length; k++) {
        const tick = prof.lo + k;
        if (tick < v.lo - 1 || tick > v.hi + 1) continue;
        const y = v.y(tick, P.h) - barH / 2;
        const wb = (wv - 2) * (prof.buy[k] / prof.max);
        const ws = (wv - 2) * (prof.sell[k] / prof.max);
        ctx.fillStyle = BUY_COLOR;
        ctx.fillRect(xv + 1, y, wb, barH);
        ctx.fillStyle = SELL_COLOR;
        ctx.fillRect(xv + 1 + wb, y, ws, barH);
      }
      ctx.fillStyle = '#aab';
      ctx.textBaseline = 'bottom';
      ctx.fillText(`Σ ${Math.round(prof.total)}`, xv + 4 * dpr, P.h - 2 * dpr);
    }
  }

  /** Colour legend (bottom left of the plot): the field, its units, the scale in use and the gradient. */
  private legend(m: DrawModel, P: PlotRect): void {
    if (m.mode !== 'heatmap') return;
    const ctx = this.ctx;
    const dpr = P.dpr;
    const d = m.normalizer.describe();
    const w = 270 * dpr;
    const h = 62 * dpr;
    const x = 10 * dpr;
    const y = P.h - h - 8 * dpr;
    ctx.fillStyle = 'rgba(10,12,18,0.85)';
    ctx.fillRect(x, y, w, h);
    ctx.strokeStyle = 'rgba(255,255,255,0.25)';
    ctx.lineWidth = 1;
    ctx.strokeRect(x, y, w, h);
    const barX = x + 8 * dpr;
    const barW = w - 16 * dpr;
    const barY = y + 19 * dpr;
    const barH = 9 * dpr;
    const signed = m.info.signed;
    const steps = 64;
    for (let k = 0; k < steps; k++) {
      const u = signed ? (k / (steps - 1)) * 2 - 1 : k / (steps - 1);
      const g = u === 0 ? 0 : Math.sign(u) * Math.pow(Math.abs(u), m.gamma);
      ctx.fillStyle = cssRgb(colorFor(m.scheme, g));
      ctx.fillRect(barX + (k * barW) / steps, barY, barW / steps + 1, barH);
    }
    ctx.font = `${10 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = 'top';
    ctx.fillStyle = '#dde';
    ctx.fillText(`${m.field} · ${m.info.units}${m.info.note ? ` · ${m.info.note}` : ''}`, barX, y + 5 * dpr);
    const fmt = (n: number) => (!Number.isFinite(n) ? '—' : Math.abs(n) >= 100 ? n.toFixed(0) : Math.abs(n) >= 1 ? n.toFixed(1) : n.toPrecision(2));
    const book = m.field === 'book';
    ctx.fillStyle = '#aab';
    const ly = barY + barH + 2 * dpr;
    ctx.textAlign = 'left';
    ctx.fillText(signed ? (book ? `bid ${fmt(d.full)}` : fmt(2 * d.centre - d.full)) : '0', barX, ly);
    ctx.textAlign = 'center';
    if (signed) ctx.fillText(fmt(d.centre), barX + barW / 2, ly);
    ctx.textAlign = 'right';
    ctx.fillText(book ? `ask ${fmt(d.full)}` : fmt(d.full), barX + barW, ly);
    ctx.textAlign = 'left';
    ctx.fillStyle = '#889';
    ctx.fillText(`${d.text}${m.gamma !== 1 ? ` · γ ${m.gamma}` : ''}`, barX, ly + 13 * dpr);
  }

  /** Legend of the drawn line sets (top left; below the vp_gold gauge when that is drawn). */
  private lineLegend(m: DrawModel, dpr: number): void {
    const sets = m.overlays.map((o) => m.lineSets.get(o.id)).filter((s): s is LineSet => s !== undefined);
    if (sets.length === 0) return;
    const ctx = this.ctx;
    const rows: { label: string; items: { text: string; color: string; dashed: boolean }[] }[] = [];
    for (const s of sets) {
      if (s.emaLabel !== null && s.emaPeriods.length) {
        rows.push({ label: s.emaLabel, items: s.emaPeriods.map((p, j) => ({ text: String(p), color: EMA_COLORS[j % EMA_COLORS.length], dashed: false })) });
      }
      if (s.smaPeriods.length) {
        rows.push({ label: s.smaLabel, items: s.smaPeriods.map((p, j) => ({ text: String(p), color: SMA_COLORS[j % SMA_COLORS.length], dashed: true })) });
      }
    }
    const ring = m.ring;
    const sig = ring.has(EMA_SIGNAL_FIELD) && ring.size ? ring.value(EMA_SIGNAL_FIELD, ring.size - 1, m.radius) : NaN;
    const fs = 11 * dpr;
    const lineH = 16 * dpr;
    const swatch = 16 * dpr;
    ctx.font = `${fs}px system-ui, sans-serif`;
    ctx.textAlign = 'left';
    const labelW = Math.max(...rows.map((r) => ctx.measureText(r.label).width)) + 8 * dpr;
    const itemW = (t: string) => swatch + 4 * dpr + ctx.measureText(t).width + 10 * dpr;
    const sigText = Number.isFinite(sig) ? `signal ${sig >= 0 ? '+' : ''}${sig.toFixed(3)}` : '';
    const w = Math.max(ctx.measureText(sigText).width, ...rows.map((r) => labelW + r.items.reduce((a, it) => a + itemW(it.text), 0))) + 16 * dpr;
    const h = (rows.length + (sigText ? 1 : 0)) * lineH + 8 * dpr;
    const x = 10 * dpr;
    const top = (m.overlays.some((o) => o.type === 'vp_gold') && ring.has('flow_score') ? 62 : 10) * dpr;
    ctx.fillStyle = 'rgba(10,12,18,0.82)';
    ctx.fillRect(x, top, w, h);
    ctx.strokeStyle = 'rgba(255,255,255,0.25)';
    ctx.lineWidth = 1;
    ctx.strokeRect(x, top, w, h);
    ctx.textBaseline = 'middle';
    let yy = top + 4 * dpr + lineH / 2;
    for (const r of rows) {
      ctx.fillStyle = '#ccd';
      ctx.fillText(r.label, x + 8 * dpr, yy);
      let xx = x + 8 * dpr + labelW;
      for (const it of r.items) {
        ctx.strokeStyle = it.color;
        ctx.lineWidth = 2 * dpr;
        ctx.setLineDash(it.dashed ? [4 * dpr, 3 * dpr] : []);
        ctx.beginPath();
        ctx.moveTo(xx, yy);
        ctx.lineTo(xx + swatch, yy);
        ctx.stroke();
        ctx.setLineDash([]);
        ctx.fillStyle = it.color;
        ctx.fillText(it.text, xx + swatch + 4 * dpr, yy);
        xx += itemW(it.text);
      }
      yy += lineH;
    }
    if (sigText) {
      ctx.fillStyle = sig > 0 ? '#3ecf7a' : sig < 0 ? '#ef5a5a' : '#ccd';
      ctx.fillText(sigText, x + 8 * dpr, yy);
    }
  }

  private bannerText(text: string, P: PlotRect): void {
    const ctx = this.ctx;
    const dpr = P.dpr;
    ctx.font = `bold ${11 * dpr}px system-ui, sans-serif`;
    ctx.textBaseline = 'top';
    ctx.textAlign = 'right';
    const w = ctx.measureText(text).width + 12 * dpr;
    ctx.fillStyle = 'rgba(10,12,18,0.85)';
    ctx.fillRect(P.w - w - 8 * dpr, 8 * dpr, w, 18 * dpr);
    ctx.fillStyle = '#ffd166';
    ctx.fillText(text, P.w - 14 * dpr, 12 * dpr);
    ctx.textAlign = 'left';
  }
}
