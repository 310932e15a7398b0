/**
 * What the plot shows: a time range [t0, t1] (epoch ms, bin end times) and a price range [lo, hi] (absolute ticks,
 * fractional while panning). Pure state + maths (Vitest); the app feeds it wheel / drag / keys and the newest bin.
 *
 * - Follow live: the right edge stays `futureMs` past the newest bin (room for projection bands); a pan into
 *   the past turns it off, panning back to the live edge or `follow()` turns it on again.
 * - Price: tracks the BBO mid with hysteresis (the grid stays put, the book moves) until the user pans or zooms
 *   the price axis; candle mode fits the visible range instead (`fit`).
 * - Zoom: time around an anchor time (the live edge while following), price around an anchor tick, both
 *   clamped: at least `minSpanMs` / `minRows`, at most the history / `maxRows`.
 */

export interface ViewportOptions {
  readonly cellMs: number;
  /** Bins of history kept (bounds the widest zoom). */
  readonly historyBins: number;
  /** Default visible span (ms) and rows (ticks). */
  readonly spanMs: number;
  readonly rows: number;
  readonly futureMs?: number;
  readonly minRows?: number;
  readonly maxRows?: number;
}

export class Viewport {
  t0 = 0;
  t1 = 0;
  lo = 0;
  hi = 0;
  following = true;
  priceAuto = true;
  /** The newest bin's time (NaN before the first bin). */
  liveMs = NaN;
  oldestMs = NaN;
  readonly cellMs: number;
  readonly futureMs: number;
  readonly minSpanMs: number;
  readonly maxSpanMs: number;
  readonly minRows: number;
  readonly maxRows: number;
  private readonly defaultSpan: number;
  private readonly defaultRows: number;

  constructor(o: ViewportOptions) {
    if (!(o.cellMs > 0)) throw new RangeError(`cellMs must be > 0, got ${o.cellMs}`);
    this.cellMs = o.cellMs;
    this.futureMs = o.futureMs ?? 0;
    this.minSpanMs = 20 * o.cellMs;
    this.maxSpanMs = Math.max(this.minSpanMs, o.historyBins * o.cellMs + this.futureMs);
    this.minRows = o.minRows ?? 8;
    this.maxRows = Math.max(this.minRows, o.maxRows ?? 2000);
    this.defaultSpan = clamp(o.spanMs, this.minSpanMs, this.maxSpanMs);
    this.defaultRows = clamp(o.rows, this.minRows, this.maxRows);
    this.t1 = this.defaultSpan;
    this.hi = this.defaultRows / 2;
    this.lo = -this.hi;
  }

  get spanMs(): number {
    return this.t1 - this.t0;
  }

  get rows(): number {
    return this.hi - this.lo;
  }

  /** A new bin arrived (time of its end, the oldest held bin's end, the BBO mid tick or NaN). */
  onBin(tsMs: number, oldestMs: number, midTick: number): void {
    const first = Number.isNaN(this.liveMs);
    this.liveMs = tsMs;
    this.oldestMs = oldestMs;
    if (first) this.resetTime();
    else if (this.following) this.snapTime();
    if (this.priceAuto) this.track(midTick, first);
  }

  private snapTime(): void {
    const span = this.spanMs;
    this.t1 = this.liveMs + this.futureMs;
    this.t0 = this.t1 - span;
  }

  private resetTime(): void {
    this.t1 = this.liveMs + this.futureMs;
    this.t0 = this.t1 - this.defaultSpan;
  }

  /** Recentre on `mid` once it leaves the inner 60 % of the view (or always when `force`). */
  track(mid: number, force = false): boolean {
    if (!Number.isFinite(mid)) return false;
    const c = (this.lo + this.hi) / 2;
    const half = this.rows / 2;
    if (!force && Math.abs(mid - c) <= half * 0.6) return false;
    const r = Math.round(mid) - c;
    this.lo += r;
    this.hi += r;
    return true;
  }

  /** Fit the price range to [low, high] (ticks) with a margin (candle mode). */
  fit(low: number, high: number): void {
    if (!Number.isFinite(low) || !Number.isFinite(high)) return;
    const span = Math.max(high - low + 1, this.minRows);
    const pad = span * 0.08;
    const mid = (low + high) / 2;
    const rows = clamp(span + 2 * pad, this.minRows, this.maxRows);
    this.lo = mid - rows / 2;
    this.hi = mid + rows / 2;
  }

  follow(): void {
    this.following = true;
    if (!Number.isNaN(this.liveMs)) this.snapTime();
  }

  reset(): void {
    this.following = true;
    this.priceAuto = true;
    const c = (this.lo + this.hi) / 2;
    this.lo = c - this.defaultRows / 2;
    this.hi = c + this.defaultRows / 2;
    if (!Number.isNaN(this.liveMs)) this.resetTime();
  }

  /** Zoom time by `factor` (> 1 zooms out) around `anchorMs` (ignored while following: the live edge stays). */
  zoomTime(factor: number, anchorMs: number): void {
    if (!(factor > 0)) return;
    const span = clamp(this.spanMs * factor, this.minSpanMs, this.maxSpanMs);
    const a = this.following ? this.t1 : clamp(anchorMs, this.t0, this.t1);
    const f = (a - this.t0) / this.spanMs;
    this.t0 = a - f * span;
    this.t1 = this.t0 + span;
    this.clampTime();
  }

  /** Zoom price by `factor` (> 1 zooms out) around `anchorTick`; the price axis stops tracking. */
  zoomPrice(factor: number, anchorTick: number): void {
    if (!(factor > 0)) return;
    const rows = clamp(this.rows * factor, this.minRows, this.maxRows);
    const a = clamp(anchorTick, this.lo, this.hi);
    const f = (a - this.lo) / this.rows;
    this.lo = a - f * rows;
    this.hi = this.lo + rows;
    this.priceAuto = false;
  }

  /** Pan by a time delta (ms; > 0 shows later times) and a tick delta (> 0 shows higher prices). */
  pan(dMs: number, dTicks: number): void {
    if (dMs !== 0) {
      this.t0 += dMs;
      this.t1 += dMs;
      this.following = false;
      this.clampTime();
    }
    if (dTicks !== 0) {
      this.lo += dTicks;
      this.hi += dTicks;
      this.priceAuto = false;
    }
  }

  private clampTime(): void {
    if (Number.isNaN(this.liveMs)) return;
    const span = this.spanMs;
    const right = this.liveMs + this.futureMs;
    if (this.t1 >= right - this.cellMs / 2) {
      this.t1 = right; // reaching the live edge resumes following
      this.t0 = right - span;
      this.following = true;
      return;
    }
    const left = (Number.isNaN(this.oldestMs) ? this.liveMs : this.oldestMs) - this.cellMs;
    if (this.t0 < left - span * 0.5) {
      this.t0 = left - span * 0.5;
      this.t1 = this.t0 + span;
      if (this.t1 >= right) { // the view is wider than the history: nothing to pan to, stay live
        this.t1 = right;
        this.t0 = right - span;
        this.following = true;
      }
    }
  }

  /** x (px) of time t in a plot `w` px wide. */
  x(t: number, w: number): number {
    return ((t - this.t0) / (this.t1 - this.t0)) * w;
  }

  /** Time at x (px). */
  timeAt(x: number, w: number): number {
    return this.t0 + (x / w) * (this.t1 - this.t0);
  }

  /** y (px) of the centre of tick `tick` in a plot `h` px tall (higher prices up). */
  y(tick: number, h: number): number {
    return ((this.hi - tick) / (this.hi - this.lo)) * h;
  }

  /** The tick whose row contains y (px). */
  tickAt(y: number, h: number): number {
    return Math.round(this.hi - (y / h) * (this.hi - this.lo));
  }
}

export function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : x > hi ? hi : x;
}
