/**
 * Price-row mapping: the heatmap is drawn in absolute price ticks, so the grid stays put and the BBO moves.
 * A bin's grid row r (k = r − R) sits at absolute tick `spotTick + k`. The view shows `rowsVisible` ticks
 * around a centre tick that only recentres (hysteresis) when the BBO leaves the inner band, and then snaps
 * the BBO mid back to the middle.
 */

export class PriceView {
  /** Tick at the vertical middle of the view (integer). */
  center = NaN;
  rowsVisible: number;
  /** Recentre once the tracked price is farther than this fraction of the half-height from the centre. */
  readonly margin: number;

  constructor(rowsVisible: number, margin = 0.6) {
    if (!(rowsVisible >= 3)) throw new RangeError(`rowsVisible must be >= 3, got ${rowsVisible}`);
    if (!(margin > 0 && margin <= 1)) throw new RangeError(`margin must be in (0, 1], got ${margin}`);
    this.rowsVisible = Math.floor(rowsVisible);
    this.margin = margin;
  }

  get half(): number {
    return (this.rowsVisible - 1) / 2;
  }

  /** The highest tick drawn (top row). */
  get topTick(): number {
    return this.center + Math.ceil(this.half);
  }

  /** Follow `tick` (e.g. the BBO mid); returns true when the view recentred. NaN is ignored. */
  track(tick: number): boolean {
    if (!Number.isFinite(tick)) return false;
    if (Number.isNaN(this.center) || Math.abs(tick - this.center) > this.half * this.margin) {
      this.center = Math.round(tick);
      return true;
    }
    return false;
  }

  /** Vertical position (in rows, 0 = top edge of the top row) of the centre line of `tick`. */
  rowOf(tick: number): number {
    return this.topTick - tick + 0.5;
  }

  /** Pixel y of the centre of `tick` for a canvas `height` px tall. */
  yOf(tick: number, height: number): number {
    return (this.rowOf(tick) * height) / this.rowsVisible;
  }

  /** The tick whose row contains pixel y. */
  tickAt(y: number, height: number): number {
    return this.topTick - Math.floor((y * this.rowsVisible) / height);
  }
}

/** Absolute tick of grid row `row` for a bin whose spot is at `spotTick`, with grid radius R. */
export function tickOfRow(spotTick: number, row: number, radius: number): number {
  return spotTick + row - radius;
}

/** Grid row of absolute `tick` in a bin with spot `spotTick` (may be outside 0..2R: caller checks). */
export function rowOfTick(spotTick: number, tick: number, radius: number): number {
  return tick - spotTick + radius;
}

/** Integer price → ticks (as a float; exact for prices on the tick grid). NaN for 0 (an empty side). */
export function priceIntToTick(priceInt: bigint, tickInt: bigint): number {
  if (priceInt === 0n || tickInt === 0n) return NaN;
  const q = priceInt / tickInt;
  const r = priceInt % tickInt;
  return Number(q) + Number(r) / Number(tickInt);
}

/** Column x range (px) of the i-th of `count` bins when `columns` columns fill `width` px, newest at the right. */
export function columnX(i: number, count: number, columns: number, width: number): [number, number] {
  const w = width / columns;
  const x0 = width - (count - i) * w;
  return [x0, x0 + w];
}
