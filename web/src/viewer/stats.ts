/** Rolling frame-time statistics (mean and p95 over the last `window` samples). */

export function percentile(values: ArrayLike<number>, p: number): number {
  if (values.length === 0) return NaN;
  const s = Float64Array.from(values).sort();
  const rank = Math.ceil((p / 100) * s.length); // nearest-rank
  return s[Math.min(Math.max(rank, 1), s.length) - 1];
}

export class RollingStats {
  private readonly buf: Float64Array;
  private n = 0;
  private head = 0;

  constructor(readonly window = 240) {
    if (!Number.isInteger(window) || window < 1) throw new RangeError(`window must be an integer >= 1, got ${window}`);
    this.buf = new Float64Array(window);
  }

  add(x: number): void {
    this.buf[this.head] = x;
    this.head = (this.head + 1) % this.window;
    if (this.n < this.window) this.n++;
  }

  get count(): number {
    return this.n;
  }

  private values(): Float64Array {
    return this.buf.subarray(0, this.n);
  }

  get mean(): number {
    if (!this.n) return NaN;
    let s = 0;
    for (const x of this.values()) s += x;
    return s / this.n;
  }

  get p95(): number {
    return percentile(this.values(), 95);
  }
}
