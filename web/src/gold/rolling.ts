/**
 * Causal rolling statistics, a line-by-line port of qmachina_assets/core/gold/rolling.py.
 *
 * A window is a FIFO of the last W samples plus a sorted copy of its *defined* (non-NaN) values, kept
 * up to date by binary search + shift, so no step sorts. The median and MAD follow numpy's definitions
 * (`median`, `median(|x - median|)`; mean of the two middles when the count is even) and are computed
 * with the same float operations as the Python kernel, so results agree bit for bit.
 *
 * Undefined samples are NaN: they occupy a FIFO slot (the window is the last W bins) but never enter
 * the sorted copy.
 */

/** MAD -> standard deviation under normality (SPEC §4.4). */
export const MAD_SCALE = 1.4826;

/** A Float64Array view: the helpers take (array, offset) pairs so many windows share one buffer. */
type F64 = Float64Array;

/** First index i in a[off .. off+n) with a[i] >= x, relative to `off`. */
export function lowerBound(a: F64, off: number, n: number, x: number): number {
  let base = 0;
  let size = n;
  while (size > 1) {
    const half = size >> 1;
    if (a[off + base + half - 1] < x) base += half;
    size -= half;
  }
  if (size === 1 && a[off + base] < x) base += 1;
  return base;
}

/** Insert x into the sorted a[off .. off+n); returns the new length (capacity must allow n + 1). */
export function sortedInsert(a: F64, off: number, n: number, x: number): number {
  const i = lowerBound(a, off, n, x);
  a.copyWithin(off + i + 1, off + i, off + n);
  a[off + i] = x;
  return n + 1;
}

/** Remove one occurrence of x from the sorted a[off .. off+n); returns the new length. */
export function sortedRemove(a: F64, off: number, n: number, x: number): number {
  const i = lowerBound(a, off, n, x);
  a.copyWithin(off + i, off + i + 1, off + n);
  return n - 1;
}

/** Remove one `old` and insert `x` in the sorted a[off .. off+n) (length unchanged). */
export function sortedReplace(a: F64, off: number, n: number, old: number, x: number): void {
  const i = lowerBound(a, off, n, old);
  const j = lowerBound(a, off, n, x);
  if (j > i) {
    a.copyWithin(off + i, off + i + 1, off + j);
    a[off + j - 1] = x;
  } else {
    a.copyWithin(off + j + 1, off + j, off + i);
    a[off + j] = x;
  }
}

/** Median of the sorted a[off .. off+n) (n >= 1). */
export function sortedMedian(a: F64, off: number, n: number): number {
  const h = n >> 1;
  if (n & 1) return a[off + h];
  return (a[off + h - 1] + a[off + h]) / 2.0;
}

/**
 * The k-th and (if `both`) (k+1)-th smallest (0-based) of |a[i] - m| over the sorted a[off .. off+n),
 * where a[..lp) < m <= a[lp..n). The left run L(t) = m - a[lp-1-t] and the right run R(t) = a[lp+t] - m
 * are both ascending; binary search on how many of the k+1 smallest come from L.
 */
function kthDeviations(a: F64, off: number, n: number, m: number, lp: number, k: number,
  both: boolean): [number, number] {
  const nl = lp;
  const nr = n - lp;
  let lo = Math.max(0, k + 1 - nr);
  let hi = Math.min(k + 1, nl);
  while (lo <= hi) {
    const i = (lo + hi) >> 1; // take i from L, k+1-i from R
    const j = k + 1 - i;
    const lPrev = i > 0 ? m - a[off + lp - i] : -Infinity; // L(i-1)
    const lNext = i < nl ? m - a[off + lp - 1 - i] : Infinity; // L(i)
    const rPrev = j > 0 ? a[off + lp + j - 1] - m : -Infinity; // R(j-1)
    const rNext = j < nr ? a[off + lp + j] - m : Infinity; // R(j)
    if (lPrev > rNext) {
      hi = i - 1;
    } else if (rPrev > lNext) {
      lo = i + 1;
    } else {
      const kth = lPrev > rPrev ? lPrev : rPrev;
      return [kth, both ? (lNext < rNext ? lNext : rNext) : kth];
    }
  }
  return [NaN, NaN]; // unreachable for valid input
}

/** median(|a - m|) over the sorted a[off .. off+n) where m is its median (numpy's definition). */
export function sortedMad(a: F64, off: number, n: number, m: number): number {
  const h = n >> 1;
  const lp = h > 0 && a[off + h - 1] < m ? h : lowerBound(a, off, n, m);
  if (n & 1) return kthDeviations(a, off, n, m, lp, h, false)[0];
  const [lo, hi] = kthDeviations(a, off, n, m, lp, h - 1, true);
  return (lo + hi) / 2.0;
}

/**
 * (x - median) / (1.4826 * MAD) over the sorted window a[off .. off+n); 0 while n < minPeriods, for a
 * constant window, or when the scale is <= eps; NaN when x itself is undefined.
 */
export function robustZ(x: number, a: F64, off: number, n: number, minPeriods: number, eps: number): number {
  if (Number.isNaN(x)) return NaN;
  if (n < minPeriods || a[off] === a[off + n - 1]) return 0.0;
  const med = sortedMedian(a, off, n);
  const s = MAD_SCALE * sortedMad(a, off, n, med);
  if (s > eps) return (x - med) / s;
  return 0.0;
}

/** Where a window's FIFO and sorted copy live, and its cursor (mutated by `windowPush`). */
export interface WindowCursor {
  head: number;
  length: number;
  nSorted: number;
}

/**
 * Push x into a FIFO of capacity `cap` (fifo[fOff .. fOff+cap)) and its sorted copy of defined values
 * (srt[sOff .. sOff+cap)), evicting the oldest sample when full. Updates `cur` in place.
 */
export function windowPush(fifo: F64, fOff: number, srt: F64, sOff: number, cap: number, cur: WindowCursor,
  x: number): void {
  if (cur.length === cap) {
    const old = fifo[fOff + cur.head];
    fifo[fOff + cur.head] = x;
    cur.head = (cur.head + 1) % cap;
    if (!Number.isNaN(old)) {
      if (!Number.isNaN(x)) {
        sortedReplace(srt, sOff, cur.nSorted, old, x);
        return;
      }
      cur.nSorted = sortedRemove(srt, sOff, cur.nSorted, old);
    }
  } else {
    fifo[fOff + ((cur.head + cur.length) % cap)] = x;
    cur.length += 1;
  }
  if (!Number.isNaN(x)) cur.nSorted = sortedInsert(srt, sOff, cur.nSorted, x);
}

/**
 * Mean of the last min(w, count) samples of a ring ring[off .. off+cap) whose newest sample is at index
 * `newest`, summed oldest first (the order every implementation uses).
 */
export function windowMean(ring: F64, off: number, cap: number, newest: number, count: number, w: number): number {
  const m = count > w ? w : count;
  let start = newest - m + 1;
  let s = 0.0;
  if (start < 0) {
    for (let t = start + cap; t < cap; t++) s += ring[off + t];
    start = 0;
  }
  for (let t = start; t <= newest; t++) s += ring[off + t];
  return s / m;
}

/** numpy.median of the defined values (reference implementation: sorts a copy). NaN when none. */
export function median(values: ArrayLike<number>): number {
  const a = Float64Array.from(values).filter((v) => !Number.isNaN(v)).sort();
  return a.length === 0 ? NaN : sortedMedian(a, 0, a.length);
}

/** numpy.median(|x - numpy.median(x)|) of the defined values (reference implementation). NaN when none. */
export function mad(values: ArrayLike<number>): number {
  const a = Float64Array.from(values).filter((v) => !Number.isNaN(v)).sort();
  if (a.length === 0) return NaN;
  const m = sortedMedian(a, 0, a.length);
  const dev = a.map((v) => Math.abs(v - m)).sort();
  return sortedMedian(dev, 0, dev.length);
}
