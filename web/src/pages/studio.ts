/**
 * Model Studio: a persisted session (server-side, per workspace; its id in the URL and localStorage, so a
 * reload resumes it) through seven gated steps: data → gold → signal → evaluation (writes versioned specs) →
 * run (a Dagster run via /v1/jobs, live SSE progress, cancel, resume) → compare (results table, sensitivity,
 * equity) → promote (the promotion sensor's gate, every failed rule shown; then the alias and its stream link).
 * A step's Commit is enabled only when the steps before it are committed; the decision log lists every commit.
 */

import './pages.css';
import { pageApi, showWho } from './session';
import { ApiError, type RunEquity } from './api';
import { toSeries } from './curve';
import { byId, h, renderNav, setStatus } from './dom';
import { drawEquity } from './plot';

const STEPS = ['data', 'gold', 'signal', 'evaluation', 'run', 'compare', 'promote'] as const;
type StepName = (typeof STEPS)[number];

interface StepState { payload: Record<string, unknown>; committed_at: string; committed_by: string }
interface Session {
  session_id: string; workspace: string; title: string; status: string;
  steps: Partial<Record<StepName, StepState>>; next_step: string | null; created_at: string;
}
interface Catalog {
  pipelines: { name: string; symbol: string; dates: string[]; window: string | null; description: string }[];
  gold_dsls: string[]; bases: string[]; signals: Record<string, string[] | null>; scoring_keys: string[];
}
interface FieldStats { name: string; min: number | null; q25: number | null; median: number | null; q75: number | null; max: number | null; nan_share: number }
interface DayPreview { date: string; dataset_id: string | null; built: boolean; n_bins: number; ts_first: string | null; ts_last: string | null; price_min: number | null; price_max: number | null; fields: FieldStats[]; heatmap: number[][] }
interface LocatedError { node: string | null; kind: string; message: string; line: number | null; field: string | null }
interface SpecCheck { ok: boolean; errors: LocatedError[]; name: string | null; spec_hash: string | null; outputs: string[]; node_lines: Record<string, number> }
interface OutputPreview {
  name: string; n: number; nan_share: number; mean: number | null; std: number | null;
  p01: number | null; p25: number | null; p50: number | null; p75: number | null; p99: number | null;
  corr_with_builtin: Record<string, number | null>; max_abs_corr: number | null; max_abs_corr_with: string | null; redundant_with: string[];
}
interface GoldPreview {
  pipeline: string; date: string; source: string; n_bins_day: number; start_bin: number; spec_hash: string; n_bins_sampled: number;
  n_rows: number; execution_time_ms: number; outputs: { preview: OutputPreview; histogram: { edges: number[]; counts: number[] } | null }[];
}
interface Job { job_id: string; status: string; runs: string[]; progress: { done: number; total: number; eta_s: number | null } | null; error: string | null }
interface RunRow { run_id: string; test_date: string | null; selected: boolean; params: Record<string, unknown>; metrics: Record<string, number | null> }
interface AxisPoint { value: number | string; median: number | null }
interface AxisSens { axis: string; points: AxisPoint[]; selected_value: number | string | null }

const api = pageApi();
const status = byId<HTMLParagraphElement>('status');
const KEY = 'qm.studio.session';
let session: Session | null = null;
let catalog: Catalog | null = null;
let costPerSetDay = 0.05;
let budget = 3600;
let source: EventSource | null = null;
let rows: RunRow[] = [];
let sortKey = 'oos_total_pnl_ticks';
let sortDesc = true;

const msg = (err: unknown): string => (err instanceof ApiError ? err.message : err instanceof Error ? err.message : String(err));
const val = (id: string): string => byId<HTMLInputElement>(id).value.trim();
const nums = (id: string): number[] => val(id).split(',').map((s) => s.trim()).filter(Boolean).map(Number);
const fmt = (x: number | null | undefined, d = 4): string => (x === null || x === undefined || !Number.isFinite(x) ? '–' : String(Number(x.toPrecision(d))));

/** A small spec to start from (the editor's "Example spec"): depth imbalance near each level, smoothed. */
const EXAMPLE_SPEC = `version: 1
name: studio_depth_tilt
description: resting-depth tilt near each level, EWM-smoothed, with a rolling z-score
nodes:
  bid_depth: {type: silver_ref, field: bid_depth}
  ask_depth: {type: silver_ref, field: ask_depth}
  bid_near: {type: spatial_neighborhood, source: bid_depth, radius_ticks: 3, agg: sum}
  ask_near: {type: spatial_neighborhood, source: ask_depth, radius_ticks: 3, agg: sum}
  tilt:
    type: expr
    inputs: {b: bid_near, a: ask_near}
    expr: where(b + a > 0, (b - a) / (b + a), 0)
  tilt_ewm: {type: temporal_window, source: tilt, agg: ewm, alpha: 0.2}
  tilt_z: {type: norm, source: tilt_ewm, method: zscore, window_bins: 300, min_periods: 50}
  out_tilt: {type: output, source: tilt_ewm, name: depth_tilt}
  out_tilt_z: {type: output, source: tilt_z, name: depth_tilt_z}
`;

function experimentName(): string | null {
  const p = session?.steps.evaluation?.payload;
  return p && typeof p['experiment'] === 'string' ? (p['experiment'] as string) : null;
}

// ---- session ----------------------------------------------------------------------------------------

async function loadSessions(selectId?: string): Promise<void> {
  const list = await api.get<{ sessions: Session[] }>('/studio/sessions');
  const sel = byId<HTMLSelectElement>('session-select');
  sel.replaceChildren(h('option', { value: '' }, '— pick a session —'),
    ...list.sessions.map((s) => h('option', { value: s.session_id }, `${s.title} · ${s.status} · ${s.session_id}`)));
  const want = selectId ?? new URLSearchParams(location.search).get('session') ?? localStorage.getItem(KEY) ?? '';
  if (want && list.sessions.some((s) => s.session_id === want)) {
    sel.value = want;
    await openSession(want);
  }
}

async function openSession(sid: string): Promise<void> {
  session = await api.get<Session>(`/studio/sessions/${sid}`);
  localStorage.setItem(KEY, sid);
  const p = new URLSearchParams(location.search);
  p.set('session', sid);
  history.replaceState(null, '', `${location.pathname}?${p.toString()}`);
  render();
  await loadDecisions();
  const job = session.steps.run?.payload['job_id'] ?? localStorage.getItem(`qm.studio.job.${sid}`);
  if (typeof job === 'string' && job) void followJob(job);
  if (session.steps.run) void loadCompare();
}

function render(): void {
  const s = session;
  byId('session-info').textContent = s ? `${s.status} · next: ${s.next_step ?? 'done'} · ${s.workspace}` : 'no session';
  for (const sec of document.querySelectorAll<HTMLElement>('section.step[data-step]')) {
    const step = sec.dataset['step'] as StepName;
    const i = STEPS.indexOf(step);
    const open = !!s && STEPS.slice(0, i).every((x) => s.steps[x]);
    sec.dataset['state'] = s?.steps[step] ? 'committed' : open ? 'open' : 'locked';
    const btn = sec.querySelector<HTMLButtonElement>('button.commit');
    if (btn) btn.disabled = !open;
    for (const el of sec.querySelectorAll<HTMLInputElement | HTMLSelectElement | HTMLButtonElement>('input, select, textarea, button:not(.commit)')) {
      if (!['run-cancel', 'run-resume'].includes(el.id)) el.disabled = !open;
    }
  }
  if (!s) return;
  const d = s.steps.data?.payload;
  if (d) {
    byId<HTMLSelectElement>('data-pipeline').value = String(d['pipeline']);
    byId<HTMLInputElement>('data-dates').value = Array.isArray(d['dates']) ? d['dates'].join(', ') : '';
  }
  const goldDsl = String(s.steps.gold?.payload['gold_dsl'] ?? '');
  const goldSel = byId<HTMLSelectElement>('gold-dsl');
  if (goldDsl && ![...goldSel.options].some((o) => o.value === goldDsl)) goldSel.append(h('option', { value: goldDsl }, goldDsl));
  goldSel.value = goldDsl;
  const days = sessionDays();
  const dateSel = byId<HTMLSelectElement>('gold-preview-date');
  if (dateSel.options.length !== days.length || days.some((d, i) => dateSel.options[i]?.value !== d)) {
    dateSel.replaceChildren(...days.map((d) => h('option', { value: d }, d)));
  }
  const gold = s.steps.gold?.payload['scoring'] as Record<string, unknown> | undefined;
  for (const el of document.querySelectorAll<HTMLInputElement>('#gold-fields input')) el.value = gold?.[el.name] !== undefined ? String(gold[el.name]) : '';
  const sig = s.steps.signal?.payload;
  if (sig) {
    byId<HTMLSelectElement>('signal-name').value = String(sig['name']);
    byId<HTMLSelectElement>('signal-base').value = String(sig['base_serving']);
    byId<HTMLInputElement>('signal-params').value = JSON.stringify(sig['params'] ?? {});
  }
  const ev = s.steps.evaluation?.payload;
  if (ev) {
    const set = (id: string, v: unknown): void => { byId<HTMLInputElement>(id).value = Array.isArray(v) ? v.join(', ') : String(v ?? ''); };
    set('ev-thresholds', ev['thresholds']); set('ev-tp', ev['tp_ticks']); set('ev-sl', ev['sl_ticks']); set('ev-cooldown', ev['cooldown_bins']);
    const sc = ev['scoring'] as Record<string, unknown> | undefined;
    set('ev-tanh', sc?.['tanh_scale'] ?? '');
    const num = (id: string, v: unknown): void => { if (v !== undefined && v !== null) set(id, v); };
    num('ev-hold', ev['max_hold_bins']); num('ev-warmup', ev['warmup_bins']); num('ev-min-signals', ev['min_signals']);
    num('ev-cost', ev['cost_ticks_per_trade']); num('ev-train', ev['train_days']);
    const g = ev['promotion'] as Record<string, unknown> | undefined;
    num('ev-g-trades', g?.['min_oos_trades']); num('ev-g-hit', g?.['min_hit_rate']);
    num('ev-g-pf', g?.['min_profit_factor']); num('ev-g-dd', g?.['max_drawdown_ticks']);
  }
  if (!val('promote-alias')) byId<HTMLInputElement>('promote-alias').value = `studio_${s.session_id.slice(0, 8)}`;
  updateEstimate();
}

/** The days the data step chose (its dates, else all of its pipeline's). */
function sessionDays(): string[] {
  const d = session?.steps.data?.payload;
  if (!d) return [];
  if (Array.isArray(d['dates']) && d['dates'].length) return d['dates'].map(String);
  return catalog?.pipelines.find((p) => p.name === d['pipeline'])?.dates ?? [];
}

async function loadDecisions(): Promise<void> {
  if (!session) return;
  const log = await api.get<{ decisions: { id: number; step: string; payload: Record<string, unknown>; actor: string; at: string }[] }>(
    `/studio/sessions/${session.session_id}/decisions`);
  byId('decisions').replaceChildren(...log.decisions.map((d) =>
    h('li', { 'data-step': d.step }, h('strong', {}, d.step), ` · ${d.at.slice(0, 19)} · ${d.actor} · `, h('code', {}, JSON.stringify(d.payload).slice(0, 300)))));
}

async function commit(step: StepName, payload: Record<string, unknown>): Promise<void> {
  if (!session) return;
  setStatus(status, `committing ${step}…`, 'busy');
  try {
    session = await api.send<Session>(`/studio/sessions/${session.session_id}/steps/${step}`, { payload });
    setStatus(status, `${step} committed`, 'ok');
    render();
    await loadDecisions();
  } catch (err) {
    setStatus(status, `${step}: ${msg(err)}`, 'error');
  }
}

// ---- steps ------------------------------------------------------------------------------------------

function payloadOf(step: StepName): Record<string, unknown> | null {
  switch (step) {
    case 'data': {
      const dates = val('data-dates').split(',').map((x) => x.trim()).filter(Boolean);
      return { pipeline: byId<HTMLSelectElement>('data-pipeline').value, dates: dates.length ? dates : null };
    }
    case 'gold': {
      const scoring: Record<string, number> = {};
      for (const el of document.querySelectorAll<HTMLInputElement>('#gold-fields input')) if (el.value.trim()) scoring[el.name] = Number(el.value);
      if (byId<HTMLInputElement>('gold-use-editor').checked) return { mode: 'dsl', dsl_yaml: byId<HTMLTextAreaElement>('gold-dsl-text').value, scoring };
      const dsl = byId<HTMLSelectElement>('gold-dsl').value;
      return dsl ? { mode: 'dsl', gold_dsl: dsl, scoring } : { mode: 'builtin', scoring };
    }
    case 'signal': {
      let params: unknown;
      try { params = JSON.parse(val('signal-params') || '{}'); } catch { setStatus(status, 'signal params: not valid JSON', 'error'); return null; }
      return { name: byId<HTMLSelectElement>('signal-name').value, base_serving: byId<HTMLSelectElement>('signal-base').value, params };
    }
    case 'evaluation': {
      const tanh = nums('ev-tanh');
      return {
        thresholds: nums('ev-thresholds'), tp_ticks: nums('ev-tp'), sl_ticks: nums('ev-sl'), cooldown_bins: nums('ev-cooldown'),
        scoring: tanh.length ? { tanh_scale: tanh } : {},
        max_hold_bins: Number(val('ev-hold')), warmup_bins: Number(val('ev-warmup')), min_signals: Number(val('ev-min-signals')),
        cost_ticks_per_trade: Number(val('ev-cost')), train_days: Number(val('ev-train')),
        promotion: { min_oos_trades: Number(val('ev-g-trades')), min_hit_rate: Number(val('ev-g-hit')),
          min_profit_factor: Number(val('ev-g-pf')), max_drawdown_ticks: Number(val('ev-g-dd')) },
      };
    }
    case 'compare': return { run_id: byId('cmp-run').dataset['run'] ?? '', note: '' };
    default: return null;
  }
}

function updateEstimate(): void {
  const pipe = catalog?.pipelines.find((p) => p.name === byId<HTMLSelectElement>('data-pipeline').value);
  const train = Number(val('ev-train')) || 1;
  const picked = val('data-dates').split(',').map((x) => x.trim()).filter(Boolean).length;
  const days = Math.max(0, (picked || (pipe?.dates.length ?? 0)) - train);
  const tanh = nums('ev-tanh');
  const sets = [nums('ev-thresholds'), nums('ev-tp'), nums('ev-sl'), nums('ev-cooldown'), tanh.length ? tanh : [0]]
    .reduce((n, a) => n * Math.max(1, a.length), 1);
  const cost = sets * days * costPerSetDay;
  byId('ev-estimate').textContent = `${sets} parameter sets per day × ${days} test day(s) = ${sets * days} set-days; `
    + `estimated cost ${cost.toFixed(1)} s (${costPerSetDay.toPrecision(3)} s per set-day; budget ${budget} s)${cost > budget ? ' — over budget' : ''}`;
  byId('ev-estimate').dataset['tone'] = cost > budget ? 'error' : 'ok';
}

async function preview(): Promise<void> {
  const name = byId<HTMLSelectElement>('data-pipeline').value;
  if (!name) return;
  setStatus(status, 'loading preview…', 'busy');
  try {
    const p = await api.get<{ days: DayPreview[]; more_days: number }>(`/studio/preview?pipeline=${encodeURIComponent(name)}`);
    byId('preview').replaceChildren(...p.days.map((d) => h('div', { class: 'day', 'data-testid': `preview-${d.date}` },
      h('strong', {}, d.date), d.built ? ` · ${d.n_bins} bins · ${d.ts_first?.slice(11, 19) ?? ''}–${d.ts_last?.slice(11, 19) ?? ''} UTC`
        + (d.price_min !== null && d.price_max !== null ? ` · price ${fmt(d.price_min, 7)}–${fmt(d.price_max, 7)}` : '') : ' · not built yet (the run builds it)',
      d.fields.length ? h('table', { class: 'grid' }, h('thead', {}, h('tr', {}, ...['field', 'min', 'q25', 'median', 'q75', 'max', 'NaN'].map((x) => h('th', {}, x)))),
        h('tbody', {}, ...d.fields.map((f) => h('tr', {}, h('td', {}, f.name), ...[f.min, f.q25, f.median, f.q75, f.max].map((x) => h('td', {}, fmt(x))), h('td', {}, `${(f.nan_share * 100).toFixed(1)} %`))))) : null)));
    if (p.more_days) byId('preview').append(h('p', { class: 'hint' }, `${p.more_days} more capture day(s) not previewed`));
    const hm = p.days.find((d) => d.heatmap.length)?.heatmap;
    if (hm) drawHeatmap(byId<HTMLCanvasElement>('preview-heatmap'), hm);
    setStatus(status, 'preview loaded', 'ok');
  } catch (err) {
    setStatus(status, `preview: ${msg(err)}`, 'error');
  }
}

function drawHeatmap(canvas: HTMLCanvasElement, grid: number[][]): void {
  const ctx = canvas.getContext('2d');
  if (!ctx || !grid.length) return;
  const nx = grid.length, ny = grid[0]!.length;
  const m = Math.max(1e-9, ...grid.flat().map(Math.abs));
  const cw = canvas.width / nx, ch = canvas.height / ny;
  grid.forEach((col, x) => col.forEach((v, y) => {
    const a = Math.min(1, Math.abs(v) / m);
    ctx.fillStyle = v >= 0 ? `rgba(80,170,255,${a})` : `rgba(255,140,60,${a})`;
    ctx.fillRect(x * cw, canvas.height - (y + 1) * ch, cw + 0.5, ch + 0.5);
  }));
}

// ---- gold: the Gold DSL editor ----------------------------------------------------------------------

/** Line numbers beside the editor; the lines of `errors` marked (class `err`, data-line). */
function renderGutter(errors: LocatedError[] = []): void {
  const text = byId<HTMLTextAreaElement>('gold-dsl-text');
  const bad = new Set(errors.map((e) => e.line).filter((l): l is number => l !== null));
  const n = Math.max(1, text.value.split('\n').length);
  byId('gold-dsl-gutter').replaceChildren(...Array.from({ length: n }, (_, i) =>
    bad.has(i + 1) ? h('span', { class: 'err', 'data-line': String(i + 1) }, `${i + 1}`) : `${i + 1}\n`));
  byId('gold-dsl-gutter').scrollTop = text.scrollTop;
}

/** Put the caret on a line of the editor and select it (an error's place). */
function selectLine(line: number): void {
  const text = byId<HTMLTextAreaElement>('gold-dsl-text');
  const lines = text.value.split('\n');
  const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
  text.focus();
  text.setSelectionRange(start, start + (lines[line - 1]?.length ?? 0));
  text.scrollTop = Math.max(0, (line - 4) * 16);
}

function showErrors(errors: LocatedError[]): void {
  renderGutter(errors);
  byId('gold-dsl-errors').replaceChildren(...errors.map((e) => {
    const li = h('li', { 'data-node': e.node ?? '', 'data-kind': e.kind, 'data-line': e.line === null ? '' : String(e.line) },
      e.line !== null ? `line ${e.line} · ` : '', e.message);
    if (e.line !== null) li.addEventListener('click', () => selectLine(e.line!));
    return li;
  }));
}

async function dslValidate(): Promise<SpecCheck | null> {
  if (!session) return null;
  const res = byId('gold-dsl-result');
  try {
    const r = await api.send<SpecCheck>(`/studio/sessions/${session.session_id}/gold/validate`, { spec_yaml: byId<HTMLTextAreaElement>('gold-dsl-text').value });
    showErrors(r.errors);
    res.textContent = r.ok ? `valid: ${r.name} · ${r.outputs.length} output(s) · spec ${r.spec_hash}` : `${r.errors.length} error(s)`;
    res.dataset['tone'] = r.ok ? 'ok' : 'error';
    if (r.ok) byId<HTMLInputElement>('gold-use-editor').checked = true;
    return r;
  } catch (err) {
    res.textContent = msg(err);
    res.dataset['tone'] = 'error';
    return null;
  }
}

/** The picked shipped spec's exact text into the editor: a starting point to edit, validate and commit. */
async function dslLoad(): Promise<void> {
  const name = byId<HTMLSelectElement>('gold-dsl').value;
  const res = byId('gold-dsl-result');
  if (!name) { res.textContent = 'pick a Gold DSL spec to load'; res.dataset['tone'] = 'error'; return; }
  try {
    const r = await api.get<{ name: string; yaml: string; spec_hash: string | null }>(`/studio/gold/specs/${encodeURIComponent(name)}`);
    byId<HTMLTextAreaElement>('gold-dsl-text').value = r.yaml;
    byId<HTMLDetailsElement>('gold-editor').open = true;
    showErrors([]);
    res.textContent = `loaded ${r.name}${r.spec_hash ? ` · spec ${r.spec_hash}` : ' · does not validate: Validate lists why'}`;
    res.dataset['tone'] = r.spec_hash ? 'ok' : 'error';
  } catch (err) {
    res.textContent = msg(err);
    res.dataset['tone'] = 'error';
  }
}

async function dslPreview(): Promise<void> {
  if (!session) return;
  const check = await dslValidate();
  if (!check?.ok) return;
  const res = byId('gold-dsl-result');
  res.textContent = 'computing the preview…';
  res.dataset['tone'] = 'busy';
  try {
    const date = byId<HTMLSelectElement>('gold-preview-date').value;
    const p = await api.send<GoldPreview>(`/studio/sessions/${session.session_id}/gold/preview`, {
      spec_yaml: byId<HTMLTextAreaElement>('gold-dsl-text').value, ...(date ? { date } : {}),
      sample_bins: Number(val('gold-preview-bins')) || 2000, start_bin: Number(val('gold-preview-start')) || 0 });
    const head = ['output', 'NaN', 'mean', 'p01', 'p25', 'median', 'p75', 'p99', 'max |corr| (built-in)', 'redundant with', 'histogram (p01–p99)'];
    byId('gold-dsl-preview').replaceChildren(
      h('p', { class: 'hint' }, `${p.date} · bins ${p.start_bin}–${p.start_bin + p.n_bins_sampled} of ${p.n_bins_day} · ${p.n_rows} rows · `
        + `${p.execution_time_ms.toFixed(0)} ms · ${p.source}`),
      h('table', { class: 'grid dsl-preview', 'data-testid': 'gold-preview-table' }, h('thead', {}, h('tr', {}, ...head.map((x) => h('th', {}, x)))),
        h('tbody', {}, ...p.outputs.map(({ preview: o, histogram }) => {
          const canvas = h('canvas', { width: '160', height: '36', 'data-output': o.name }) as HTMLCanvasElement;
          if (histogram) drawHistogram(canvas, histogram.counts);
          return h('tr', { 'data-output': o.name },
            h('td', {}, o.name), h('td', {}, `${(o.nan_share * 100).toFixed(1)} %`),
            ...[o.mean, o.p01, o.p25, o.p50, o.p75, o.p99].map((x) => h('td', {}, fmt(x))),
            h('td', {}, o.max_abs_corr === null ? '–' : `${fmt(o.max_abs_corr, 3)} (${o.max_abs_corr_with})`),
            h('td', {}, o.redundant_with.join(', ') || '–'), h('td', {}, canvas));
        }))));
    res.textContent = `preview of ${p.outputs.length} output(s) on ${p.date}`;
    res.dataset['tone'] = 'ok';
  } catch (err) {
    res.textContent = `preview: ${msg(err)}`;
    res.dataset['tone'] = 'error';
  }
}

function drawHistogram(canvas: HTMLCanvasElement, counts: number[]): void {
  const ctx = canvas.getContext('2d');
  if (!ctx || !counts.length) return;
  const m = Math.max(1, ...counts);
  const bw = canvas.width / counts.length;
  ctx.fillStyle = '#6aa8ff';
  counts.forEach((c, i) => {
    const bh = Math.max(c > 0 ? 1 : 0, (c / m) * canvas.height);
    ctx.fillRect(i * bw, canvas.height - bh, Math.max(1, bw - 1), bh);
  });
}

// ---- run --------------------------------------------------------------------------------------------

async function launch(): Promise<void> {
  const name = experimentName();
  if (!session || !name) return;
  setStatus(status, 'launching…', 'busy');
  try {
    const job = await api.send<Job>('/jobs', { experiment: name, session_id: session.session_id });
    localStorage.setItem(`qm.studio.job.${session.session_id}`, job.job_id);
    byId('run-events').replaceChildren();
    setStatus(status, `job ${job.job_id} queued`, 'ok');
    void followJob(job.job_id);
  } catch (err) {
    setStatus(status, `launch: ${msg(err)}`, 'error');
  }
}

function followJob(jobId: string): void {
  source?.close();
  const lastKey = `qm.studio.last.${jobId}`;
  const after = localStorage.getItem(lastKey);
  const bar = byId<HTMLProgressElement>('run-progress');
  byId('run-text').dataset['job'] = jobId;
  const es = new EventSource(`${api.base}/jobs/${jobId}/events${after ? `?after=${after}` : ''}`, { withCredentials: true });
  source = es;
  const buttons = (state: string): void => {
    byId<HTMLButtonElement>('run-cancel').disabled = !['queued', 'started'].includes(state);
    byId<HTMLButtonElement>('run-resume').disabled = !['failure', 'timed_out', 'canceled'].includes(state);
  };
  buttons('queued');
  const on = (kind: string, fn: (d: Record<string, unknown>) => void): void => es.addEventListener(kind, (e) => {
    const me = e as MessageEvent<string>;
    if (me.lastEventId) localStorage.setItem(lastKey, me.lastEventId);
    const d = JSON.parse(me.data) as Record<string, unknown>;
    byId('run-events').append(h('li', { 'data-kind': kind }, `${kind} ${kind === 'progress' ? `${d['done']}/${d['total']}` : ''}${d['error'] ? `: ${d['error']}` : ''}`));
    fn(d);
  });
  on('queued', () => { byId('run-text').textContent = 'queued'; });
  on('resumed', () => { byId('run-text').textContent = 'resumed: queued'; buttons('queued'); });
  on('started', () => { byId('run-text').textContent = 'running'; buttons('started'); });
  on('progress', (d) => {
    bar.max = Number(d['total']) || 1;
    bar.value = Number(d['done']) || 0;
    byId('run-text').textContent = `${d['done']} / ${d['total']} parameter sets${d['eta_s'] ? ` · ETA ${d['eta_s']} s` : ''}`;
  });
  on('completed', (d) => {
    bar.value = bar.max;
    byId('run-text').textContent = `completed: ${(d['run_ids'] as string[]).length} runs`;
    buttons('success');
    if (session && !session.steps.run) void commit('run', { job_id: jobId }).then(loadCompare);
    else void loadCompare();
  });
  for (const k of ['failed', 'timed_out', 'canceled']) on(k, (d) => { byId('run-text').textContent = `${k}${d['error'] ? `: ${d['error']}` : ''}`; buttons(k === 'failed' ? 'failure' : k); });
  es.addEventListener('end', () => es.close());
  es.addEventListener('unavailable', (e) => setStatus(status, `Dagster unavailable: ${(e as MessageEvent<string>).data}`, 'error'));
  es.onerror = () => { if (es.readyState === EventSource.CLOSED) setStatus(status, 'job events: connection closed', ''); };
}

async function jobAction(action: 'cancel' | 'resume'): Promise<void> {
  const jobId = byId('run-text').dataset['job'];
  if (!jobId) return;
  try {
    await api.send<Job>(`/jobs/${jobId}/${action}`, {});
    setStatus(status, `${action} requested`, 'ok');
    if (action === 'resume') followJob(jobId);
  } catch (err) {
    setStatus(status, `${action}: ${msg(err)}`, 'error');
  }
}

// ---- compare ----------------------------------------------------------------------------------------

const COLS = ['test_date', 'params', 'is_total_pnl_ticks', 'oos_n_trades', 'oos_hit_rate', 'oos_total_pnl_ticks', 'oos_profit_factor', 'oos_max_drawdown_ticks'];

async function loadCompare(): Promise<void> {
  const name = experimentName();
  if (!name) return;
  try {
    const list = await api.get<{ runs: RunRow[] }>(`/experiments/${encodeURIComponent(name)}/runs?limit=500`);
    rows = list.runs;
    renderTable();
    const sens = await api.get<{ axes: AxisSens[] }>(`/experiments/${encodeURIComponent(name)}/sensitivity?metric=oos_total_pnl_ticks`);
    renderSensitivity(sens.axes);
  } catch (err) {
    setStatus(status, `compare: ${msg(err)}`, 'error');
  }
}

function cell(r: RunRow, key: string): string | number | null {
  if (key === 'test_date') return r.test_date;
  if (key === 'params') return JSON.stringify(r.params);
  return r.metrics[key] ?? null;
}

function renderTable(): void {
  byId('cmp-head').replaceChildren(...COLS.map((c) => {
    const b = h('button', { type: 'button', class: 'sort' }, `${c}${c === sortKey ? (sortDesc ? ' ▼' : ' ▲') : ''}`);
    b.addEventListener('click', () => { sortDesc = c === sortKey ? !sortDesc : true; sortKey = c; renderTable(); });
    return h('th', {}, b);
  }));
  const min = Number(val('cmp-min')) || 0;
  const shown = rows.filter((r) => (r.metrics['oos_n_trades'] ?? 0) >= min).sort((a, b) => {
    const x = cell(a, sortKey), y = cell(b, sortKey);
    const c = typeof x === 'number' && typeof y === 'number' ? x - y : String(x).localeCompare(String(y));
    return sortDesc ? -c : c;
  });
  byId('cmp-body').replaceChildren(...shown.map((r) => {
    const tr = h('tr', { 'data-run': r.run_id, class: r.selected ? 'selected' : '' },
      ...COLS.map((c) => { const v = cell(r, c); return h('td', {}, typeof v === 'number' ? fmt(v) : String(v ?? '–')); }));
    tr.addEventListener('click', () => void showEquity(r.run_id));
    return tr;
  }));
}

function renderSensitivity(axes: AxisSens[]): void {
  byId('sensitivity').replaceChildren(...axes.map((a) => {
    const vals = a.points.map((p) => p.median ?? 0);
    const m = Math.max(1e-9, ...vals.map(Math.abs));
    return h('div', { class: 'axis', 'data-axis': a.axis }, h('strong', {}, a.axis),
      ...a.points.map((p) => h('div', { class: 'bar-row' }, h('span', { class: 'bar-label' }, `${p.value}${String(p.value) === String(a.selected_value) ? ' ★' : ''}`),
        h('span', { class: 'bar', style: `width:${Math.round((Math.abs(p.median ?? 0) / m) * 200)}px;background:${(p.median ?? 0) >= 0 ? '#6aa8ff' : '#ffb347'}` }),
        h('span', {}, ` ${fmt(p.median)}`))));
  }));
}

async function showEquity(runId: string): Promise<void> {
  const name = experimentName();
  if (!name) return;
  byId('cmp-run').textContent = runId;
  byId('cmp-run').dataset['run'] = runId;
  try {
    const eq = await api.get<RunEquity>(`/experiments/${encodeURIComponent(name)}/runs/${encodeURIComponent(runId)}/equity`);
    drawEquity(byId<HTMLCanvasElement>('cmp-equity'), [
      { label: 'in-sample', series: toSeries(eq.in_sample) }, { label: 'out-of-sample', series: toSeries(eq.out_of_sample) }]);
  } catch (err) {
    setStatus(status, `equity: ${msg(err)}`, 'error');
  }
}

// ---- promote ----------------------------------------------------------------------------------------

async function checkGate(): Promise<void> {
  if (!session) return;
  try {
    const g = await api.get<{ passes: boolean; failures: { rule: string; message: string; run_id: string | null }[] }>(`/studio/sessions/${session.session_id}/gate`);
    byId('gate-result').replaceChildren(g.passes ? h('li', { 'data-rule': 'pass' }, 'every rule of the gate passes')
      : h('li', {}, `${g.failures.length} failed rule(s):`), ...g.failures.map((f) => h('li', { 'data-rule': f.rule }, `[${f.rule}] ${f.message}`)));
  } catch (err) {
    setStatus(status, `gate: ${msg(err)}`, 'error');
  }
}

async function promote(): Promise<void> {
  if (!session) return;
  setStatus(status, 'promoting…', 'busy');
  try {
    const r = await api.send<{ alias: string; version_id: string; stream_url: string }>(`/studio/sessions/${session.session_id}/promote`,
      { alias: val('promote-alias'), allow_dirty: byId<HTMLInputElement>('promote-dirty').checked });
    byId('promote-result').replaceChildren(`${r.alias} → ${r.version_id} · `,
      h('a', { href: r.stream_url, 'data-testid': 'stream-link' }, `open the stream of ${r.alias}`));
    setStatus(status, `promoted: ${r.alias}`, 'ok');
    await openSession(session.session_id);
  } catch (err) {
    setStatus(status, `promote: ${msg(err)}`, 'error');
    byId('promote-result').textContent = msg(err);
  }
}

// ---- YAML mode --------------------------------------------------------------------------------------

async function loadYaml(): Promise<void> {
  if (!session || !experimentName()) {
    byId('yaml-result').textContent = 'commit the evaluation step once (or paste both layers) to start from the generated specs';
    return;
  }
  const y = await api.get<{ serving_yaml: string; experiment_yaml: string }>(`/studio/sessions/${session.session_id}/yaml`);
  byId<HTMLTextAreaElement>('yaml-serving').value = y.serving_yaml;
  byId<HTMLTextAreaElement>('yaml-experiment').value = y.experiment_yaml;
}

async function yamlSend(dry: boolean): Promise<void> {
  if (!session) return;
  const r = await api.send<{ ok: boolean; error: string | null; experiment: string | null; sets_per_day: number | null }>(
    `/studio/sessions/${session.session_id}/yaml${dry ? '?dry_run=true' : ''}`,
    { serving_yaml: byId<HTMLTextAreaElement>('yaml-serving').value, experiment_yaml: byId<HTMLTextAreaElement>('yaml-experiment').value });
  byId('yaml-result').textContent = r.ok ? `valid: ${r.experiment} (${r.sets_per_day} sets per day)${dry ? '' : ' — saved; the guided steps show it'}` : `invalid: ${r.error}`;
  byId('yaml-result').dataset['tone'] = r.ok ? 'ok' : 'error';
  if (r.ok && !dry) await openSession(session.session_id);
}

// ---- wiring -----------------------------------------------------------------------------------------

async function init(): Promise<void> {
  renderNav(byId('nav'), 'studio');
  void showWho(byId('nav'), api);
  for (const sec of document.querySelectorAll<HTMLElement>('section.step[data-step]')) {
    const step = sec.dataset['step'] as StepName;
    if (step === 'run' || step === 'promote') continue;
    const b = h('button', { type: 'button', class: 'commit', 'data-testid': `commit-${step}` }, `Commit ${step}`);
    b.addEventListener('click', () => { const p = payloadOf(step); if (p) void commit(step, p); });
    sec.append(h('p', {}, b));
  }
  byId('new-session').addEventListener('click', () => void (async () => {
    try {
      const s = await api.send<Session>('/studio/sessions', { title: `model ${new Date().toISOString().slice(0, 16)}` });
      await loadSessions(s.session_id);
    } catch (err) { setStatus(status, msg(err), 'error'); }
  })());
  byId('session-select').addEventListener('change', () => { const v = byId<HTMLSelectElement>('session-select').value; if (v) void openSession(v); });
  byId('data-preview').addEventListener('click', () => void preview());
  const editor = byId<HTMLTextAreaElement>('gold-dsl-text');
  editor.addEventListener('input', () => renderGutter());
  editor.addEventListener('scroll', () => { byId('gold-dsl-gutter').scrollTop = editor.scrollTop; });
  byId('gold-example').addEventListener('click', () => { editor.value = EXAMPLE_SPEC; renderGutter(); });
  byId('gold-load').addEventListener('click', () => void dslLoad());
  byId('gold-validate').addEventListener('click', () => void dslValidate());
  byId('gold-preview').addEventListener('click', () => void dslPreview());
  renderGutter();
  byId('run-launch').addEventListener('click', () => void launch());
  byId('run-cancel').addEventListener('click', () => void jobAction('cancel'));
  byId('run-resume').addEventListener('click', () => void jobAction('resume'));
  byId('cmp-min').addEventListener('input', renderTable);
  byId('gate-check').addEventListener('click', () => void checkGate());
  byId('promote').addEventListener('click', () => void promote());
  byId('yaml-mode').addEventListener('change', () => {
    const on = byId<HTMLInputElement>('yaml-mode').checked;
    byId('yaml-panel').hidden = !on;
    byId('steps').hidden = on;
    if (on) void loadYaml();
  });
  byId('yaml-validate').addEventListener('click', () => void yamlSend(true).catch((e) => setStatus(status, msg(e), 'error')));
  byId('yaml-apply').addEventListener('click', () => void yamlSend(false).catch((e) => setStatus(status, msg(e), 'error')));
  for (const id of ['ev-thresholds', 'ev-tp', 'ev-sl', 'ev-cooldown', 'ev-tanh', 'ev-train', 'data-pipeline', 'data-dates']) byId(id).addEventListener('input', updateEstimate);
  try {
    catalog = await api.get<Catalog>('/studio/catalog');
    const cost = await api.get<{ cost_per_set_day_s: number; budget_cpu_seconds: number }>('/jobs/cost');
    costPerSetDay = cost.cost_per_set_day_s;
    budget = cost.budget_cpu_seconds;
    byId('data-pipeline').replaceChildren(...catalog.pipelines.map((p) => h('option', { value: p.name }, `${p.name} · ${p.symbol} · ${p.dates.join(', ')}${p.window ? ` · ${p.window}` : ''}`)));
    byId('gold-dsl').replaceChildren(h('option', { value: '' }, 'none: the built-in set'), ...catalog.gold_dsls.map((g) => h('option', { value: g }, g)));
    byId('signal-name').replaceChildren(...Object.keys(catalog.signals).map((s) => h('option', { value: s }, s)));
    byId<HTMLSelectElement>('signal-name').value = 'flow_score';
    byId('signal-base').replaceChildren(...catalog.bases.map((b) => h('option', { value: b }, b)));
    byId('gold-fields').replaceChildren(...catalog.scoring_keys.filter((k) => k !== 'derivative_weights').map((k) =>
      h('label', {}, `${k} `, h('input', { name: k, type: 'number', step: 'any', placeholder: 'lock default', 'data-testid': `gold-${k}` }))));
    await loadSessions();
    render();
    setStatus(status, session ? `session ${session.session_id}` : 'create a session to start', 'ok');
  } catch (err) {
    setStatus(status, msg(err), 'error');
  }
}

void init();
