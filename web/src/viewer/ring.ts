/**
 * Ring buffer of the last N bins for the viewer. Each bin holds its scalars (bin_seq, BBO, spot in integer
 * price ticks, book_valid) and, per stored field, one value per k row (2R+1 rows; k = −R..R, row = k + R).
 * Fields are fixed at construction (every float silver column plus the gold outputs), so the colour field can
 * be switched without losing history. Values are Float32 (display only).
 */

export interface BinScalars {
  readonly binSeq: number;
  /** Price ticks (integer price / tick_int); NaN when absent (empty side, invalid book). */
  readonly bidTick: number;
  readonly askTick: number;
  readonly spotTick: number;
  readonly bookValid: boolean;
  readonly tsMs: number;
}

export class BinRing {
  readonly capacity: number;
  readonly rows: number;
  readonly fields: readonly string[];
  private readonly data = new Map<string, Float32Array>();
  private readonly scalars: (BinScalars | undefined)[];
  private head = 0; // next write slot
  private _size = 0;
  private _pushed = 0;

  constructor(capacity: number, rows: number, fields: readonly string[]) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`ring capacity must be an integer >= 1, got ${capacity}`);
    if (!Number.isInteger(rows) || rows < 1) throw new RangeError(`rows must be an integer >= 1, got ${rows}`);
    this.capacity = capacity;
    this.rows = rows;
    this.fields = [...new Set(fields)];
    for (const f of this.fields) this.data.set(f, new Float32Array(capacity * rows).fill(NaN));
    this.scalars = new Array(capacity);
  }

  /** Bins currently held (≤ capacity). */
  get size(): number {
    return this._size;
  }

  /** Bins pushed since construction/clear (monotonic; lets the renderer tell when something new arrived). */
  get pushed(): number {
    return this._pushed;
  }

  has(field: string): boolean {
    return this.data.has(field);
  }

  /**
   * Append a bin. `values[field]` is one value per row (shorter arrays fill from row `offset`; missing fields
   * are stored as NaN). Returns the slot written.
   */
  push(s: BinScalars, values: Readonly<Record<string, ArrayLike<number> | undefined>>, offset = 0): number {
    const slot = this.head;
    this.scalars[slot] = s;
    const base = slot * this.rows;
    for (const [f, arr] of this.data) {
      const v = values[f];
      const dst = arr.subarray(base, base + this.rows);
      dst.fill(NaN);
      if (v) {
        const n = Math.min(v.length, this.rows - offset);
        for (let r = 0; r < n; r++) dst[offset + r] = Number(v[r]);
      }
    }
    this.head = (this.head + 1) % this.capacity;
    if (this._size < this.capacity) this._size++;
    this._pushed++;
    return slot;
  }

  /** Physical slot of the i-th held bin, 0 = oldest, size−1 = newest. */
  private slotOf(i: number): number {
    if (!Number.isInteger(i) || i < 0 || i >= this._size) throw new RangeError(`bin index ${i} outside 0..${this._size - 1}`);
    return (this.head - this._size + i + this.capacity) % this.capacity;
  }

  /** Scalars of the i-th held bin (0 = oldest). */
  scalarsAt(i: number): BinScalars {
    return this.scalars[this.slotOf(i)]!;
  }

  /** The i-th held bin's values of `field` (a view, one per row); throws for a field not stored. */
  column(field: string, i: number): Float32Array {
    const arr = this.data.get(field);
    if (!arr) throw new RangeError(`field ${field} is not buffered`);
    const base = this.slotOf(i) * this.rows;
    return arr.subarray(base, base + this.rows);
  }

  /** Value of `field` at row `row` of the i-th bin (NaN outside the grid). */
  value(field: string, i: number, row: number): number {
    if (row < 0 || row >= this.rows) return NaN;
    return this.column(field, i)[row];
  }

  newest(): BinScalars | undefined {
    return this._size ? this.scalarsAt(this._size - 1) : undefined;
  }

  clear(): void {
    this.head = 0;
    this._size = 0;
    this._pushed = 0;
    this.scalars.fill(undefined);
    for (const arr of this.data.values()) arr.fill(NaN);
  }
}
