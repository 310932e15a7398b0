/**
 * Browser `GoldFeatureRuntime` (SPEC §4.5): the built-in gold set computed from silver, one bin at a
 * time, with explicit state. A port of qmachina_assets/core/gold/features.py (`_run_bins`, `_cell`, `state5_code`)
 * that keeps Python's float operation order, so results agree with the offline gold to ~1e-15 (the
 * committed golden vectors in tests/fixtures/gold_parity/ are checked to 1e-9, codes exactly).
 *
 * Series are keyed by *absolute* tick: a price level's state lives in slot tick mod (2R+1) (one bin's
 * window is 2R+1 contiguous ticks, so they never share a slot). A slot starts a new series when the tick
 * it holds differs or its last bin_seq is not bin_seq - 1. Invalid bins (book_valid false or spot 0)
 * emit zeros, gold_valid false, and break every series. Derivatives are undefined (emitted as 0) while a
 * series has fewer than 2/3/4 samples; an undefined value occupies its slot in the z window but is not a
 * statistic input.
 */

import { GOLD_CODE_COLUMNS, GOLD_FLOAT_COLUMNS, GOLD_INPUTS, normalised, type GoldCodeColumn,
  type GoldFeatureConfig, type GoldFloatColumn, type GoldInput } from './config';
import { robustZ, windowMean, windowPush, type WindowCursor } from './rolling';

/** The silver columns of one bin (2R+1 rows, k ascending -R..R). */
export type GoldGridInput = { readonly k: ArrayLike<number> } & { readonly [C in GoldInput]: ArrayLike<number> };

/** One bin's scalars and silver grid. */
export interface GoldBinInput {
  readonly binSeq: number | bigint;
  /** Spot reference price in integer price units (1e-9 $): BigInt, decimal string or a safe integer. */
  readonly spotRefPriceInt: bigint | string | number;
  readonly bookValid: boolean;
  readonly askRepriceSign: number;
  readonly bidRepriceSign: number;
  readonly grid: GoldGridInput;
}

/** One bin's gold columns (row r = k = r - R). */
export type GoldBinOutput = {
  readonly binSeq: number;
  /** Absolute tick of k = 0 (spot // tick_int); null on an invalid bin. */
  readonly spotTick: number | null;
  readonly goldValid: boolean;
  readonly k: Int32Array;
} & { readonly [C in GoldFloatColumn]: Float64Array } & { readonly [C in GoldCodeColumn]: Int8Array };

/** state5 (gold.py `state5_code`): symmetric in k and the BBO's net reprice direction. */
export function state5(k: number, askSign: number, bidSign: number): number {
  const s = askSign + bidSign;
  const d = s > 0 ? 1 : s < 0 ? -1 : 0;
  if (k === 0 || d === 0) return 0;
  if (k > 0) return d > 0 ? 2 : -1;
  return d > 0 ? 1 : -2;
}

/** Python's builtin max(a, b) on floats: `a` unless `b > a`. */
function pyMax(a: number, b: number): number {
  return b > a ? b : a;
}

/** Python's builtin min(a, b) on floats: `a` unless `b < a`. */
function pyMin(a: number, b: number): number {
  return b < a ? b : a;
}

function toBigInt(v: bigint | string | number, what: string): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new RangeError(`${what}: ${v} is not a safe integer (pass a BigInt or string)`);
    return BigInt(v);
  }
  if (!/^-?\d+$/.test(v)) throw new RangeError(`${what}: ${JSON.stringify(v)} is not an integer string`);
  return BigInt(v);
}

/**
 * The runtime's explicit state, per slot s (absolute tick mod 2R+1). Plain typed arrays, so it can be
 * inspected, copied (`cloneState`) or restored.
 */
export interface GoldState {
  /** Absolute tick the slot holds (NaN = empty). */
  readonly tick: Float64Array;
  /** Last bin_seq the slot was advanced on. */
  readonly seq: Float64Array;
  /** Samples seen by the slot's current series. */
  readonly nSeen: Float64Array;
  /** z-window FIFO cursor (shared by the three derivative channels). */
  readonly zHead: Int32Array;
  readonly zLen: Int32Array;
  /** Defined values in each channel's sorted copy: [slot * 3 + c]. */
  readonly nSorted: Int32Array;
  /** Previous composite, d1, d2: [slot * 3 + i]. */
  readonly prev: Float64Array;
  /** composite_raw ring of capacity max(flow_windows): [slot * ringCap + i]. */
  readonly ring: Float64Array;
  /** Per channel FIFO of the last W derivative values and its sorted copy: [(slot * 3 + c) * W + i]. */
  readonly fifo: Float64Array;
  readonly sorted: Float64Array;
}

export function cloneState(s: GoldState): GoldState {
  return {
    tick: s.tick.slice(), seq: s.seq.slice(), nSeen: s.nSeen.slice(), zHead: s.zHead.slice(),
    zLen: s.zLen.slice(), nSorted: s.nSorted.slice(), prev: s.prev.slice(), ring: s.ring.slice(),
    fifo: s.fifo.slice(), sorted: s.sorted.slice(),
  };
}

export class GoldFeatureRuntime {
  readonly config: GoldFeatureConfig;
  readonly radius: number;
  readonly rows: number;
  readonly tickInt: bigint;
  private readonly ringCap: number;
  private readonly zw: number;
  private readonly coef: Float64Array;
  private readonly windows: Int32Array;
  private readonly rho: Float64Array;
  private readonly dw: Float64Array;
  private readonly dt: number;
  private _state: GoldState;
  private _ready = false;
  private readonly cur: WindowCursor = { head: 0, length: 0, nSorted: 0 };

  constructor(config: GoldFeatureConfig, radius: number, tickInt: number | bigint) {
    if (!Number.isInteger(radius) || radius < 0) throw new RangeError(`radius: a non-negative integer expected, got ${radius}`);
    const ti = typeof tickInt === 'bigint' ? tickInt : BigInt(tickInt);
    if (ti <= 0n) throw new RangeError(`tickInt: must be > 0, got ${tickInt}`);
    this.config = config;
    this.radius = radius;
    this.rows = 2 * radius + 1;
    this.tickInt = ti;
    this.ringCap = Math.max(...config.flow_windows);
    this.zw = config.flow_zscore_window_bins;
    this.coef = Float64Array.from([config.c1, config.c2, config.c3, config.c4, config.c5, config.c6, config.c7]);
    this.windows = Int32Array.from(config.flow_windows);
    this.rho = Float64Array.from(normalised(config.flow_rollup_weights));
    this.dw = Float64Array.from(normalised(config.flow_derivative_weights));
    this.dt = config.cell_width_ms / 1000.0;
    this._state = this.emptyState();
  }

  /** The current state (live arrays; `cloneState` for a copy). */
  get state(): GoldState {
    return this._state;
  }

  /** Replace the state (e.g. one saved with `cloneState`); shapes must match this runtime's config. */
  set state(s: GoldState) {
    const e = this.emptyState();
    for (const key of Object.keys(e) as (keyof GoldState)[]) {
      if (s[key].length !== e[key].length) throw new RangeError(`state.${key}: length ${s[key].length}, expected ${e[key].length}`);
    }
    this._state = s;
  }

  /** SPEC §4.5 `ready`: after the last bin, some level had at least min_periods defined z samples. */
  get ready(): boolean {
    return this._ready;
  }

  /** Forget every series (e.g. on reconnect). */
  reset(): void {
    this._state = this.emptyState();
    this._ready = false;
  }

  private emptyState(): GoldState {
    const n = this.rows;
    return {
      tick: new Float64Array(n).fill(NaN),
      seq: new Float64Array(n),
      nSeen: new Float64Array(n),
      zHead: new Int32Array(n),
      zLen: new Int32Array(n),
      nSorted: new Int32Array(n * 3),
      prev: new Float64Array(n * 3),
      ring: new Float64Array(n * this.ringCap),
      fifo: new Float64Array(n * 3 * this.zw),
      sorted: new Float64Array(n * 3 * this.zw),
    };
  }

  private allocOutput(binSeq: number, spotTick: number | null, valid: boolean): GoldBinOutput {
    const n = this.rows;
    const out: Record<string, unknown> = { binSeq, spotTick, goldValid: valid, k: new Int32Array(n) };
    for (const c of GOLD_FLOAT_COLUMNS) out[c] = new Float64Array(n);
    for (const c of GOLD_CODE_COLUMNS) out[c] = new Int8Array(n);
    const k = out.k as Int32Array;
    for (let j = 0; j < n; j++) k[j] = j - this.radius;
    return out as GoldBinOutput;
  }

  private checkGrid(grid: GoldGridInput): void {
    const n = this.rows;
    if (grid.k.length !== n) throw new RangeError(`grid: expected ${n} rows (radius ${this.radius}), got ${grid.k.length}`);
    for (let j = 0; j < n; j++) {
      if (grid.k[j] !== j - this.radius) throw new RangeError(`grid: rows must be k = -R..R ascending; row ${j} has k = ${grid.k[j]}`);
    }
    for (const c of GOLD_INPUTS) {
      const col = grid[c];
      if (!col || col.length !== n) throw new RangeError(`grid: column ${c} missing or not ${n} rows`);
    }
  }

  /** Advance over one bin (bins must arrive in stream order); returns its gold columns. */
  step(bin: GoldBinInput): GoldBinOutput {
    this.checkGrid(bin.grid);
    const seq = Number(bin.binSeq);
    const spot = toBigInt(bin.spotRefPriceInt, 'spotRefPriceInt');
    const valid = bin.bookValid && spot > 0n;
    if (!valid) {
      this._ready = false;
      return this.allocOutput(seq, null, false); // zeros; the slots' seq no longer chains
    }
    const spotTick = Number(spot / this.tickInt); // spot > 0: truncation == floor
    const out = this.allocOutput(seq, spotTick, true);
    const st = this._state;
    const n = this.rows;
    const radius = this.radius;
    let ready = false;
    for (let j = 0; j < n; j++) {
      const tick = spotTick + j - radius;
      const s = ((tick % n) + n) % n;
      if (st.tick[s] !== tick || st.seq[s] !== seq - 1) {
        st.tick[s] = tick;
        st.nSeen[s] = 0;
        st.zHead[s] = 0;
        st.zLen[s] = 0;
        st.nSorted[s * 3] = 0;
        st.nSorted[s * 3 + 1] = 0;
        st.nSorted[s * 3 + 2] = 0;
      }
      st.seq[s] = seq;
      if (this.cell(j - radius, bin.askRepriceSign, bin.bidRepriceSign, bin.grid, j, out, s)) ready = true;
    }
    this._ready = ready;
    return out;
  }

  /** One sample of one absolute-tick series (gold.py `_cell`); returns whether the z window is warm. */
  private cell(k: number, askSign: number, bidSign: number, grid: GoldGridInput, r: number, out: GoldBinOutput,
    s: number): boolean {
    const st = this._state;
    const coef = this.coef;
    const cfg = this.config;
    const dt = this.dt;
    const vAdd = grid.v_add[r];
    const vRest = grid.v_rest_depth[r];
    const aAdd = grid.a_add[r];
    const vPull = grid.v_pull[r];
    const vFill = grid.v_fill[r];
    const aPull = grid.a_pull[r];
    const p = coef[0] * vAdd + coef[1] * pyMax(vRest, 0.0) + coef[2] * pyMax(aAdd, 0.0);
    const v = coef[3] * vPull + coef[4] * vFill + coef[5] * pyMax(-vRest, 0.0) + coef[6] * pyMax(aPull, 0.0);
    const raw = (p - v) / (Math.abs(p) + Math.abs(v) + cfg.composite_eps);
    const n = st.nSeen[s] + 1;
    st.nSeen[s] = n;
    const cap = this.ringCap;
    const rOff = s * cap;
    const newest = (n - 1) % cap;
    st.ring[rOff + newest] = raw;
    let comp = 0.0;
    for (let w = 0; w < this.windows.length; w++) {
      comp += this.rho[w] * windowMean(st.ring, rOff, cap, newest, n, this.windows[w]);
    }
    const pOff = s * 3;
    const d1 = n >= 2 ? (comp - st.prev[pOff]) / dt : NaN;
    const d2 = n >= 3 ? (d1 - st.prev[pOff + 1]) / dt : NaN;
    const d3 = n >= 4 ? (d2 - st.prev[pOff + 2]) / dt : NaN;
    st.prev[pOff] = comp;
    st.prev[pOff + 1] = d1;
    st.prev[pOff + 2] = d2;
    let score = 0.0;
    const zw = this.zw;
    const minP = cfg.flow_zscore_min_periods;
    const cur = this.cur;
    let warm = false;
    for (let c = 0; c < 3; c++) {
      const x = c === 0 ? d1 : c === 1 ? d2 : d3;
      const off = (s * 3 + c) * zw;
      cur.head = st.zHead[s];
      cur.length = st.zLen[s];
      cur.nSorted = st.nSorted[s * 3 + c];
      windowPush(st.fifo, off, st.sorted, off, zw, cur, x);
      st.nSorted[s * 3 + c] = cur.nSorted;
      if (cur.nSorted >= minP) warm = true;
      const z = robustZ(x, st.sorted, off, cur.nSorted, minP, cfg.scale_eps);
      const term = this.dw[c] * Math.tanh(z / cfg.flow_tanh_scale);
      if (!Number.isNaN(term)) score += term;
      if (c === 2) {
        st.zHead[s] = cur.head;
        st.zLen[s] = cur.length;
      }
    }
    score = pyMin(pyMax(score, -1.0), 1.0);
    out.pressure_variant[r] = p;
    out.vacuum_variant[r] = v;
    out.composite_raw[r] = raw;
    out.composite[r] = comp;
    out.composite_d1[r] = Number.isNaN(d1) ? 0.0 : d1;
    out.composite_d2[r] = Number.isNaN(d2) ? 0.0 : d2;
    out.composite_d3[r] = Number.isNaN(d3) ? 0.0 : d3;
    out.flow_score[r] = score;
    out.state5_code[r] = state5(k, askSign, bidSign);
    const theta = cfg.flow_neutral_threshold;
    out.flow_state_code[r] = score >= theta ? 1 : score <= -theta ? -1 : 0;
    return warm;
  }
}
