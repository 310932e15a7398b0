/**
 * Gold DSL specs in the browser: the spec a `runtime_config` carries (`gold_dsl.spec`), checked against
 * what this executor runs (`dsl-capabilities.json`, which server-side preflight reads too), and compiled to
 * the program of qmachina_assets/core/gold/dsl_runtime.py: the same node order, expression postfix code,
 * constants and state layout, so `DslRuntime` (dslRuntime.ts) runs the same float operations.
 *
 * The server validated the spec before publishing it (core/gold/dsl.py `validate`); this module re-checks
 * structure and capabilities and refuses anything else with a `DslSpecError` naming the node.
 */

import capabilities from './dsl-capabilities.json';

export const DSL_CAPABILITIES = capabilities;

export class DslSpecError extends Error {
  constructor(message: string) {
    super(`gold_dsl: ${message}`);
    this.name = 'DslSpecError';
  }
}

export interface SilverRefNode { readonly type: 'silver_ref'; readonly field: string }
export interface ConstNode { readonly type: 'const'; readonly value: number }
export interface ExprNode {
  readonly type: 'expr'; readonly inputs: Readonly<Record<string, string>>; readonly expr: string;
  readonly dtype: 'float64' | 'int8';
}
export interface TemporalNode {
  readonly type: 'temporal_window'; readonly source: string;
  readonly agg: 'mean' | 'sum' | 'std' | 'min' | 'max' | 'median' | 'ewm' | 'diff' | 'lag';
  readonly window_bins: number | null; readonly alpha: number | null; readonly min_periods: number;
  readonly lag_bins: number;
}
export interface SpatialNode {
  readonly type: 'spatial_neighborhood'; readonly source: string; readonly radius_ticks: number | 'all';
  readonly agg: 'mean' | 'sum' | 'max' | 'min' | 'std' | 'weighted'; readonly weights: readonly number[] | null;
}
export interface NormNode {
  readonly type: 'norm'; readonly source: string; readonly method: 'robust_zscore' | 'zscore' | 'rank' | 'tanh';
  readonly window_bins: number | null; readonly min_periods: number; readonly scale: number | null;
  readonly eps: number;
}
export interface OutputNode {
  readonly type: 'output'; readonly source: string; readonly name: string;
  readonly dtype: 'float32' | 'float64' | 'int8'; readonly fill_nan: number | null;
}
export type DslNode = SilverRefNode | ConstNode | ExprNode | TemporalNode | SpatialNode | NormNode | OutputNode;

export interface GoldDslSpec {
  readonly version: 1;
  readonly name: string;
  readonly nodes: Readonly<Record<string, DslNode>>;
}

// ---- parsing ---------------------------------------------------------------------------------------------

const DEFAULTS: Record<string, Record<string, unknown>> = {
  silver_ref: {},
  const: {},
  expr: { inputs: {}, dtype: 'float64' },
  temporal_window: { window_bins: null, alpha: null, min_periods: 1, lag_bins: 1, center: false },
  spatial_neighborhood: { weights: null },
  norm: { window_bins: null, min_periods: 1, scale: null, eps: 1e-12, center: false },
  output: { dtype: 'float32', fill_nan: null },
};
const REQUIRED: Record<string, string[]> = {
  silver_ref: ['field'], const: ['value'], expr: ['expr'], temporal_window: ['source', 'agg'],
  spatial_neighborhood: ['source', 'radius_ticks', 'agg'], norm: ['source', 'method'], output: ['source', 'name'],
};

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** A spec from JSON (defaults filled in, every node checked against the capabilities); DslSpecError otherwise. */
export function parseDslSpec(raw: unknown): GoldDslSpec {
  if (!isObject(raw)) throw new DslSpecError('spec: an object expected');
  if (raw.version !== 1) throw new DslSpecError(`spec: version 1 expected, got ${JSON.stringify(raw.version)}`);
  if (!isObject(raw.nodes)) throw new DslSpecError('spec: nodes: an object expected');
  const nodes: Record<string, DslNode> = {};
  const caps = capabilities.node_types as Record<string, Record<string, string[]>>;
  for (const [name, rawNode] of Object.entries(raw.nodes)) {
    if (!isObject(rawNode) || typeof rawNode.type !== 'string') throw new DslSpecError(`node '${name}': an object with a type expected`);
    const type = rawNode.type;
    const rules = caps[type];
    if (rules === undefined) throw new DslSpecError(`node '${name}': node type '${type}' is not run by the browser`);
    for (const key of REQUIRED[type] ?? []) {
      if (rawNode[key] === undefined) throw new DslSpecError(`node '${name}': field '${key}' missing`);
    }
    const node = { ...DEFAULTS[type], ...rawNode } as Record<string, unknown>;
    for (const [field, allowed] of Object.entries(rules)) {
      if (!allowed.includes(node[field] as string)) {
        throw new DslSpecError(`node '${name}': ${type} ${field} '${String(node[field])}' is not run by the browser (runs: ${allowed.join(', ')})`);
      }
    }
    if (node.center === true) throw new DslSpecError(`node '${name}': center: true reads future bins`);
    nodes[name] = node as unknown as DslNode;
  }
  for (const [name, node] of Object.entries(nodes)) {
    for (const ref of refs(node)) {
      if (!(ref in nodes)) throw new DslSpecError(`node '${name}': references unknown node '${ref}'`);
    }
  }
  return { version: 1, name: typeof raw.name === 'string' ? raw.name : 'gold_dsl', nodes };
}

export function refs(node: DslNode): string[] {
  if (node.type === 'expr') return Object.values(node.inputs);
  return 'source' in node ? [node.source] : [];
}

/** Kahn's algorithm in node order (dsl.py `topo_order`); throws on a cycle. */
export function topoOrder(nodes: Readonly<Record<string, DslNode>>): string[] {
  const names = Object.keys(nodes);
  const indeg = new Map<string, number>(names.map((n) => [n, 0]));
  const users = new Map<string, string[]>(names.map((n) => [n, []]));
  for (const n of names) {
    for (const r of new Set(refs(nodes[n]))) {
      indeg.set(n, indeg.get(n)! + 1);
      users.get(r)!.push(n);
    }
  }
  const ready = names.filter((n) => indeg.get(n) === 0);
  const order: string[] = [];
  for (let i = 0; i < ready.length; i++) {
    const n = ready[i];
    order.push(n);
    for (const u of users.get(n)!) {
      indeg.set(u, indeg.get(u)! - 1);
      if (indeg.get(u) === 0) ready.push(u);
    }
  }
  if (order.length !== names.length) throw new DslSpecError(`cycle through ${names.filter((n) => !order.includes(n)).join(', ')}`);
  return order;
}

export function outputNodes(spec: GoldDslSpec): string[] {
  return Object.keys(spec.nodes).filter((n) => spec.nodes[n].type === 'output');
}

/** The output column names of a spec, in spec order (what the viewer can show as fields). */
export function outputNames(spec: GoldDslSpec): string[] {
  return outputNodes(spec).map((n) => (spec.nodes[n] as OutputNode).name);
}

// ---- expressions -----------------------------------------------------------------------------------------

export const OP = {
  LOAD: 0, CONST: 1, ADD: 2, SUB: 3, MUL: 4, DIV: 5, LT: 6, LE: 7, GT: 8, GE: 9, EQ: 10, NE: 11, AND: 12, MIN: 13,
  MAX: 14, NEG: 15, ABS: 16, SIGN: 17, TANH: 18, EXP: 19, LOG1P: 20, SQRT: 21, NAN0: 22, CLIP: 23, WHERE: 24,
} as const;
const BINOPS: Record<string, number> = { '+': OP.ADD, '-': OP.SUB, '*': OP.MUL, '/': OP.DIV };
const CMPOPS: Record<string, number> = { '<': OP.LT, '<=': OP.LE, '>': OP.GT, '>=': OP.GE, '==': OP.EQ, '!=': OP.NE };
const UNARY_FN: Record<string, number> = {
  abs: OP.ABS, sign: OP.SIGN, tanh: OP.TANH, exp: OP.EXP, log1p: OP.LOG1P, sqrt: OP.SQRT, nan_to_zero: OP.NAN0,
};
const ARITY: Record<string, [number, number]> = {
  abs: [1, 1], sign: [1, 1], tanh: [1, 1], exp: [1, 1], log1p: [1, 1], sqrt: [1, 1], nan_to_zero: [1, 1],
  min: [2, Infinity], max: [2, Infinity], clip: [3, 3], where: [3, 3],
};

/** Expression syntax tree (the Python `ast` subset the DSL allows). */
export type ExprAst =
  | { readonly k: 'num'; readonly value: number }
  | { readonly k: 'name'; readonly id: string }
  | { readonly k: 'neg'; readonly x: ExprAst }
  | { readonly k: 'bin'; readonly op: string; readonly a: ExprAst; readonly b: ExprAst }
  | { readonly k: 'cmp'; readonly first: ExprAst; readonly ops: readonly string[]; readonly rest: readonly ExprAst[] }
  | { readonly k: 'call'; readonly fn: string; readonly args: readonly ExprAst[] };

const TOKEN = /\s*(?:(\d[\d_]*\.?[\d_]*(?:[eE][+-]?\d[\d_]*)?|\.\d[\d_]*(?:[eE][+-]?\d[\d_]*)?)|([A-Za-z_]\w*)|(<=|>=|==|!=|[-+*/(),<>]))/y;

/** Parse an expression with Python's precedence: comparisons (chained) < + - < * / < unary - + < calls, atoms. */
export function parseExpr(text: string): ExprAst {
  const toks: string[] = [];
  const kinds: ('num' | 'name' | 'op')[] = [];
  TOKEN.lastIndex = 0;
  let pos = 0;
  while (pos < text.length) {
    if (/^\s*$/.test(text.slice(pos))) break;
    TOKEN.lastIndex = pos;
    const m = TOKEN.exec(text);
    if (m === null) throw new DslSpecError(`expression '${text}': unexpected text at ${pos}: '${text.slice(pos, pos + 10)}'`);
    toks.push(m[1] ?? m[2] ?? m[3]);
    kinds.push(m[1] !== undefined ? 'num' : m[2] !== undefined ? 'name' : 'op');
    pos = TOKEN.lastIndex;
  }
  let i = 0;
  const fail = (what: string): never => {
    throw new DslSpecError(`expression '${text}': ${what} at token ${i} ('${toks[i] ?? 'end'}')`);
  };
  const eat = (t: string): boolean => {
    if (kinds[i] === 'op' && toks[i] === t) {
      i++;
      return true;
    }
    return false;
  };
  const comparison = (): ExprAst => {
    const first = arith();
    const ops: string[] = [];
    const rest: ExprAst[] = [];
    while (kinds[i] === 'op' && toks[i] in CMPOPS) {
      ops.push(toks[i++]);
      rest.push(arith());
    }
    return ops.length ? { k: 'cmp', first, ops, rest } : first;
  };
  const arith = (): ExprAst => {
    let a = term();
    while (kinds[i] === 'op' && (toks[i] === '+' || toks[i] === '-')) {
      const op = toks[i++];
      a = { k: 'bin', op, a, b: term() };
    }
    return a;
  };
  const term = (): ExprAst => {
    let a = factor();
    while (kinds[i] === 'op' && (toks[i] === '*' || toks[i] === '/')) {
      const op = toks[i++];
      a = { k: 'bin', op, a, b: factor() };
    }
    return a;
  };
  const factor = (): ExprAst => {
    if (eat('-')) return { k: 'neg', x: factor() };
    if (eat('+')) return factor();
    return atom();
  };
  const atom = (): ExprAst => {
    if (kinds[i] === 'num') {
      const value = Number(toks[i++].replaceAll('_', ''));
      if (!Number.isFinite(value)) fail('a finite number expected');
      return { k: 'num', value };
    }
    if (kinds[i] === 'name') {
      const id = toks[i++];
      if (!eat('(')) return { k: 'name', id };
      const args: ExprAst[] = [];
      if (!eat(')')) {
        do args.push(comparison()); while (eat(','));
        if (!eat(')')) fail("')' expected");
      }
      return { k: 'call', fn: id, args };
    }
    if (eat('(')) {
      const e = comparison();
      if (!eat(')')) fail("')' expected");
      return e;
    }
    return fail('a number, name or ( expected');
  };
  const tree = comparison();
  if (i !== toks.length) fail('end of expression expected');
  return tree;
}

/** Postfix code of an expression (dsl_runtime.py `_ExprCompiler`: the same order, constants appended to `consts`). */
export function compileExpr(tree: ExprAst, rows: Readonly<Record<string, number>>, consts: number[], dtS: number,
  where: string): { code: number[]; depth: number } {
  const code: number[] = [];
  let sp = 0;
  let depth = 0;
  const emit = (op: number, arg: number, pushes: number) => {
    code.push(op, arg);
    sp += pushes;
    depth = Math.max(depth, sp);
  };
  const constant = (v: number) => {
    consts.push(v);
    emit(OP.CONST, consts.length - 1, 1);
  };
  const walk = (n: ExprAst): void => {
    switch (n.k) {
      case 'num': constant(n.value); return;
      case 'name':
        if (n.id in rows) emit(OP.LOAD, rows[n.id], 1);
        else if (n.id === 'dt_s') constant(dtS);
        else throw new DslSpecError(`node '${where}': unknown name '${n.id}'`);
        return;
      case 'neg': walk(n.x); emit(OP.NEG, 0, 0); return;
      case 'bin': walk(n.a); walk(n.b); emit(BINOPS[n.op], 0, -1); return;
      case 'cmp': {
        let left = n.first;
        n.ops.forEach((op, j) => {
          walk(left);
          walk(n.rest[j]);
          emit(CMPOPS[op], 0, -1);
          if (j) emit(OP.AND, 0, -1);
          left = n.rest[j];
        });
        return;
      }
      case 'call': {
        const arity = ARITY[n.fn];
        if (arity === undefined || !(capabilities.expr_functions as string[]).includes(n.fn)) {
          throw new DslSpecError(`node '${where}': function '${n.fn}' is not run by the browser`);
        }
        if (n.args.length < arity[0] || n.args.length > arity[1]) throw new DslSpecError(`node '${where}': ${n.fn}() takes ${arity[0]}..${arity[1]} arguments`);
        if (n.fn === 'min' || n.fn === 'max') {
          walk(n.args[0]);
          for (const a of n.args.slice(1)) {
            walk(a);
            emit(n.fn === 'min' ? OP.MIN : OP.MAX, 0, -1);
          }
        } else {
          n.args.forEach(walk);
          if (n.fn === 'clip') emit(OP.CLIP, 0, -2);
          else if (n.fn === 'where') emit(OP.WHERE, 0, -2);
          else emit(UNARY_FN[n.fn], 0, 0);
        }
      }
    }
  };
  walk(tree);
  return { code, depth };
}

// ---- the program -----------------------------------------------------------------------------------------

export const K = { SILVER: 0, CONST: 1, EXPR: 2, WINDOW: 3, SORTED: 4, MOMENTS: 5, EWM: 6, SHIFT: 7, TANH: 8, SPATIAL: 9, OUTPUT: 10 } as const;
export const SHAPE = { SCALAR: 0, BIN: 1, CELL: 2 } as const;
export const AGG: Record<string, number> = { mean: 0, sum: 1, std: 2, min: 3, max: 4 };
export const SORT = { MEDIAN: 0, ROBUST: 1, RANK: 2 } as const;

/** One compiled node (the columns of dsl_runtime.py's `prog_i` / `prog_f`). */
export interface ProgramNode {
  readonly name: string;
  readonly kind: number;
  readonly shape: number;
  readonly src: number;
  readonly w: number;
  readonly minp: number;
  readonly mode: number;
  readonly ioff: number;
  readonly foff: number;
  readonly isize: number;
  readonly fsize: number;
  readonly code0: number;
  readonly code1: number;
  readonly out: number;
  readonly hasFill: boolean;
  readonly aux: number;
  readonly a: number;
}

export interface Program {
  readonly spec: GoldDslSpec;
  readonly radius: number;
  readonly width: number;
  readonly nodes: readonly ProgramNode[];
  /** Silver grid columns read, in first-use order. */
  readonly fields: readonly string[];
  readonly outputs: readonly { readonly name: string; readonly dtype: OutputNode['dtype'] }[];
  readonly code: Int32Array;
  readonly consts: Float64Array;
  readonly stackDepth: number;
  readonly stateSizes: readonly [number, number];
}

function liveNodes(spec: GoldDslSpec): Set<string> {
  const live = new Set<string>();
  const todo = outputNodes(spec);
  while (todo.length) {
    const n = todo.pop()!;
    if (!live.has(n)) {
      live.add(n);
      todo.push(...refs(spec.nodes[n]));
    }
  }
  return live;
}

/** Compile a spec for a ±radius grid (dsl_runtime.py `Program`). */
export function compileProgram(spec: GoldDslSpec, radius: number, cellWidthMs: number): Program {
  const width = 2 * radius + 1;
  const live = liveNodes(spec);
  const names = topoOrder(spec.nodes).filter((n) => live.has(n));
  const rows: Record<string, number> = Object.fromEntries(names.map((n, i) => [n, i]));
  const shapes: Record<string, number> = {};
  const outIndex: Record<string, number> = {};
  const outputs: { name: string; dtype: OutputNode['dtype'] }[] = [];
  for (const n of outputNodes(spec)) {
    const o = spec.nodes[n] as OutputNode;
    outIndex[n] = outputs.length;
    outputs.push({ name: o.name, dtype: o.dtype });
  }
  const fields: string[] = [];
  const consts: number[] = [];
  const code: number[] = [];
  let depth = 1;
  let nI = 0;
  let nF = 0;
  const dtS = cellWidthMs / 1000.0;
  const nodes: ProgramNode[] = names.map((name) => {
    const node = spec.nodes[name];
    let kind = 0, src = 0, w = 0, minp = 0, mode = 0, isize = 0, fsize = 0, code0 = 0, code1 = 0, out = 0, aux = 0, a = 0;
    let hasFill = false;
    let shape: number;
    switch (node.type) {
      case 'silver_ref':
        kind = K.SILVER;
        shape = SHAPE.CELL;
        if (!fields.includes(node.field)) fields.push(node.field);
        src = fields.indexOf(node.field);
        break;
      case 'const':
        kind = K.CONST;
        shape = SHAPE.SCALAR;
        a = node.value;
        break;
      case 'expr': {
        kind = K.EXPR;
        shape = Math.max(SHAPE.SCALAR, ...Object.values(node.inputs).map((r) => shapes[r]));
        const local = Object.fromEntries(Object.entries(node.inputs).map(([l, r]) => [l, rows[r]]));
        const c = compileExpr(parseExpr(node.expr), local, consts, dtS, name);
        code0 = code.length / 2;
        code.push(...c.code);
        code1 = code.length / 2;
        depth = Math.max(depth, c.depth);
        mode = node.dtype === 'int8' ? 1 : 0;
        break;
      }
      case 'temporal_window':
        src = rows[node.source];
        shape = shapes[node.source];
        minp = node.min_periods;
        if (node.agg === 'diff' || node.agg === 'lag') {
          kind = K.SHIFT; w = node.lag_bins; mode = node.agg === 'diff' ? 1 : 0; isize = 1; fsize = node.lag_bins;
        } else if (node.agg === 'ewm') {
          kind = K.EWM; a = node.alpha!; isize = 1; fsize = 1;
        } else if (node.agg === 'median') {
          kind = K.SORTED; w = node.window_bins!; mode = SORT.MEDIAN; isize = 3; fsize = 2 * w;
        } else if (node.agg === 'std') {
          kind = K.MOMENTS; w = node.window_bins!; mode = 0; isize = 2; fsize = 2 + 2 * w;
        } else {
          kind = K.WINDOW; w = node.window_bins!; mode = AGG[node.agg]; isize = 1; fsize = 2 * w;
        }
        break;
      case 'norm':
        src = rows[node.source];
        shape = shapes[node.source];
        if (node.method === 'tanh') {
          kind = K.TANH; a = node.scale!;
        } else {
          w = node.window_bins!; minp = node.min_periods; a = node.eps;
          if (node.method === 'zscore') {
            kind = K.MOMENTS; mode = 1; isize = 2; fsize = 2 + 2 * w;
          } else {
            kind = K.SORTED; mode = node.method === 'robust_zscore' ? SORT.ROBUST : SORT.RANK; isize = 3; fsize = 2 * w;
          }
        }
        break;
      case 'spatial_neighborhood':
        kind = K.SPATIAL;
        src = rows[node.source];
        shape = node.radius_ticks === 'all' ? SHAPE.BIN : SHAPE.CELL;
        w = node.radius_ticks === 'all' ? -1 : node.radius_ticks;
        mode = node.agg === 'weighted' ? -1 : AGG[node.agg];
        if (node.weights !== null) {
          aux = consts.length;
          consts.push(...node.weights);
        }
        break;
      case 'output':
        kind = K.OUTPUT;
        shape = shapes[node.source];
        src = rows[node.source];
        out = outIndex[name];
        hasFill = node.fill_nan !== null;
        a = node.fill_nan ?? 0.0;
        break;
    }
    shapes[name] = shape;
    const slots = shape === SHAPE.CELL ? width : 1;
    const p: ProgramNode = { name, kind, shape, src, w, minp, mode, ioff: nI, foff: nF, isize, fsize, code0, code1, out, hasFill, aux, a };
    nI += slots * isize;
    nF += slots * fsize;
    return p;
  });
  return {
    spec, radius, width, nodes, fields, outputs, code: Int32Array.from(code), consts: Float64Array.from(consts),
    stackDepth: depth, stateSizes: [nI, nF],
  };
}
