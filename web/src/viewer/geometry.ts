/**
 * Prices as ticks: the heatmap is drawn in absolute price ticks, so the grid stays put and the BBO moves; a bin's
 * grid row r (k = r − R) sits at absolute tick `spotTick + k` (the visible range is viewport.ts).
 */

/** Integer price → ticks (as a float; exact for prices on the tick grid). NaN for 0 (an empty side). */
export function priceIntToTick(priceInt: bigint, tickInt: bigint): number {
  if (priceInt === 0n || tickInt === 0n) return NaN;
  const q = priceInt / tickInt;
  const r = priceInt % tickInt;
  return Number(q) + Number(r) / Number(tickInt);
}
