/**
 * Candle mode (SPEC §9): open = previous close, close = spot, high = best ask, low = best bid. With
 * `binsPerCandle` > 1 the bins of a group fold into one candle (high = max ask, low = min bid, close = last
 * spot). high/low are widened to contain open and close so a candle is always well formed (an open from the
 * previous candle can be outside this bin's BBO). Bins with no spot are skipped (they break nothing: the next
 * candle opens at the last close).
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

export function buildCandles(bins: readonly CandleInput[], binsPerCandle = 1): Candle[] {
  if (!Number.isInteger(binsPerCandle) || binsPerCandle < 1) throw new RangeError(`binsPerCandle must be an integer >= 1, got ${binsPerCandle}`);
  const out: Candle[] = [];
  let prevClose = NaN;
  for (let i = 0; i < bins.length; i += binsPerCandle) {
    const group = bins.slice(i, i + binsPerCandle).filter((b) => Number.isFinite(b.spot));
    if (group.length === 0) continue;
    const close = group[group.length - 1].spot;
    const open = Number.isFinite(prevClose) ? prevClose : group[0].spot;
    let high = Math.max(open, close);
    let low = Math.min(open, close);
    for (const b of group) {
      if (Number.isFinite(b.ask)) high = Math.max(high, b.ask);
      if (Number.isFinite(b.bid)) low = Math.min(low, b.bid);
    }
    out.push({ firstSeq: group[0].binSeq, lastSeq: group[group.length - 1].binSeq, open, high, low, close });
    prevClose = close;
  }
  return out;
}
