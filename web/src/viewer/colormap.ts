/**
 * Colour schemes of SPEC §5.3 CellShaderConfig.color_scheme. Input is a normalised value in [-1, 1]
 * (after gamma); output packed RGBA bytes. Signed scheme `pressure_vacuum`: negative → blue (vacuum),
 * positive → red/orange (pressure), 0 → the background. Unsigned schemes use |v|. `bid_ask` (viewer only, the
 * order book's default): negative = bid depth in a cold family (blue → cyan → white), positive = ask depth in a
 * warm one (brown → orange → pale yellow), so the two sides read apart at a glance.
 */

export const COLOR_SCHEMES = ['bid_ask', 'pressure_vacuum', 'thermal', 'mono_green', 'mono_red'] as const;
export type ColorScheme = (typeof COLOR_SCHEMES)[number];

export function isColorScheme(v: unknown): v is ColorScheme {
  return typeof v === 'string' && (COLOR_SCHEMES as readonly string[]).includes(v);
}

export type Rgb = readonly [number, number, number];

export const BACKGROUND: Rgb = [12, 14, 20];

const lerp = (a: number, b: number, t: number) => a + (b - a) * t;

function mix(a: Rgb, b: Rgb, t: number): [number, number, number] {
  return [Math.round(lerp(a[0], b[0], t)), Math.round(lerp(a[1], b[1], t)), Math.round(lerp(a[2], b[2], t))];
}

/** Piecewise-linear gradient through `stops` (evenly spaced on [0, 1]). */
function gradient(stops: readonly Rgb[], t: number): [number, number, number] {
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  return mix(stops[i], stops[i + 1], x - i);
}

const THERMAL: readonly Rgb[] = [BACKGROUND, [60, 20, 110], [180, 40, 90], [245, 130, 30], [255, 240, 160]];
const PRESSURE: readonly Rgb[] = [BACKGROUND, [140, 40, 30], [235, 110, 40], [255, 220, 120]];
const VACUUM: readonly Rgb[] = [BACKGROUND, [25, 60, 140], [50, 150, 235], [170, 235, 255]];
const BIDS: readonly Rgb[] = [BACKGROUND, [16, 44, 96], [24, 104, 178], [40, 178, 230], [150, 236, 255], [240, 255, 255]];
const ASKS: readonly Rgb[] = [BACKGROUND, [92, 30, 18], [186, 70, 26], [240, 142, 40], [255, 214, 110], [255, 250, 225]];

/** RGB for a normalised value v ∈ [-1, 1]; NaN → background. */
export function colorFor(scheme: ColorScheme, v: number): [number, number, number] {
  if (Number.isNaN(v)) return [...BACKGROUND];
  const c = Math.min(Math.max(v, -1), 1);
  switch (scheme) {
    case 'bid_ask':
      return c >= 0 ? gradient(ASKS, c) : gradient(BIDS, -c);
    case 'pressure_vacuum':
      return c >= 0 ? gradient(PRESSURE, c) : gradient(VACUUM, -c);
    case 'thermal':
      return gradient(THERMAL, Math.abs(c));
    case 'mono_green':
      return mix(BACKGROUND, [70, 230, 120], Math.abs(c));
    case 'mono_red':
      return mix(BACKGROUND, [240, 70, 70], Math.abs(c));
  }
}

/** A 256-entry lookup table over v ∈ [-1, 1] packed as little-endian RGBA uint32 (for ImageData writes); with
 * `gamma` the table applies sign(v)·|v|^gamma itself, so a cell costs one normalisation and one lookup. */
export function buildLut(scheme: ColorScheme, gamma = 1): Uint32Array {
  const lut = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    const v = (i / 255) * 2 - 1;
    const [r, g, b] = colorFor(scheme, v === 0 ? 0 : Math.sign(v) * Math.pow(Math.abs(v), gamma));
    lut[i] = (255 << 24) | (b << 16) | (g << 8) | r;
  }
  return lut;
}

/** LUT index of v ∈ [-1, 1] (NaN → the index of 0). */
export function lutIndex(v: number): number {
  if (Number.isNaN(v)) return 128;
  const c = Math.min(Math.max(v, -1), 1);
  return Math.round((c + 1) * 127.5);
}

export function cssRgb(c: Rgb): string {
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
