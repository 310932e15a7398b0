/**
 * Glue between the decoded stream (contract.ts) and the browser GoldFeatureRuntime (SPEC §4.5): the
 * runtime is built from `runtime_config` alone, and each bin's input is the grid_update scalars plus the
 * frame's silver columns (the BBO reprice signs are broadcast on every row; row 0 is read).
 */

import { GOLD_INPUTS } from '../gold/config';
import { DslRuntime, type DslBinInput } from '../gold/dslRuntime';
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

/**
 * The browser DslRuntime of a version whose pipeline has a Gold DSL (`runtime_config.gold_dsl`), or null without
 * one. Throws (DslSpecError / StreamContractError) when this browser cannot run the spec or the stream does not
 * carry a silver column it reads; preflight refuses to publish such a version, so this names a contract break.
 */
export function createDslRuntime(config: RuntimeConfigMessage): DslRuntime | null {
  const section = config.raw.gold_dsl as { spec?: unknown; name?: string } | null | undefined;
  if (section === undefined || section === null) return null;
  const rt = new DslRuntime(section.spec, config.grid_radius_ticks, config.tick_int, config.cell_width_ms);
  const streamed = new Set(config.grid_schema_fields.map((f) => f.name));
  const missing = rt.program.fields.filter((c) => !streamed.has(c));
  if (missing.length) {
    throw new StreamContractError(`gold_dsl ${section.name ?? ''}: the stream does not carry ${missing.join(', ')} (grid_schema_fields)`);
  }
  return rt;
}

/**
 * The DslRuntime's input for one decoded bin. bin_seq is the absolute bin index bin_start_ns / cell (as the
 * server's `DslFollower`): series continue across a reconnect that resumes at the next cell.
 */
export function dslInput(bin: StreamBin, rt: DslRuntime, cellWidthMs: number): DslBinInput {
  const f = bin.frame;
  const grid: Record<string, ArrayLike<number>> = { k: f.column('k') as Int32Array };
  for (const c of rt.program.fields) grid[c] = f.column(c) as ArrayLike<number>;
  return {
    binSeq: bin.update.bin_start_ns / (BigInt(cellWidthMs) * 1_000_000n),
    spotRefPriceInt: bin.update.spot_ref_price_int,
    bookValid: bin.update.book_valid,
    grid: grid as DslBinInput['grid'],
  };
}
