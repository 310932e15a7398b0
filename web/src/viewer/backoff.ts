/**
 * Reconnect policy: exponential backoff with jitter, and which WebSocket close codes end the stream for good
 * (qmachina_serving/stream/protocol.py CloseCode: 1000 after end_of_stream, 4xxx = 4000 + HTTP status).
 */

export interface BackoffOptions {
  readonly baseMs?: number;
  readonly maxMs?: number;
  readonly factor?: number;
  /** Fraction of the delay removed at random (0 = deterministic). */
  readonly jitter?: number;
  /** Attempts before giving up (Infinity = never). */
  readonly maxAttempts?: number;
}

export class Backoff {
  readonly baseMs: number;
  readonly maxMs: number;
  readonly factor: number;
  readonly jitter: number;
  readonly maxAttempts: number;
  private _attempt = 0;

  constructor(opts: BackoffOptions = {}, private readonly random: () => number = Math.random) {
    this.baseMs = opts.baseMs ?? 500;
    this.maxMs = opts.maxMs ?? 15_000;
    this.factor = opts.factor ?? 2;
    this.jitter = opts.jitter ?? 0.2;
    this.maxAttempts = opts.maxAttempts ?? Infinity;
    if (!(this.baseMs > 0) || !(this.maxMs >= this.baseMs) || !(this.factor >= 1) || !(this.jitter >= 0 && this.jitter < 1)) {
      throw new RangeError('backoff: need baseMs > 0, maxMs >= baseMs, factor >= 1, 0 <= jitter < 1');
    }
  }

  get attempt(): number {
    return this._attempt;
  }

  /** The delay before the next attempt (ms), or null once maxAttempts is used up. */
  next(): number | null {
    if (this._attempt >= this.maxAttempts) return null;
    const raw = Math.min(this.maxMs, this.baseMs * Math.pow(this.factor, this._attempt));
    this._attempt++;
    return Math.round(raw * (1 - this.jitter * this.random()));
  }

  /** A connection went live: start over. */
  reset(): void {
    this._attempt = 0;
  }
}

/** Close codes after which reconnecting cannot help (the request itself is wrong, or the stream ended). */
export const FINAL_CLOSE_CODES: ReadonlySet<number> = new Set([1000, 4400, 4401, 4403, 4404, 4410, 4422, 4501]);

export function shouldReconnect(code: number, ended: boolean): boolean {
  if (ended) return false;
  return !FINAL_CLOSE_CODES.has(code);
}
