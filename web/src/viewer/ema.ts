/**
 * SPEC §9 EMA ensemble, computed in the browser (`EmaLinesRuntime`, enabled by an `ema_lines` overlay).
 *
 * Per bin the input is `close` = the spot_ref price in dollars (the tick-rounded mid of grid_update).
 * - EMA_p: the first value is the first close, then `EMA += (2 / (p + 1)) · (close − EMA)`.
 * - SMA_p: the mean of the last min(count, p) closes (one circular buffer of max(sma_periods) closes).
 * - signal over adjacent EMA pairs i = 0..P−2:
 *   `tanh(scale · Σ w_i · sign(EMA_{p_i} − EMA_{p_{i+1}}) / Σ w_i)`; only the first P−1 weights are used
 *   (a P-th weight is accepted and ignored, as the serving config validator allows), and the signal is 0
 *   until every EMA has a value.
 * - `ready` once every EMA has a value, i.e. after the first bin with a valid close.
 *
 * Invalid spot (decided here, SPEC §9 does not say): a bin whose spot is unusable — spot_ref_price_int 0 or
 * book_valid false; the caller passes `null` (see `closeOfBin`) — is SKIPPED: no close is fed to the EMAs or
 * the SMA buffer (a 0 close would drag every EMA towards zero for dozens of bins), `count` does not advance,
 * and `step(null)` returns the held values of the last valid bin (NaN / signal 0 if there was none yet). So
 * the lines run flat across a gap and resume from where they were.
 *
 * Parameters come from the overlay's `params` (`parseEmaLinesParams` / `parseSmaLinesParams`) and are
 * validated like qmachina_assets/core/research/specs.py EmaLinesParams / SmaLinesParams; a bad one throws an
 * `EmaParamsError` naming the field.
 */

import type { StreamBin } from '../stream/contract';

export class EmaParamsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EmaParamsError';
  }
}

export interface EmaLinesParams {
  /** EMA periods in bins, ≥ 2, unique positive integers (signal pairs are adjacent entries). */
  readonly periods: readonly number[];
  /** Pair weights, ≥ 0; P−1 or P entries (only the first P−1 are used), not all 0. */
  readonly weights: readonly number[];
  /** SMA periods in bins (unique positive integers; may be empty). */
  readonly sma_periods: readonly number[];
  readonly signal_tanh_scale: number;
  /** CSS px (default 1.5). */
  readonly line_width: number;
  readonly lines_label: string;
  readonly sma_label: string;
}

export interface SmaLinesParams {
  readonly periods: readonly number[];
  readonly line_width: number;
}

export const DEFAULT_LINE_WIDTH = 1.5;

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function fail(where: string, key: string, want: string, got: unknown): never {
  throw new EmaParamsError(`${where}.${key}: ${want} expected, got ${got === undefined ? 'nothing' : JSON.stringify(got)}`);
}

function periodList(o: Record<string, unknown>, where: string, key: string, minLength: number): number[] {
  const v = o[key];
  const want = `a list of ${minLength > 0 ? `at least ${minLength} ` : ''}unique integer periods >= 1`;
  if (!Array.isArray(v) || v.length < minLength) fail(where, key, want, v);
  v.forEach((p, i) => {
    if (!Number.isSafeInteger(p) || (p as number) < 1) fail(where, `${key}[${i}]`, 'an integer period >= 1', p);
    if (v.indexOf(p) !== i) throw new EmaParamsError(`${where}.${key}[${i}]: period ${p} is listed twice`);
  });
  return [...(v as number[])];
}

function positive(o: Record<string, unknown>, where: string, key: string, dflt?: number): number {
  const v = o[key];
  if ((v === undefined || v === null) && dflt !== undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(where, key, 'a number > 0', v);
  return v;
}

function label(o: Record<string, unknown>, where: string, key: string, dflt: string): string {
  const v = o[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'string') fail(where, key, 'a string', v);
  return v;
}

/** Validate an `ema_lines` overlay's params; `where` prefixes error messages (e.g. `overlays.ema_lines.params`). */
export function parseEmaLinesParams(raw: unknown, where = 'ema_lines.params'): EmaLinesParams {
  if (!isObj(raw)) throw new EmaParamsError(`${where}: an object expected, got ${raw === undefined ? 'nothing' : JSON.stringify(raw)}`);
  const periods = periodList(raw, where, 'periods', 2);
  const n = periods.length;
  const w = raw.weights;
  if (!Array.isArray(w) || (w.length !== n - 1 && w.length !== n)) {
    fail(where, 'weights', `a list of ${n - 1} pair weights (or ${n}, the last unused) for ${n} periods`, w);
  }
  w.forEach((x, i) => {
    if (typeof x !== 'number' || !Number.isFinite(x) || x < 0) fail(where, `weights[${i}]`, 'a number >= 0', x);
  });
  const weights = [...(w as number[])];
  if (!(weights.slice(0, n - 1).reduce((a, b) => a + b, 0) > 0)) {
    throw new EmaParamsError(`${where}.weights: the ${n - 1} pair weights must not all be 0, got ${JSON.stringify(weights)}`);
  }
  return {
    periods, weights,
    sma_periods: periodList(raw, where, 'sma_periods', 0),
    signal_tanh_scale: positive(raw, where, 'signal_tanh_scale'),
    line_width: positive(raw, where, 'line_width', DEFAULT_LINE_WIDTH),
    lines_label: label(raw, where, 'lines_label', 'EMA'),
    sma_label: label(raw, where, 'sma_label', 'SMA'),
  };
}

/** Validate an `sma_lines` overlay's params (periods are required here: without them there is nothing to draw). */
export function parseSmaLinesParams(raw: unknown, where = 'sma_lines.params'): SmaLinesParams {
  if (!isObj(raw)) throw new EmaParamsError(`${where}: an object expected, got ${raw === undefined ? 'nothing' : JSON.stringify(raw)}`);
  return { periods: periodList(raw, where, 'periods', 1), line_width: positive(raw, where, 'line_width', DEFAULT_LINE_WIDTH) };
}

/** Ring field names of the per-bin values (prices in dollars, stored on the centre row). */
export const emaField = (p: number): string => `ema_${p}`;
export const smaField = (p: number): string => `sma_${p}`;
export const EMA_SIGNAL_FIELD = 'ema_signal';

/**
 * The close fed to the runtimes for one decoded bin: spot_ref_price_int × price_scale, or null when the spot is
 * unusable (spot_ref_price_int 0 or book_valid false; see the module docstring).
 */
export function closeOfBin(bin: StreamBin, priceScale: number): number | null {
  const u = bin.update;
  if (!u.book_valid || u.spot_ref_price_int <= 0n) return null;
  return Number(u.spot_ref_price_int) * priceScale;
}

/** Simple moving averages over one shared circular buffer of closes. */
export class SmaRuntime {
  readonly periods: readonly number[];
  private readonly buf: Float64Array;
  private head = 0; // next write slot
  private _count = 0; // valid closes fed so far
  private readonly values: Float64Array;

  constructor(periods: readonly number[]) {
    for (const p of periods) if (!Number.isSafeInteger(p) || p < 1) throw new EmaParamsError(`SMA period must be an integer >= 1, got ${p}`);
    this.periods = [...periods];
    this.buf = new Float64Array(Math.max(1, ...periods));
    this.values = new Float64Array(periods.length).fill(NaN);
  }

  get count(): number {
    return this._count;
  }

  /** Feed a close (null: skip, hold); returns a copy of the SMAs (NaN before the first close). */
  step(close: number | null): Float64Array {
    if (close !== null && Number.isFinite(close)) {
      const cap = this.buf.length;
      this.buf[this.head] = close;
      this.head = (this.head + 1) % cap;
      this._count++;
      this.periods.forEach((p, j) => {
        const n = Math.min(this._count, p);
        let s = 0;
        for (let i = 1; i <= n; i++) s += this.buf[(this.head - i + cap) % cap];
        this.values[j] = s / n;
      });
    }
    return this.values.slice();
  }

  reset(): void {
    this.head = 0;
    this._count = 0;
    this.buf.fill(0);
    this.values.fill(NaN);
  }
}

export interface EmaStep {
  /** One per `periods` entry, dollars; NaN until the first valid close. */
  readonly emas: Float64Array;
  /** One per `sma_periods` entry, dollars; NaN until the first valid close. */
  readonly smas: Float64Array;
  /** In [−1, 1]; 0 until ready. */
  readonly signal: number;
  readonly ready: boolean;
}

export class EmaLinesRuntime {
  readonly params: EmaLinesParams;
  private readonly alphas: Float64Array;
  private readonly emas: Float64Array;
  private readonly sma: SmaRuntime;
  private smas: Float64Array;
  private signal = 0;
  private _ready = false;

  constructor(params: EmaLinesParams) {
    this.params = params;
    this.alphas = Float64Array.from(params.periods, (p) => 2 / (p + 1));
    this.emas = new Float64Array(params.periods.length).fill(NaN);
    this.sma = new SmaRuntime(params.sma_periods);
    this.smas = new Float64Array(params.sma_periods.length).fill(NaN);
  }

  /** Build from raw overlay params (throws EmaParamsError naming the bad field). */
  static fromOverlayParams(raw: unknown, where?: string): EmaLinesRuntime {
    return new EmaLinesRuntime(parseEmaLinesParams(raw, where));
  }

  get ready(): boolean {
    return this._ready;
  }

  /** Feed one bin's close in dollars, or null for a bin with an invalid spot (skipped: the values are held). */
  step(close: number | null): EmaStep {
    if (close !== null && Number.isFinite(close)) {
      for (let i = 0; i < this.emas.length; i++) {
        this.emas[i] = Number.isNaN(this.emas[i]) ? close : this.emas[i] + this.alphas[i] * (close - this.emas[i]);
      }
      this.smas = this.sma.step(close);
      this._ready = true; // every EMA is seeded by the same (first valid) close
      this.signal = this.computeSignal();
    }
    return { emas: this.emas.slice(), smas: this.smas.slice(), signal: this.signal, ready: this._ready };
  }

  private computeSignal(): number {
    if (!this._ready) return 0;
    const w = this.params.weights;
    let num = 0;
    let den = 0;
    for (let i = 0; i + 1 < this.emas.length; i++) {
      num += w[i] * Math.sign(this.emas[i] - this.emas[i + 1]);
      den += w[i];
    }
    return den > 0 ? Math.tanh((this.params.signal_tanh_scale * num) / den) : 0;
  }

  reset(): void {
    this.emas.fill(NaN);
    this.sma.reset();
    this.smas.fill(NaN);
    this.signal = 0;
    this._ready = false;
  }
}
