/**
 * Axis ticks: the time axis in US Eastern time with steps that adapt to the zoom (100 ms … 1 h, labels at
 * least `minPx` apart, aligned on the ET wall clock), and the price ladder with steps of 1, 2, 4 (= one point for
 * ES), 5, 10, 20, 40, 50, 100 … ticks. Pure functions (Vitest).
 */

export const ET_ZONE = 'America/New_York';

/** Time steps in ms, smallest first. */
export const TIME_STEPS_MS = [
  100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000,
] as const;

const etParts = new Intl.DateTimeFormat('en-US', {
  timeZone: ET_ZONE, hour12: false, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

const offsetByHour = new Map<number, number>();

/** Offset of ET from UTC at `ms` (ms to add to UTC to get the ET wall clock), e.g. −5 h in winter. Cached per UTC
 * hour (DST changes on the hour; Intl formatting is the slow part of drawing the axes). */
export function etOffsetMs(ms: number): number {
  const hour = Math.floor(ms / 3_600_000);
  const hit = offsetByHour.get(hour);
  if (hit !== undefined) return hit;
  const p = Object.fromEntries(etParts.formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
  const wall = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour % 24, +p.minute, +p.second);
  const off = wall - (ms - (((ms % 1000) + 1000) % 1000));
  if (offsetByHour.size > 10_000) offsetByHour.clear();
  offsetByHour.set(hour, off);
  return off;
}

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** ET wall clock of `ms` as HH:MM:SS (with `.d` tenths or `.ddd` ms when asked). */
export function formatEt(ms: number, digits: 0 | 1 | 3 = 0, offset = etOffsetMs(ms)): string {
  const w = ms + offset;
  const day = ((w % 86_400_000) + 86_400_000) % 86_400_000;
  const h = Math.floor(day / 3_600_000);
  const m = Math.floor((day % 3_600_000) / 60_000);
  const s = Math.floor((day % 60_000) / 1000);
  const frac = day % 1000;
  const base = `${pad(h)}:${pad(m)}:${pad(s)}`;
  if (digits === 1) return `${base}.${Math.floor(frac / 100)}`;
  if (digits === 3) return `${base}.${pad(Math.round(frac), 3)}`;
  return base;
}

/** ET date (YYYY-MM-DD) of `ms`. */
export function etDate(ms: number): string {
  const p = Object.fromEntries(etParts.formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day}`;
}

export interface AxisTick {
  readonly value: number;
  readonly label: string;
  /** A coarser boundary (a full minute for second steps, a full hour for minute steps): drawn stronger. */
  readonly major: boolean;
}

/** The smallest step of TIME_STEPS_MS giving at least `minPx` between labels over `pxPerMs`. */
export function timeStep(pxPerMs: number, minPx = 90): number {
  for (const s of TIME_STEPS_MS) if (s * pxPerMs >= minPx) return s;
  return TIME_STEPS_MS[TIME_STEPS_MS.length - 1];
}

/** Ticks over [t0, t1] (epoch ms) for an axis `widthPx` wide; labels in ET. */
export function timeTicks(t0: number, t1: number, widthPx: number, minPx = 90): AxisTick[] {
  if (!(t1 > t0) || !(widthPx > 0)) return [];
  const step = timeStep(widthPx / (t1 - t0), minPx);
  const offset = etOffsetMs(t0); // ET offsets are whole hours: aligning ET wall time = aligning UTC + offset
  const digits = step < 1000 ? 1 : 0;
  const majorEvery = step < 60_000 ? 60_000 : 3_600_000;
  const out: AxisTick[] = [];
  for (let w = Math.ceil((t0 + offset) / step) * step; w <= t1 + offset; w += step) {
    const t = w - offset;
    const label = step >= 60_000 ? formatEt(t, 0, offset).slice(0, 5) : formatEt(t, digits, offset);
    out.push({ value: t, label, major: w % majorEvery === 0 });
    if (out.length > 500) break;
  }
  return out;
}

/** Price steps in ticks. */
const PRICE_STEPS = [1, 2, 4, 5, 10, 20, 40, 50, 100, 200, 400, 500, 1000, 2000, 4000, 5000, 10000] as const;

/** Decimals needed to print multiples of `tickDollars` exactly (at most 6). */
export function priceDecimals(tickDollars: number): number {
  for (let d = 0; d <= 6; d++) {
    const x = tickDollars * 10 ** d;
    if (Math.abs(x - Math.round(x)) < 1e-6) return d;
  }
  return 6;
}

export function formatPrice(tick: number, tickDollars: number, decimals = priceDecimals(tickDollars)): string {
  return (tick * tickDollars).toFixed(decimals);
}

/** Ladder labels between ticks `lo`..`hi` (inclusive) on an axis `heightPx` tall, at least `minPx` apart. */
export function priceTicks(lo: number, hi: number, heightPx: number, tickDollars: number, minPx = 18): AxisTick[] {
  if (!(hi >= lo) || !(heightPx > 0)) return [];
  const pxPerTick = heightPx / (hi - lo + 1);
  const step = PRICE_STEPS.find((s) => s * pxPerTick >= minPx) ?? PRICE_STEPS[PRICE_STEPS.length - 1];
  const dec = priceDecimals(tickDollars);
  const majorEvery = step * 5;
  const out: AxisTick[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) {
    out.push({ value: t, label: formatPrice(t, tickDollars, dec), major: t % majorEvery === 0 });
    if (out.length > 400) break;
  }
  return out;
}
