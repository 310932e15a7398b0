/**
 * Page URL → stream URL. The page is opened as `?serving=<alias|serving_id>[&source=replay|live][&date=YYYY-MM-DD][&start=HH:MM[:SS]]
 * [&end=HH:MM[:SS]][&speed=x][&signals=1|0][&stream=ws://host:port][&field=rest_depth][&mode=heatmap|candle]`. The
 * WebSocket goes to `/v1/stream` on the page's own host (or `stream=`), carrying `serving` plus the replay parameters
 * the serving process accepts (qmachina_serving/stream/replay.py parse_query: serving, source, date, start, end, speed,
 * signals; with source=live only serving and source); viewer-only parameters stay on the page. `signals=1` asks for
 * the served signal's messages, `signals=0` never; absent, the viewer decides (on when the version has a signal).
 */

export const REPLAY_PARAMS = ['source', 'date', 'start', 'end', 'speed'] as const;
export type ReplayParam = (typeof REPLAY_PARAMS)[number];
export type ReplayQuery = Partial<Record<ReplayParam, string>>;

export class ViewerParamError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ViewerParamError';
  }
}

const SERVING_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const DATE_RE = /^\d{4}-\d{2}-\d{2}$/;
const TIME_RE = /^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$/;

/** Check one replay parameter's value (same shapes as the server), returning an error message or null. */
export function checkReplayParam(name: ReplayParam, value: string): string | null {
  switch (name) {
    case 'source':
      return value === 'replay' || value === 'live' ? null : `source ${JSON.stringify(value)}: replay or live`;
    case 'date':
      return DATE_RE.test(value) && !Number.isNaN(Date.parse(value)) ? null : `date ${JSON.stringify(value)}: expected YYYY-MM-DD`;
    case 'start':
    case 'end':
      return TIME_RE.test(value) ? null : `${name} ${JSON.stringify(value)}: expected HH:MM or HH:MM:SS (ET)`;
    case 'speed': {
      const s = Number(value);
      return value.trim() !== '' && Number.isFinite(s) && s > 0 ? null : `speed ${JSON.stringify(value)}: a number > 0 expected`;
    }
  }
}

export interface ViewerParams {
  readonly serving: string;
  readonly replay: ReplayQuery;
  /** ws(s) origin override (`stream=`), else null (the page's host). */
  readonly stream: string | null;
  readonly field: string | null;
  readonly mode: 'heatmap' | 'candle' | null;
  /** Extra tooltip fields (`tip=a,b`). */
  readonly tip: readonly string[] | null;
  /** Candle interval in ms (`candle=1s|5s|15s|30s|1m|5m`), null: auto. */
  readonly candle: number | null;
  /** `signals=1` (true) / `signals=0` (false): stream the served signal or not; null: on when the version has one. */
  readonly signals: boolean | null;
}

const CANDLE_RE = /^(\d+)(s|m)$/;

/** Parse the page's query; throws ViewerParamError naming the first problem. */
export function parseViewerParams(search: string): ViewerParams {
  const q = new URLSearchParams(search);
  const serving = q.get('serving');
  if (!serving) throw new ViewerParamError('open the viewer with ?serving=<alias|serving_id>');
  if (!SERVING_RE.test(serving)) throw new ViewerParamError(`serving ${JSON.stringify(serving)} is not an alias or serving_id`);
  const replay: ReplayQuery = {};
  for (const p of REPLAY_PARAMS) {
    const v = q.get(p);
    if (v === null || v === '') continue;
    const err = checkReplayParam(p, v);
    if (err) throw new ViewerParamError(err);
    replay[p] = v;
  }
  const mode = q.get('mode');
  if (mode !== null && mode !== 'heatmap' && mode !== 'candle') throw new ViewerParamError(`mode ${JSON.stringify(mode)}: heatmap or candle`);
  const tip = q.get('tip');
  const candleRaw = q.get('candle');
  let candle: number | null = null;
  if (candleRaw) {
    const cm = CANDLE_RE.exec(candleRaw);
    if (!cm) throw new ViewerParamError(`candle ${JSON.stringify(candleRaw)}: an interval such as 1s, 5s, 1m or 5m`);
    candle = Number(cm[1]) * (cm[2] === 's' ? 1000 : 60_000);
  }
  const sig = q.get('signals');
  if (sig !== null && sig !== '' && sig !== '0' && sig !== '1') {
    throw new ViewerParamError(`signals ${JSON.stringify(sig)}: 1 (stream the served signal) or 0`);
  }
  const signals = sig === '1' ? true : sig === '0' ? false : null;
  if (signals && replay.source === 'live') {
    throw new ViewerParamError('signals=1: the served signal is streamed with replays only, not with source=live');
  }
  return {
    serving, replay, stream: q.get('stream') || null, field: q.get('field') || null, mode,
    tip: tip ? tip.split(',').map((x) => x.trim()).filter(Boolean) : null, candle, signals,
  };
}

/** The WebSocket URL: `ws(s)://<page host or stream override>/v1/stream?serving=..&<replay params>[&signals=1]`
 * (`signals` is never sent with source=live: the server refuses it there). */
export function buildStreamUrl(pageHref: string, p: Pick<ViewerParams, 'serving' | 'replay' | 'stream'>, signals = false): string {
  const page = new URL(pageHref);
  const base = p.stream ?? `${page.protocol === 'https:' ? 'wss:' : 'ws:'}//${page.host || 'localhost'}`;
  const url = new URL('/v1/stream', base);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') throw new ViewerParamError(`stream ${JSON.stringify(p.stream)}: a ws(s):// or http(s):// origin expected`);
  const q = new URLSearchParams({ serving: p.serving });
  const live = p.replay.source === 'live';
  for (const k of REPLAY_PARAMS) {
    const v = p.replay[k];
    if (v !== undefined && (!live || k === 'source')) q.set(k, v); // live: the market as it happens, no window
  }
  if (signals && !live) q.set('signals', '1');
  url.search = q.toString();
  return url.toString();
}

/** The page URL with `signals=1|0` set (null: removed, the viewer decides), for history.replaceState. */
export function withSignals(pageHref: string, signals: boolean | null): string {
  const u = new URL(pageHref);
  if (signals === null) u.searchParams.delete('signals');
  else u.searchParams.set('signals', signals ? '1' : '0');
  return u.toString();
}

/** The page URL with replay parameters replaced (empty/undefined values removed), for history.replaceState. */
export function withReplay(pageHref: string, replay: ReplayQuery): string {
  const u = new URL(pageHref);
  for (const k of REPLAY_PARAMS) {
    const v = replay[k];
    if (v === undefined || v === '') u.searchParams.delete(k);
    else u.searchParams.set(k, v);
  }
  return u.toString();
}
