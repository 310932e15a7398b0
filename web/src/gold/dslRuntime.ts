/**
 * Browser `DslRuntime`: Gold DSL outputs computed from silver one bin at a time, a line-by-line port of
 * qmachina_assets/core/gold/dsl_runtime.py (`run_bins` and its kernels) over the same program (dsl.ts) and
 * the same explicit state layout, keeping Python's float operation order. Parity with Python is checked on
 * committed golden vectors for every shipped spec (tests/fixtures/gold_dsl/, 1e-9; codes exactly).
 *
 * Series: cell values follow an absolute tick (slot tick mod 2R+1, restarted when the slot holds another tick
 * or its last bin_seq is not bin_seq - 1); bin values run over contiguous valid bins. An invalid bin
 * (book_valid false or spot 0) computes nothing, breaks every series and emits each output's fill (0 unset).
 */

import { AGG, compileProgram, K, OP, parseDslSpec, SHAPE, SORT, type GoldDslSpec, type Program } from './dsl';
import { robustZ, sortedMedian, windowPush, type WindowCursor } from './rolling';

const AGG_MIN = AGG.min;
const AGG_SUM = AGG.sum;
const AGG_MEAN = AGG.mean;

/** One bin's silver: the bin scalars and the grid columns the program reads (2R+1 rows, k = -R..R). */
export interface DslBinInput {
  readonly binSeq: number | bigint;
  readonly spotRefPriceInt: bigint | string | number;
  readonly bookValid: boolean;
  readonly grid: { readonly k: ArrayLike<number> } & Readonly<Record<string, ArrayLike<number>>>;
}

/** One bin's outputs: one Float64Array of 2R+1 values per output column (float32 outputs rounded with fround). */
export interface DslBinOutput {
  readonly binSeq: number;
  readonly goldValid: boolean;
  readonly values: Readonly<Record<string, Float64Array>>;
}

/** The runtime's explicit state (dsl_runtime.py `STATE_ARRAYS`; ints held as doubles, an empty slot's tick NaN). */
export interface DslState {
  readonly slotTick: Float64Array;
  readonly slotSeq: Float64Array;
  /** [previous bin valid (0/1), its bin_seq] */
  readonly binState: Float64Array;
  readonly stateI: Float64Array;
  readonly stateF: Float64Array;
}

function toBigInt(v: bigint | string | number): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new RangeError(`spot_ref_price_int ${v} is not a safe integer`);
    return BigInt(v);
  }
  return BigInt(v);
}

/** Aggregate of the defined values of x[lo..hi] (inclusive), summed oldest first (dsl_runtime.py `_agg`). */
export function agg(x: Float64Array, lo: number, hi: number, code: number, minp: number): number {
  let c = 0;
  let s = 0.0;
  if (code >= AGG_MIN) {
    let best = NaN;
    for (let i = lo; i <= hi; i++) {
      const v = x[i];
      if (!Number.isNaN(v)) {
        if (c === 0 || (code === AGG_MIN ? v < best : v > best)) best = v;
        c++;
      }
    }
    return c >= minp ? best : NaN;
  }
  for (let i = lo; i <= hi; i++) {
    const v = x[i];
    if (!Number.isNaN(v)) {
      s += v;
      c++;
    }
  }
  if (c < minp || c === 0) return NaN;
  if (code === AGG_SUM) return s;
  const m = s / c;
  if (code === AGG_MEAN) return m;
  if (c < 2) return NaN;
  let ss = 0.0;
  for (let i = lo; i <= hi; i++) {
    const v = x[i];
    if (!Number.isNaN(v)) ss += (v - m) * (v - m);
  }
  return Math.sqrt(ss / (c - 1));
}

function upperBound(a: Float64Array, off: number, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[off + mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function binop(op: number, a: number, b: number): number {
  switch (op) {
    case OP.ADD: return a + b;
    case OP.SUB: return a - b;
    case OP.MUL: return a * b;
    case OP.DIV: return a / b;
    case OP.MIN: return Number.isNaN(a) || Number.isNaN(b) ? NaN : a <= b ? a : b;
    case OP.MAX: return Number.isNaN(a) || Number.isNaN(b) ? NaN : a >= b ? a : b;
    case OP.AND: return a !== 0 && b !== 0 ? 1 : 0;
    case OP.LT: return a < b ? 1 : 0;
    case OP.LE: return a <= b ? 1 : 0;
    case OP.GT: return a > b ? 1 : 0;
    case OP.GE: return a >= b ? 1 : 0;
    case OP.EQ: return a === b ? 1 : 0;
    default: return a !== b ? 1 : 0;
  }
}

function unop(op: number, x: number): number {
  switch (op) {
    case OP.NEG: return -x;
    case OP.ABS: return Math.abs(x);
    case OP.SIGN: return Number.isNaN(x) ? x : x > 0 ? 1 : x < 0 ? -1 : 0;
    case OP.TANH: return Math.tanh(x);
    case OP.EXP: return Math.exp(x);
    case OP.LOG1P: return x >= -1 ? Math.log1p(x) : NaN;
    case OP.SQRT: return x >= 0 ? Math.sqrt(x) : NaN;
    default: return Number.isNaN(x) ? 0 : x; // NAN0
  }
}

export class DslRuntime {
  readonly program: Program;
  readonly tickInt: bigint;
  private readonly w: number;
  private readonly vals: Float64Array[];
  private readonly stack: Float64Array[];
  private readonly fresh: Uint8Array;
  private state: DslState;
  private readonly cur: WindowCursor = { head: 0, length: 0, nSorted: 0 };
  /** Per output: NaN values on valid rows before the fill. */
  readonly nanCounts: Float64Array;

  /** `spec`: the JSON spec (`runtime_config.gold_dsl.spec`) or a parsed one. */
  constructor(spec: GoldDslSpec | unknown, radius: number, tickInt: bigint | number | string, cellWidthMs: number) {
    this.program = compileProgram(parseDslSpec(spec), radius, cellWidthMs);
    this.tickInt = toBigInt(tickInt);
    const p = this.program;
    this.w = p.width;
    this.vals = p.nodes.map(() => new Float64Array(p.width));
    this.stack = Array.from({ length: p.stackDepth }, () => new Float64Array(p.width));
    this.fresh = new Uint8Array(p.width);
    this.state = emptyState(p);
    this.nanCounts = new Float64Array(p.outputs.length);
    p.nodes.forEach((n, i) => {
      if (n.shape !== SHAPE.SCALAR) return;
      if (n.kind === K.CONST) this.vals[i][0] = n.a;
      else if (n.kind === K.EXPR) this.vals[i][0] = this.exprValue(i, 1)[0];
    });
  }

  /** Output column names in spec order. */
  get outputNames(): string[] {
    return this.program.outputs.map((o) => o.name);
  }

  /** Copies of the state arrays. */
  getState(): DslState {
    const s = this.state;
    return { slotTick: s.slotTick.slice(), slotSeq: s.slotSeq.slice(), binState: s.binState.slice(),
      stateI: s.stateI.slice(), stateF: s.stateF.slice() };
  }

  /** Resume from a state of the same program (e.g. the server's checkpoint); throws on a layout mismatch. */
  setState(s: DslState): void {
    const want = emptyState(this.program);
    for (const key of Object.keys(want) as (keyof DslState)[]) {
      if (s[key].length !== want[key].length) throw new RangeError(`DSL state ${key}: ${want[key].length} values expected, got ${s[key].length}`);
    }
    this.state = { slotTick: Float64Array.from(s.slotTick), slotSeq: Float64Array.from(s.slotSeq),
      binState: Float64Array.from(s.binState), stateI: Float64Array.from(s.stateI), stateF: Float64Array.from(s.stateF) };
  }

  step(bin: DslBinInput): DslBinOutput {
    const p = this.program;
    const w = this.w;
    const k = bin.grid.k;
    if (k.length !== w) throw new RangeError(`grid: ${w} rows (k = -R..R) expected, got ${k.length}`);
    for (let j = 0; j < w; j++) if (k[j] !== j - p.radius) throw new RangeError('grid: rows must be ordered with k = -R..R');
    const seq = Number(bin.binSeq);
    const spot = toBigInt(bin.spotRefPriceInt);
    const valid = bin.bookValid && spot > 0n;
    const out = p.outputs.map(() => new Float64Array(w));
    const st = this.state;
    if (!valid) {
      st.binState[0] = 0;
      for (const n of p.nodes) if (n.kind === K.OUTPUT) out[n.out].fill(n.a);
      return this.result(seq, false, out);
    }
    const freshBin = !(st.binState[0] === 1 && st.binState[1] === seq - 1);
    st.binState[0] = 1;
    st.binState[1] = seq;
    const base = Number(spot / this.tickInt) - p.radius;
    const s0 = ((base % w) + w) % w;
    let s = s0;
    for (let j = 0; j < w; j++) {
      const tick = base + j;
      this.fresh[j] = st.slotTick[s] !== tick || st.slotSeq[s] !== seq - 1 ? 1 : 0;
      st.slotTick[s] = tick;
      st.slotSeq[s] = seq;
      if (++s === w) s = 0;
    }
    p.nodes.forEach((n, i) => {
      const vals = this.vals[i];
      switch (n.kind) {
        case K.CONST: return;
        case K.SILVER: {
          const col = bin.grid[p.fields[n.src]];
          if (col === undefined || col.length !== w) throw new RangeError(`grid: column ${p.fields[n.src]} (${w} rows) missing`);
          for (let j = 0; j < w; j++) vals[j] = Number(col[j]);
          return;
        }
        case K.EXPR: {
          const width = n.shape === SHAPE.CELL ? w : 1;
          const r = this.exprValue(i, width);
          for (let j = 0; j < width; j++) vals[j] = n.mode === 1 ? Math.trunc(Math.min(Math.max(Number.isNaN(r[j]) ? 0 : r[j], -128), 127)) : r[j];
          return;
        }
        case K.TANH: {
          const src = this.vals[n.src];
          const width = n.shape === SHAPE.CELL ? w : 1;
          for (let j = 0; j < width; j++) vals[j] = Math.tanh(src[j] / n.a);
          return;
        }
        case K.SPATIAL: {
          const row = this.vals[n.src];
          const r = n.w;
          if (r < 0) {
            vals[0] = agg(row, 0, w - 1, n.mode, 1);
            return;
          }
          for (let j = 0; j < w; j++) {
            const lo = Math.max(0, j - r);
            const hi = Math.min(w - 1, j + r);
            if (n.mode < 0) {
              let acc = 0.0;
              for (let q = lo; q <= hi; q++) acc += p.consts[n.aux + q - j + r] * row[q];
              vals[j] = acc;
            } else {
              vals[j] = agg(row, lo, hi, n.mode, 1);
            }
          }
          return;
        }
        case K.OUTPUT: {
          const src = this.vals[n.src];
          const perBin = p.nodes[n.src].shape !== SHAPE.CELL;
          const o = out[n.out];
          for (let j = 0; j < w; j++) {
            let x = perBin ? src[0] : src[j];
            if (Number.isNaN(x)) {
              this.nanCounts[n.out] += 1;
              if (n.hasFill) x = n.a;
            }
            o[j] = x;
          }
          return;
        }
        default:
          this.temporal(i, freshBin, s0);
      }
    });
    return this.result(seq, true, out);
  }

  private result(seq: number, valid: boolean, out: Float64Array[]): DslBinOutput {
    const values: Record<string, Float64Array> = {};
    this.program.outputs.forEach((o, i) => {
      if (o.dtype === 'float32') for (let j = 0; j < out[i].length; j++) out[i][j] = Math.fround(out[i][j]);
      values[o.name] = out[i];
    });
    return { binSeq: seq, goldValid: valid, values };
  }

  /** Evaluate a node's postfix code over `width` lanes; returns the result lane array (stack[0]). */
  private exprValue(i: number, width: number): Float64Array {
    const p = this.program;
    const n = p.nodes[i];
    const stack = this.stack;
    let sp = 0;
    for (let pc = n.code0; pc < n.code1; pc++) {
      const op = p.code[2 * pc];
      const arg = p.code[2 * pc + 1];
      if (op === OP.LOAD) {
        const src = this.vals[arg];
        const t = stack[sp++];
        if (p.nodes[arg].shape === SHAPE.CELL) for (let j = 0; j < width; j++) t[j] = src[j];
        else t.fill(src[0], 0, width);
      } else if (op === OP.CONST) {
        stack[sp++].fill(p.consts[arg], 0, width);
      } else if (op === OP.CLIP) {
        const x = stack[sp - 3], lo = stack[sp - 2], hi = stack[sp - 1];
        for (let j = 0; j < width; j++) x[j] = binop(OP.MIN, binop(OP.MAX, x[j], lo[j]), hi[j]);
        sp -= 2;
      } else if (op === OP.WHERE) {
        const c = stack[sp - 3], a = stack[sp - 2], b = stack[sp - 1];
        for (let j = 0; j < width; j++) c[j] = c[j] !== 0 && !Number.isNaN(c[j]) ? a[j] : b[j];
        sp -= 2;
      } else if (op >= OP.NEG) {
        const x = stack[sp - 1];
        for (let j = 0; j < width; j++) x[j] = unop(op, x[j]);
      } else {
        const a = stack[sp - 2], b = stack[sp - 1];
        for (let j = 0; j < width; j++) a[j] = binop(op, a[j], b[j]);
        sp -= 1;
      }
    }
    return stack[0];
  }

  /** A temporal / norm node over one bin: each lane one sample of its series (dsl_runtime.py `_node_temporal`). */
  private temporal(i: number, freshBin: boolean, s0: number): void {
    const n = this.program.nodes[i];
    const w = this.w;
    const { stateI: si, stateF: sf } = this.state;
    const src = this.vals[n.src];
    const vals = this.vals[i];
    const cell = n.shape === SHAPE.CELL;
    const width = cell ? w : 1;
    let s = cell ? s0 : 0;
    for (let j = 0; j < width; j++) {
      const restart = cell ? this.fresh[j] === 1 : freshBin;
      const i0 = n.ioff + s * n.isize;
      const f0 = n.foff + s * n.fsize;
      if (restart) for (let q = 0; q < n.isize; q++) si[i0 + q] = 0;
      const v = src[j];
      let y: number;
      switch (n.kind) {
        case K.WINDOW: {
          const t = si[i0];
          si[i0] = t + 1;
          const [lo, m] = ringPush(sf, f0, n.w, t, v);
          y = agg(sf, lo, lo + m - 1, n.mode, n.minp);
          break;
        }
        case K.SORTED: {
          const cur = this.cur;
          cur.head = si[i0];
          cur.length = si[i0 + 1];
          cur.nSorted = si[i0 + 2];
          windowPush(sf, f0, sf, f0 + n.w, n.w, cur, v);
          si[i0] = cur.head;
          si[i0 + 1] = cur.length;
          si[i0 + 2] = cur.nSorted;
          const ns = cur.nSorted;
          if (n.mode === SORT.ROBUST) y = robustZ(v, sf, f0 + n.w, ns, n.minp, n.a);
          else if (ns < n.minp || ns === 0) y = NaN;
          else if (n.mode === SORT.MEDIAN) y = sortedMedian(sf, f0 + n.w, ns);
          else y = Number.isNaN(v) ? NaN : upperBound(sf, f0 + n.w, ns, v) / ns;
          break;
        }
        case K.MOMENTS:
          y = stepMoments(v, si, i0, sf, f0, n.w, n.minp, n.a, n.mode === 1);
          break;
        case K.EWM: {
          let c = si[i0];
          let m = c > 0 ? sf[f0] : NaN;
          if (!Number.isNaN(v)) {
            m = c === 0 ? v : n.a * v + (1.0 - n.a) * m;
            c += 1;
            si[i0] = c;
            sf[f0] = m;
          }
          y = c >= n.minp ? m : NaN;
          break;
        }
        default: { // SHIFT: lag / diff
          const t = si[i0];
          si[i0] = t + 1;
          const q = f0 + (t % n.w);
          y = t >= n.w ? (n.mode === 1 ? v - sf[q] : sf[q]) : NaN;
          sf[q] = v;
        }
      }
      vals[j] = y;
      if (++s === w) s = 0;
    }
  }
}

/** Write sample t into the doubled ring sf[f0 .. f0+2w); [start of the last min(w, t+1) samples, their count]. */
function ringPush(sf: Float64Array, f0: number, w: number, t: number, v: number): [number, number] {
  const p = t % w;
  sf[f0 + p] = v;
  sf[f0 + p + w] = v;
  const m = t + 1 > w ? w : t + 1;
  return [f0 + ((t - m + 1) % w), m];
}

/** (count, mean, M2) of the defined values of x[lo..hi], two passes (dsl_runtime.py `_moments`). */
function moments(x: Float64Array, lo: number, hi: number): [number, number, number] {
  let n = 0;
  let s = 0.0;
  for (let i = lo; i <= hi; i++) {
    if (!Number.isNaN(x[i])) {
      s += x[i];
      n++;
    }
  }
  if (n === 0) return [0, 0.0, 0.0];
  const m = s / n;
  let m2 = 0.0;
  for (let i = lo; i <= hi; i++) if (!Number.isNaN(x[i])) m2 += (x[i] - m) * (x[i] - m);
  return [n, m, m2];
}

/** Rolling std or z-score: Welford updates, recomputed exactly every w samples (dsl_runtime.py `_step_moments`). */
function stepMoments(v: number, si: Float64Array, i0: number, sf: Float64Array, f0: number, w: number, minp: number,
  eps: number, zscore: boolean): number {
  const t = si[i0];
  let n = si[i0 + 1];
  let m = sf[f0];
  let m2 = sf[f0 + 1];
  const ring = f0 + 2;
  const old = sf[ring + (t % w)];
  const [lo, cnt] = ringPush(sf, ring, w, t, v);
  if (t % w === 0) {
    [n, m, m2] = moments(sf, lo, lo + cnt - 1);
  } else {
    if (t >= w && !Number.isNaN(old)) {
      n -= 1;
      if (n === 0) {
        m = 0.0;
        m2 = 0.0;
      } else {
        const d = old - m;
        m -= d / n;
        m2 -= d * (old - m);
      }
    }
    if (!Number.isNaN(v)) {
      n += 1;
      const d = v - m;
      m += d / n;
      m2 += d * (v - m);
    }
  }
  si[i0] = t + 1;
  si[i0 + 1] = n;
  sf[f0] = m;
  sf[f0 + 1] = m2;
  const sd = n >= 2 && n >= minp ? Math.sqrt(Math.max(m2, 0.0) / (n - 1)) : NaN;
  if (!zscore) return sd;
  if (Number.isNaN(v)) return NaN;
  return sd > eps ? (v - m) / sd : 0.0;
}

/** The server's `DslRuntime.state_json()` (little-endian arrays in base64) as a DslState; `key` must match. */
export function decodeDslState(msg: unknown, expectKey?: string): DslState {
  const m = msg as Record<string, { dtype: string; b64: string } | string>;
  if (expectKey !== undefined && m.key !== expectKey) throw new RangeError(`DSL state is for ${String(m.key)}, this runtime is ${expectKey}`);
  const arr = (name: string): Float64Array => {
    const a = m[name];
    if (typeof a !== 'object' || a === null) throw new RangeError(`DSL state: ${name} missing`);
    const bin = atob(a.b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const view = new DataView(bytes.buffer);
    const n = bytes.length / 8;
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      if (a.dtype === 'float64') out[i] = view.getFloat64(8 * i, true);
      else if (a.dtype === 'int64') {
        const v = view.getBigInt64(8 * i, true);
        out[i] = v === -(2n ** 63n) ? NaN : Number(v); // an empty slot's tick
      } else throw new RangeError(`DSL state: ${name} has dtype ${a.dtype}`);
    }
    return out;
  };
  return { slotTick: arr('slot_tick'), slotSeq: arr('slot_seq'), binState: arr('bin_state'), stateI: arr('state_i'), stateF: arr('state_f') };
}

function emptyState(p: Program): DslState {
  return {
    slotTick: new Float64Array(p.width).fill(NaN), slotSeq: new Float64Array(p.width), binState: new Float64Array(2),
    stateI: new Float64Array(p.stateSizes[0]), stateF: new Float64Array(p.stateSizes[1]),
  };
}
