import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tableFromIPC, type Table } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { compileProgram, DSL_CAPABILITIES, DslSpecError, outputNames, parseDslSpec, parseExpr } from './dsl';
import { decodeDslState, DslRuntime } from './dslRuntime';

const FIXTURES = fileURLToPath(new URL('../../../tests/fixtures/gold_dsl/', import.meta.url));
const meta = JSON.parse(readFileSync(FIXTURES + 'config.json', 'utf8'));

function readTable(name: string): Table {
  return tableFromIPC(readFileSync(FIXTURES + name));
}

function spec(name: string): unknown {
  return JSON.parse(readFileSync(`${FIXTURES}${name}.spec.json`, 'utf8'));
}

describe('Gold DSL parity with the Python golden vectors (tests/fixtures/gold_dsl)', () => {
  const bins = readTable('bins.arrow');
  const grid = readTable('grid.arrow');
  const radius: number = meta.grid_radius_ticks;
  const rows = 2 * radius + 1;
  const nBins = bins.numRows;
  const gridCols = Object.fromEntries(grid.schema.fields.map((f) => [f.name, grid.getChild(f.name)!.toArray() as ArrayLike<number>]));

  it('covers every shipped spec (configs/gold) and the coverage spec', () => {
    const sources = Object.values(meta.specs).map((s) => (s as { source: string }).source);
    expect(sources).toContain('configs/gold/builtin.yaml');
    expect(sources).toContain('configs/gold/depth_imbalance.yaml');
    expect(Object.keys(meta.specs)).toContain('every_node');
    expect(grid.numRows).toBe(nBins * rows);
  });

  for (const name of Object.keys(meta.specs)) {
    it(`${name}: every output bin by bin (1e-9; int8 exactly)`, () => {
      const rt = new DslRuntime(spec(name), radius, BigInt(meta.tick_int), meta.cell_width_ms);
      const expected = readTable(`${name}.expected.arrow`);
      const outs: string[] = meta.specs[name].outputs;
      expect(rt.outputNames).toEqual(outs);
      const seqs = bins.getChild('bin_seq')!.toArray() as BigInt64Array;
      const spots = bins.getChild('spot_ref_price_int')!.toArray() as BigInt64Array;
      const valid = bins.getChild('book_valid')!;
      const expValid = expected.getChild('gold_valid')!;
      const exp = Object.fromEntries(outs.map((c) => [c, expected.getChild(c)!]));
      const maxDiff: Record<string, number> = Object.fromEntries(outs.map((c) => [c, 0]));
      const nonZero: Record<string, number> = Object.fromEntries(outs.map((c) => [c, 0]));
      for (let b = 0; b < nBins; b++) {
        const g: Record<string, ArrayLike<number>> = {};
        for (const [c, v] of Object.entries(gridCols)) g[c] = (v as Float64Array).subarray(b * rows, (b + 1) * rows);
        const out = rt.step({ binSeq: seqs[b], spotRefPriceInt: spots[b], bookValid: valid.get(b) as boolean, grid: g as never });
        for (let j = 0; j < rows; j++) {
          const r = b * rows + j;
          expect(out.goldValid).toBe(expValid.get(r));
          for (const c of outs) {
            const want = Number(exp[c].get(r));
            const got = out.values[c][j];
            const d = Number.isNaN(want) && Number.isNaN(got) ? 0 : Math.abs(got - want);
            if (!(d <= maxDiff[c])) maxDiff[c] = Number.isNaN(d) ? Infinity : d;
            if (want !== 0 && !Number.isNaN(want)) nonZero[c]++;
          }
        }
      }
      console.info(`${name}: max |diff| per output over ${nBins} bins x ${rows} rows`, maxDiff);
      for (const c of outs) {
        const isInt = expected.schema.fields.find((f) => f.name === c)!.type.toString().startsWith('Int');
        expect(maxDiff[c], c).toBeLessThanOrEqual(isInt ? 0 : meta.tolerance);
        expect(nonZero[c], `${c} is exercised`).toBeGreaterThan(0);
      }
    });
  }

  for (const name of Object.keys(meta.specs)) {
    it(`${name}: resumes from the Python runtime's state mid-way and matches the rest (same state layout)`, () => {
      const st = JSON.parse(readFileSync(`${FIXTURES}${name}.state.json`, 'utf8'));
      const rt = new DslRuntime(spec(name), radius, BigInt(meta.tick_int), meta.cell_width_ms);
      rt.setState(decodeDslState(st));
      const expected = readTable(`${name}.expected.arrow`);
      const outs: string[] = meta.specs[name].outputs;
      const seqs = bins.getChild('bin_seq')!.toArray() as BigInt64Array;
      const spots = bins.getChild('spot_ref_price_int')!.toArray() as BigInt64Array;
      const valid = bins.getChild('book_valid')!;
      let worst = 0;
      for (let b = st.after_bins; b < nBins; b++) {
        const g: Record<string, ArrayLike<number>> = {};
        for (const [c, v] of Object.entries(gridCols)) g[c] = (v as Float64Array).subarray(b * rows, (b + 1) * rows);
        const out = rt.step({ binSeq: seqs[b], spotRefPriceInt: spots[b], bookValid: valid.get(b) as boolean, grid: g as never });
        for (const c of outs) {
          for (let j = 0; j < rows; j++) {
            const want = Number(expected.getChild(c)!.get(b * rows + j));
            const got = out.values[c][j];
            const d = Number.isNaN(want) && Number.isNaN(got) ? 0 : Math.abs(got - want);
            worst = Math.max(worst, Number.isNaN(d) ? Infinity : d);
          }
        }
      }
      expect(worst).toBeLessThanOrEqual(meta.tolerance);
      // a cold runtime would not match: the state carries real warm-up
      const cold = new DslRuntime(spec(name), radius, BigInt(meta.tick_int), meta.cell_width_ms);
      expect(Array.from(cold.getState().stateF).some((x, i) => x !== rt.getState().stateF[i])).toBe(true);
    });
  }

  it('resumes from a copy of its state exactly (the server hands its state over at a mid-day start)', () => {
    const a = new DslRuntime(spec('every_node'), radius, BigInt(meta.tick_int), meta.cell_width_ms);
    const seqs = bins.getChild('bin_seq')!.toArray() as BigInt64Array;
    const spots = bins.getChild('spot_ref_price_int')!.toArray() as BigInt64Array;
    const input = (b: number) => {
      const g: Record<string, ArrayLike<number>> = {};
      for (const [c, v] of Object.entries(gridCols)) g[c] = (v as Float64Array).subarray(b * rows, (b + 1) * rows);
      return { binSeq: seqs[b], spotRefPriceInt: spots[b], bookValid: true, grid: g as never };
    };
    for (let b = 0; b < 150; b++) a.step(input(b));
    const b2 = new DslRuntime(spec('every_node'), radius, BigInt(meta.tick_int), meta.cell_width_ms);
    b2.setState(a.getState());
    for (let b = 150; b < nBins; b++) {
      const x = a.step(input(b));
      const y = b2.step(input(b));
      for (const c of a.outputNames) expect(Array.from(y.values[c])).toEqual(Array.from(x.values[c]));
    }
    expect(() => b2.setState({ ...a.getState(), stateF: new Float64Array(3) })).toThrow(/stateF/);
  });
});

describe('Gold DSL specs in the browser', () => {
  const depth = spec('depth_imbalance');

  it('lists the outputs (the viewer fields) in spec order', () => {
    expect(outputNames(parseDslSpec(depth))).toEqual(meta.specs.depth_imbalance.outputs);
  });

  it('parses expressions with Python precedence and chained comparisons', () => {
    const code = (text: string) => {
      const consts: number[] = [];
      return { ...compileProgramExpr(text, consts), consts };
    };
    // -a * b: unary minus binds tighter than * (Python); a - b - c is left-associative
    expect(parseExpr('-a * b')).toEqual({ k: 'bin', op: '*', a: { k: 'neg', x: { k: 'name', id: 'a' } }, b: { k: 'name', id: 'b' } });
    expect(parseExpr('a - b - c')).toEqual({ k: 'bin', op: '-', a: { k: 'bin', op: '-', a: { k: 'name', id: 'a' }, b: { k: 'name', id: 'b' } }, b: { k: 'name', id: 'c' } });
    expect(parseExpr('1 < a <= 2').k).toBe('cmp');
    expect(parseExpr('1_000.5e-3')).toEqual({ k: 'num', value: 1.0005 });
    expect(code('min(a, b, 2)').consts).toEqual([2]);
    expect(() => parseExpr('a +')).toThrow(DslSpecError);
    expect(() => parseExpr('a ** 2')).toThrow(DslSpecError);
    expect(() => parseExpr('f(a')).toThrow(DslSpecError);
  });

  it('refuses what it cannot run, naming the node', () => {
    const raw = JSON.parse(JSON.stringify(depth));
    raw.nodes.book_imbalance_z.method = 'minmax';
    expect(() => parseDslSpec(raw)).toThrow(/book_imbalance_z.*minmax.*not run by the browser/);
    const raw2 = JSON.parse(JSON.stringify(depth));
    raw2.nodes.extra = { type: 'arithmetic', op: 'add' };
    expect(() => parseDslSpec(raw2)).toThrow(/extra.*arithmetic/);
    const raw3 = JSON.parse(JSON.stringify(depth));
    raw3.nodes.local_imbalance.expr = 'log(b)';
    expect(() => new DslRuntime(raw3, 5, 1n, 100)).toThrow(/local_imbalance.*log/);
    expect(() => parseDslSpec({ ...raw, version: 2 })).toThrow(/version/);
  });

  it('the capability list names every node type and function the executor implements', () => {
    expect(Object.keys(DSL_CAPABILITIES.node_types).sort()).toEqual(
      ['const', 'expr', 'norm', 'output', 'silver_ref', 'spatial_neighborhood', 'temporal_window']);
    expect(DSL_CAPABILITIES.expr_functions.length).toBe(11);
  });

  it('an invalid bin emits each output fill and restarts the series', () => {
    const rt = new DslRuntime(depth, 2, 1n, 100);
    const g = { k: [-2, -1, 0, 1, 2], bid_depth: [1, 2, 3, 4, 5], ask_depth: [0, 0, 0, 0, 1] };
    rt.step({ binSeq: 1, spotRefPriceInt: 100, bookValid: true, grid: g });
    const bad = rt.step({ binSeq: 2, spotRefPriceInt: 100, bookValid: false, grid: g });
    expect(bad.goldValid).toBe(false);
    for (const c of rt.outputNames) expect(Array.from(bad.values[c]).every((x) => x === 0)).toBe(true);
    const ok = rt.step({ binSeq: 3, spotRefPriceInt: 100, bookValid: true, grid: g });
    // radius 4 covers the whole ±2 grid: (15 - 1) / (15 + 1) on every row; the z-scores restarted (warm-up: 0)
    expect(ok.values.local_depth_imbalance[0]).toBe(Math.fround(14 / 16));
    expect(Array.from(ok.values.local_depth_imbalance_z).every((x) => x === 0)).toBe(true);
    expect(() => rt.step({ binSeq: 4, spotRefPriceInt: 100, bookValid: true, grid: { ...g, k: [2, 1, 0, -1, -2] } })).toThrow(/k = -R..R/);
  });
});

function compileProgramExpr(text: string, consts: number[]): { code: number[] } {
  const p = compileProgram(parseDslSpec({
    version: 1, name: 't', nodes: {
      a: { type: 'silver_ref', field: 'v_add' }, b: { type: 'silver_ref', field: 'v_pull' },
      e: { type: 'expr', inputs: { a: 'a', b: 'b' }, expr: text },
      o: { type: 'output', source: 'e', name: 'e' },
    },
  }), 1, 100);
  consts.push(...p.consts);
  return { code: Array.from(p.code) };
}
