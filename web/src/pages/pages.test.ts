import { describe, expect, it } from 'vitest';
import { Api, ApiError, apiBase, errorText, type AliasChange, type SnapshotDiff, type VersionSummary } from './api';
import { linear, niceTicks, plotLayout, TimeAxis, toSeries } from './curve';
import { diffCounts, diffRows } from './diff';
import { formatMetric, formatValue } from './format';
import { activationChoices, changeStatus, checkConfirm, modelOf, newestFirst, sourceRun } from './registry-model';
import { checkFilters, DEFAULT_QUERY, detailParams, metricPairs, pageInfo, paramsText, runsQuery, sortMark, toggleSort, RUN_COLUMNS } from './runs-model';

const diff: SnapshotDiff = {
  version_a: 'sv_aaaaaaaaaaaaaaaa',
  version_b: 'sv_bbbbbbbbbbbbbbbb',
  added: { 'signal.params.window': 20 },
  removed: { 'scoring.old': true },
  changed: { threshold: { a: 0.1, b: 0.2 }, 'a.first': { a: 'x', b: { y: 1 } } },
  unchanged_count: 41,
  summary: '',
};

describe('diff table', () => {
  it('one row per differing key, sorted, absent sides as an em dash', () => {
    expect(diffRows(diff)).toEqual([
      { key: 'a.first', kind: 'changed', a: 'x', b: '{"y":1}' },
      { key: 'scoring.old', kind: 'removed', a: 'true', b: '—' },
      { key: 'signal.params.window', kind: 'added', a: '—', b: '20' },
      { key: 'threshold', kind: 'changed', a: '0.1', b: '0.2' },
    ]);
    expect(diffCounts(diff)).toBe('2 changed, 1 added, 1 removed, 41 unchanged');
    expect(diffRows({ ...diff, added: {}, removed: {}, changed: {} })).toEqual([]);
  });
  it('null is shown as null, not as absent', () => {
    expect(formatValue(null)).toBe('null');
    expect(formatValue(undefined)).toBe('—');
  });
});

describe('runs query', () => {
  it('leaves empty filters out and sends the set ones', () => {
    expect(runsQuery(DEFAULT_QUERY)).toBe('sort=oos_total_pnl_ticks&order=desc&limit=100');
    const q = runsQuery({ ...DEFAULT_QUERY, testDate: '2024-03-15', signal: 'flow_score', selectedOnly: true, minOosTrades: ' 05 ', offset: 200 });
    const p = new URLSearchParams(q);
    expect(Object.fromEntries(p)).toEqual({
      test_date: '2024-03-15', signal: 'flow_score', selected: 'true', min_oos_trades: '5', sort: 'oos_total_pnl_ticks',
      order: 'desc', limit: '100', offset: '200',
    });
  });
  it('checks filters as the server does', () => {
    const ok = { testDate: '', signal: '', selectedOnly: false, minOosTrades: '' };
    expect(checkFilters(ok)).toBeNull();
    expect(checkFilters({ ...ok, testDate: '15/03/2024' })).toMatch(/YYYY-MM-DD/);
    expect(checkFilters({ ...ok, signal: 'Flow-Score' })).toMatch(/signal/);
    expect(checkFilters({ ...ok, minOosTrades: '-1' })).toMatch(/whole number/);
    expect(checkFilters({ ...ok, minOosTrades: '2.5' })).toMatch(/whole number/);
    expect(checkFilters({ ...ok, minOosTrades: '3', testDate: '2024-03-15', signal: 'gbm_mf' })).toBeNull();
  });
  it('toggles sort: same column flips, a new metric starts descending, names ascending, back to page 1', () => {
    const q1 = toggleSort({ ...DEFAULT_QUERY, offset: 300 }, 'oos_total_pnl_ticks');
    expect([q1.sort, q1.order, q1.offset]).toEqual(['oos_total_pnl_ticks', 'asc', 0]);
    const q2 = toggleSort(q1, 'oos_hit_rate');
    expect([q2.sort, q2.order]).toEqual(['oos_hit_rate', 'desc']);
    const q3 = toggleSort(q2, 'test_date');
    expect([q3.sort, q3.order]).toEqual(['test_date', 'asc']);
    const col = RUN_COLUMNS.find((c) => c.sort === 'test_date')!;
    expect(sortMark(q3, col)).toBe(' ▲');
    expect(sortMark(q2, col)).toBe('');
  });
  it('every sortable column uses a key the server accepts', () => {
    const metric = /^(is|oos)_(n_trades|total_pnl_ticks|hit_rate|profit_factor|max_drawdown_ticks|sharpe_like_per_day)$/;
    for (const c of RUN_COLUMNS) if (c.sort) expect(c.sort === 'run_id' || c.sort === 'test_date' || metric.test(c.sort)).toBe(true);
  });
  it('pairs in-sample and out-of-sample metrics in METRIC_NAMES order', () => {
    const pairs = metricPairs({ oos_hit_rate: 0.5, is_hit_rate: 0.6, is_n_trades: 10, oos_n_trades: 4, oos_extra_thing: 1 });
    expect(pairs).toEqual([
      { name: 'n_trades', is: 10, oos: 4 },
      { name: 'hit_rate', is: 0.6, oos: 0.5 },
      { name: 'extra_thing', is: null, oos: 1 },
    ]);
  });
  it('detail parameters: swept values first, unswept trading values once', () => {
    const rows = detailParams({ params: { threshold: 0.2, 'scoring.tanh_scale': 3 }, threshold: 0.2, tp_ticks: 4, sl_ticks: 4,
      cooldown_bins: 20, signal: 'flow_score', signal_config: {} });
    expect(rows.map(([k]) => k)).toEqual(['scoring.tanh_scale', 'threshold', 'tp_ticks', 'sl_ticks', 'cooldown_bins', 'signal', 'signal config']);
  });
  it('pages and params text', () => {
    expect(pageInfo({ ...DEFAULT_QUERY, offset: 100 }, 345, 100)).toEqual({ text: 'rows 101–200 of 345', prev: true, next: true });
    expect(pageInfo(DEFAULT_QUERY, 7, 7)).toEqual({ text: 'rows 1–7 of 7', prev: false, next: false });
    expect(pageInfo(DEFAULT_QUERY, 0, 0).text).toBe('no runs match');
    expect(paramsText({ tp_ticks: 4, 'scoring.tanh_scale': 2, mode: 'x' })).toBe('mode=x scoring.tanh_scale=2 tp_ticks=4');
  });
});

describe('metric formatting', () => {
  it('counts, rates, null', () => {
    expect(formatMetric('oos_n_trades', 12)).toBe('12');
    expect(formatMetric('is_hit_rate', 0.5432)).toBe('54.3%');
    expect(formatMetric('oos_profit_factor', null)).toBe('—');
    expect(formatMetric('oos_total_pnl_ticks', -15)).toBe('-15.000');
    expect(formatMetric('oos_total_pnl_ticks', 1234.56)).toBe('1234.6');
  });
});

describe('registry decisions', () => {
  const versions: VersionSummary[] = [
    { version_id: 'sv_1111111111111111', serving_name: 'a', lineage_kind: 'register', created_at: '2026-01-01T00:00:00Z', created_by: 't', aliases: [] },
    { version_id: 'sv_2222222222222222', serving_name: 'b', lineage_kind: 'register', created_at: '2026-01-02T00:00:00Z', created_by: 't', aliases: ['live'] },
    { version_id: 'sv_3333333333333333', serving_name: 'c', lineage_kind: 'experiment', created_at: '2026-01-03T00:00:00Z', created_by: 't', aliases: [] },
  ];
  it('a confirmation needs a reason; the actor defaults to web; activate needs a version id', () => {
    expect(checkConfirm({ kind: 'rollback', reason: '   ', actor: 'ops' })).toMatch(/reason is required/);
    expect(checkConfirm({ kind: 'rollback', reason: ' worse fills ', actor: ' ' })).toEqual({ kind: 'rollback', reason: 'worse fills', actor: 'web' });
    expect(checkConfirm({ kind: 'activate', reason: 'go', actor: 'ops', versionId: '' })).toMatch(/choose the version/);
    expect(checkConfirm({ kind: 'activate', reason: 'go', actor: 'ops', versionId: 'live' })).toMatch(/choose the version/);
    expect(checkConfirm({ kind: 'activate', reason: 'go', actor: 'ops', versionId: 'sv_3333333333333333' }))
      .toEqual({ kind: 'activate', reason: 'go', actor: 'ops', versionId: 'sv_3333333333333333' });
    expect(checkConfirm({ kind: 'rollback', reason: 'x'.repeat(2001), actor: 'ops' })).toMatch(/2000/);
  });
  it('status text of a change', () => {
    const c: AliasChange = { alias: 'live', version_id: 'sv_1111111111111111', changed: true, event: null };
    expect(changeStatus(c)).toBe('live → sv_1111111111111111');
    expect(changeStatus({ ...c, changed: false })).toBe('live already → sv_1111111111111111 (no change)');
  });
  it('activation offers the newest versions first and the current one last', () => {
    const ids = activationChoices(versions, 'sv_2222222222222222').map((c) => c.id);
    expect(ids).toEqual(['sv_3333333333333333', 'sv_1111111111111111', 'sv_2222222222222222']);
    expect(activationChoices(versions, 'sv_2222222222222222')[2]!.label).toMatch(/\(current\)$/);
  });
  it('source run, model, history order', () => {
    expect(sourceRun({ lineage: { kind: 'register', runs: [] } })).toBe('register');
    expect(sourceRun({ lineage: { kind: 'experiment', experiment_name: 'sweep', runs: [{ run_id: 'abc-1' }] } })).toBe('sweep:abc-1');
    expect(modelOf({ serving: { model_id: 'ema_ensemble' } })).toBe('ema_ensemble');
    expect(modelOf({ serving: {} })).toBe('vacuum_pressure');
    const ev = (id: number) => ({ id, alias: 'live', action: 'activate', from_version: null, to_version: 'sv_x', actor: 'a', reason: 'r', at: '' });
    expect(newestFirst([ev(1), ev(3), ev(2)]).map((e) => e.id)).toEqual([3, 2, 1]);
  });
});

describe('api', () => {
  it('turns FastAPI error bodies into their message, never a blank', () => {
    expect(errorText(409, { detail: { message: 'nothing to roll back to', issues: [] } })).toBe('nothing to roll back to (HTTP 409)');
    expect(errorText(409, { detail: { message: 'refused', issues: [{ kind: 'instrument', message: 'tick_size differs' }] } }))
      .toBe('refused • tick_size differs (HTTP 409)');
    expect(errorText(404, { detail: "no alias 'x'" })).toBe("no alias 'x' (HTTP 404)");
    expect(errorText(422, { detail: [{ loc: ['body', 'reason'], msg: 'String should match pattern' }] }))
      .toBe('body.reason: String should match pattern (HTTP 422)');
    expect(errorText(502, '')).toBe('HTTP 502');
    expect(errorText(500, null)).toBe('HTTP 500');
  });
  it('base URL: the page origin, or ?api= for a dev server', () => {
    expect(apiBase('', 'http://127.0.0.1:8002')).toBe('http://127.0.0.1:8002/v1');
    expect(apiBase('?api=http://localhost:9000/', 'http://x')).toBe('http://localhost:9000/v1');
    expect(apiBase('?api=javascript:alert(1)', 'http://x')).toBe('http://x/v1');
  });
  it('posts JSON and raises ApiError with the refusal text', async () => {
    const calls: { url: string; init?: RequestInit }[] = [];
    const api = new Api('http://h/v1', async (url, init) => {
      calls.push({ url, init });
      return new Response(JSON.stringify({ detail: { message: 'no earlier version' } }), { status: 409 });
    });
    const err = await api.rollback('live', 'why', 'web', 'sv_0123456789abcdef').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(409);
    expect((err as ApiError).message).toBe('no earlier version (HTTP 409)');
    expect(calls[0]!.url).toBe('http://h/v1/serving/aliases/live/rollback');
    expect(JSON.parse(String(calls[0]!.init!.body))).toEqual({ reason: 'why', actor: 'web', expected_version_id: 'sv_0123456789abcdef' });
    const down = new Api('http://h/v1', async () => { throw new TypeError('Failed to fetch'); });
    await expect(down.aliases()).rejects.toThrow(/cannot reach http:\/\/h\/v1: Failed to fetch/);
  });
});

describe('equity curve geometry', () => {
  it('parses int64 ns strings exactly to ms', () => {
    const s = toSeries({ ts_ns: ['1710423000123456789', '1710423060000000000'], pnl_ticks: [0, 4], n_trades: 1, total_pnl_ticks: 4, n_bins: 10 });
    expect(s.t).toEqual([1710423000123, 1710423060000]);
    expect(s.y).toEqual([0, 4]);
  });
  it('nice ticks are 1/2/5 steps inside the range', () => {
    expect(niceTicks(0, 10, 5)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(-13, 27, 4)).toEqual([-10, 0, 10, 20]);
    expect(niceTicks(3, 3)).toEqual([3]);
    expect(linear(0, 10, 100, 0)(2.5)).toBe(75);
    expect(linear(5, 5, 0, 10)(5)).toBe(5);
  });
  it('cuts overnight gaps so several days sit side by side', () => {
    const h = 3_600_000;
    const day = 24 * h;
    const axis = new TimeAxis([0, h, day, day + h], 2 * h);
    expect(axis.span).toBe(h + 2 * h + h);
    expect(axis.toTrading(day + h / 2)).toBe(3 * h + h / 2);
    expect(axis.toReal(axis.toTrading(day + h / 2))).toBe(day + h / 2);
    expect(axis.breaks).toEqual([2 * h]);
  });
  it('lays out two panels sharing one y scale, higher pnl higher on screen', () => {
    const lay = plotLayout(600, 300, [
      { label: 'in-sample', series: { t: [0, 1000, 2000], y: [0, 10, 5] } },
      { label: 'out-of-sample', series: { t: [5000, 6000], y: [0, -4] } },
    ]);
    expect(lay.panels).toHaveLength(2);
    const [a, b] = lay.panels;
    expect(a!.box.left + a!.box.width).toBeLessThan(b!.box.left);
    expect(a!.points[1]![1]).toBeLessThan(a!.points[0]![1]); // +10 is above 0
    expect(b!.points[1]![1]).toBeGreaterThan(lay.zeroY!); // -4 is below the zero line
    expect(a!.points[0]![0]).toBe(a!.box.left);
    expect(a!.points[2]![0]).toBeCloseTo(a!.box.left + a!.box.width);
    for (const p of lay.panels) for (const [x, y] of p.points) {
      expect(x).toBeGreaterThanOrEqual(p.box.left - 1e-9);
      expect(y).toBeGreaterThanOrEqual(p.box.top - 1e-9);
      expect(y).toBeLessThanOrEqual(p.box.top + p.box.height + 1e-9);
    }
  });
});
