/**
 * Cell-shader normalisation (SPEC §5.3 CellShaderConfig.normalization) and gamma: map a raw field value to
 * [-1, 1] (signed fields) before colouring. Stateful across frames where the mode needs it.
 *
 * - `adaptive_running_max`: divide by a running max of |x| that jumps up immediately and decays slowly
 *   (factor `decay` per update) so one spike does not wash the picture out forever.
 * - `zscore_clamp`: (x − mean) / std over a running exponential window, divided by `clampSigma` and clamped.
 * - `identity_clamp`: clamp(x, −1, 1).
 * Gamma is applied on the magnitude: sign(v)·|v|^gamma.
 */

export const NORMALIZATIONS = ['adaptive_running_max', 'zscore_clamp', 'identity_clamp'] as const;
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

  constructor(mode: Normalization, opts: NormalizerOptions = {}) {
    if (!isNormalization(mode)) throw new RangeError(`unknown normalization ${JSON.stringify(mode)}`);
    this.mode = mode;
    this.decay = opts.decay ?? 0.995;
    this.alpha = opts.alpha ?? 0.05;
    this.clampSigma = opts.clampSigma ?? 3;
    this.eps = opts.eps ?? 1e-12;
  }

  /** Fold a batch of raw values (e.g. the newest bin's column) into the running statistics. NaNs are skipped. */
  update(values: ArrayLike<number>): void {
    if (this.mode === 'identity_clamp') return;
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
    }
  }

  reset(): void {
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
