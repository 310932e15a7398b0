/**
 * The served model's signal on the plot: the stream's `signal` messages (with `signals=1`: per bin the evaluated
 * signal's score and the entry/exit events known at that bin) → markers at the event's bin and price, the score
 * kept per bin for the tooltip, the open position and the session's closed trades for the HUD. Structural types,
 * so this module does not depend on the decoder's names (stream/contract.ts `SignalMessage` fits them).
 */

import type { SignalsInfo } from '../stream/contract';
import type { Marker } from './renderer';

export interface SignalEventLike {
  readonly event: 'entry' | 'exit';
  readonly bin_seq: number;
  readonly ts_ns: string;
  /** +1 long, −1 short. */
  readonly direction: number;
  /** Dollars. */
  readonly price: number;
  readonly outcome?: string;
  readonly pnl_ticks?: number;
}

export interface SignalMessageLike {
  readonly bin_seq: number;
  readonly ts_ns: string;
  readonly score: number | null;
  readonly events: readonly SignalEventLike[];
  readonly final?: boolean;
}

const nsToMs = (ns: string) => Number(BigInt(ns) / 1_000_000n);

/** P&L in ticks as a label: sign always, at most two decimals (costs make quarter ticks). */
export function formatTicks(pnl: number): string {
  return `${pnl > 0 ? '+' : ''}${Number(pnl.toFixed(2))}t`;
}

/** Markers of one message's events: ▲ long entry, ▼ short entry, ■ exit labelled with outcome and P&L in ticks. */
export function markersOf(msg: SignalMessageLike, tickDollars: number): Marker[] {
  return msg.events.map((e) => {
    const tsMs = nsToMs(e.ts_ns);
    const tick = Math.round(e.price / tickDollars);
    if (e.event === 'entry') {
      return { tsMs, tick, kind: e.direction >= 0 ? 'entry_long' : 'entry_short', label: e.direction >= 0 ? 'long' : 'short' } as const;
    }
    const pnl = e.pnl_ticks === undefined ? '' : ` ${formatTicks(e.pnl_ticks)}`;
    return { tsMs, tick, kind: 'exit', label: `${e.outcome ?? 'exit'}${pnl}` } as const;
  });
}

export interface OpenPosition {
  /** +1 long, −1 short. */
  readonly direction: number;
  /** Entry bin close (ms) and fill price (dollars). */
  readonly since: number;
  readonly price: number;
}

/**
 * Scores by bin end time (ms), bounded to the bins the viewer holds; markers; the open position; the closed trades.
 * A message at or before the newest one taken is skipped (a continued replay resends the overlap), except the final
 * one, which closes the session (its truncated exit) once.
 */
export class SignalTrack {
  private readonly scores = new Map<number, number>();
  private readonly order: number[] = [];
  readonly markers: Marker[] = [];
  position: OpenPosition | null = null;
  /** Exits taken so far and their summed P&L (ticks). */
  trades = 0;
  pnlTicks = 0;
  /** Messages taken (skipped duplicates not counted), and whether the final one came. */
  messages = 0;
  ended = false;
  private lastTs = -Infinity;

  constructor(readonly capacity: number, readonly maxMarkers = 2000) {}

  /** Take one message; false when it was skipped (already seen, or after the final one). */
  add(msg: SignalMessageLike, tickDollars: number): boolean {
    if (this.ended) return false;
    const t = nsToMs(msg.ts_ns);
    if (msg.final) this.ended = true;
    else {
      if (t <= this.lastTs) return false;
      this.lastTs = t;
    }
    this.messages++;
    if (!msg.final && msg.score !== null && Number.isFinite(msg.score)) {
      if (!this.scores.has(t)) this.order.push(t);
      this.scores.set(t, msg.score);
      while (this.order.length > this.capacity) this.scores.delete(this.order.shift()!);
    }
    for (const e of msg.events) {
      if (e.event === 'entry') this.position = { direction: e.direction, since: nsToMs(e.ts_ns), price: e.price };
      else {
        this.position = null;
        this.trades++;
        this.pnlTicks += e.pnl_ticks ?? 0;
      }
    }
    this.markers.push(...markersOf(msg, tickDollars));
    if (this.markers.length > this.maxMarkers) this.markers.splice(0, this.markers.length - this.maxMarkers);
    return true;
  }

  /** The score at the bin ending at `tsMs` (NaN when none came). */
  scoreAt(tsMs: number): number {
    return this.scores.get(tsMs) ?? NaN;
  }

  /** The newest bin's score (NaN while undefined). */
  get latest(): number {
    return this.order.length && this.order[this.order.length - 1] === this.lastTs ? this.scores.get(this.lastTs)! : NaN;
  }
}

/** Close codes after which a signals=1 stream falls back to the plain one (4422: no signal, 4501: an ML signal). */
export const SIGNAL_FALLBACK_CODES: ReadonlySet<number> = new Set([4422, 4501]);

/** Whether a published version (or a runtime_config) declares a traded signal (`signal` non-null). */
export function declaresSignal(snapshot: Readonly<Record<string, unknown>> | null | undefined): boolean {
  const sig = snapshot?.signal;
  return sig !== null && sig !== undefined && typeof sig === 'object';
}

/** The HUD's legend line: what is traded, from `replay.signals`. */
export function signalLegend(info: SignalsInfo): string {
  const e = info.eval;
  const fmt = (x: number) => String(Number(x.toFixed(4)));
  return `${info.signal} · threshold ${fmt(e.threshold)} · TP ${fmt(e.tp_ticks)} / SL ${fmt(e.sl_ticks)} ticks`
    + ` · hold ≤ ${e.max_hold_bins} bins · cooldown ${e.cooldown_bins} · ${e.entry_mode} fill +${e.latency_bins} bin`
    + `${e.cost_ticks_per_trade ? ` · cost ${fmt(e.cost_ticks_per_trade)} t` : ''} · eval ${info.eval_source}`;
}
