/**
 * Cell-shader normalisation (SPEC §5.3 CellShaderConfig.normalization) and gamma: map a raw field value to
 * [-1, 1] (signed fields) before colouring. Stateful across frames where the mode needs it.
 *
 * - `adaptive_running_max`: divide by a running max of |x| that jumps up immediately and decays slowly
 *   (factor `decay` per update) so one spike does not wash the picture out forever.
 * - `zscore_clamp`: (x − mean) / std over a running exponential window, divided by `clampSigma` and clamped.
 * - `identity_clamp`: clamp(x, −1, 1).
 * - `p99_clamp` (viewer only, the default for the order book and other masses): clamp(x / q, −1, 1), q an exponential
 *   average of each update's 99th percentile of the non-zero |x| (for one bin's 101 levels: about its largest).
 *   Typical levels stay dim, a level at q or above is at full colour (large resting orders stand out), and q
 *   moves slowly, so history drawn with it keeps its colours (the cache seldom recolours).
 * Gamma is applied on the magnitude: sign(v)·|v|^gamma.
 */

export const NORMALIZATIONS = ['adaptive_running_max', 'zscore_clamp', 'identity_clamp', 'p99_clamp'] as const;
export type Normalization = (typeof NORMALIZATIONS)[number];

export function isNormalization(v: unknown): v is Normalization {
  return typeof v === 'string' && (NORMALIZATIONS as readonly string[]).includes(v);
}

export const clamp = (x: number, lo: number, hi: number): number => (x < lo ? lo : x > hi ? hi : x);

/** sign(v)·|v|^gamma for v in [-1, 1]; NaN stays NaN. gamma must be in (0, 5]. */
export function applyGamma(v: number, gamma: number): number {
  if (!(gamma > 0 && gamma <= 5)) throw new RangeError(`gamma must be in (0, 5], got ${gamma}`);
  if (Number.isNaN(v)) return v;
  const m = Math.pow(Math.min(Math.abs(v), 1), gamma);
  return v < 0 ? -m : m;
}

export interface NormalizerOptions {
  /** adaptive_running_max: multiplicative decay of the running max per `update` (default 0.995). */
  readonly decay?: number;
  /** zscore_clamp: EW weight of a new frame's statistics (default 0.05). */
  readonly alpha?: number;
  /** zscore_clamp: sigmas mapped to ±1 (default 3). */
  readonly clampSigma?: number;
  /** floor for the scale so a flat field shows as 0, not noise (default 1e-12). */
  readonly eps?: number;
  /** p99_clamp: EW weight of a new update's p99 (default 0.005: ~200 updates). */
  readonly quantileAlpha?: number;
}

/** Nearest-rank 99th percentile of the finite non-zero |x| (NaN when there are none). */
export function p99Abs(values: ArrayLike<number>): number {
  const a: number[] = [];
  for (let i = 0; i < values.length; i++) {
    const x = Math.abs(values[i]);
    if (x > 0 && Number.isFinite(x)) a.push(x);
  }
  if (!a.length) return NaN;
  a.sort((p, q) => p - q);
  return a[Math.min(a.length, Math.ceil(0.99 * a.length)) - 1];
}

export class Normalizer {
  readonly mode: Normalization;
  private readonly decay: number;
  private readonly alpha: number;
  private readonly clampSigma: number;
  private readonly eps: number;
  private runMax = 0;
  private mean = 0;
  private variance = 0;
  private seeded = false;
  private q = 0;
  private readonly qAlpha: number;

  constructor(mode: Normalization, opts: NormalizerOptions = {}) {
    if (!isNormalization(mode)) throw new RangeError(`unknown normalization ${JSON.stringify(mode)}`);
    this.mode = mode;
    this.decay = opts.decay ?? 0.995;
    this.alpha = opts.alpha ?? 0.05;
    this.clampSigma = opts.clampSigma ?? 3;
    this.eps = opts.eps ?? 1e-12;
    this.qAlpha = opts.quantileAlpha ?? 0.005;
  }

  /** Fold a batch of raw values (e.g. the newest bin's column) into the running statistics. NaNs are skipped. */
  update(values: ArrayLike<number>): void {
    if (this.mode === 'identity_clamp') return;
    if (this.mode === 'p99_clamp') {
      const p = p99Abs(values);
      if (Number.isNaN(p)) return;
      this.q = this.q > 0 ? this.q + this.qAlpha * (p - this.q) : p;
      return;
    }
    let n = 0, sum = 0, sumSq = 0, maxAbs = 0;
    for (let i = 0; i < values.length; i++) {
      const x = values[i];
      if (!Number.isFinite(x)) continue;
      n++;
      sum += x;
      sumSq += x * x;
      const a = Math.abs(x);
      if (a > maxAbs) maxAbs = a;
    }
    if (n === 0) return;
    if (this.mode === 'adaptive_running_max') {
      this.runMax = Math.max(this.runMax * this.decay, maxAbs);
      return;
    }
    const m = sum / n;
    const v = Math.max(sumSq / n - m * m, 0);
    if (!this.seeded) {
      this.mean = m;
      this.variance = v;
      this.seeded = true;
    } else {
      const a = this.alpha;
      this.mean += a * (m - this.mean);
      this.variance += a * (v - this.variance);
    }
  }

  /** Map a raw value to [-1, 1] (NaN stays NaN). */
  apply(x: number): number {
    if (Number.isNaN(x)) return x;
    switch (this.mode) {
      case 'identity_clamp':
        return clamp(x, -1, 1);
      case 'adaptive_running_max':
        return this.runMax > this.eps ? clamp(x / this.runMax, -1, 1) : 0;
      case 'zscore_clamp': {
        const sd = Math.sqrt(this.variance);
        if (!this.seeded || sd <= this.eps) return 0;
        return clamp((x - this.mean) / (sd * this.clampSigma), -1, 1);
      }
      case 'p99_clamp':
        return this.q > this.eps ? clamp(x / this.q, -1, 1) : 0;
    }
  }

  /** The number the mode scales by (running max, std, p99; 1 for identity): the cached colours are redrawn
   * when it drifts. */
  get scale(): number {
    switch (this.mode) {
      case 'identity_clamp':
        return 1;
      case 'adaptive_running_max':
        return this.runMax;
      case 'zscore_clamp':
        return Math.sqrt(this.variance) * this.clampSigma;
      case 'p99_clamp':
        return this.q;
    }
  }

  /** Raw value shown at ±1 of the legend, and how it is derived (for the legend). */
  describe(): { full: number; centre: number; text: string } {
    switch (this.mode) {
      case 'identity_clamp':
        return { full: 1, centre: 0, text: 'identity, clamped to ±1' };
      case 'adaptive_running_max':
        return { full: this.runMax, centre: 0, text: `÷ running max |x| (decay ${this.decay}/bin)` };
      case 'zscore_clamp':
        return { full: this.mean + Math.sqrt(this.variance) * this.clampSigma, centre: this.mean, text: `z-score, ±${this.clampSigma}σ (EW)` };
      case 'p99_clamp':
        return { full: this.q, centre: 0, text: 'x ÷ p99 of |x| (EW), clamped' };
    }
  }

  reset(): void {
    this.q = 0;
    this.runMax = 0;
    this.mean = 0;
    this.variance = 0;
    this.seeded = false;
  }

  /** Inspectable state (tests, debug overlay). */
  get stats(): { runMax: number; mean: number; std: number } {
    return { runMax: this.runMax, mean: this.mean, std: Math.sqrt(this.variance) };
  }
}
