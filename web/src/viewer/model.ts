/**
 * Stream → viewer buffer glue (no DOM): a runtime_config gives the ring's fields (every float64 silver column,
 * plus the gold outputs when the stream carries the gold inputs) and a gold runtime; each decoded bin is
 * pushed with its BBO/spot in price ticks and, if gold is on, its GoldFeatureRuntime outputs.
 */

import { GOLD_CODE_COLUMNS, GOLD_FLOAT_COLUMNS } from '../gold/config';
import type { GoldFeatureRuntime } from '../gold/runtime';
import type { RuntimeConfigMessage, StreamBin } from '../stream/contract';
import { createGoldRuntime, goldInput } from '../stream/gold';
import { priceIntToTick } from './geometry';
import { BinRing } from './ring';

export const GOLD_FIELDS = [...GOLD_FLOAT_COLUMNS, ...GOLD_CODE_COLUMNS] as const;

export interface ViewerModel {
  readonly config: RuntimeConfigMessage;
  readonly ring: BinRing;
  readonly gold: GoldFeatureRuntime | null;
  /** Why gold is off (null when on). */
  readonly goldNote: string | null;
  readonly silverFields: readonly string[];
  readonly goldFields: readonly string[];
}

export function createViewerModel(config: RuntimeConfigMessage, capacity: number): ViewerModel {
  const silverFields = config.grid_schema_fields.filter((f) => f.dtype === 'float64').map((f) => f.name);
  let gold: GoldFeatureRuntime | null = null;
  let goldNote: string | null = null;
  try {
    gold = createGoldRuntime(config);
  } catch (e) {
    goldNote = `gold off: ${(e as Error).message}`;
  }
  const goldFields = gold ? [...GOLD_FIELDS] : [];
  return { config, ring: new BinRing(capacity, config.grid_rows, [...silverFields, ...goldFields]), gold, goldNote, silverFields, goldFields };
}

/** Push one decoded bin (runs the gold step when gold is on). */
export function ingestBin(m: ViewerModel, bin: StreamBin): void {
  const c = m.config;
  const u = bin.update;
  const values: Record<string, ArrayLike<number>> = {};
  for (const f of m.silverFields) if (bin.frame.has(f)) values[f] = bin.frame.column(f) as Float64Array;
  if (m.gold) {
    const g = m.gold.step(goldInput(bin));
    for (const f of GOLD_FIELDS) values[f] = g[f];
  }
  const offset = bin.frame.numRows === 1 ? c.grid_radius_ticks : 0; // ema_ensemble: the single k = 0 row
  m.ring.push({
    binSeq: u.bin_seq,
    spotTick: priceIntToTick(u.spot_ref_price_int, c.tick_int),
    bidTick: u.book_valid ? priceIntToTick(u.best_bid_price_int, c.tick_int) : NaN,
    askTick: u.book_valid ? priceIntToTick(u.best_ask_price_int, c.tick_int) : NaN,
    bookValid: u.book_valid,
    tsMs: Number(u.bin_end_ns / 1_000_000n),
  }, values, offset);
}
