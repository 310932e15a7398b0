/**
 * `gold_config` of the stream's runtime_config (SPEC §4.5): every parameter of the built-in gold set,
 * mirroring qmachina_assets/core/gold/features.py `GoldFeatureConfig` field for field, with the same validation.
 */

export const GOLD_VERSION = 'gold-1';

/** Float gold columns per (bin, k), in output order (gold.py GOLD_FLOAT_COLUMNS). */
export const GOLD_FLOAT_COLUMNS = [
  'pressure_variant', 'vacuum_variant', 'composite_raw', 'composite',
  'composite_d1', 'composite_d2', 'composite_d3', 'flow_score',
] as const;
/** int8 gold code columns (gold.py GOLD_CODE_COLUMNS). */
export const GOLD_CODE_COLUMNS = ['state5_code', 'flow_state_code'] as const;
/** Silver inputs of the built-in set (gold.py GOLD_INPUTS). */
export const GOLD_INPUTS = ['v_add', 'v_rest_depth', 'a_add', 'v_pull', 'v_fill', 'a_pull'] as const;

export type GoldFloatColumn = (typeof GOLD_FLOAT_COLUMNS)[number];
export type GoldCodeColumn = (typeof GOLD_CODE_COLUMNS)[number];
export type GoldInput = (typeof GOLD_INPUTS)[number];

export interface GoldFeatureConfig {
  readonly cell_width_ms: number;
  readonly c1: number;
  readonly c2: number;
  readonly c3: number;
  readonly c4: number;
  readonly c5: number;
  readonly c6: number;
  readonly c7: number;
  readonly flow_windows: readonly number[];
  readonly flow_rollup_weights: readonly number[];
  readonly flow_derivative_weights: readonly [number, number, number];
  readonly flow_tanh_scale: number;
  readonly flow_neutral_threshold: number;
  readonly flow_zscore_window_bins: number;
  readonly flow_zscore_min_periods: number;
  readonly composite_eps: number;
  readonly scale_eps: number;
  readonly series: 'absolute_tick';
}

export class GoldConfigError extends Error {
  constructor(message: string) {
    super(`gold_config: ${message}`);
    this.name = 'GoldConfigError';
  }
}

const FIELDS = [
  'cell_width_ms', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'flow_windows', 'flow_rollup_weights',
  'flow_derivative_weights', 'flow_tanh_scale', 'flow_neutral_threshold', 'flow_zscore_window_bins',
  'flow_zscore_min_periods', 'composite_eps', 'scale_eps', 'series',
];

function num(obj: Record<string, unknown>, name: string, check: (v: number) => boolean, rule: string): number {
  const v = obj[name];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new GoldConfigError(`${name}: a finite number expected, got ${JSON.stringify(v)}`);
  if (!check(v)) throw new GoldConfigError(`${name}: must be ${rule}, got ${v}`);
  return v;
}

function int(obj: Record<string, unknown>, name: string, min: number): number {
  const v = num(obj, name, (x) => Number.isInteger(x) && x >= min, `an integer >= ${min}`);
  return v;
}

function numList(obj: Record<string, unknown>, name: string): number[] {
  const v = obj[name];
  if (!Array.isArray(v) || v.length === 0) throw new GoldConfigError(`${name}: a non-empty list expected`);
  return v.map((x, i) => {
    if (typeof x !== 'number' || !Number.isFinite(x)) throw new GoldConfigError(`${name}[${i}]: a finite number expected`);
    return x;
  });
}

/** Validate a JSON `gold_config` object (extra keys forbidden, defaults as in Python); throws GoldConfigError. */
export function parseGoldConfig(raw: unknown): GoldFeatureConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new GoldConfigError('an object expected');
  const obj = raw as Record<string, unknown>;
  const extra = Object.keys(obj).filter((k) => !FIELDS.includes(k));
  if (extra.length) throw new GoldConfigError(`unknown field(s) ${extra.join(', ')}`);
  const nonNeg = (v: number) => v >= 0;
  const windows = numList(obj, 'flow_windows');
  const rollup = numList(obj, 'flow_rollup_weights');
  const deriv = numList(obj, 'flow_derivative_weights');
  if (deriv.length !== 3) throw new GoldConfigError('flow_derivative_weights: exactly 3 weights (d1, d2, d3) expected');
  if (windows.length !== rollup.length) throw new GoldConfigError('flow_rollup_weights: one weight per flow_windows entry expected');
  if (windows.some((w) => !Number.isInteger(w) || w < 1)) throw new GoldConfigError('flow_windows: every window must be an integer >= 1 bin');
  if ([...rollup, ...deriv].some((w) => w < 0)) throw new GoldConfigError('flow_rollup_weights/flow_derivative_weights: weights must be >= 0');
  if (pySum(rollup) <= 0) throw new GoldConfigError('flow_rollup_weights: at least one weight must be > 0');
  if (pySum(deriv) <= 0) throw new GoldConfigError('flow_derivative_weights: at least one weight must be > 0');
  const series = obj.series ?? 'absolute_tick';
  if (series !== 'absolute_tick') throw new GoldConfigError(`series: only "absolute_tick" is supported, got ${JSON.stringify(series)}`);
  const cfg: GoldFeatureConfig = {
    cell_width_ms: int(obj, 'cell_width_ms', 1),
    c1: num(obj, 'c1', nonNeg, '>= 0'),
    c2: num(obj, 'c2', nonNeg, '>= 0'),
    c3: num(obj, 'c3', nonNeg, '>= 0'),
    c4: num(obj, 'c4', nonNeg, '>= 0'),
    c5: num(obj, 'c5', nonNeg, '>= 0'),
    c6: num(obj, 'c6', nonNeg, '>= 0'),
    c7: num(obj, 'c7', nonNeg, '>= 0'),
    flow_windows: windows,
    flow_rollup_weights: rollup,
    flow_derivative_weights: [deriv[0], deriv[1], deriv[2]],
    flow_tanh_scale: num(obj, 'flow_tanh_scale', (v) => v > 0, '> 0'),
    flow_neutral_threshold: num(obj, 'flow_neutral_threshold', (v) => v > 0 && v < 1, 'in (0, 1)'),
    flow_zscore_window_bins: int(obj, 'flow_zscore_window_bins', 2),
    flow_zscore_min_periods: int(obj, 'flow_zscore_min_periods', 2),
    composite_eps: obj.composite_eps === undefined ? 1e-12 : num(obj, 'composite_eps', (v) => v > 0, '> 0'),
    scale_eps: obj.scale_eps === undefined ? 1e-12 : num(obj, 'scale_eps', (v) => v > 0, '> 0'),
    series: 'absolute_tick',
  };
  if (cfg.flow_zscore_min_periods > cfg.flow_zscore_window_bins) {
    throw new GoldConfigError('flow_zscore_min_periods: must be <= flow_zscore_window_bins');
  }
  return cfg;
}

/** Python's builtin `sum` over floats on CPython 3.11: plain left-to-right addition from 0. */
export function pySum(values: readonly number[]): number {
  let s = 0;
  for (const v of values) s += v;
  return s;
}

/** Weights divided by their (Python) sum: `tuple(w / total for w in weights)`. */
export function normalised(values: readonly number[]): number[] {
  const total = pySum(values);
  return values.map((w) => w / total);
}
