/**
 * Glue between the decoded stream (contract.ts) and the browser GoldFeatureRuntime (SPEC §4.5): the
 * runtime is built from `runtime_config` alone, and each bin's input is the grid_update scalars plus the
 * frame's silver columns (the BBO reprice signs are broadcast on every row; row 0 is read).
 */

import { GOLD_INPUTS } from '../gold/config';
import { GoldFeatureRuntime, type GoldBinInput, type GoldGridInput } from '../gold/runtime';
import { StreamContractError, type RuntimeConfigMessage, type StreamBin } from './contract';

/** Silver columns the gold runtime reads from each frame. */
export const GOLD_STREAM_FIELDS = ['k', ...GOLD_INPUTS, 'ask_reprice_sign', 'bid_reprice_sign'] as const;

/** A GoldFeatureRuntime for this stream; throws if the stream does not carry the gold inputs. */
export function createGoldRuntime(config: RuntimeConfigMessage): GoldFeatureRuntime {
  const streamed = new Set(config.grid_schema_fields.map((f) => f.name));
  const missing = GOLD_STREAM_FIELDS.filter((c) => !streamed.has(c));
  if (missing.length) {
    throw new StreamContractError(`gold: the stream does not carry ${missing.join(', ')} (grid_schema_fields), so gold cannot be computed`);
  }
  return new GoldFeatureRuntime(config.gold_config, config.grid_radius_ticks, config.tick_int);
}

/** The gold runtime's input for one decoded bin. */
export function goldInput(bin: StreamBin): GoldBinInput {
  const f = bin.frame;
  const grid: Record<string, ArrayLike<number>> = { k: f.column('k') as Int32Array };
  for (const c of GOLD_INPUTS) grid[c] = f.column(c) as Float64Array;
  return {
    binSeq: bin.update.bin_seq,
    spotRefPriceInt: bin.update.spot_ref_price_int,
    bookValid: bin.update.book_valid,
    askRepriceSign: f.numRows ? Number(f.column('ask_reprice_sign')[0]) : 0,
    bidRepriceSign: f.numRows ? Number(f.column('bid_reprice_sign')[0]) : 0,
    grid: grid as unknown as GoldGridInput,
  };
}
