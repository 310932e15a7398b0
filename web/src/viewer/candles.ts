/**
 * Candle mode (SPEC §9): open = previous close, close = spot, high = best ask, low = best bid; the bins of one
 * wall-clock interval (1 s … 5 min) fold into one candle (high = max ask, low = min bid, close = last spot).
 * high/low are widened to contain open and close so a candle is always well formed (an open from the previous
 * candle can be outside this bin's BBO). Bins with no spot are skipped (they break nothing: the next candle
 * opens at the last close).
 */

export interface CandleInput {
  readonly binSeq: number;
  readonly spot: number;
  readonly bid: number;
  readonly ask: number;
}

export interface Candle {
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly open: number;
  readonly high: number;
  readonly low: number;
  readonly close: number;
}

export interface TimedCandleInput extends CandleInput {
  /** Bin end time (epoch ms). */
  readonly tsMs: number;
}

export interface TimedCandle extends Candle {
  /** The interval's start and end (epoch ms): bins ending in (t0, t1] fold into it. */
  readonly t0: number;
  readonly t1: number;
  readonly bins: number;
}

/** Candle intervals offered by the viewer (ms). */
export const CANDLE_INTERVALS_MS = [1_000, 5_000, 15_000, 30_000, 60_000, 300_000] as const;

/**
 * SPEC §9 candles over wall-clock intervals of `intervalMs` (aligned on multiples of it since the epoch, i.e. on
 * the ET clock for intervals up to an hour): a bin ending in (t0, t1] belongs to that interval's candle. Same
 * rules as above: open = previous candle's close (the first: its first spot), high/low the max ask / min bid
 * widened to the body, bins without a spot skipped. `prevClose` opens the first candle when known.
 */
export function timeCandles(bins: readonly TimedCandleInput[], intervalMs: number, prevClose = NaN): TimedCandle[] {
  if (!(intervalMs > 0)) throw new RangeError(`intervalMs must be > 0, got ${intervalMs}`);
  const out: TimedCandle[] = [];
  let close = prevClose;
  let cur: { t0: number; first: number; last: number; open: number; high: number; low: number; close: number; n: number } | null = null;
  const flush = () => {
    if (!cur) return;
    out.push({ firstSeq: cur.first, lastSeq: cur.last, open: cur.open, high: Math.max(cur.high, cur.open, cur.close),
      low: Math.min(cur.low, cur.open, cur.close), close: cur.close, t0: cur.t0, t1: cur.t0 + intervalMs, bins: cur.n });
    close = cur.close;
    cur = null;
  };
  for (const b of bins) {
    if (!Number.isFinite(b.spot)) continue;
    const t0 = Math.floor((b.tsMs - 1) / intervalMs) * intervalMs;
    if (cur && cur.t0 !== t0) flush();
    if (!cur) {
      const open = Number.isFinite(close) ? close : b.spot;
      cur = { t0, first: b.binSeq, last: b.binSeq, open, high: -Infinity, low: Infinity, close: b.spot, n: 0 };
    }
    cur.last = b.binSeq;
    cur.close = b.spot;
    cur.n++;
    if (Number.isFinite(b.ask)) cur.high = Math.max(cur.high, b.ask);
    if (Number.isFinite(b.bid)) cur.low = Math.min(cur.low, b.bid);
  }
  flush();
  return out;
}
