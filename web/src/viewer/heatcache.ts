/**
 * The heatmap's colour cache: one pixel column per held bin, in absolute price ticks, on canvas tiles.
 *
 * Colouring 30 min of ±50-tick bins (18 000 × 101 cells) every frame costs tens of ms; drawing cached columns
 * costs one scaled drawImage per visible run of columns. A bin's column is coloured once when it arrives; when the
 * colouring changes (field, scheme, gamma, normalisation, or the normaliser's scale drifting by more than
 * `DRIFT` — checked between passes), the whole cache is recoloured progressively, newest bins first, within a time
 * budget per frame (stale columns stay on screen meanwhile). Rows are absolute ticks from `top` down; when the newest bin's grid
 * leaves the cached rows the tiles are shifted (drawn onto themselves), so nothing is recoloured for it.
 *
 * The cell loop (`paintColumn`) and the run split (`visibleRuns`) are pure and unit-tested.
 */

import { BACKGROUND } from './colormap';
import type { BinRing } from './ring';

export const TILE_W = 2048;
export const CACHE_ROWS = 512;
/** Relative change of the normaliser's scale that triggers a recolour. */
export const DRIFT = 0.08;

const BG = ((255 << 24) | (BACKGROUND[2] << 16) | (BACKGROUND[1] << 8) | BACKGROUND[0]) >>> 0;
/** Rows the grid does not cover: a shade off the background, so the grid's extent shows. */
export const OUTSIDE = ((255 << 24) | (11 << 16) | (9 << 8) | 8) >>> 0;

/**
 * Colour one bin into column `x` of a row-major pixel block `stride` px wide: rows are ticks top, top − 1, …;
 * grid row r of the bin is tick spot + r − radius. Cells outside the grid get OUTSIDE, NaN cells BG.
 */
export function paintColumn(dst: Uint32Array, stride: number, x: number, rows: number, top: number,
  values: ArrayLike<number> | null, spot: number, radius: number, lut: Uint32Array, norm: (v: number) => number): void {
  for (let y = 0; y < rows; y++) dst[y * stride + x] = OUTSIDE;
  if (!values || !Number.isFinite(spot)) return;
  const n = values.length;
  for (let r = 0; r < n; r++) {
    const y = top - (spot + r - radius);
    if (y < 0 || y >= rows) continue;
    const v = values[r];
    if (Number.isNaN(v)) {
      dst[y * stride + x] = BG;
      continue;
    }
    const c = norm(v);
    dst[y * stride + x] = lut[c !== c ? 128 : Math.round((c < -1 ? -1 : c > 1 ? 1 : c) * 127.5 + 127.5)];
  }
}

export interface Run {
  /** First and last held-bin index of the run. */
  readonly i0: number;
  readonly i1: number;
  readonly tile: number;
  /** Column of i0 within the tile. */
  readonly x: number;
}

/**
 * Split held bins i0..i1 into runs that are contiguous in time (each bin one cell after the previous) and in one
 * tile (slot = push count mod capacity), so each run is one drawImage.
 */
export function visibleRuns(ring: BinRing, i0: number, i1: number, cellMs: number): Run[] {
  const out: Run[] = [];
  if (i1 < i0) return out;
  const cap = ring.capacity;
  let start = i0;
  let slot0 = ring.seqOf(i0) % cap;
  let prevTs = ring.tsAt(i0);
  let prevSlot = slot0;
  for (let i = i0 + 1; i <= i1 + 1; i++) {
    let brk = i > i1;
    let slot = 0;
    let ts = 0;
    if (!brk) {
      slot = ring.seqOf(i) % cap;
      ts = ring.tsAt(i);
      brk = slot !== prevSlot + 1 || Math.floor(slot / TILE_W) !== Math.floor(slot0 / TILE_W) || Math.abs(ts - prevTs - cellMs) > cellMs / 2;
    }
    if (brk) {
      out.push({ i0: start, i1: i - 1, tile: Math.floor(slot0 / TILE_W), x: slot0 % TILE_W });
      if (i > i1) break;
      start = i;
      slot0 = slot;
    }
    prevSlot = slot;
    prevTs = ts;
  }
  return out;
}

export interface Colouring {
  readonly field: string;
  readonly lut: Uint32Array;
  /** Identity of the colouring apart from the scale (field, scheme, gamma, normalisation mode). */
  readonly key: string;
  readonly scale: number;
  readonly norm: (v: number) => number;
}

export interface Tile {
  readonly canvas: HTMLCanvasElement;
  readonly ctx: CanvasRenderingContext2D;
}

export class HeatCache {
  readonly capacity: number;
  /** Canvas tiles of TILE_W columns, made on first use (a 30 min cache is ~38 MB of canvas). */
  readonly tiles: (Tile | null)[] = [];
  top = NaN;
  private gen = 0;
  private key = '';
  private scale = NaN;
  /** Push counts [lo, hi) are coloured in the current generation. */
  private lo = 0;
  private hi = 0;
  private readonly block: ImageData;
  private readonly px: Uint32Array;
  static readonly BLOCK = 64;
  /** Columns recoloured so far (for stats). */
  repainted = 0;

  constructor(capacity: number, readonly radius: number,
    private readonly makeCanvas: () => HTMLCanvasElement = () => document.createElement('canvas')) {
    this.capacity = capacity;
    this.tiles = new Array<Tile | null>(Math.ceil(capacity / TILE_W)).fill(null);
    this.block = new ImageData(HeatCache.BLOCK, CACHE_ROWS);
    this.px = new Uint32Array(this.block.data.buffer);
  }

  private tile(t: number): Tile {
    let tile = this.tiles[t];
    if (!tile) {
      const canvas = this.makeCanvas();
      canvas.width = Math.min(TILE_W, this.capacity - t * TILE_W);
      canvas.height = CACHE_ROWS;
      const ctx = canvas.getContext('2d')!;
      ctx.fillStyle = `rgb(${BACKGROUND.join(',')})`;
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      tile = { canvas, ctx };
      this.tiles[t] = tile;
    }
    return tile;
  }

  /** Whether the whole held history is coloured with the current colouring. */
  complete(ring: BinRing): boolean {
    return this.lo <= ring.first && this.hi >= ring.pushed;
  }

  /**
   * Bring the cache up to date: new bins always, then older stale columns newest first until `budgetMs` is
   * spent. Returns true when something was painted.
   */
  sync(ring: BinRing, c: Colouring, budgetMs: number, now: () => number = () => performance.now()): boolean {
    const t0 = now();
    if (ring.size === 0) return false;
    const drift = !(Math.abs(c.scale - this.scale) <= DRIFT * Math.max(Math.abs(this.scale), 1e-12));
    // a new colouring restarts the pass from the newest bin; a drifting scale only starts a new pass once the running
    // one is done (restarting it at every drift would starve the oldest columns while the scale keeps moving)
    if (c.key !== this.key || (drift && this.lo <= ring.first)) {
      this.key = c.key;
      this.scale = c.scale;
      this.gen++;
      this.lo = this.hi = ring.pushed;
    }
    const newest = ring.newest()!;
    this.follow(newest.spotTick);
    let painted = false;
    if (this.hi < ring.first) this.lo = this.hi = ring.first;
    if (this.hi < ring.pushed) {
      this.paint(ring, c, this.hi, ring.pushed);
      this.hi = ring.pushed;
      painted = true;
    }
    if (this.lo < ring.first) this.lo = ring.first;
    while (this.lo > ring.first && now() - t0 < budgetMs) {
      const from = Math.max(ring.first, this.lo - HeatCache.BLOCK);
      this.paint(ring, c, from, this.lo);
      this.repainted += this.lo - from;
      this.lo = from;
      painted = true;
    }
    return painted;
  }

  /** Keep the newest grid inside the cached rows: shift the tiles when it leaves (or centre on the first bin). */
  private follow(spot: number): void {
    if (!Number.isFinite(spot)) return;
    const want = Math.round(spot) + CACHE_ROWS / 2;
    if (Number.isNaN(this.top)) {
      this.top = want;
      return;
    }
    const margin = this.radius + 8;
    if (spot + margin <= this.top && spot - margin >= this.top - CACHE_ROWS + 1) return;
    const dy = want - this.top; // rows move down by dy
    for (const t of this.tiles) {
      if (!t) continue;
      t.ctx.globalCompositeOperation = 'copy';
      t.ctx.drawImage(t.canvas, 0, dy);
      t.ctx.globalCompositeOperation = 'source-over';
    }
    this.top = want;
  }

  /** Colour push counts [p0, p1) (held bins) into their tiles, in blocks of contiguous slots within a tile. */
  private paint(ring: BinRing, c: Colouring, p0: number, p1: number): void {
    const cap = this.capacity;
    let p = p0;
    while (p < p1) {
      const slot = p % cap;
      const tile = Math.floor(slot / TILE_W);
      const x0 = slot % TILE_W;
      const tileEnd = Math.min((tile + 1) * TILE_W, cap) - slot;
      const n = Math.min(p1 - p, HeatCache.BLOCK, tileEnd);
      for (let k = 0; k < n; k++) {
        const i = p + k - ring.first;
        const s = ring.scalarsAt(i);
        const col = ring.has(c.field) && ring.holds(c.field, i) ? ring.column(c.field, i) : null;
        paintColumn(this.px, HeatCache.BLOCK, k, CACHE_ROWS, this.top, col, s.spotTick, this.radius, c.lut, c.norm);
      }
      this.tile(tile).ctx.putImageData(this.block, x0, 0, 0, 0, n, CACHE_ROWS);
      p += n;
    }
  }

  /** Source y in the cache of the continuous tick value `tick` (centre of tick t at row top − t + 0.5). */
  rowOf(tick: number): number {
    return this.top - tick + 0.5;
  }
}
