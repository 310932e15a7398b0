/**
 * The experiment browser: pick an experiment, filter and sort its runs (server-side), open one run to see
 * its parameters, in- vs out-of-sample metrics, lineage and replayed equity curves.
 * Query building and table shaping live in runs-model.ts, plot geometry in curve.ts.
 */

import './pages.css';
import { pageApi, showWho } from './session';
import { ApiError, type ExperimentSummary, type RunDetail, type RunEquity } from './api';
import { toSeries } from './curve';
import { byId, h, renderNav, setStatus } from './dom';
import { formatMetric, formatValue } from './format';
import { drawEquity } from './plot';
import {
  checkFilters, DEFAULT_QUERY, detailParams, metricPairs, pageInfo, paramsText, RUN_COLUMNS, runsQuery, sortMark, toggleSort, type RunQuery,
} from './runs-model';

const api = pageApi();
const status = byId<HTMLParagraphElement>('status');
const expEl = byId<HTMLSelectElement>('experiment');
const dateEl = byId<HTMLSelectElement>('f-test-date');
const signalEl = byId<HTMLInputElement>('f-signal');
const selectedEl = byId<HTMLInputElement>('f-selected');
const minEl = byId<HTMLInputElement>('f-min-trades');
const canvas = byId<HTMLCanvasElement>('equity');

let experiments: ExperimentSummary[] = [];
let query: RunQuery = { ...DEFAULT_QUERY };
let currentRun: string | null = null;
let lastEquity: RunEquity | null = null;
let loadSeq = 0;

function message(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  return err instanceof Error ? err.message || err.name : String(err) || 'unknown error';
}

function syncUrl(): void {
  const p = new URLSearchParams(location.search);
  if (expEl.value) p.set('experiment', expEl.value);
  if (currentRun) p.set('run', currentRun);
  else p.delete('run');
  history.replaceState(null, '', `${location.pathname}?${p.toString()}`);
}

function renderHead(): void {
  byId('runs-head').replaceChildren(...RUN_COLUMNS.map((c) => {
    if (!c.sort) return h('th', {}, c.label);
    const sortKey = c.sort;
    const btn = h('button', { type: 'button', class: 'sort', 'data-sort': sortKey }, `${c.label}${sortMark(query, c)}`);
    btn.addEventListener('click', () => {
      query = toggleSort(query, sortKey);
      renderHead();
      void loadRuns();
    });
    const aria = query.sort === sortKey ? (query.order === 'asc' ? 'ascending' : 'descending') : null;
    return h('th', { 'aria-sort': aria }, btn);
  }));
}

function readFilters(): string | null {
  const f = { testDate: dateEl.value, signal: signalEl.value.trim(), selectedOnly: selectedEl.checked, minOosTrades: minEl.value };
  const problem = checkFilters(f);
  if (!problem) query = { ...query, ...f, offset: 0 };
  return problem;
}

async function loadRuns(): Promise<void> {
  const name = expEl.value;
  if (!name) return;
  const seq = ++loadSeq;
  setStatus(status, 'loading runs…', 'busy');
  try {
    const list = await api.runs(name, runsQuery(query));
    if (seq !== loadSeq) return; // a newer request is on its way
    const signals = new Set(list.runs.map((r) => r.signal).filter((s): s is string => !!s));
    byId('signals').replaceChildren(...[...signals].sort().map((s) => h('option', { value: s })));
    byId('runs').replaceChildren(...list.runs.map((r) => {
      const cell = (key: string): string => {
        switch (key) {
          case 'run_id': return r.run_id;
          case 'test_date': return r.test_date ?? '—';
          case 'signal': return r.signal ?? '—';
          case 'selected': return r.selected ? '★' : '';
          case 'params': return paramsText(r.params);
          default: return formatMetric(key, r.metrics[key]);
        }
      };
      const row = h('tr', { 'data-testid': 'run-row', 'data-run-id': r.run_id, tabindex: 0, class: r.run_id === currentRun ? 'selected' : null },
        ...RUN_COLUMNS.map((c) => h('td', { class: c.key === 'run_id' || c.key === 'params' ? 'mono' : c.key.includes('_') ? 'num' : null }, cell(c.key))));
      row.addEventListener('click', () => void openRun(r.run_id));
      row.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') void openRun(r.run_id); });
      return row;
    }));
    if (!list.runs.length) byId('runs').replaceChildren(h('tr', {}, h('td', { colspan: RUN_COLUMNS.length, class: 'empty' }, 'no runs match the filters')));
    const info = pageInfo(query, list.total, list.runs.length);
    byId('page-info').textContent = info.text;
    byId<HTMLButtonElement>('prev').disabled = !info.prev;
    byId<HTMLButtonElement>('next').disabled = !info.next;
    setStatus(status, `${name}: ${list.total} run(s)`, '');
  } catch (err) {
    if (seq === loadSeq) setStatus(status, message(err), 'error');
  }
}

function kvRows(entries: [string, unknown][]): HTMLTableRowElement[] {
  return entries.map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', { class: 'mono wrap' }, formatValue(v))));
}

function renderDetail(d: RunDetail): void {
  byId('detail-title').textContent = `Run ${d.run_id}${d.selected ? ' ★ selected in-sample' : ''}`;
  byId('params').replaceChildren(...kvRows(detailParams(d)));
  byId('metrics').replaceChildren(...metricPairs(d.metrics).map((m) => h('tr', {},
    h('th', { scope: 'row' }, m.name), h('td', { class: 'num' }, formatMetric(m.name, m.is)), h('td', { class: 'num' }, formatMetric(m.name, m.oos)))));
  const lineage: [string, unknown][] = [
    ['experiment', d.experiment], ['experiment hash', d.experiment_hash], ['sweep', d.sweep_id], ['param hash', d.param_hash],
    ['serving', d.serving], ['serving hash', d.serving_hash], ['pipeline', d.pipeline], ['pipeline hash', d.pipeline_hash],
    ['gold config hash', d.gold_config_hash], ['train dates', d.train_dates.join(', ')],
    ['train datasets', d.train_dataset_ids.join(', ')], ['test date', d.test_date], ['test dataset', d.test_dataset_id],
    ['code version', d.code_version], ['created', d.created_at], ['sweep seconds', d.sweep_seconds],
    ...Object.entries(d.other),
  ];
  byId('lineage').replaceChildren(...kvRows(lineage.map(([k, v]) => [k, v === null ? '—' : v])));
}

function plot(): void {
  if (!lastEquity) return;
  drawEquity(canvas, [
    { label: 'in-sample', series: toSeries(lastEquity.in_sample) },
    { label: 'out-of-sample', series: toSeries(lastEquity.out_of_sample) },
  ]);
}

async function openRun(runId: string): Promise<void> {
  const name = expEl.value;
  currentRun = runId;
  syncUrl();
  for (const tr of document.querySelectorAll<HTMLTableRowElement>('[data-testid="run-row"]')) {
    tr.classList.toggle('selected', tr.dataset['runId'] === runId);
  }
  const panel = byId('detail');
  panel.hidden = false;
  const eqStatus = byId<HTMLParagraphElement>('equity-status');
  lastEquity = null;
  canvas.getContext('2d')?.clearRect(0, 0, canvas.width, canvas.height);
  try {
    renderDetail(await api.run(name, runId));
  } catch (err) {
    byId('detail-title').textContent = `Run ${runId}: ${message(err)}`;
    return;
  }
  setStatus(eqStatus, 'replaying the run for its equity curve…', 'busy');
  try {
    const eq = await api.equity(name, runId);
    if (currentRun !== runId) return;
    lastEquity = eq;
    const totals = `in-sample ${eq.in_sample.n_trades} trades, ${formatMetric('pnl', eq.in_sample.total_pnl_ticks)} ticks; ` +
      `out-of-sample ${eq.out_of_sample.n_trades} trades, ${formatMetric('pnl', eq.out_of_sample.total_pnl_ticks)} ticks`;
    setStatus(eqStatus, eq.reproduced ? totals : `${totals} — differs from the stored metrics (code changed since the sweep)`,
      eq.reproduced ? 'ok' : 'error');
    plot();
  } catch (err) {
    if (currentRun === runId) setStatus(eqStatus, `no equity curve: ${message(err)}`, 'error');
  }
}

function fillDates(): void {
  const exp = experiments.find((e) => e.name === expEl.value);
  dateEl.replaceChildren(h('option', { value: '' }, 'any'), ...(exp?.test_dates ?? []).map((d) => h('option', { value: d }, d)));
}

byId<HTMLFormElement>('filters').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const problem = readFilters();
  if (problem) setStatus(status, problem, 'error');
  else void loadRuns();
});
expEl.addEventListener('change', () => {
  currentRun = null;
  byId('detail').hidden = true;
  fillDates();
  readFilters();
  syncUrl();
  void loadRuns();
});
byId('prev').addEventListener('click', () => { query = { ...query, offset: Math.max(0, query.offset - query.limit) }; void loadRuns(); });
byId('next').addEventListener('click', () => { query = { ...query, offset: query.offset + query.limit }; void loadRuns(); });
window.addEventListener('resize', () => plot());

async function init(): Promise<void> {
  renderNav(byId('nav'), 'experiments');
  void showWho(byId('nav'), api);
  renderHead();
  setStatus(status, 'loading experiments…', 'busy');
  try {
    experiments = await api.experiments();
  } catch (err) {
    setStatus(status, message(err), 'error');
    return;
  }
  if (!experiments.length) {
    setStatus(status, 'no experiment results in the lake yet (run a sweep)', '');
    return;
  }
  expEl.replaceChildren(...experiments.map((e) => h('option', { value: e.name }, `${e.name} (${e.rows} rows)`)));
  const want = new URLSearchParams(location.search);
  const exp = want.get('experiment');
  if (exp && experiments.some((e) => e.name === exp)) expEl.value = exp;
  fillDates();
  await loadRuns();
  const run = want.get('run');
  if (run) await openRun(run);
}

void init();
