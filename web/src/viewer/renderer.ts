/**
 * Canvas 2D drawing of the viewer (exercised by the Playwright suite; the maths it uses is unit-tested in the
 * pure modules). Time runs along x (newest bin at the right, a few future columns reserved for projection
 * bands), absolute price ticks along y (PriceView: the grid stays, the BBO moves). Heatmap cells are written
 * into a (columns × visible rows) ImageData through a colour LUT and scaled up without smoothing; candle mode
 * draws SPEC §9 candles instead. Trade markers and overlays (in z_order) are drawn on top: EMA lines (solid)
 * and SMA lines (dashed) of `ema_lines` / `sma_lines` overlays come from the ring's browser-computed
 * ema_<p> / sma_<p> fields (dollars, centre row), with a small legend at the top left.
 */

import { buildCandles } from './candles';
import { buildLut, lutIndex, type ColorScheme } from './colormap';
import { EMA_SIGNAL_FIELD, emaField, smaField } from './ema';
import { PriceView, rowOfTick, tickOfRow } from './geometry';
import type { LineSet } from './model';
import { applyGamma, type Normalizer } from './normalize';
import type { BinRing } from './ring';
import { PROJECTION_HALF_ROWS, projectionCenterTick, type Overlay } from './vizconfig';

export interface DrawModel {
  readonly ring: BinRing;
  readonly mode: 'heatmap' | 'candle';
  readonly field: string;
  readonly normalizer: Normalizer;
  readonly gamma: number;
  readonly scheme: ColorScheme;
  readonly view: PriceView;
  readonly radius: number;
  readonly overlays: readonly Overlay[];
  readonly horizonsBins: readonly number[];
  /** Price in dollars of absolute tick t: t × tickDollars. */
  readonly tickDollars: number;
  readonly goldReady: boolean;
  readonly binsPerCandle: number;
  /** ema_lines / sma_lines overlays by overlay id (from the model); an overlay missing here is not drawn. */
  readonly lineSets: ReadonlyMap<string, LineSet>;
}

export const EMA_COLORS = ['#ffd166', '#4cc9f0', '#f72585', '#80ed99', '#c77dff', '#ff9f1c'] as const;
export const SMA_COLORS = ['#f4a261', '#a8dadc', '#e9c46a', '#b8c0ff', '#ffafcc', '#95d5b2'] as const;

const AXIS_PX = 64; // css px reserved at the right for the price axis
const FUTURE_MIN = 6;

export class Renderer {
  private readonly ctx: CanvasRenderingContext2D;
  private readonly off: HTMLCanvasElement;
  private readonly offCtx: CanvasRenderingContext2D;
  private image: ImageData | null = null;
  private lut: Uint32Array;
  private lutScheme: ColorScheme;
  /** Overlay types this renderer does not draw (yet); the app lists them. */
  static readonly SUPPORTED = new Set(['vp_gold', 'spot_trail', 'bbo_spread', 'bbo_trail', 'projection_bands', 'ema_lines', 'sma_lines']);

  constructor(readonly canvas: HTMLCanvasElement) {
    this.ctx = canvas.getContext('2d', { alpha: false })!;
    this.off = document.createElement('canvas');
    this.offCtx = this.off.getContext('2d')!;
    this.lutScheme = 'pressure_vacuum';
    this.lut = buildLut(this.lutScheme);
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

  /** A message on an empty canvas (before the runtime_config). */
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
    const plotW = Math.max(10, W - AXIS_PX * dpr);
    const future = Math.max(FUTURE_MIN, ...m.horizonsBins.map((h) => h + 2));
    const columns = m.ring.capacity + future;
    const colW = plotW / columns;
    const n = m.ring.size;
    const x0 = (i: number) => plotW - (future + n - i) * colW; // left edge of held bin i
    const y = (tick: number) => m.view.yOf(tick, H);

    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#0c0e14';
    ctx.fillRect(0, 0, W, H);
    if (n === 0 || Number.isNaN(m.view.center)) {
      this.axis(m, W, H, plotW, dpr);
      return;
    }

    if (m.mode === 'heatmap') this.heatmap(m, columns, future, plotW, H);
    else this.candles(m, x0, colW, y);
    this.trades(m, x0, colW, y, dpr);
    for (const o of m.overlays) this.overlay(o, m, x0, colW, y, plotW, H, dpr);
    this.legend(m, dpr);
    this.axis(m, W, H, plotW, dpr);
  }

  // ---- layers --------------------------------------------------------------------------------------

  private heatmap(m: DrawModel, columns: number, future: number, plotW: number, H: number): void {
    if (this.lutScheme !== m.scheme) {
      this.lut = buildLut(m.scheme);
      this.lutScheme = m.scheme;
    }
    const rowsV = m.view.rowsVisible;
    if (!this.image || this.image.width !== columns || this.image.height !== rowsV) {
      this.image = new ImageData(columns, rowsV);
      this.off.width = columns;
      this.off.height = rowsV;
    }
    const px = new Uint32Array(this.image.data.buffer);
    px.fill(this.lut[lutIndex(0)]);
    const n = m.ring.size;
    const top = m.view.topTick;
    const gamma = m.gamma;
    if (m.ring.has(m.field)) {
      for (let i = 0; i < n; i++) {
        const s = m.ring.scalarsAt(i);
        if (!Number.isFinite(s.spotTick)) continue;
        const col = m.ring.column(m.field, i);
        const x = columns - future - n + i;
        for (let r = 0; r < rowsV; r++) {
          const row = rowOfTick(s.spotTick, top - r, m.radius);
          if (row < 0 || row >= col.length) continue;
          const v = col[row];
          if (Number.isNaN(v)) continue;
          px[r * columns + x] = this.lut[lutIndex(applyGamma(m.normalizer.apply(v), gamma))];
        }
      }
    }
    this.offCtx.putImageData(this.image, 0, 0);
    this.ctx.imageSmoothingEnabled = false;
    this.ctx.drawImage(this.off, 0, 0, columns, rowsV, 0, 0, plotW, H);
  }

  private candles(m: DrawModel, x0: (i: number) => number, colW: number, y: (t: number) => number): void {
    const ctx = this.ctx;
    const bins = [];
    for (let i = 0; i < m.ring.size; i++) {
      const s = m.ring.scalarsAt(i);
      bins.push({ binSeq: i, spot: s.spotTick, bid: s.bidTick, ask: s.askTick });
    }
    const per = m.binsPerCandle;
    const w = colW * per;
    for (const c of buildCandles(bins, per)) {
      const left = x0(c.firstSeq);
      const mid = left + w / 2;
      const up = c.close >= c.open;
      ctx.strokeStyle = ctx.fillStyle = up ? '#3ecf7a' : '#ef5a5a';
      ctx.lineWidth = Math.max(1, w * 0.1);
      ctx.beginPath();
      ctx.moveTo(mid, y(c.high));
      ctx.lineTo(mid, y(c.low));
      ctx.stroke();
      const yo = y(c.open);
      const yc = y(c.close);
      ctx.fillRect(left + w * 0.15, Math.min(yo, yc), Math.max(1, w * 0.7), Math.max(1, Math.abs(yc - yo)));
    }
  }

  private trades(m: DrawModel, x0: (i: number) => number, colW: number, y: (t: number) => number, dpr: number): void {
    if (!m.ring.has('fill_mass')) return;
    const ctx = this.ctx;
    ctx.fillStyle = 'rgba(255,255,255,0.9)';
    const rad = Math.max(1.5 * dpr, Math.min(colW * 0.45, 4 * dpr));
    for (let i = 0; i < m.ring.size; i++) {
      const s = m.ring.scalarsAt(i);
      if (!Number.isFinite(s.spotTick)) continue;
      const col = m.ring.column('fill_mass', i);
      for (let row = m.radius - 1; row <= m.radius + 1; row++) {
        if (!(col[row] > 0)) continue;
        ctx.beginPath();
        ctx.arc(x0(i) + colW / 2, y(tickOfRow(s.spotTick, row, m.radius)), rad, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
  }

  private trail(m: DrawModel, x0: (i: number) => number, colW: number, y: (t: number) => number, pick: (i: number) => number, step: boolean): void {
    const ctx = this.ctx;
    ctx.beginPath();
    let pen = false;
    for (let i = 0; i < m.ring.size; i++) {
      const t = pick(i);
      if (!Number.isFinite(t)) {
        pen = false;
        continue;
      }
      const yy = y(t);
      if (step) {
        if (pen) ctx.lineTo(x0(i), yy);
        else ctx.moveTo(x0(i), yy);
        ctx.lineTo(x0(i) + colW, yy);
      } else if (pen) ctx.lineTo(x0(i) + colW / 2, yy);
      else ctx.moveTo(x0(i) + colW / 2, yy);
      pen = true;
    }
    ctx.stroke();
  }

  private overlay(o: Overlay, m: DrawModel, x0: (i: number) => number, colW: number, y: (t: number) => number,
    plotW: number, H: number, dpr: number): void {
    const ctx = this.ctx;
    const ring = m.ring;
    switch (o.type) {
      case 'spot_trail':
        ctx.strokeStyle = 'rgba(255,230,120,0.95)';
        ctx.lineWidth = 1.5 * dpr;
        this.trail(m, x0, colW, y, (i) => ring.scalarsAt(i).spotTick, false);
        break;
      case 'bbo_trail':
        ctx.lineWidth = 1.25 * dpr;
        ctx.strokeStyle = '#3ecf7a';
        this.trail(m, x0, colW, y, (i) => ring.scalarsAt(i).bidTick, true);
        ctx.strokeStyle = '#ef5a5a';
        this.trail(m, x0, colW, y, (i) => ring.scalarsAt(i).askTick, true);
        break;
      case 'bbo_spread':
        ctx.fillStyle = 'rgba(200,200,255,0.12)';
        for (let i = 0; i < ring.size; i++) {
          const s = ring.scalarsAt(i);
          if (!Number.isFinite(s.bidTick) || !Number.isFinite(s.askTick)) continue;
          const ya = y(s.askTick);
          ctx.fillRect(x0(i), ya, colW, y(s.bidTick) - ya);
        }
        break;
      case 'projection_bands':
        this.bands(o, m, x0, colW, y, dpr);
        break;
      case 'vp_gold':
        this.gauge(m, plotW, H, dpr);
        break;
      case 'ema_lines':
      case 'sma_lines': {
        const set = m.lineSets.get(o.id);
        if (set) this.lines(set, m, x0, colW, y, dpr);
        break;
      }
      default:
        break; // unknown types are listed by the app
    }
  }

  private lines(set: LineSet, m: DrawModel, x0: (i: number) => number, colW: number, y: (t: number) => number, dpr: number): void {
    const ctx = this.ctx;
    const ring = m.ring;
    const r = m.radius;
    const tickOf = (field: string) => (i: number) => ring.value(field, i, r) / m.tickDollars;
    ctx.lineWidth = set.lineWidth * dpr;
    ctx.lineJoin = 'round';
    set.emaPeriods.forEach((p, j) => {
      if (!ring.has(emaField(p))) return;
      ctx.strokeStyle = EMA_COLORS[j % EMA_COLORS.length];
      this.trail(m, x0, colW, y, tickOf(emaField(p)), false);
    });
    ctx.setLineDash([5 * dpr, 4 * dpr]);
    set.smaPeriods.forEach((p, j) => {
      if (!ring.has(smaField(p))) return;
      ctx.strokeStyle = SMA_COLORS[j % SMA_COLORS.length];
      this.trail(m, x0, colW, y, tickOf(smaField(p)), false);
    });
    ctx.setLineDash([]);
  }

  /** Legend of the drawn line sets (top left; below the vp_gold gauge when that is drawn). */
  private legend(m: DrawModel, dpr: number): void {
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

  private bands(o: Overlay, m: DrawModel, x0: (i: number) => number, colW: number, y: (t: number) => number, dpr: number): void {
    const field = typeof o.params.signal_field === 'string' ? o.params.signal_field : 'flow_score';
    const scale = typeof o.params.composite_scale === 'number' ? o.params.composite_scale : 8;
    const ring = m.ring;
    if (!ring.has(field) || ring.size === 0 || m.horizonsBins.length === 0) return;
    const ctx = this.ctx;
    const half = PROJECTION_HALF_ROWS;
    const rowH = y(0) - y(1);
    const signalAt = (i: number) => ring.value(field, i, m.radius);
    // historical: the first horizon's centre as drawn from each past bin
    const h0 = Math.min(...m.horizonsBins);
    ctx.strokeStyle = 'rgba(160,120,255,0.55)';
    ctx.lineWidth = 1 * dpr;
    this.trail(m, (i) => x0(i) + h0 * colW, colW, y, (i) => {
      const s = ring.scalarsAt(i).spotTick;
      const sig = signalAt(i);
      return Number.isFinite(s) && Number.isFinite(sig) ? projectionCenterTick(s, sig, scale, h0) : NaN;
    }, false);
    // forward: bands from the newest bin
    const last = ring.size - 1;
    const spot = ring.scalarsAt(last).spotTick;
    const sig = signalAt(last);
    if (!Number.isFinite(spot) || !Number.isFinite(sig)) return;
    ctx.fillStyle = 'rgba(160,120,255,0.22)';
    ctx.strokeStyle = 'rgba(190,160,255,0.9)';
    for (const h of m.horizonsBins) {
      const c = projectionCenterTick(spot, sig, scale, h);
      const x = x0(last) + h * colW;
      ctx.fillRect(x, y(c) - (half + 0.5) * rowH, colW, (2 * half + 1) * rowH);
      ctx.beginPath();
      ctx.moveTo(x, y(c));
      ctx.lineTo(x + colW, y(c));
      ctx.stroke();
    }
  }

  private gauge(m: DrawModel, _plotW: number, _H: number, dpr: number): void {
    const ring = m.ring;
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

  private axis(m: DrawModel, W: number, H: number, plotW: number, dpr: number): void {
    const ctx = this.ctx;
    ctx.fillStyle = '#11141c';
    ctx.fillRect(plotW, 0, W - plotW, H);
    if (Number.isNaN(m.view.center)) return;
    ctx.font = `${11 * dpr}px ui-monospace, monospace`;
    ctx.fillStyle = '#aab';
    ctx.textBaseline = 'middle';
    const rowsV = m.view.rowsVisible;
    const rowPx = H / rowsV;
    const every = Math.max(1, Math.ceil((14 * dpr) / rowPx));
    const top = m.view.topTick;
    const decimals = m.tickDollars < 0.01 ? 4 : 2;
    for (let r = 0; r < rowsV; r++) {
      const t = top - r;
      if (((t % every) + every) % every !== 0) continue;
      ctx.fillText((t * m.tickDollars).toFixed(decimals), plotW + 6 * dpr, m.view.yOf(t, H));
    }
  }
}
