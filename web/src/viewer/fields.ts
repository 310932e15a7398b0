/**
 * What the viewer knows about a field, derived from the stream (data-driven: any float silver column, any gold
 * output the runtime produces, any browser-computed field): its units for the legend and tooltip, whether it is
 * signed, and the colour scheme / normalisation it reads best with.
 *
 * `book` is the viewer's order-book field, computed per bin as ask_depth − bid_depth: asks positive, bids
 * negative, drawn with the two-family `bid_ask` scheme, scaled to the recent largest level (p99_clamp, γ 1.5: typical levels dim).
 */

import type { ColorScheme } from './colormap';
import type { Normalization } from './normalize';

export const BOOK_FIELD = 'book';

export interface FieldInfo {
  readonly name: string;
  readonly units: string;
  readonly signed: boolean;
  readonly scheme: ColorScheme;
  /** null: the stream's configured normalisation. */
  readonly normalization: Normalization | null;
  readonly gamma: number | null;
  readonly note: string;
}

/** Units by silver role (runtime_config grid_schema_fields[].role). */
const ROLE_UNITS: Readonly<Record<string, string>> = {
  force: 'contracts',
  velocity: 'contracts/s',
  acceleration: 'contracts/s²',
  jerk: 'contracts/s³',
};

/** Gold outputs the viewer has words for; any other field falls back to its role or "unitless". */
const KNOWN: Readonly<Record<string, Partial<FieldInfo>>> = {
  pressure_variant: { units: 'contracts/s (weighted)', signed: false, note: 'depth building' },
  vacuum_variant: { units: 'contracts/s (weighted)', signed: false, note: 'depth draining' },
  composite_raw: { units: 'contracts/s (weighted)', signed: true, note: 'pressure − vacuum' },
  composite: { units: 'unitless', signed: true, note: 'robust z of the composite' },
  composite_d1: { units: 'per bin', signed: true },
  composite_d2: { units: 'per bin²', signed: true },
  composite_d3: { units: 'per bin³', signed: true },
  flow_score: { units: 'score in [−1, 1]', signed: true, note: 'tanh of the weighted derivatives' },
  flow_state_code: { units: 'code −1/0/+1', signed: true },
  state5_code: { units: 'code', signed: true },
  ema_signal: { units: 'signal in [−1, 1]', signed: true },
};

export function fieldInfo(name: string, role: string | null = null): FieldInfo {
  if (name === BOOK_FIELD) {
    return { name, units: 'contracts resting', signed: true, scheme: 'bid_ask', normalization: 'p99_clamp', gamma: 1.5,
      note: 'bids (cold) · asks (warm)' };
  }
  const k = KNOWN[name] ?? {};
  const depthLike = /^(add_mass|pull_mass|fill_mass|rest_depth|bid_depth|ask_depth)$/.test(name);
  const signed = k.signed ?? (/^[vaj]_/.test(name) || !depthLike);
  return {
    name,
    units: k.units ?? (role && ROLE_UNITS[role]) ?? 'unitless',
    signed,
    scheme: signed ? 'pressure_vacuum' : 'thermal',
    normalization: depthLike ? 'p99_clamp' : null,
    gamma: depthLike ? 0.6 : null,
    note: k.note ?? (name === 'fill_mass' || name === 'add_mass' || name === 'pull_mass' ? 'decayed mass (τ rest)' : ''),
  };
}

/** The book field's value per row: ask_depth − bid_depth (NaN where both are absent). */
export function bookColumn(bid: ArrayLike<number> | undefined, ask: ArrayLike<number> | undefined, rows: number): Float64Array {
  const out = new Float64Array(rows).fill(NaN);
  if (!bid || !ask) return out;
  const n = Math.min(rows, bid.length, ask.length);
  for (let r = 0; r < n; r++) out[r] = Number(ask[r]) - Number(bid[r]);
  return out;
}
