/**
 * The viewer's history of bins. Each bin holds its scalars (bin_seq, BBO, spot in integer price ticks,
 * book_valid, time) and, per stored field, one value per k row (2R+1 rows; k = −R..R, row = k + R). Values are
 * Float32 (display only).
 *
 * Memory is tiered, because a long history of every field does not fit: 30 min of 100 ms bins at ±50 ticks is
 * 7.3 MB per field, and a stream has ~34 (24 silver + 10 gold). Every field keeps the last `shallow` bins; the
 * `deep` fields (the book depth, the drawn field, ...) keep all `capacity` bins, like the scalars. A field can be
 * promoted to deep at any time (its held bins are copied over); at most `maxDeep` fields are deep, the least
 * recently promoted unpinned one is demoted (back to `shallow` bins) when another is promoted.
 *
 * Bins are addressed by `i`, 0 = the oldest held, size − 1 = the newest; `seqOf(i)` is the bin's push count
 * (monotonic since construction), which does not move while bins arrive (the viewport works in those).
 */

export interface BinScalars {
  readonly binSeq: number;
  /** Price ticks (integer price / tick_int); NaN when absent (empty side, invalid book). */
  readonly bidTick: number;
  readonly askTick: number;
  readonly spotTick: number;
  readonly bookValid: boolean;
  /** bin_end_ns in ms (epoch). */
  readonly tsMs: number;
}

export interface RingOptions {
  /** Bins every non-deep field keeps (default: capacity, i.e. every field deep). */
  readonly shallow?: number;
  /** Fields that are deep from the start and never demoted. */
  readonly pinned?: readonly string[];
  /** Most deep fields at once, pinned included (default: all). */
  readonly maxDeep?: number;
}

interface Store {
  cap: number;
  arr: Float32Array;
}

export class BinRing {
  readonly capacity: number;
  readonly rows: number;
  readonly fields: readonly string[];
  readonly shallow: number;
  readonly maxDeep: number;
  private readonly stores = new Map<string, Store>();
  private readonly scalars: (BinScalars | undefined)[];
  /** The scalars again as typed arrays by slot, for the per-bin loops of the renderer (no object per access). */
  private readonly spotA: Float64Array;
  private readonly bidA: Float64Array;
  private readonly askA: Float64Array;
  private readonly tsA: Float64Array;
  private readonly pinned: Set<string>;
  private promoted: string[] = []; // unpinned deep fields, oldest promotion first
  private readonly nanColumn: Float32Array;
  private _size = 0;
  private _pushed = 0;

  constructor(capacity: number, rows: number, fields: readonly string[], opts: RingOptions = {}) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`ring capacity must be an integer >= 1, got ${capacity}`);
    if (!Number.isInteger(rows) || rows < 1) throw new RangeError(`rows must be an integer >= 1, got ${rows}`);
    const shallow = opts.shallow ?? capacity;
    if (!Number.isInteger(shallow) || shallow < 1 || shallow > capacity) throw new RangeError(`shallow must be an integer in 1..${capacity}, got ${shallow}`);
    this.capacity = capacity;
    this.rows = rows;
    this.shallow = shallow;
    this.fields = [...new Set(fields)];
    this.pinned = new Set((opts.pinned ?? []).filter((f) => this.fields.includes(f)));
    this.maxDeep = Math.max(opts.maxDeep ?? this.fields.length, this.pinned.size);
    for (const f of this.fields) {
      const cap = this.pinned.has(f) || shallow === capacity ? capacity : shallow;
      this.stores.set(f, { cap, arr: new Float32Array(cap * rows).fill(NaN) });
    }
    this.scalars = new Array(capacity);
    this.spotA = new Float64Array(capacity);
    this.bidA = new Float64Array(capacity);
    this.askA = new Float64Array(capacity);
    this.tsA = new Float64Array(capacity);
    this.nanColumn = new Float32Array(rows).fill(NaN);
  }

  /** Bins currently held (≤ capacity). */
  get size(): number {
    return this._size;
  }

  /** Bins pushed since construction/clear (monotonic; lets the renderer tell when something new arrived). */
  get pushed(): number {
    return this._pushed;
  }

  /** Push count of the oldest held bin (seqOf(0)). */
  get first(): number {
    return this._pushed - this._size;
  }

  has(field: string): boolean {
    return this.stores.has(field);
  }

  /** Bins of `field` held (the newest ones): capacity for deep fields, else `shallow`. 0 for unknown fields. */
  depth(field: string): number {
    const s = this.stores.get(field);
    return s ? Math.min(s.cap, this._size) : 0;
  }

  isDeep(field: string): boolean {
    return (this.stores.get(field)?.cap ?? 0) === this.capacity;
  }

  /** Whether the i-th held bin still has values of `field`. */
  holds(field: string, i: number): boolean {
    const s = this.stores.get(field);
    return s !== undefined && i >= 0 && i < this._size && i >= this._size - s.cap;
  }

  /** Keep the whole history of `field` from now on (copies what is held); returns the field demoted, if any. */
  promote(field: string): string | null {
    const s = this.stores.get(field);
    if (!s) throw new RangeError(`field ${field} is not buffered`);
    if (s.cap === this.capacity) {
      if (!this.pinned.has(field)) this.promoted = [...this.promoted.filter((f) => f !== field), field];
      return null;
    }
    let demoted: string | null = null;
    const deep = this.fields.filter((f) => this.isDeep(f)).length;
    if (deep >= this.maxDeep && this.promoted.length) {
      demoted = this.promoted.shift()!;
      this.resize(demoted, this.shallow);
    }
    this.resize(field, this.capacity);
    this.promoted.push(field);
    return demoted;
  }

  private resize(field: string, cap: number): void {
    const old = this.stores.get(field)!;
    const arr = new Float32Array(cap * this.rows).fill(NaN);
    const rows = this.rows;
    const keep = Math.min(this._size, old.cap, cap);
    for (let p = this._pushed - keep; p < this._pushed; p++) {
      arr.set(old.arr.subarray((p % old.cap) * rows, (p % old.cap + 1) * rows), (p % cap) * rows);
    }
    this.stores.set(field, { cap, arr });
  }

  /**
   * Append a bin. `values[field]` is one value per row (shorter arrays fill from row `offset`; missing fields
   * are stored as NaN). Returns the push count of the bin.
   */
  push(s: BinScalars, values: Readonly<Record<string, ArrayLike<number> | undefined>>, offset = 0): number {
    const p = this._pushed;
    const slot = p % this.capacity;
    this.scalars[slot] = s;
    this.spotA[slot] = s.spotTick;
    this.bidA[slot] = s.bidTick;
    this.askA[slot] = s.askTick;
    this.tsA[slot] = s.tsMs;
    const rows = this.rows;
    for (const [f, st] of this.stores) {
      const base = (p % st.cap) * rows;
      const dst = st.arr.subarray(base, base + rows);
      const v = values[f];
      dst.fill(NaN);
      if (v) {
        const n = Math.min(v.length, rows - offset);
        for (let r = 0; r < n; r++) dst[offset + r] = Number(v[r]);
      }
    }
    if (this._size < this.capacity) this._size++;
    this._pushed++;
    return p;
  }

  private check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this._size) throw new RangeError(`bin index ${i} outside 0..${this._size - 1}`);
  }

  /** Push count of the i-th held bin. */
  seqOf(i: number): number {
    return this.first + i;
  }

  /** Scalars of the i-th held bin (0 = oldest). */
  scalarsAt(i: number): BinScalars {
    this.check(i);
    return this.scalars[(this.first + i) % this.capacity]!;
  }

  /** The i-th held bin's values of `field` (a view, one per row; all NaN where the field's depth ended);
   * throws for a field not stored. */
  column(field: string, i: number): Float32Array {
    const st = this.stores.get(field);
    if (!st) throw new RangeError(`field ${field} is not buffered`);
    this.check(i);
    if (i < this._size - st.cap) return this.nanColumn;
    const base = ((this.first + i) % st.cap) * this.rows;
    return st.arr.subarray(base, base + this.rows);
  }

  /** Value of `field` at row `row` of the i-th bin (NaN outside the grid or the field's depth). */
  value(field: string, i: number, row: number): number {
    if (row < 0 || row >= this.rows) return NaN;
    const st = this.stores.get(field);
    if (!st) throw new RangeError(`field ${field} is not buffered`);
    if (!(i >= 0 && i < this._size)) this.check(i);
    if (i < this._size - st.cap) return NaN;
    return st.arr[((this.first + i) % st.cap) * this.rows + row];
  }

  /** Unchecked scalar reads for the renderer's loops (0 ≤ i < size). */
  spotAt(i: number): number {
    return this.spotA[(this.first + i) % this.capacity];
  }

  bidAt(i: number): number {
    return this.bidA[(this.first + i) % this.capacity];
  }

  askAt(i: number): number {
    return this.askA[(this.first + i) % this.capacity];
  }

  tsAt(i: number): number {
    return this.tsA[(this.first + i) % this.capacity];
  }

  newest(): BinScalars | undefined {
    return this._size ? this.scalarsAt(this._size - 1) : undefined;
  }

  /** Index of the newest held bin whose tsMs ≤ t (−1 when none); the times are ascending. */
  indexAtOrBefore(tMs: number): number {
    let lo = 0;
    let hi = this._size - 1;
    let ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.tsAt(mid) <= tMs) {
        ans = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return ans;
  }

  /** Bytes held by the value stores (for the footer / tests). */
  get bytes(): number {
    let n = 0;
    for (const s of this.stores.values()) n += s.arr.byteLength;
    return n;
  }

  clear(): void {
    this._size = 0;
    this._pushed = 0;
    this.scalars.fill(undefined);
    for (const s of this.stores.values()) s.arr.fill(NaN);
  }
}
