/**
 * The runtime_config's `visualization` (SPEC §5.3 VisualizationConfig) as the viewer uses it: display mode,
 * cell shader (defaults filled in), enabled overlays sorted by z_order. A missing/empty visualization gets the
 * SPEC defaults (heatmap; vp_gold z0, spot_trail z10, bbo_spread z15, bbo_trail z20, projection_bands z30).
 * Malformed entries are reported in `warnings` and skipped, never fatal: the viewer still draws.
 */

import { isColorScheme, type ColorScheme } from './colormap';
import { isNormalization, type Normalization } from './normalize';

export interface CellShader {
  readonly signal_field: string;
  readonly depth_field: string;
  readonly color_scheme: ColorScheme;
  readonly normalization: Normalization;
  readonly gamma: number;
}

export interface Overlay {
  readonly id: string;
  readonly type: string;
  readonly label: string;
  readonly z_order: number;
  readonly params: Readonly<Record<string, unknown>>;
}

export interface Visualization {
  readonly display_mode: 'heatmap' | 'candle';
  readonly cell_shader: CellShader;
  /** Enabled overlays, ascending z_order (drawn in this order: later on top). */
  readonly overlays: readonly Overlay[];
  readonly warnings: readonly string[];
}

export const DEFAULT_CELL_SHADER: CellShader = {
  signal_field: 'flow_score', depth_field: 'rest_depth', color_scheme: 'pressure_vacuum',
  normalization: 'adaptive_running_max', gamma: 0.7,
};

export const DEFAULT_OVERLAYS: readonly Overlay[] = [
  { id: 'vp_gold', type: 'vp_gold', label: 'gold', z_order: 0, params: {} },
  { id: 'spot_trail', type: 'spot_trail', label: 'spot', z_order: 10, params: {} },
  { id: 'bbo_spread', type: 'bbo_spread', label: 'spread', z_order: 15, params: {} },
  { id: 'bbo_trail', type: 'bbo_trail', label: 'BBO', z_order: 20, params: {} },
  { id: 'projection_bands', type: 'projection_bands', label: 'projection', z_order: 30, params: { signal_field: 'flow_score', composite_scale: 8.0 } },
];

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

export function parseVisualization(raw: unknown): Visualization {
  const warnings: string[] = [];
  const v = isObj(raw) ? raw : {};
  const mode = v.display_mode === 'candle' ? 'candle' : 'heatmap';
  if (v.display_mode !== undefined && v.display_mode !== 'heatmap' && v.display_mode !== 'candle') {
    warnings.push(`display_mode ${JSON.stringify(v.display_mode)} unknown; heatmap used`);
  }
  const cs = isObj(v.cell_shader) ? v.cell_shader : {};
  const pick = <T>(key: string, ok: (x: unknown) => x is T, dflt: T): T => {
    const x = cs[key];
    if (x === undefined || x === null) return dflt;
    if (ok(x)) return x;
    warnings.push(`cell_shader.${key} ${JSON.stringify(x)} invalid; ${JSON.stringify(dflt)} used`);
    return dflt;
  };
  const isName = (x: unknown): x is string => typeof x === 'string' && x !== '';
  const isGamma = (x: unknown): x is number => typeof x === 'number' && x > 0 && x <= 5;
  const cell_shader: CellShader = {
    signal_field: pick('signal_field', isName, DEFAULT_CELL_SHADER.signal_field),
    depth_field: pick('depth_field', isName, DEFAULT_CELL_SHADER.depth_field),
    color_scheme: pick('color_scheme', isColorScheme, DEFAULT_CELL_SHADER.color_scheme),
    normalization: pick('normalization', isNormalization, DEFAULT_CELL_SHADER.normalization),
    gamma: pick('gamma', isGamma, DEFAULT_CELL_SHADER.gamma),
  };
  let overlays: Overlay[];
  if (!Array.isArray(v.overlays) || v.overlays.length === 0) {
    overlays = mode === 'heatmap' ? [...DEFAULT_OVERLAYS] : DEFAULT_OVERLAYS.filter((o) => o.type !== 'vp_gold');
  } else {
    overlays = [];
    const ids = new Set<string>();
    v.overlays.forEach((o, i) => {
      if (!isObj(o) || !isName(o.type)) {
        warnings.push(`overlays[${i}]: an object with a type expected; skipped`);
        return;
      }
      if (o.enabled === false) return;
      const id = isName(o.id) ? o.id : `${o.type}_${i}`;
      if (ids.has(id)) {
        warnings.push(`overlays[${i}]: duplicate id ${id}; skipped`);
        return;
      }
      ids.add(id);
      overlays.push({
        id, type: o.type, label: typeof o.label === 'string' ? o.label : o.type,
        z_order: typeof o.z_order === 'number' && Number.isFinite(o.z_order) ? o.z_order : 0,
        params: isObj(o.params) ? o.params : {},
      });
    });
  }
  overlays.sort((a, b) => a.z_order - b.z_order); // stable: equal z keeps config order
  return { display_mode: mode, cell_shader, overlays, warnings };
}

/** SPEC §4.7 browser bands: spread in ticks by horizon bins, {1:6, 2:10, 4:16, 8:24}, linear in between, clamped. */
const SPREAD: readonly [number, number][] = [[1, 6], [2, 10], [4, 16], [8, 24]];

export function projectionSpread(hBins: number): number {
  if (!(hBins > 0)) return NaN;
  if (hBins <= SPREAD[0][0]) return SPREAD[0][1];
  for (let i = 1; i < SPREAD.length; i++) {
    const [h1, s1] = SPREAD[i];
    if (hBins <= h1) {
      const [h0, s0] = SPREAD[i - 1];
      return s0 + ((s1 - s0) * (hBins - h0)) / (h1 - h0);
    }
  }
  return SPREAD[SPREAD.length - 1][1];
}

/**
 * Band centre tick at horizon h. SPEC §4.7 reads "centre row = spot row − (signal × composite_scale) × spread(h)";
 * taken literally that is up to 8 × 24 rows off the spot, far outside a ±R grid. The viewer keeps its shape
 * (up for a positive signal, proportional to signal × scale, widening with h) but scales spread by 1/spread(8):
 * centre = spot + signal × scale × spread(h) / 24, so |shift| ≤ composite_scale ticks.
 */
export function projectionCenterTick(spotTick: number, signal: number, scale: number, hBins: number): number {
  const s = Math.max(-1, Math.min(1, signal));
  return spotTick + (s * scale * projectionSpread(hBins)) / SPREAD[SPREAD.length - 1][1];
}

/** Half-width of a band in rows (SPEC §4.7). */
export const PROJECTION_HALF_ROWS = 4;
