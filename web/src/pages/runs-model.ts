/** The experiment browser's state → API query, and run rows → table shapes. DOM-free. */

import type { Metrics } from './api';

export type Order = 'asc' | 'desc';

export interface RunFilters {
  testDate: string; // '' = any
  signal: string; // '' = any
  selectedOnly: boolean;
  minOosTrades: string; // '' = none; else a non-negative integer
}

export interface RunQuery extends RunFilters {
  sort: string;
  order: Order;
  limit: number;
  offset: number;
}

export const DEFAULT_QUERY: RunQuery = {
  testDate: '', signal: '', selectedOnly: false, minOosTrades: '', sort: 'oos_total_pnl_ticks', order: 'desc', limit: 100, offset: 0,
};

/** The metric names of evaluation.METRIC_NAMES, in its order (the detail's is/oos table). */
export const METRIC_NAMES = [
  'n_trades', 'n_long', 'n_short', 'n_tp', 'n_sl', 'n_timeout', 'n_truncated', 'hit_rate', 'sl_rate', 'timeout_rate',
  'mean_pnl_ticks', 'total_pnl_ticks', 'profit_factor', 'max_drawdown_ticks', 'sharpe_like_per_day', 'exposure',
  'trades_per_hour', 'median_hold_bins',
] as const;

/** Columns of the runs table: `sort` is the server's sort key (rest.SORT_KEYS) or null (not sortable there). */
export interface Column {
  key: string;
  label: string;
  sort: string | null;
}

export const RUN_COLUMNS: Column[] = [
  { key: 'run_id', label: 'run', sort: 'run_id' },
  { key: 'test_date', label: 'test date', sort: 'test_date' },
  { key: 'signal', label: 'signal', sort: null },
  { key: 'selected', label: 'selected', sort: null },
  { key: 'params', label: 'params', sort: null },
  { key: 'is_n_trades', label: 'IS trades', sort: 'is_n_trades' },
  { key: 'is_total_pnl_ticks', label: 'IS pnl', sort: 'is_total_pnl_ticks' },
  { key: 'is_hit_rate', label: 'IS hit', sort: 'is_hit_rate' },
  { key: 'oos_n_trades', label: 'OOS trades', sort: 'oos_n_trades' },
  { key: 'oos_total_pnl_ticks', label: 'OOS pnl', sort: 'oos_total_pnl_ticks' },
  { key: 'oos_hit_rate', label: 'OOS hit', sort: 'oos_hit_rate' },
  { key: 'oos_profit_factor', label: 'OOS PF', sort: 'oos_profit_factor' },
  { key: 'oos_max_drawdown_ticks', label: 'OOS max DD', sort: 'oos_max_drawdown_ticks' },
  { key: 'oos_sharpe_like_per_day', label: 'OOS sharpe/day', sort: 'oos_sharpe_like_per_day' },
];

const DATE_RE = /^\d{4}-\d{2}-\d{2}$/;
const NAME_RE = /^[a-z0-9][a-z0-9_]*$/;

/** Filters checked with the server's rules; returns the message of the first problem, or null. */
export function checkFilters(f: RunFilters): string | null {
  if (f.testDate && !(DATE_RE.test(f.testDate) && !Number.isNaN(Date.parse(f.testDate)))) {
    return `test date ${JSON.stringify(f.testDate)}: expected YYYY-MM-DD`;
  }
  if (f.signal && !NAME_RE.test(f.signal)) return `signal ${JSON.stringify(f.signal)}: lower-case letters, digits, _`;
  if (f.minOosTrades.trim() !== '' && !/^\d+$/.test(f.minOosTrades.trim())) {
    return `min OOS trades ${JSON.stringify(f.minOosTrades)}: a whole number ≥ 0`;
  }
  return null;
}

/** The `GET /v1/experiments/{name}/runs` query string; empty filters are left out (unfiltered, not `=''`). */
export function runsQuery(q: RunQuery): string {
  const p = new URLSearchParams();
  if (q.testDate) p.set('test_date', q.testDate);
  if (q.signal) p.set('signal', q.signal);
  if (q.selectedOnly) p.set('selected', 'true');
  if (q.minOosTrades.trim() !== '') p.set('min_oos_trades', String(Number(q.minOosTrades.trim())));
  p.set('sort', q.sort);
  p.set('order', q.order);
  p.set('limit', String(q.limit));
  if (q.offset > 0) p.set('offset', String(q.offset));
  return p.toString();
}

/** A click on a column header: the same column flips the order, a new one starts descending for metrics
 * (best first) and ascending for names and dates; the page goes back to the first rows. */
export function toggleSort(q: RunQuery, sortKey: string): RunQuery {
  if (q.sort === sortKey) return { ...q, order: q.order === 'desc' ? 'asc' : 'desc', offset: 0 };
  const textual = sortKey === 'run_id' || sortKey === 'test_date' || sortKey === 'param_hash';
  return { ...q, sort: sortKey, order: textual ? 'asc' : 'desc', offset: 0 };
}

/** The header arrow of a column: ▲/▼ on the sorted one. */
export function sortMark(q: RunQuery, col: Column): string {
  if (!col.sort || col.sort !== q.sort) return '';
  return q.order === 'asc' ? ' ▲' : ' ▼';
}

/** In-sample and out-of-sample values of every metric, side by side (METRIC_NAMES order, then any others). */
export function metricPairs(m: Metrics): { name: string; is: number | null; oos: number | null }[] {
  const names: string[] = [...METRIC_NAMES];
  for (const k of Object.keys(m)) {
    const base = k.replace(/^(is|oos)_/, '');
    if (base !== k && !names.includes(base)) names.push(base);
  }
  return names
    .filter((n) => `is_${n}` in m || `oos_${n}` in m)
    .map((name) => ({ name, is: m[`is_${name}`] ?? null, oos: m[`oos_${name}`] ?? null }));
}

/** Parameters as "key=value" text for the runs table's compact column. */
export function paramsText(params: Record<string, unknown>): string {
  return Object.entries(params)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
    .join(' ');
}

/** "rows 101–200 of 345" under the table, with whether there are earlier/later pages. */
export function pageInfo(q: RunQuery, total: number, shown: number): { text: string; prev: boolean; next: boolean } {
  if (total === 0) return { text: 'no runs match', prev: false, next: false };
  const first = q.offset + 1;
  const last = q.offset + shown;
  return { text: `rows ${first}–${last} of ${total}`, prev: q.offset > 0, next: last < total };
}

/** The detail's parameter rows: the swept values, then the row's trading values and signal settings that the
 * sweep did not vary (a swept `threshold` is not listed twice). */
export function detailParams(d: {
  params: Record<string, unknown>; threshold: number | null; tp_ticks: number | null; sl_ticks: number | null;
  cooldown_bins: number | null; signal: string | null; signal_config: Record<string, unknown> | null;
}): [string, unknown][] {
  const swept = Object.entries(d.params).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const fixed: [string, unknown][] = [
    ['threshold', d.threshold], ['tp_ticks', d.tp_ticks], ['sl_ticks', d.sl_ticks], ['cooldown_bins', d.cooldown_bins],
  ];
  return [...swept, ...fixed.filter(([k]) => !(k in d.params)), ['signal', d.signal], ['signal config', d.signal_config]];
}
