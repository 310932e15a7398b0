/** Display formatting shared by the pages: metric values, timestamps, JSON-ish values. DOM-free. */

const COUNT = new Set(['n_trades', 'n_long', 'n_short', 'n_tp', 'n_sl', 'n_timeout', 'n_truncated']);
const RATE = new Set(['hit_rate', 'sl_rate', 'timeout_rate', 'exposure']);

/** A metric (`oos_hit_rate`, `n_trades`, ...) for a table cell; null/non-finite (the API's NaN) is an em dash. */
export function formatMetric(name: string, value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  const base = name.replace(/^(is|oos)_/, '');
  if (COUNT.has(base)) return String(Math.round(value));
  if (RATE.has(base)) return `${(value * 100).toFixed(1)}%`;
  const abs = Math.abs(value);
  return abs !== 0 && (abs >= 1e6 || abs < 1e-3) ? value.toExponential(3) : value.toFixed(abs >= 100 ? 1 : 3);
}

/** Any API value as short text: strings bare, absent as an em dash, the rest as JSON. */
export function formatValue(v: unknown): string {
  if (v === undefined) return '—';
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

/** An ISO timestamp as `YYYY-MM-DD HH:MM:SS` UTC (or the text itself when it does not parse). */
export function formatIso(iso: string | null | undefined): string {
  if (!iso) return '—';
  const t = Date.parse(iso);
  return Number.isNaN(t) ? iso : new Date(t).toISOString().replace('T', ' ').slice(0, 19);
}

/** Milliseconds since the epoch as HH:MM in New York time (the exchange's clock for the ES captures). */
export function formatEtClock(ms: number): string {
  return new Intl.DateTimeFormat('en-US', { timeZone: 'America/New_York', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(ms);
}

