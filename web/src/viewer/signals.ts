/**
 * The served model's signal on the plot: the stream's `signal` messages (with `signals=1`: per bin the evaluated
 * signal's score and the entry/exit events known at that bin) → markers at the event's bin and price, and the
 * score kept per bin for the tooltip. Structural types, so this module does not depend on the decoder's names.
 */

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

/** Markers of one message's events: ▲ long entry, ▼ short entry, ■ exit labelled with outcome and P&L in ticks. */
export function markersOf(msg: SignalMessageLike, tickDollars: number): Marker[] {
  return msg.events.map((e) => {
    const tsMs = Number(BigInt(e.ts_ns) / 1_000_000n);
    const tick = e.price / tickDollars;
    if (e.event === 'entry') {
      return { tsMs, tick, kind: e.direction >= 0 ? 'entry_long' : 'entry_short', label: e.direction >= 0 ? 'long' : 'short' } as const;
    }
    const pnl = e.pnl_ticks === undefined ? '' : ` ${e.pnl_ticks > 0 ? '+' : ''}${e.pnl_ticks}t`;
    return { tsMs, tick, kind: 'exit', label: `${e.outcome ?? 'exit'}${pnl}` } as const;
  });
}

/** Scores by bin end time (ms), bounded to the bins the viewer holds; and the open position, if any. */
export class SignalTrack {
  private readonly scores = new Map<number, number>();
  private readonly order: number[] = [];
  readonly markers: Marker[] = [];
  position: { direction: number; since: number } | null = null;

  constructor(readonly capacity: number, readonly maxMarkers = 2000) {}

  add(msg: SignalMessageLike, tickDollars: number): void {
    const t = Number(BigInt(msg.ts_ns) / 1_000_000n);
    if (msg.score !== null && Number.isFinite(msg.score)) {
      if (!this.scores.has(t)) this.order.push(t);
      this.scores.set(t, msg.score);
      while (this.order.length > this.capacity) this.scores.delete(this.order.shift()!);
    }
    for (const e of msg.events) {
      if (e.event === 'entry') this.position = { direction: e.direction, since: Number(BigInt(e.ts_ns) / 1_000_000n) };
      else this.position = null;
    }
    this.markers.push(...markersOf(msg, tickDollars));
    if (this.markers.length > this.maxMarkers) this.markers.splice(0, this.markers.length - this.maxMarkers);
  }

  /** The score at the bin ending at `tsMs` (NaN when none came). */
  scoreAt(tsMs: number): number {
    return this.scores.get(tsMs) ?? NaN;
  }

  get latest(): number {
    return this.order.length ? this.scores.get(this.order[this.order.length - 1])! : NaN;
  }
}
