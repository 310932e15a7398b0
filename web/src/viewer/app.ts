/**
 * The stream viewer page: StreamConnection → ViewerModel (BinRing + gold + trades) → HeatCache + Renderer, with
 * the navigation (Viewport: wheel zoom on both axes, drag pan, follow live), the crosshair tooltip (overlay canvas
 * + DOM, never a redraw of the main canvas), the controls and hotkeys (help overlay from hotkeys.ts), the replay
 * controls (seek to a time of day, date with data, speed: a speed change continues from the current time and
 * keeps the history), and the notices (a day without bins offers the days with data; a server error is shown
 * once). Draws from a requestAnimationFrame loop only when bins arrived (and not paused), the view changed or the
 * cache recoloured columns; `window.__qmachinaStats` carries the frame-time figures for the browser tests.
 *
 * The served signal (`signals=1`): requested when the page says `signals=1`, or when the "signal" toggle is on; by
 * default it is on when the version has a signal (`GET /v1/serving/versions/{serving}` before the first connection;
 * when that cannot be read, the hello's `signal` decides and the stream reopens with signals=1). Its messages feed a
 * `SignalTrack`: entry/exit markers on the plot, the latest score and the open position in the HUD with a legend line
 * (signal, threshold, TP/SL from `replay.signals`), the score in the tooltip. A version the server cannot stream a
 * signal for (4422 no signal, 4501 ML) falls back to the plain stream with a note in the HUD, not an error panel.
 */

import { etDate, formatEt, formatPrice, priceDecimals } from './axes';
import { CANDLE_INTERVALS_MS, timeCandles, type TimedCandle, type TimedCandleInput } from './candles';
import { buildLut, COLOR_SCHEMES, isColorScheme, type ColorScheme } from './colormap';
import { StreamConnection, ServerStreamError, type ConnState } from './connection';
import { toLogin, UNAUTHORIZED } from '../pages/session';
import { EMA_SIGNAL_FIELD } from './ema';
import { BOOK_FIELD, fieldInfo, type FieldInfo } from './fields';
import { HeatCache, type Colouring } from './heatcache';
import { actionFor, cycle, HOTKEYS, keyLabel, type Action } from './hotkeys';
import { continueWith, createViewerModel, ingestBin, type ViewerModel } from './model';
import { isNormalization, NORMALIZATIONS, Normalizer, type Normalization } from './normalize';
import { buildStreamUrl, checkReplayParam, withReplay, withSignals, type ReplayQuery, type ViewerParams } from './params';
import { plotRect, Renderer, visibleBins, type Marker } from './renderer';
import { declaresSignal, formatTicks, SIGNAL_FALLBACK_CODES, signalLegend, SignalTrack } from './signals';
import { Api, apiBase } from '../pages/api';
import { RollingStats } from './stats';
import {
  isLiveConfig, type FeedGap, type RuntimeConfigMessage, type SignalMessage, type SignalsInfo, type SourceStatus, type StreamBin,
} from '../stream/contract';
import { Viewport } from './viewport';
import { parseVisualization, type Visualization } from './vizconfig';

export interface QmachinaStats {
  frames: number;
  /** Per drawn frame: cache upkeep + draw (ms). */
  drawMsP95: number;
  drawMsMean: number;
  bins: number;
  state: ConnState;
  /** Bins held, and their time span (ms). */
  held: number;
  heldMs: number;
  /** bin_seq gaps seen in this stream (bins the server skipped for this client). */
  gaps: number;
  lastSeq: number | null;
  mode: 'heatmap' | 'candle';
  field: string;
  following: boolean;
  viewSpanMs: number;
  /** Columns the heat cache recoloured so far, and whether it is complete. */
  repainted: number;
  cacheComplete: boolean;
  trades: number;
  /** Mean time to ingest one bin (decode excluded: model, gold, trades, normaliser), ms. */
  ingestMsMean: number;
  /** How far the newest bin arrived behind its deadline, beyond the smallest lag seen (clock offset), ms. */
  behindMs: number;
  /** Frames skipped to catch up (the page draws ≤ 10 fps while more than CATCH_UP_MS behind). */
  catchUpSkips: number;
  /** The stream was opened with signals=1; its signal messages taken, markers held, the newest score (null: none). */
  signals: boolean;
  signalMessages: number;
  signalMarkers: number;
  signalScore: number | null;
  /** Markers in the last frame's time range (canvas px, at most 64). */
  markersDrawn: { x: number; y: number; kind: Marker['kind'] }[];
}

declare global {
  interface Window {
    __qmachinaStats?: QmachinaStats;
  }
}

/** History kept: at least 30 minutes of bins (capped), every field for the last 3 minutes. */
export const HISTORY_MS = 31 * 60_000;
export const FULL_FIELDS_MS = 3 * 60_000;
export const MAX_BINS = 40_000;
/** Deep fields at once (book + drawn field + recent picks). */
export const MAX_DEEP = 6;
/** Frame budget for recolouring old cache columns (ms). */
export const RECOLOUR_BUDGET_MS = 3;
/** Behind the stream by more than this (ms), the page draws at most every CATCH_UP_FRAME_MS so the bins are taken
 * in first (the server skips bins for a client that falls a queue behind). */
export const CATCH_UP_MS = 250;
export const CATCH_UP_FRAME_MS = 100;

function el<T extends HTMLElement>(root: ParentNode, sel: string): T {
  const e = root.querySelector<T>(sel);
  if (!e) throw new Error(`viewer page: ${sel} missing from index.html`);
  return e;
}

/** Show an error in the panel (never a blank page); `days` become links to the same stream on those dates. */
export function showError(root: ParentNode, title: string, message: string, days: readonly string[] = []): void {
  const panel = root.querySelector<HTMLElement>('#error-panel');
  if (!panel) return;
  panel.hidden = false;
  el(panel, '.error-title').textContent = title;
  el(panel, '.error-message').textContent = message;
  const list = panel.querySelector<HTMLElement>('.error-days');
  if (list) dayLinks(list, days);
}

function dayLinks(list: HTMLElement, days: readonly string[]): void {
  list.replaceChildren();
  for (const d of days.slice(0, 12)) {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = withReplay(window.location.href, { ...Object.fromEntries(new URL(window.location.href).searchParams), date: d, start: '' } as ReplayQuery);
    a.textContent = d;
    li.append(a);
    list.append(li);
  }
}

export class ViewerApp {
  private readonly conn: StreamConnection;
  private readonly renderer: Renderer;
  private readonly overlay: HTMLCanvasElement;
  private readonly octx: CanvasRenderingContext2D;
  private config: RuntimeConfigMessage | null = null;
  private viz: Visualization = parseVisualization(undefined);
  private model: ViewerModel | null = null;
  private cache: HeatCache | null = null;
  private view: Viewport | null = null;
  private normalizer = new Normalizer('p99_clamp');
  private field: string;
  private info: FieldInfo = fieldInfo(BOOK_FIELD);
  private scheme: ColorScheme = 'bid_ask';
  private normalization: Normalization = 'p99_clamp';
  private gamma = 1;
  private lut = buildLut('bid_ask', 1);
  private mode: 'heatmap' | 'candle' = 'heatmap';
  private candleMs: number | 'auto' = 'auto';
  private showTrades = true;
  private paused = false;
  private dirty = true;
  private drawnPushed = -1;
  private binsTotal = 0;
  private gaps = 0;
  private lastSeq: number | null = null;
  private readonly frameStats = new RollingStats(240);
  private readonly ingestStats = new RollingStats(1000);
  private lagBase = Infinity;
  private behindMs = 0;
  private lastDraw = 0;
  private catchUpSkips = 0;
  private lastTip = 0;
  private recolourOwed = false;
  private lastPublish = 0;
  private frames = 0;
  private replay: ReplayQuery;
  private readonly fieldFromUrl: boolean;
  private readonly modeFromUrl: boolean;
  private keepHistory = false;
  private ended = false;
  private mouse: { x: number; y: number } | null = null;
  private drag: { x: number; y: number; id: number } | null = null;
  private tipFields = new Set<string>();
  /** signals=1 is requested on the current connection; the user's/URL's choice (null: the version decides). */
  private signalsOn = false;
  private signalsChoice: boolean | null;
  /** The default was decided from the published version (else the hello decides, once). */
  private signalsDecided = false;
  private track: SignalTrack | null = null;
  private signalInfo: SignalsInfo | null = null;
  private signalNote: string | null = null;
  private hudDirty = true;
  /** Live feed gaps (ms; an open end while the book waits for a snapshot). */
  private feedGaps: { t0: number; t1: number }[] = [];
  private sourceDown: string | null = null;
  private fields: string[] = [];

  constructor(private readonly root: HTMLElement, private readonly params: ViewerParams) {
    this.field = params.field ?? BOOK_FIELD;
    this.fieldFromUrl = params.field !== null;
    this.mode = params.mode ?? 'heatmap';
    this.modeFromUrl = params.mode !== null;
    this.replay = { ...params.replay };
    this.signalsChoice = params.signals;
    this.renderer = new Renderer(el(root, '#viewer-canvas'));
    this.overlay = el<HTMLCanvasElement>(root, '#overlay-canvas');
    this.octx = this.overlay.getContext('2d')!;
    this.conn = new StreamConnection(this.streamUrl(), {
      onState: (s, d) => this.onState(s, d),
      onConfig: (c) => this.onConfig(c),
      onBin: (b) => this.onBin(b),
      onSignal: (m) => this.onSignal(m),
      onError: (e, src) => this.onError(e, src),
      onEnd: (info) => this.onEnd(info),
      onGap: (g) => this.onGap(g),
      onSourceStatus: (st) => this.onSourceStatus(st),
    });
    this.controls();
    this.pointer();
    this.help();
    this.syncControls();
    this.publish();
    new ResizeObserver(() => {
      this.dirty = true;
    }).observe(this.renderer.canvas);
  }

  start(): void {
    void this.decideSignals().then(() => this.conn.start(this.streamUrl()));
    const loop = () => {
      requestAnimationFrame(loop);
      this.frame();
    };
    requestAnimationFrame(loop);
  }

  private streamUrl(replay: ReplayQuery = this.replay): string {
    return buildStreamUrl(window.location.href, { serving: this.params.serving, replay, stream: this.params.stream }, this.signalsOn);
  }

  /** Whether the first connection asks for signals=1: the page's choice, else whether the version has a signal. */
  private async decideSignals(): Promise<void> {
    if (this.replay.source === 'live') this.signalsOn = false; // the server streams signals with replays only
    else if (this.signalsChoice !== null) this.signalsOn = this.signalsChoice;
    else {
      try {
        // no login redirect here: the stream's own 4401 does that
        const v = await new Api(apiBase(window.location.search, window.location.origin)).version(this.params.serving);
        this.signalsOn = declaresSignal(v.runtime_snapshot);
        this.signalsDecided = true;
      } catch {
        this.signalsOn = false; // the hello decides (onConfig)
      }
    }
    this.syncSignalToggle();
  }

  private syncSignalToggle(): void {
    const cb = el<HTMLInputElement>(this.root, '#signals');
    cb.checked = this.signalsOn;
    cb.disabled = this.replay.source === 'live';
    this.hudDirty = true;
  }

  /** The toggle: reopen with or without signals=1, continuing from the newest bin (the history stays). */
  private setSignals(on: boolean): void {
    this.signalsChoice = on;
    this.signalsOn = on;
    this.signalNote = null;
    history.replaceState(null, '', withSignals(window.location.href, on));
    this.syncSignalToggle();
    const cont = this.continuation();
    this.reopen(cont ?? this.replay, cont !== null);
  }

  // ---- stream events ------------------------------------------------------------------------------------

  private onState(s: ConnState, detail: string): void {
    if (s === 'reconnecting') this.continueOnReconnect();
    const ind = el(this.root, '#conn-state');
    ind.textContent = s;
    ind.dataset.state = s;
    ind.title = detail;
    el(this.root, '#conn-detail').textContent = detail;
    this.dirty = true; // the placeholder names the state
    this.publish();
  }

  private onError(e: Error, src: 'contract' | 'server' | 'socket'): void {
    if (e instanceof ServerStreamError && e.code === UNAUTHORIZED) toLogin(); // no session: log in, come back
    if (src === 'server' && this.signalsOn && e instanceof ServerStreamError && e.code !== null && SIGNAL_FALLBACK_CODES.has(e.code)) {
      // no signal to stream for this version: the plain stream, with a note (not an error)
      this.signalsOn = false;
      this.signalNote = `signal not streamed (${e.code}): ${e.message}`;
      this.syncSignalToggle();
      el(this.root, '#conn-detail').textContent = this.signalNote;
      this.conn.start(this.streamUrl());
      return;
    }
    const days = e instanceof ServerStreamError ? e.datesWithData : [];
    const title = src === 'contract' ? 'Stream contract violation (SPEC §7.2)'
      : src === 'server' ? (e instanceof ServerStreamError && e.code === 4410 ? 'No data' : 'Server error') : 'Connection error';
    showError(this.root, title, e.message + (days.length ? '\n\nDays with data for this stream:' : ''), days);
  }

  private onEnd(info: Readonly<Record<string, unknown>>): void {
    this.ended = true;
    const bins = Number(info.bins);
    if (bins === 0 && this.binsTotal === 0) {
      const r = (this.config?.raw.replay ?? {}) as Record<string, unknown>;
      const days = Array.isArray(r.dates_with_data) ? (r.dates_with_data as string[]) : [];
      this.notice('This window has no bins', `${String(r.symbol ?? '')} on ${String(r.date ?? '?')}`
        + ` ${r.start_et ? `from ${String(r.start_et).slice(11, 19)}` : ''}${r.end_et ? ` to ${String(r.end_et).slice(11, 19)}` : ''} ET`
        + ` produced no bins.${days.length ? ' Days with data:' : ''}`, days.filter((d) => d !== r.date));
    }
    el(this.root, '#conn-detail').textContent = `end of stream (${Number.isFinite(bins) ? bins : '?'} bins)`;
    this.dirty = true;
  }

  /** The LIVE / REPLAY badge; a live stream has no replay controls. */
  private showSource(c: RuntimeConfigMessage): void {
    const live = isLiveConfig(c);
    const badge = el(this.root, '#source');
    badge.hidden = false;
    badge.dataset.source = live ? 'live' : 'replay';
    badge.textContent = live ? 'LIVE' : 'REPLAY';
    badge.title = live ? 'the market as it happens (source=live)' : 'a replay of the lake';
    for (const sel of ['#seek button', '#replay-date', '#replay-start', '#replay-speed']) {
      el<HTMLInputElement>(this.root, sel).disabled = live;
    }
  }

  /** Live: a gap in the market feed (the book is invalid until the next snapshot): drawn as a hatched band. */
  private onGap(g: FeedGap): void {
    const newest = this.model?.ring.newest()?.tsMs ?? Date.now();
    const t0 = g.start_ns !== null ? Number(g.start_ns / 1_000_000n) : newest;
    const t1 = g.end_ns !== null ? Number(g.end_ns / 1_000_000n) : newest;
    this.feedGaps.push({ t0, t1: Math.max(t1, t0 + (this.config?.cell_width_ms ?? 100)) });
    if (this.feedGaps.length > 500) this.feedGaps.shift();
    el(this.root, '#conn-detail').textContent = `feed gap ${formatEt(t0, 1)}–${formatEt(t1, 1)} ET: the book is invalid until the next snapshot`;
    this.dirty = true;
  }

  private onSourceStatus(st: SourceStatus): void {
    this.sourceDown = st.available ? null : st.reason ?? 'unavailable';
    el(this.root, '#conn-detail').textContent = st.available ? 'live source available' : `live source unavailable: ${this.sourceDown}`;
    this.dirty = true;
  }

  private notice(title: string, message: string, days: readonly string[]): void {
    const box = el(this.root, '#notice');
    el(box, '.notice-title').textContent = title;
    el(box, '.notice-message').textContent = message;
    dayLinks(el(box, '.notice-days'), days);
    box.hidden = false;
  }

  private onConfig(c: RuntimeConfigMessage): void {
    if (this.signalsChoice === null && !this.signalsDecided && !isLiveConfig(c)) {
      this.signalsDecided = true; // the version could not be read before: its hello says whether it has a signal
      if (!this.signalsOn && declaresSignal(c.raw)) {
        this.signalsOn = true;
        this.syncSignalToggle();
        this.conn.start(this.streamUrl()); // no bin taken yet: start again with signals=1
        return;
      }
    }
    const prev = this.config;
    const sameVersion = prev !== null
      && (prev.raw.serving as { serving_id?: string } | undefined)?.serving_id === (c.raw.serving as { serving_id?: string } | undefined)?.serving_id;
    const sameGrid = prev !== null && prev.symbol === c.symbol && prev.grid_rows === c.grid_rows && prev.cell_width_ms === c.cell_width_ms
      && prev.tick_int === c.tick_int && JSON.stringify(prev.grid_schema_fields) === JSON.stringify(c.grid_schema_fields);
    // a continued replay (speed change, reconnect) of the same day, or a live stream's new runtime_config for the
    // same version and grid (a new day, the live process restarted): the history stays
    const keep = this.model !== null && sameVersion && sameGrid && (
      (this.keepHistory && (prev!.raw.replay as { date?: string } | undefined)?.date === (c.raw.replay as { date?: string } | undefined)?.date)
      || (isLiveConfig(prev) && isLiveConfig(c)));
    if (prev && isLiveConfig(c) && !keep && this.model) {
      this.notice('New live configuration', `${c.display_name ?? this.params.serving} now streams ${c.symbol ?? '?'}`
        + ' (a contract roll, or a new version behind the alias): the history starts again.', []);
    }
    this.showSource(c);
    this.keepHistory = false;
    this.config = c;
    this.ended = false;
    this.lagBase = Infinity; // a new session: a new deadline clock
    this.behindMs = 0;
    this.sourceDown = null;
    if (keep || !isLiveConfig(c)) el(this.root, '#notice').hidden = true;
    const replay = (c.raw.replay ?? {}) as Record<string, unknown>;
    this.replayInfo(replay);
    this.signalInfo = c.signals;
    this.hudDirty = true;
    if (keep) {
      continueWith(this.model!);
      if (c.signals === null) this.track = null; // the signal was switched off: its layer goes
      else this.track ??= new SignalTrack(this.model!.ring.capacity);
      this.dirty = true;
      return;
    }
    this.viz = parseVisualization(c.raw.visualization);
    const cell = c.cell_width_ms;
    const capacity = Math.max(600, Math.min(MAX_BINS, Math.ceil(HISTORY_MS / cell)));
    const shallow = Math.min(capacity, Math.ceil(FULL_FIELDS_MS / cell));
    const floats = c.grid_schema_fields.filter((f) => f.dtype === 'float64').map((f) => f.name);
    const hasBook = floats.includes('bid_depth') && floats.includes('ask_depth');
    const shader = this.viz.cell_shader;
    if (!this.fieldFromUrl) {
      this.field = hasBook ? BOOK_FIELD : floats.includes(shader.depth_field) ? shader.depth_field : floats[0] ?? 'rest_depth';
    }
    this.model = createViewerModel(c, capacity, this.viz, { shallow, maxDeep: MAX_DEEP, pinned: [this.field] });
    const ring = this.model.ring;
    this.cache = new HeatCache(capacity, c.grid_radius_ticks);
    const future = (Math.max(4, ...c.projection_horizons_bins) + 3) * cell;
    this.view = new Viewport({ cellMs: cell, historyBins: capacity, spanMs: Math.min(120_000, 1200 * cell), rows: c.grid_rows + 10, futureMs: future });
    if (!this.modeFromUrl) this.mode = this.viz.display_mode;
    this.binsTotal = 0;
    this.gaps = 0;
    this.lastSeq = null;
    this.track = c.signals === null ? null : new SignalTrack(capacity);
    this.feedGaps = [];
    const derived = ring.has(EMA_SIGNAL_FIELD) ? [EMA_SIGNAL_FIELD] : []; // the EMA/SMA lines are prices: not offered
    this.fields = [...(hasBook ? [BOOK_FIELD] : []), ...floats, ...this.model.goldFields.filter((f) => f !== 'state5_code'), ...this.model.dslFields, ...derived];
    this.fillFieldOptions();
    this.fillTipFields();
    this.setField(this.field, shader);
    const unsupported = this.viz.overlays.filter((o) => !Renderer.SUPPORTED.has(o.type)).map((o) => o.type);
    el(this.root, '#title').textContent = `${c.display_name ?? this.params.serving} · ${c.symbol ?? ''} · ${c.cell_width_ms} ms bins · ±${c.grid_radius_ticks} ticks`;
    el(this.root, '#overlays').textContent = `overlays: ${this.viz.overlays.map((o) => `${o.label || o.type}(z${o.z_order})`).join(', ') || 'none'}`
      + (unsupported.length ? ` · not drawn: ${unsupported.join(', ')}` : '')
      + (this.model.lineNotes.length ? ` · ${this.model.lineNotes.join('; ')}` : '')
      + (this.viz.warnings.length ? ` · config warnings: ${this.viz.warnings.join('; ')}` : '')
      + (this.model.goldNote && this.viz.overlays.some((o) => o.type === 'vp_gold') ? ` · ${this.model.goldNote}` : '')
      + (this.model.dslNote ? ` · ${this.model.dslNote}` : '');
    this.dirty = true;
  }

  private replayInfo(r: Record<string, unknown>): void {
    const days = Array.isArray(r.dates_with_data) ? (r.dates_with_data as string[]) : [];
    const list = el(this.root, '#dates-with-data');
    list.replaceChildren(...days.map((d) => new Option(d, d)));
    const date = el<HTMLInputElement>(this.root, '#replay-date');
    if (typeof r.date === 'string' && !this.replay.date) date.value = r.date;
    const speed = el<HTMLSelectElement>(this.root, '#replay-speed');
    const sp = String(r.speed ?? this.replay.speed ?? 1);
    if (![...speed.options].some((o) => o.value === sp)) speed.append(new Option(`${sp}×`, sp));
    speed.value = sp;
    el(this.root, '#replay-info').textContent = `${String(r.symbol ?? '')} ${String(r.date ?? '')}`
      + ` ${r.start_et ? String(r.start_et).slice(11, 19) : 'start'}–${r.end_et ? String(r.end_et).slice(11, 19) : 'end'} ET · ${sp}×`
      + (days.length ? ` · ${days.length} day${days.length > 1 ? 's' : ''} with data` : '');
  }

  private onBin(bin: StreamBin): void {
    const m = this.model;
    const v = this.view;
    if (!m || !v) return;
    const seq = bin.update.bin_seq;
    if (this.lastSeq !== null && seq > this.lastSeq + 1) this.gaps++;
    this.lastSeq = seq;
    const due = bin.update.due_unix_ns;
    if (due !== null) {
      const lag = Date.now() - Number(due / 1_000_000n);
      this.lagBase = Math.min(this.lagBase, lag);
      this.behindMs = lag - this.lagBase;
    }
    const t0 = performance.now();
    if (!ingestBin(m, bin)) return;
    const ring = m.ring;
    const i = ring.size - 1;
    if (ring.has(this.field)) this.normalizer.update(ring.column(this.field, i));
    this.binsTotal++;
    const s = ring.scalarsAt(i);
    const mid = Number.isFinite(s.bidTick) && Number.isFinite(s.askTick) ? (s.bidTick + s.askTick) / 2 : s.spotTick;
    if (!this.paused) v.onBin(s.tsMs, ring.scalarsAt(0).tsMs, this.mode === 'heatmap' ? mid : NaN);
    else v.oldestMs = ring.scalarsAt(0).tsMs;
    this.ingestStats.add(performance.now() - t0);
  }

  /** signals=1: a bin's signal message (after its bin), or the final one (the session end's exit). */
  private onSignal(msg: SignalMessage): void {
    const t = this.track;
    const c = this.config;
    if (!t || !c) return;
    if (!t.add(msg, Number(c.tick_int) * c.price_scale)) return; // a continued replay's overlap
    this.hudDirty = true;
    if (msg.events.length || msg.final) this.dirty = true;
  }

  /** The signal HUD (top left, under the gauge): legend line from replay.signals, latest score, position, trades. */
  private hud(): void {
    this.hudDirty = false;
    const box = el(this.root, '#signal-hud');
    const info = this.signalInfo;
    const t = this.track;
    const c = this.config;
    if (!info && !this.signalNote) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    const legend = el(box, '.signal-legend');
    legend.textContent = info ? `${signalLegend(info)} · ▲ long ▼ short ■ exit` : '';
    legend.hidden = !info;
    const state = el(box, '.signal-state');
    if (!info || !t || !c) {
      state.textContent = this.signalNote ?? '';
      box.dataset.position = 'none';
      return;
    }
    const score = t.latest;
    const p = t.position;
    const dec = priceDecimals(Number(c.tick_int) * c.price_scale);
    const pos = p ? `${p.direction > 0 ? 'LONG ▲' : 'SHORT ▼'} ${p.price.toFixed(dec)} since ${formatEt(p.since, 1)}` : 'flat';
    state.textContent = `score ${Number.isFinite(score) ? `${score >= 0 ? '+' : ''}${score.toFixed(3)}` : '—'} · ${pos}`
      + ` · ${t.trades} trade${t.trades === 1 ? '' : 's'} ${formatTicks(t.pnlTicks)}${t.ended ? ' · session closed' : ''}`;
    box.dataset.position = p ? (p.direction > 0 ? 'long' : 'short') : 'flat';
  }

  // ---- drawing ------------------------------------------------------------------------------------------

  private colouring(): Colouring {
    const n = this.normalizer;
    return { field: this.field, lut: this.lut, key: `${this.field}|${this.scheme}|${this.gamma}|${this.normalization}`, scale: n.scale, norm: (x) => n.apply(x) };
  }

  private candleInterval(): number {
    if (this.candleMs !== 'auto') return this.candleMs;
    const v = this.view!;
    const pxPerMs = plotRect(this.renderer.canvas.width, this.renderer.canvas.height, window.devicePixelRatio || 1).w / v.spanMs;
    return CANDLE_INTERVALS_MS.find((ms) => ms * pxPerMs >= 6 * (window.devicePixelRatio || 1)) ?? CANDLE_INTERVALS_MS[CANDLE_INTERVALS_MS.length - 1];
  }

  private candles(): TimedCandle[] {
    const m = this.model!;
    const v = this.view!;
    const ring = m.ring;
    const interval = this.candleInterval();
    const [i0, i1] = visibleBins(ring, v.t0 - interval, v.t1, m.config.cell_width_ms);
    const bins: TimedCandleInput[] = [];
    for (let i = i0; i <= i1; i++) {
      const s = ring.scalarsAt(i);
      bins.push({ binSeq: s.binSeq, spot: s.spotTick, bid: s.bidTick, ask: s.askTick, tsMs: s.tsMs });
    }
    const prev = i0 > 0 ? ring.scalarsAt(i0 - 1).spotTick : NaN;
    const out = timeCandles(bins, interval, prev);
    if (v.priceAuto && out.length) {
      let lo = Infinity;
      let hi = -Infinity;
      for (const c of out) {
        if (c.t1 < v.t0 || c.t0 > v.t1) continue;
        lo = Math.min(lo, c.low);
        hi = Math.max(hi, c.high);
      }
      if (lo <= hi) v.fit(lo, hi);
    }
    return out;
  }

  private frame(): void {
    if (this.hudDirty) this.hud();
    const resized = this.renderer.resize(); // a resize clears the canvas: redraw even when paused
    if (resized) {
      this.dirty = true;
      this.overlay.width = this.renderer.canvas.width;
      this.overlay.height = this.renderer.canvas.height;
    }
    const m = this.model;
    const v = this.view;
    if (!m || !this.config || !v) {
      if (resized || this.dirty) {
        const st = this.conn.state;
        this.renderer.placeholder(st === 'error' ? 'no stream (see the message above)'
          : st === 'ended' ? `${this.params.serving}: the stream ended without bins` : `waiting for ${this.params.serving} …`);
        this.dirty = false;
      }
      return;
    }
    const t0 = performance.now();
    if (t0 - this.lastPublish > 250) this.publish(); // figures move while nothing is drawn (paused, catching up)
    if (this.behindMs > CATCH_UP_MS && !resized && t0 - this.lastDraw < CATCH_UP_FRAME_MS) {
      this.catchUpSkips++;
      return; // behind the stream: take the bins in first, draw at ≤ 10 fps
    }
    const budget = this.behindMs > CATCH_UP_MS ? 1 : RECOLOUR_BUDGET_MS; // behind: bins first
    const painted = this.mode === 'heatmap' && this.cache ? this.cache.sync(m.ring, this.colouring(), budget) : false;
    const fresh = m.ring.pushed !== this.drawnPushed && !this.paused;
    // paused: the picture stays as it was, unless the user changes it (then the recolouring it causes is shown)
    if (this.paused && this.dirty) this.recolourOwed = true;
    const showPaint = painted && (!this.paused || this.recolourOwed);
    if (this.recolourOwed && this.cache?.complete(m.ring)) this.recolourOwed = false;
    if (!this.dirty && !fresh && !showPaint) return;
    this.lastDraw = t0;
    this.renderer.draw({
      ring: m.ring, trades: m.trades, mode: this.mode, field: this.field, info: this.info, normalizer: this.normalizer,
      gamma: this.gamma, scheme: this.scheme, view: v, cache: this.cache, radius: this.config.grid_radius_ticks,
      cellMs: this.config.cell_width_ms, overlays: this.viz.overlays, horizonsBins: this.config.projection_horizons_bins,
      tickDollars: Number(this.config.tick_int) * this.config.price_scale, goldReady: m.gold?.ready ?? false,
      candles: this.mode === 'candle' ? this.candles() : [], lineSets: m.lineSets, showTrades: this.showTrades,
      markers: this.track?.markers ?? [], gaps: this.feedGaps, banner: this.banner(),
    });
    this.frameStats.add(performance.now() - t0);
    this.frames++;
    this.dirty = false;
    if (!this.paused) this.drawnPushed = m.ring.pushed;
    if (this.mouse && t0 - this.lastTip > 100) this.crosshair(); // the cell under a still cursor changes with new bins
    this.publish();
  }

  private banner(): string {
    const v = this.view!;
    if (this.sourceDown) return `LIVE SOURCE UNAVAILABLE · ${this.sourceDown} · waiting`;
    if (this.paused) return 'PAUSED · bins keep buffering · Space resumes';
    if (!v.following) return `HISTORY · ${formatEt(v.t1, 0)} ET · F follows live`;
    if (this.ended) return 'END OF STREAM';
    if (this.behindMs > CATCH_UP_MS) return `CATCHING UP · ${(this.behindMs / 1000).toFixed(1)} s behind`;
    return '';
  }

  private publish(): void {
    this.lastPublish = performance.now();
    const ring = this.model?.ring;
    const held = ring?.size ?? 0;
    const heldMs = held > 1 ? ring!.scalarsAt(held - 1).tsMs - ring!.scalarsAt(0).tsMs + (this.config?.cell_width_ms ?? 0) : 0;
    const st: QmachinaStats = {
      frames: this.frames,
      drawMsP95: this.frameStats.count ? this.frameStats.p95 : 0,
      drawMsMean: this.frameStats.count ? this.frameStats.mean : 0,
      bins: this.binsTotal,
      state: this.conn?.state ?? 'idle',
      held, heldMs, gaps: this.gaps, lastSeq: this.lastSeq, mode: this.mode, field: this.field,
      following: this.view?.following ?? true, viewSpanMs: this.view?.spanMs ?? 0,
      repainted: this.cache?.repainted ?? 0, cacheComplete: ring && this.cache ? this.cache.complete(ring) : false,
      trades: this.model?.trades.count ?? 0,
      ingestMsMean: this.ingestStats.count ? this.ingestStats.mean : 0,
      behindMs: this.behindMs, catchUpSkips: this.catchUpSkips,
      signals: this.signalsOn, signalMessages: this.track?.messages ?? 0, signalMarkers: this.track?.markers.length ?? 0,
      signalScore: this.track && Number.isFinite(this.track.latest) ? this.track.latest : null,
      markersDrawn: this.renderer.drawnMarkers.slice(),
    };
    window.__qmachinaStats = st;
    const out = this.root.querySelector('#frame-stats');
    if (out) {
      const mb = ring ? (ring.bytes / 1e6).toFixed(0) : '0';
      out.textContent = `bins ${st.bins}${this.lastSeq !== null ? ` (seq ${this.lastSeq})` : ''}${st.gaps ? ` · ${st.gaps} gaps` : ''}`
        + ` · history ${(heldMs / 60_000).toFixed(1)} min (${mb} MB) · frames ${st.frames} · draw ${st.drawMsMean.toFixed(2)} ms mean,`
        + ` ${st.drawMsP95.toFixed(2)} ms p95${this.paused ? ' · PAUSED (buffering)' : ''}`;
    }
  }

  // ---- fields and colours -------------------------------------------------------------------------------

  private fillFieldOptions(): void {
    const sel = el<HTMLSelectElement>(this.root, '#field');
    sel.replaceChildren();
    for (const f of this.fields) sel.append(new Option(f === BOOK_FIELD ? 'book (bid/ask depth)' : f, f));
    if (!this.fields.includes(this.field)) sel.append(new Option(`${this.field} (not streamed)`, this.field));
  }

  private fillTipFields(): void {
    const box = el(this.root, '#tip-fields');
    box.replaceChildren();
    const want = new Set(this.params.tip ?? []);
    this.tipFields = new Set([...want].filter((f) => this.fields.includes(f)));
    for (const f of this.fields) {
      if (f === BOOK_FIELD) continue;
      const label = document.createElement('label');
      const cb = document.createElement('input');
      cb.type = 'checkbox';
      cb.value = f;
      cb.checked = this.tipFields.has(f);
      cb.addEventListener('change', () => {
        if (cb.checked) this.tipFields.add(f);
        else this.tipFields.delete(f);
      });
      label.append(cb, ` ${f}`);
      box.append(label);
    }
  }

  /** Switch the colour field: its natural scheme / normalisation (the config's shader for its own fields). */
  private setField(field: string, shader = this.viz.cell_shader): void {
    this.field = field;
    this.info = fieldInfo(field, this.config?.grid_schema_fields.find((f) => f.name === field)?.role ?? null);
    const own = field === shader.depth_field || field === shader.signal_field;
    this.scheme = own && field !== BOOK_FIELD ? shader.color_scheme : this.info.scheme;
    this.normalization = this.info.normalization ?? shader.normalization;
    this.gamma = this.info.gamma ?? shader.gamma;
    const ring = this.model?.ring;
    if (ring?.has(field)) ring.promote(field); // the drawn field keeps the whole history from now on
    this.syncControls();
    this.renormalize();
  }

  private syncControls(): void {
    el<HTMLSelectElement>(this.root, '#field').value = this.field;
    el<HTMLSelectElement>(this.root, '#scheme').value = this.scheme;
    el<HTMLSelectElement>(this.root, '#normalization').value = this.normalization;
    el<HTMLSelectElement>(this.root, '#mode').value = this.mode;
    el<HTMLInputElement>(this.root, '#gamma').value = String(this.gamma);
    el<HTMLInputElement>(this.root, '#trades').checked = this.showTrades;
    const follow = el<HTMLButtonElement>(this.root, '#follow');
    follow.setAttribute('aria-pressed', String(this.view?.following ?? true));
  }

  /** Re-fold the held history into a fresh normaliser (after a field or normalisation change). */
  private renormalize(): void {
    this.normalizer = new Normalizer(this.normalization);
    this.lut = buildLut(this.scheme, this.gamma);
    const ring = this.model?.ring;
    if (ring && ring.has(this.field)) {
      const from = Math.max(0, ring.size - ring.depth(this.field));
      for (let i = from; i < ring.size; i++) this.normalizer.update(ring.column(this.field, i));
    }
    this.dirty = true;
  }

  // ---- actions ------------------------------------------------------------------------------------------

  private act(a: Action): void {
    const v = this.view;
    switch (a) {
      case 'pause':
        this.setPaused(!this.paused);
        break;
      case 'follow':
        v?.follow();
        break;
      case 'reset':
        v?.reset();
        break;
      case 'next_field':
      case 'prev_field':
        this.setField(cycle(this.fields, this.field, a === 'next_field' ? 1 : -1));
        break;
      case 'toggle_mode':
        this.mode = this.mode === 'heatmap' ? 'candle' : 'heatmap';
        if (this.mode === 'heatmap' && v) v.priceAuto = true;
        break;
      case 'toggle_trades':
        this.showTrades = !this.showTrades;
        break;
      case 'zoom_in':
      case 'zoom_out':
        v?.zoomTime(a === 'zoom_in' ? 1 / 1.5 : 1.5, v.t1);
        break;
      case 'pan_back':
      case 'pan_forward':
        v?.pan((a === 'pan_back' ? -0.2 : 0.2) * v.spanMs, 0);
        break;
      case 'price_up':
      case 'price_down':
        v?.pan(0, (a === 'price_up' ? 0.1 : -0.1) * v.rows);
        break;
      case 'help':
        el(this.root, '#help').hidden = !el(this.root, '#help').hidden;
        break;
      case 'close':
        el(this.root, '#help').hidden = true;
        break;
    }
    this.syncControls();
    this.dirty = true;
  }

  private setPaused(p: boolean): void {
    this.paused = p;
    const pause = el<HTMLButtonElement>(this.root, '#pause');
    pause.textContent = p ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(p));
    if (!p && this.view && this.model?.ring.size) {
      const ring = this.model.ring;
      this.view.onBin(ring.newest()!.tsMs, ring.scalarsAt(0).tsMs, NaN);
    }
    this.dirty = true;
    this.publish();
  }

  /** The replay parameters that continue from the newest bin (same date, start = its ET time), or null when
   * there is nothing to continue from (no bins yet, or the bins are not on the replayed partition date). */
  private continuation(): ReplayQuery | null {
    const newest = this.model?.ring.newest();
    if (!newest || this.ended) return null;
    const cfgDate = String((this.config?.raw.replay as { date?: string } | undefined)?.date ?? '');
    if (cfgDate && etDate(newest.tsMs) !== cfgDate) return null; // start is an ET time on the (UTC) partition date
    return { ...this.replay, start: formatEt(newest.tsMs, 0), ...(cfgDate ? { date: cfgDate } : {}) };
  }

  /** A dropped connection reopens from the newest bin's time, keeping the history (not from the page's start). */
  private continueOnReconnect(): void {
    const next = this.continuation();
    if (!next) return;
    this.keepHistory = true;
    this.conn.url = this.streamUrl(next);
  }

  /** Reopen the stream with `next` replay parameters; `keep` keeps the history (a continued replay). */
  private reopen(next: ReplayQuery, keep: boolean): void {
    this.replay = next;
    this.keepHistory = keep;
    history.replaceState(null, '', withReplay(window.location.href, next));
    el<HTMLElement>(this.root, '#error-panel').hidden = true;
    el<HTMLElement>(this.root, '#notice').hidden = true;
    this.conn.start(this.streamUrl());
  }

  // ---- controls -----------------------------------------------------------------------------------------

  private controls(): void {
    const r = this.root;
    const scheme = el<HTMLSelectElement>(r, '#scheme');
    for (const s of COLOR_SCHEMES) scheme.append(new Option(s, s));
    const norm = el<HTMLSelectElement>(r, '#normalization');
    for (const s of NORMALIZATIONS) norm.append(new Option(s, s));
    el<HTMLSelectElement>(r, '#field').addEventListener('change', (e) => this.setField((e.target as HTMLSelectElement).value));
    scheme.addEventListener('change', () => {
      if (isColorScheme(scheme.value)) this.scheme = scheme.value;
      this.lut = buildLut(this.scheme, this.gamma);
      this.dirty = true;
    });
    norm.addEventListener('change', () => {
      if (isNormalization(norm.value)) this.normalization = norm.value;
      this.renormalize();
    });
    const gamma = el<HTMLInputElement>(r, '#gamma');
    gamma.addEventListener('change', () => {
      const g = Number(gamma.value);
      if (g > 0 && g <= 5) this.gamma = g;
      else gamma.value = String(this.gamma);
      this.lut = buildLut(this.scheme, this.gamma);
      this.dirty = true;
    });
    const mode = el<HTMLSelectElement>(r, '#mode');
    mode.addEventListener('change', () => {
      if ((mode.value === 'candle') !== (this.mode === 'candle')) this.act('toggle_mode');
    });
    const interval = el<HTMLSelectElement>(r, '#candle-interval');
    if (this.params.candle) {
      const ms = String(this.params.candle);
      if (![...interval.options].some((o) => o.value === ms)) interval.append(new Option(`${this.params.candle / 1000} s`, ms));
      interval.value = ms;
    }
    this.candleMs = interval.value === 'auto' ? 'auto' : Number(interval.value);
    interval.addEventListener('change', () => {
      this.candleMs = interval.value === 'auto' ? 'auto' : Number(interval.value);
      this.dirty = true;
    });
    el<HTMLInputElement>(r, '#trades').addEventListener('change', () => this.act('toggle_trades'));
    const signals = el<HTMLInputElement>(r, '#signals');
    signals.addEventListener('change', () => this.setSignals(signals.checked));
    el<HTMLButtonElement>(r, '#pause').addEventListener('click', () => this.act('pause'));
    el<HTMLButtonElement>(r, '#follow').addEventListener('click', () => this.act('follow'));
    el<HTMLButtonElement>(r, '#zoom-reset').addEventListener('click', () => this.act('reset'));
    el<HTMLButtonElement>(r, '#help-button').addEventListener('click', () => this.act('help'));
    // replay: seek (date + time of day) reopens from there; speed continues from the current bin's time
    const date = el<HTMLInputElement>(r, '#replay-date');
    const start = el<HTMLInputElement>(r, '#replay-start');
    const speed = el<HTMLSelectElement>(r, '#replay-speed');
    if (this.replay.date) date.value = this.replay.date;
    if (this.replay.start) start.value = this.replay.start;
    if (this.replay.speed) {
      if (![...speed.options].some((o) => o.value === this.replay.speed)) speed.append(new Option(`${this.replay.speed}×`, this.replay.speed));
      speed.value = this.replay.speed;
    } else speed.value = '1';
    el<HTMLFormElement>(r, '#seek').addEventListener('submit', (e) => {
      e.preventDefault();
      const next: ReplayQuery = { ...this.replay };
      for (const [key, input] of [['date', date], ['start', start]] as const) {
        const val = input.value.trim();
        if (val === '') {
          delete next[key];
          continue;
        }
        const err = checkReplayParam(key, val);
        if (err) {
          showError(r, 'Replay parameters', err);
          return;
        }
        next[key] = val;
      }
      this.reopen(next, false);
    });
    speed.addEventListener('change', () => {
      const cont = this.continuation();
      this.reopen({ ...(cont ?? this.replay), speed: speed.value }, cont !== null);
    });
    window.addEventListener('keydown', (e) => {
      const t = e.target as HTMLElement | null;
      const a = actionFor(e, t?.tagName ?? '');
      if (!a) return;
      e.preventDefault();
      this.act(a);
    });
    el<HTMLButtonElement>(r, '#error-dismiss').addEventListener('click', () => {
      el<HTMLElement>(r, '#error-panel').hidden = true;
    });
  }

  private help(): void {
    const table = el(this.root, '#help-keys');
    for (const h of HOTKEYS) {
      const tr = document.createElement('tr');
      const keys = document.createElement('td');
      h.keys.forEach((k, i) => {
        if (i) keys.append(' ');
        const kbd = document.createElement('kbd');
        kbd.textContent = keyLabel(k);
        keys.append(kbd);
      });
      const what = document.createElement('td');
      what.textContent = h.help;
      tr.append(keys, what);
      table.append(tr);
    }
  }

  // ---- pointer: zoom, pan, crosshair --------------------------------------------------------------------

  private plot(): { w: number; h: number; dpr: number } {
    return plotRect(this.overlay.width, this.overlay.height, window.devicePixelRatio || 1);
  }

  private pointer(): void {
    const o = this.overlay;
    const pos = (e: MouseEvent) => {
      const b = o.getBoundingClientRect();
      const dpr = window.devicePixelRatio || 1;
      return { x: (e.clientX - b.left) * dpr, y: (e.clientY - b.top) * dpr };
    };
    o.addEventListener('wheel', (e) => {
      const v = this.view;
      if (!v) return;
      e.preventDefault();
      const p = pos(e);
      const P = this.plot();
      const factor = Math.exp(Math.sign(e.deltaY) * Math.min(Math.abs(e.deltaY), 300) / 300);
      if (e.shiftKey || p.x > P.w) v.zoomPrice(factor, v.tickAt(Math.min(p.y, P.h), P.h));
      else v.zoomTime(factor, v.timeAt(p.x, P.w));
      this.syncControls();
      this.dirty = true;
    }, { passive: false });
    o.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      const p = pos(e);
      this.drag = { ...p, id: e.pointerId };
      o.setPointerCapture(e.pointerId);
      o.classList.add('dragging');
    });
    o.addEventListener('pointermove', (e) => {
      const p = pos(e);
      this.mouse = p;
      const v = this.view;
      if (this.drag && v && e.pointerId === this.drag.id) {
        const P = this.plot();
        const dx = p.x - this.drag.x;
        const dy = p.y - this.drag.y;
        this.drag = { ...p, id: e.pointerId };
        v.pan(-(dx / P.w) * v.spanMs, (dy / P.h) * v.rows);
        this.syncControls();
        this.dirty = true;
      }
      this.crosshair();
    });
    const end = (e: PointerEvent) => {
      if (this.drag && e.pointerId === this.drag.id) {
        this.drag = null;
        o.classList.remove('dragging');
      }
    };
    o.addEventListener('pointerup', end);
    o.addEventListener('pointercancel', end);
    o.addEventListener('pointerleave', () => {
      this.mouse = null;
      this.crosshair();
    });
    o.addEventListener('dblclick', () => this.act('reset'));
  }

  /** Crosshair lines on the overlay canvas and the cell's tooltip (time, price, values at the cell). */
  private crosshair(): void {
    this.lastTip = performance.now();
    const ctx = this.octx;
    const o = this.overlay;
    ctx.clearRect(0, 0, o.width, o.height);
    const tip = el(this.root, '#tooltip');
    const v = this.view;
    const m = this.model;
    const P = this.plot();
    if (!this.mouse || !v || !m || !this.config || this.mouse.x > P.w || this.mouse.y > P.h) {
      tip.hidden = true;
      return;
    }
    const { x, y } = this.mouse;
    const dpr = P.dpr;
    const tick = v.tickAt(y, P.h);
    const t = v.timeAt(x, P.w);
    ctx.strokeStyle = 'rgba(255,255,255,0.5)';
    ctx.lineWidth = 1;
    ctx.setLineDash([4 * dpr, 3 * dpr]);
    ctx.beginPath();
    ctx.moveTo(Math.round(x) + 0.5, 0);
    ctx.lineTo(Math.round(x) + 0.5, P.h);
    const yy = Math.round(v.y(tick, P.h)) + 0.5;
    ctx.moveTo(0, yy);
    ctx.lineTo(P.w, yy);
    ctx.stroke();
    ctx.setLineDash([]);
    const c = this.config;
    const tickDollars = Number(c.tick_int) * c.price_scale;
    const dec = priceDecimals(tickDollars);
    const price = formatPrice(tick, tickDollars, dec);
    ctx.font = `${11 * dpr}px ui-monospace, monospace`;
    const label = (text: string, lx: number, ly: number) => {
      const w = ctx.measureText(text).width + 8 * dpr;
      ctx.fillStyle = '#e8e8f0';
      ctx.fillRect(lx, ly - 8 * dpr, w, 16 * dpr);
      ctx.fillStyle = '#0c0e14';
      ctx.textBaseline = 'middle';
      ctx.fillText(text, lx + 4 * dpr, ly);
    };
    label(price, P.w + 2 * dpr, yy);
    label(formatEt(t, 1), Math.min(Math.max(0, x - 40 * dpr), P.w - 90 * dpr), P.h + 11 * dpr);
    tip.textContent = this.tooltipText(t, tick, price);
    tip.hidden = false;
    const b = o.getBoundingClientRect();
    const cx = x / dpr;
    const cy = y / dpr;
    const tw = tip.offsetWidth;
    const th = tip.offsetHeight;
    tip.style.left = `${cx + 16 + tw > b.width - 10 ? cx - tw - 16 : cx + 16}px`;
    tip.style.top = `${Math.min(cy + 16, b.height - th - 8)}px`;
  }

  private tooltipText(t: number, tick: number, price: string): string {
    const m = this.model!;
    const ring = m.ring;
    const c = this.config!;
    const cell = c.cell_width_ms;
    const i = ring.indexAtOrBefore(t + cell);
    const rows: string[] = [];
    if (i < 0 || ring.scalarsAt(i).tsMs - cell > t) return `${formatEt(t, 1)} ET · ${price}\nno bin here`;
    const s = ring.scalarsAt(i);
    const row = tick - s.spotTick + c.grid_radius_ticks;
    rows.push(`${formatEt(s.tsMs - cell, 3)}–${formatEt(s.tsMs, 3).slice(6)} ET  bin ${s.binSeq}`);
    rows.push(`price ${price}  (k ${Number.isFinite(row) ? row - c.grid_radius_ticks : '—'})`);
    const fmt = (x: number) => (Number.isNaN(x) ? '—' : Math.abs(x) >= 1000 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toPrecision(3));
    const val = (f: string) => (ring.has(f) && ring.holds(f, i) ? fmt(ring.value(f, i, row)) : '—');
    const older = (f: string) => ring.has(f) && !ring.holds(f, i);
    if (ring.has(BOOK_FIELD)) {
      const b = ring.holds(BOOK_FIELD, i) ? ring.value(BOOK_FIELD, i, row) : NaN;
      rows.push(`book   ${Number.isNaN(b) ? '—' : b > 0 ? `ask ${b.toFixed(0)}` : b < 0 ? `bid ${(-b).toFixed(0)}` : '0'}`);
    }
    let buy = 0;
    let sell = 0;
    const p = ring.seqOf(i);
    m.trades.forEach(p, p + 1, (_p, tk, vol, side) => {
      if (tk !== tick) return;
      if (side > 0) buy += vol;
      else sell += vol;
    });
    if (buy || sell) rows.push(`traded ${buy ? `${buy} buy` : ''}${buy && sell ? ' · ' : ''}${sell ? `${sell} sell` : ''}`);
    if (this.track) { // the served signal at this bin: its score and the entries/exits there
      const sc = this.track.scoreAt(s.tsMs);
      rows.push(`signal score     ${Number.isNaN(sc) ? '—' : `${sc >= 0 ? '+' : ''}${sc.toFixed(4)}`}`);
      const tickDollars = Number(c.tick_int) * c.price_scale;
      const dec = priceDecimals(tickDollars);
      for (const mk of this.track.markers) {
        if (mk.tsMs === s.tsMs) rows.push(`signal ${mk.kind === 'exit' ? 'exit' : 'entry'} ${mk.label} @ ${formatPrice(mk.tick, tickDollars, dec)}`);
      }
    }
    const shown = new Set<string>([BOOK_FIELD]);
    const add = (f: string) => {
      if (shown.has(f)) return;
      shown.add(f);
      rows.push(`${f.padEnd(16)} ${val(f)}`);
    };
    if (this.field !== BOOK_FIELD) add(this.field);
    for (const f of this.tipFields) add(f);
    if (m.goldFields.length) {
      if (m.goldFields.every(older)) rows.push(`gold: kept for the last ${FULL_FIELDS_MS / 60_000} min only`);
      else {
        rows.push('— gold —');
        for (const f of m.goldFields) add(f);
      }
    }
    if (m.dslFields.length) {
      rows.push('— gold DSL —');
      for (const f of m.dslFields) add(f);
    }
    return rows.join('\n');
  }
}
