/**
 * The stream viewer page: wires StreamConnection → BinRing (+ GoldFeatureRuntime) → Renderer, the controls
 * (colour field, scheme, normalisation, heatmap/candle, pause, replay date/start/speed → reconnect) and the
 * indicator / error panel. Draws from a requestAnimationFrame loop only when new bins arrived or something
 * changed, and publishes frame-time stats on `window.__qmachinaStats`.
 */

import type { RuntimeConfigMessage, StreamBin } from '../stream/contract';
import { COLOR_SCHEMES, isColorScheme, type ColorScheme } from './colormap';
import { ServerStreamError, StreamConnection, type ConnState } from './connection';
import { toLogin, UNAUTHORIZED } from '../pages/session';
import { PriceView } from './geometry';
import { EMA_SIGNAL_FIELD } from './ema';
import { createViewerModel, ingestBin, type ViewerModel } from './model';
import { isNormalization, NORMALIZATIONS, Normalizer, type Normalization } from './normalize';
import { buildStreamUrl, checkReplayParam, withReplay, type ReplayParam, type ReplayQuery, type ViewerParams } from './params';
import { Renderer } from './renderer';
import { RollingStats } from './stats';
import { parseVisualization, type Visualization } from './vizconfig';

export interface QmachinaStats {
  frames: number;
  drawMsP95: number;
  drawMsMean: number;
  bins: number;
  state: ConnState;
}

declare global {
  interface Window {
    __qmachinaStats?: QmachinaStats;
  }
}

export const RING_BINS = 600;

function el<T extends HTMLElement>(root: ParentNode, sel: string): T {
  const e = root.querySelector<T>(sel);
  if (!e) throw new Error(`viewer page: ${sel} missing from index.html`);
  return e;
}

/** Show an error in the panel (never a blank page). */
export function showError(root: ParentNode, title: string, message: string): void {
  const panel = root.querySelector<HTMLElement>('#error-panel');
  if (!panel) return;
  panel.hidden = false;
  el(panel, '.error-title').textContent = title;
  el(panel, '.error-message').textContent = message;
}

export class ViewerApp {
  private readonly conn: StreamConnection;
  private readonly renderer: Renderer;
  private config: RuntimeConfigMessage | null = null;
  private viz: Visualization = parseVisualization(undefined);
  private model: ViewerModel | null = null;
  private view = new PriceView(41);
  private normalizer: Normalizer = new Normalizer('adaptive_running_max');
  private field: string;
  private scheme: ColorScheme = 'pressure_vacuum';
  private normalization: Normalization = 'adaptive_running_max';
  private gamma = 0.7;
  private mode: 'heatmap' | 'candle' = 'heatmap';
  private paused = false;
  private dirty = true;
  private drawnPushed = -1;
  private binsTotal = 0;
  private lastSeq: number | null = null;
  private readonly frameStats = new RollingStats(240);
  private frames = 0;
  private replay: ReplayQuery;
  private fieldFromUrl: boolean;
  private modeFromUrl: boolean;

  constructor(private readonly root: HTMLElement, private readonly params: ViewerParams) {
    this.field = params.field ?? 'rest_depth';
    this.fieldFromUrl = params.field !== null;
    this.mode = params.mode ?? 'heatmap';
    this.modeFromUrl = params.mode !== null;
    this.replay = { ...params.replay };
    this.renderer = new Renderer(el(root, '#viewer-canvas'));
    this.conn = new StreamConnection(this.streamUrl(), {
      onState: (s, d) => this.onState(s, d),
      onConfig: (c) => this.onConfig(c),
      onBin: (b) => this.onBin(b),
      onError: (e, src) => {
        if (e instanceof ServerStreamError && e.code === UNAUTHORIZED) toLogin(); // no session: log in, come back
        showError(root, src === 'contract' ? 'Stream contract violation (SPEC §7.2)' : src === 'server' ? 'Server error' : 'Connection error', e.message);
      },
      onEnd: () => this.note('end of stream'),
    });
    this.controls();
    this.publish();
    new ResizeObserver(() => {
      this.dirty = true;
    }).observe(this.renderer.canvas);
  }

  start(): void {
    this.conn.start(this.streamUrl());
    const loop = () => {
      requestAnimationFrame(loop);
      this.frame();
    };
    requestAnimationFrame(loop);
  }

  private streamUrl(): string {
    return buildStreamUrl(window.location.href, { serving: this.params.serving, replay: this.replay, stream: this.params.stream });
  }

  // ---- stream events ------------------------------------------------------------------------------------

  private onState(s: ConnState, detail: string): void {
    const ind = el(this.root, '#conn-state');
    ind.textContent = s;
    ind.dataset.state = s;
    ind.title = detail;
    el(this.root, '#conn-detail').textContent = detail;
    this.publish();
  }

  private onConfig(c: RuntimeConfigMessage): void {
    this.config = c;
    this.viz = parseVisualization(c.raw.visualization);
    this.model = createViewerModel(c, RING_BINS, this.viz);
    const ring = this.model.ring;
    this.view = new PriceView(c.grid_rows);
    const shader = this.viz.cell_shader;
    const floats = this.model.silverFields;
    if (!this.fieldFromUrl) this.field = ring.has(shader.depth_field) ? shader.depth_field : ring.has('rest_depth') ? 'rest_depth' : floats[0] ?? 'rest_depth';
    this.scheme = shader.color_scheme;
    this.normalization = shader.normalization;
    this.gamma = shader.gamma;
    if (!this.modeFromUrl) this.mode = this.viz.display_mode;
    this.normalizer = new Normalizer(this.normalization);
    this.binsTotal = 0;
    this.lastSeq = null;
    const derived = ring.has(EMA_SIGNAL_FIELD) ? [EMA_SIGNAL_FIELD] : []; // the EMA/SMA lines are prices: not offered
    this.fillFieldOptions(floats, [...this.model.goldFields.filter((f) => f !== 'state5_code'), ...derived]);
    this.syncControls();
    const unsupported = this.viz.overlays.filter((o) => !Renderer.SUPPORTED.has(o.type)).map((o) => o.type);
    el(this.root, '#title').textContent = `${c.display_name ?? this.params.serving} · ${c.symbol ?? ''} · ${c.cell_width_ms} ms bins · ±${c.grid_radius_ticks} ticks`;
    el(this.root, '#overlays').textContent = `overlays: ${this.viz.overlays.map((o) => `${o.label || o.type}(z${o.z_order})`).join(', ') || 'none'}`
      + (unsupported.length ? ` · not drawn: ${unsupported.join(', ')}` : '')
      + (this.model.lineNotes.length ? ` · ${this.model.lineNotes.join('; ')}` : '')
      + (this.viz.warnings.length ? ` · config warnings: ${this.viz.warnings.join('; ')}` : '')
      + (this.model.goldNote && this.viz.overlays.some((o) => o.type === 'vp_gold') ? ` · ${this.model.goldNote}` : '');
    this.dirty = true;
  }

  private onBin(bin: StreamBin): void {
    const m = this.model;
    if (!m) return;
    ingestBin(m, bin);
    const ring = m.ring;
    if (ring.has(this.field)) this.normalizer.update(ring.column(this.field, ring.size - 1));
    this.binsTotal++;
    this.lastSeq = bin.update.bin_seq;
    const s = ring.newest()!;
    const mid = Number.isFinite(s.bidTick) && Number.isFinite(s.askTick) ? (s.bidTick + s.askTick) / 2 : s.spotTick;
    if (this.view.track(mid)) this.dirty = true;
  }

  // ---- drawing ------------------------------------------------------------------------------------------

  private frame(): void {
    const resized = this.renderer.resize(); // a resize clears the canvas: redraw even when paused
    if (resized) this.dirty = true;
    const m = this.model;
    if (!m || !this.config) {
      if (resized) this.renderer.placeholder(`waiting for ${this.params.serving} …`);
      return;
    }
    if (this.paused && !resized) return;
    if (!this.dirty && m.ring.pushed === this.drawnPushed) return;
    const t0 = performance.now();
    this.renderer.draw({
      ring: m.ring, mode: this.mode, field: this.field, normalizer: this.normalizer, gamma: this.gamma,
      scheme: this.scheme, view: this.view, radius: this.config.grid_radius_ticks, overlays: this.viz.overlays,
      horizonsBins: this.config.projection_horizons_bins, tickDollars: Number(this.config.tick_int) * this.config.price_scale,
      goldReady: m.gold?.ready ?? false, binsPerCandle: 1, lineSets: m.lineSets,
    });
    this.frameStats.add(performance.now() - t0);
    this.frames++;
    this.dirty = false;
    this.drawnPushed = m.ring.pushed;
    this.publish();
  }

  private publish(): void {
    const st: QmachinaStats = {
      frames: this.frames,
      drawMsP95: this.frameStats.count ? this.frameStats.p95 : 0,
      drawMsMean: this.frameStats.count ? this.frameStats.mean : 0,
      bins: this.binsTotal,
      state: this.conn?.state ?? 'idle',
    };
    window.__qmachinaStats = st;
    const out = this.root.querySelector('#frame-stats');
    if (out) {
      out.textContent = `bins ${st.bins}${this.lastSeq !== null ? ` (seq ${this.lastSeq})` : ''} · frames ${st.frames} · draw ${st.drawMsMean.toFixed(2)} ms mean, ${st.drawMsP95.toFixed(2)} ms p95${this.paused ? ' · PAUSED (buffering)' : ''}`;
    }
  }

  private note(text: string): void {
    el(this.root, '#conn-detail').textContent = text;
  }

  // ---- controls -----------------------------------------------------------------------------------------

  private fillFieldOptions(silver: readonly string[], computed: readonly string[]): void {
    const sel = el<HTMLSelectElement>(this.root, '#field');
    sel.replaceChildren();
    const ring = this.model!.ring;
    const first = ['rest_depth', 'flow_score', 'composite'].filter((f) => ring.has(f));
    const rest = [...silver, ...computed].filter((f) => !first.includes(f));
    for (const f of [...first, ...rest]) sel.append(new Option(f, f));
    if (!ring.has(this.field)) sel.append(new Option(`${this.field} (not streamed)`, this.field));
  }

  private syncControls(): void {
    el<HTMLSelectElement>(this.root, '#field').value = this.field;
    el<HTMLSelectElement>(this.root, '#scheme').value = this.scheme;
    el<HTMLSelectElement>(this.root, '#normalization').value = this.normalization;
    el<HTMLSelectElement>(this.root, '#mode').value = this.mode;
    el<HTMLInputElement>(this.root, '#gamma').value = String(this.gamma);
  }

  /** Re-fold the whole buffer into a fresh normaliser (after a field or mode change). */
  private renormalize(): void {
    this.normalizer = new Normalizer(this.normalization);
    const ring = this.model?.ring;
    if (ring && ring.has(this.field)) for (let i = 0; i < ring.size; i++) this.normalizer.update(ring.column(this.field, i));
    this.dirty = true;
  }

  private controls(): void {
    const r = this.root;
    const scheme = el<HTMLSelectElement>(r, '#scheme');
    for (const s of COLOR_SCHEMES) scheme.append(new Option(s, s));
    const norm = el<HTMLSelectElement>(r, '#normalization');
    for (const s of NORMALIZATIONS) norm.append(new Option(s, s));
    el<HTMLSelectElement>(r, '#field').addEventListener('change', (e) => {
      this.field = (e.target as HTMLSelectElement).value;
      this.renormalize();
    });
    scheme.addEventListener('change', () => {
      if (isColorScheme(scheme.value)) this.scheme = scheme.value;
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
      this.dirty = true;
    });
    const mode = el<HTMLSelectElement>(r, '#mode');
    mode.addEventListener('change', () => {
      this.mode = mode.value === 'candle' ? 'candle' : 'heatmap';
      this.dirty = true;
    });
    const pause = el<HTMLButtonElement>(r, '#pause');
    pause.addEventListener('click', () => {
      this.paused = !this.paused;
      pause.textContent = this.paused ? 'Resume' : 'Pause';
      pause.setAttribute('aria-pressed', String(this.paused));
      this.dirty = true;
      this.publish();
    });
    // replay placeholder: date/start/speed become stream query params and the stream is reopened
    const inputs: Record<ReplayParam, HTMLInputElement | HTMLSelectElement | null> = {
      date: r.querySelector('#replay-date'), start: r.querySelector('#replay-start'),
      end: null, speed: r.querySelector('#replay-speed'),
    };
    for (const [k, input] of Object.entries(inputs)) if (input && this.replay[k as ReplayParam]) input.value = this.replay[k as ReplayParam]!;
    el<HTMLFormElement>(r, '#replay').addEventListener('submit', (e) => {
      e.preventDefault();
      const next: ReplayQuery = { ...this.replay };
      for (const [k, input] of Object.entries(inputs)) {
        if (!input) continue;
        const v = input.value.trim();
        const key = k as ReplayParam;
        if (v === '') {
          delete next[key];
          continue;
        }
        const err = checkReplayParam(key, v);
        if (err) {
          showError(r, 'Replay parameters', err);
          return;
        }
        next[key] = v;
      }
      this.replay = next;
      history.replaceState(null, '', withReplay(window.location.href, next));
      el<HTMLElement>(r, '#error-panel').hidden = true;
      this.conn.start(this.streamUrl());
    });
    window.addEventListener('keydown', (e) => {
      const t = e.target as HTMLElement | null;
      if (e.key === ' ' && !(t && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(t.tagName))) {
        e.preventDefault();
        pause.click();
      }
    });
    el<HTMLButtonElement>(r, '#error-dismiss').addEventListener('click', () => {
      el<HTMLElement>(r, '#error-panel').hidden = true;
    });
  }
}
