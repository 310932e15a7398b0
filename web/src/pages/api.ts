/**
 * Typed access to the serving process's `/v1` REST API (qmachina_serving/api/), shared by the registry and
 * experiment pages. DOM-free: `fetch` is injectable, so tests run in node.
 *
 * Every failure becomes an `ApiError` whose message is the server's own refusal text (FastAPI's `detail`: a
 * string, `{message, issues}` for a refused write, or a list of validation errors), never an empty string.
 */

export interface VersionSummary {
  version_id: string;
  serving_name: string;
  lineage_kind: string;
  created_at: string;
  created_by: string;
  aliases: string[];
}

export interface RunLineage {
  run_id: string;
  experiment_hash?: string;
  test_date?: string;
}

export interface PublishedVersion {
  version_id: string;
  serving: Record<string, unknown>;
  runtime_snapshot: Record<string, unknown>;
  lineage: { kind: string; experiment_name?: string | null; runs?: RunLineage[]; params?: Record<string, unknown> | null };
  created_at: string;
  created_by: string;
}

export interface AliasRecord {
  name: string;
  version_id: string;
  revision: number;
  updated_at: string;
  updated_by: string;
}

export interface AliasEvent {
  id: number;
  alias: string;
  action: string;
  from_version: string | null;
  to_version: string;
  actor: string;
  reason: string;
  at: string;
}

export interface SnapshotDiff {
  version_a: string;
  version_b: string;
  added: Record<string, unknown>;
  removed: Record<string, unknown>;
  changed: Record<string, { a: unknown; b: unknown }>;
  unchanged_count: number;
  summary: string;
}

export interface AliasChange {
  alias: string;
  version_id: string;
  changed: boolean;
  event: AliasEvent | null;
}

export interface ExperimentSummary {
  name: string;
  result_files: number;
  rows: number;
  test_dates: string[];
}

export type Metrics = Record<string, number | null>;

export interface RunSummary {
  run_id: string;
  sweep_id: string | null;
  param_hash: string | null;
  signal: string | null;
  test_date: string | null;
  selected: boolean;
  params: Record<string, unknown>;
  metrics: Metrics;
}

export interface RunList {
  experiment: string;
  total: number;
  runs: RunSummary[];
}

export interface RunDetail {
  run_id: string;
  experiment: string | null;
  sweep_id: string | null;
  param_hash: string | null;
  signal: string | null;
  selected: boolean;
  params: Record<string, unknown>;
  signal_config: Record<string, unknown> | null;
  threshold: number | null;
  tp_ticks: number | null;
  sl_ticks: number | null;
  cooldown_bins: number | null;
  test_date: string | null;
  train_dates: string[];
  test_dataset_id: string | null;
  train_dataset_ids: string[];
  experiment_hash: string | null;
  serving: string | null;
  serving_hash: string | null;
  pipeline: string | null;
  pipeline_hash: string | null;
  gold_config_hash: string | null;
  code_version: string | null;
  sweep_seconds: number | null;
  created_at: string | null;
  metrics: Metrics;
  other: Record<string, unknown>;
}

export interface EquityCurve {
  ts_ns: string[];
  pnl_ticks: number[];
  n_trades: number;
  total_pnl_ticks: number;
  n_bins: number;
}

export interface RunEquity {
  run_id: string;
  experiment: string;
  in_sample: EquityCurve;
  out_of_sample: EquityCurve;
  reproduced: boolean;
}

export interface Me {
  workspace: string;
  user: string;
  role: 'viewer' | 'editor' | 'admin' | 'owner';
  token_id: string;
  session_expires_at?: string | null;
}

/** The login page's URL for a page at `pathname + search` to come back to. */
export function loginHref(pathname: string, search: string): string {
  return `./login.html?next=${encodeURIComponent(pathname + search)}`;
}

/** Where the login page sends the browser back: a same-origin path only (no `//host`, no scheme). */
export function safeNext(search: string): string {
  const next = new URLSearchParams(search).get('next') ?? '';
  return /^\/(?![/\\])[^\s]*$/.test(next) && !next.includes('login.html') ? next : './index.html';
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Human text of a FastAPI error body (`{detail: ...}`); falls back to the HTTP status. */
export function errorText(status: number, body: unknown): string {
  const detail = body !== null && typeof body === 'object' && 'detail' in body ? (body as { detail: unknown }).detail : body;
  const text = detailText(detail);
  return text ? `${text} (HTTP ${status})` : `HTTP ${status}`;
}

function detailText(detail: unknown): string {
  if (typeof detail === 'string') return detail.trim();
  if (Array.isArray(detail)) {
    // pydantic validation errors: [{loc: [...], msg}]
    return detail
      .map((e) => {
        if (e && typeof e === 'object' && 'msg' in e) {
          const loc = Array.isArray((e as { loc?: unknown }).loc) ? (e as { loc: unknown[] }).loc.join('.') : '';
          return loc ? `${loc}: ${String((e as { msg: unknown }).msg)}` : String((e as { msg: unknown }).msg);
        }
        return detailText(e);
      })
      .filter(Boolean)
      .join('; ');
  }
  if (detail && typeof detail === 'object') {
    const d = detail as { message?: unknown; issues?: unknown };
    const issues = Array.isArray(d.issues)
      ? d.issues.map((i) => (i && typeof i === 'object' && 'message' in i ? String((i as { message: unknown }).message) : String(i)))
      : [];
    const msg = typeof d.message === 'string' ? d.message.trim() : '';
    if (msg || issues.length) return [msg, ...issues.map((i) => `• ${i}`)].filter(Boolean).join(' ');
    return JSON.stringify(detail);
  }
  return detail === undefined || detail === null ? '' : String(detail);
}

/** The API root: `?api=<origin>` on the page (dev servers on another port), else the page's own origin. */
export function apiBase(search: string, origin: string): string {
  const override = new URLSearchParams(search).get('api');
  const root = override && /^https?:\/\/[^\s/]+/.test(override) ? override : origin;
  return `${root.replace(/\/+$/, '')}/v1`;
}

type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export class Api {
  /** `onUnauthorized`: called on a 401 (no or an expired session), before the ApiError is thrown. */
  constructor(
    readonly base: string,
    private readonly fetchFn: FetchLike = (input, init) => fetch(input, init),
    private readonly onUnauthorized: (() => void) | null = null,
  ) {}

  private async call<T>(path: string, init?: RequestInit): Promise<T> {
    let res: Response;
    try {
      res = await this.fetchFn(`${this.base}${path}`, init);
    } catch (err) {
      throw new ApiError(0, `cannot reach ${this.base}: ${err instanceof Error ? err.message : String(err)}`);
    }
    const text = await res.text();
    let body: unknown = text;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // not JSON (a proxy's error page): keep the text
    }
    if (res.status === 401 && this.onUnauthorized) this.onUnauthorized();
    if (!res.ok) throw new ApiError(res.status, errorText(res.status, body));
    return body as T;
  }

  private post<T>(path: string, body: unknown): Promise<T> {
    return this.call<T>(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  }

  /** Untyped access for pages with their own response types (the studio). */
  get = <T>(path: string): Promise<T> => this.call<T>(path);
  send = <T>(path: string, body: unknown): Promise<T> => this.post<T>(path, body);
  versions = (): Promise<VersionSummary[]> => this.call('/serving/versions');
  version = (id: string): Promise<PublishedVersion> => this.call(`/serving/versions/${encodeURIComponent(id)}`);
  aliases = (): Promise<AliasRecord[]> => this.call('/serving/aliases');
  history = (alias: string): Promise<AliasEvent[]> => this.call(`/serving/aliases/${encodeURIComponent(alias)}/history`);
  diff = (a: string, b: string): Promise<SnapshotDiff> => this.post('/serving/diff', { a, b });
  /** Alias changes are compare-and-swaps: `expected_version_id` is the version the page showed (409 if it moved).
   * The actor is the logged-in token's user (the server records it), never a field. */
  activate = (alias: string, version_id: string, reason: string, expected_version_id: string): Promise<AliasChange> =>
    this.post(`/serving/aliases/${encodeURIComponent(alias)}/activate`, { version_id, reason, expected_version_id });
  rollback = (alias: string, reason: string, expected_version_id: string): Promise<AliasChange> =>
    this.post(`/serving/aliases/${encodeURIComponent(alias)}/rollback`, { reason, expected_version_id });
  me = (): Promise<Me> => this.call('/auth/me');
  /** `POST /auth/login` (beside `/v1`): checks the token, the server sets the HttpOnly session cookie. */
  login = (token: string): Promise<Me> =>
    this.call('/../auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
  logout = (): Promise<null> => this.call('/../auth/logout', { method: 'POST' });
  experiments = (): Promise<ExperimentSummary[]> => this.call('/experiments');
  runs = (name: string, query: string): Promise<RunList> =>
    this.call(`/experiments/${encodeURIComponent(name)}/runs${query ? `?${query}` : ''}`);
  run = (name: string, runId: string): Promise<RunDetail> =>
    this.call(`/experiments/${encodeURIComponent(name)}/runs/${encodeURIComponent(runId)}`);
  equity = (name: string, runId: string): Promise<RunEquity> =>
    this.call(`/experiments/${encodeURIComponent(name)}/runs/${encodeURIComponent(runId)}/equity`);
}
