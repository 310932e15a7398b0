/**
 * Stream → viewer buffer glue (no DOM): a runtime_config gives the ring's fields (every float64 silver column,
 * plus the gold outputs when the stream carries the gold inputs, plus the EMA/SMA lines and `ema_signal` when
 * the visualization has an enabled `ema_lines` / `sma_lines` overlay) and the runtimes; each decoded bin is
 * pushed with its BBO/spot in price ticks, its GoldFeatureRuntime outputs (gold on) and its EmaLinesRuntime /
 * SMA values. The per-bin line values (dollars) and `ema_signal` are stored on the centre row (k = 0), which
 * is where the renderer's projection bands read their signal field.
 *
 * A version whose pipeline has a Gold DSL (`runtime_config.gold_dsl`) also gets a DslRuntime: every DSL output is a
 * ring field (`dslFields`, the output names; `dsl:<name>` when a name is already a streamed or gold field). It starts
 * from the server's state (`replay.gold_dsl_state`), so a mid-day start shows what a replay from the session start
 * would.
 *
 * Beside the streamed and gold fields the model computes, per bin: the `book` field (ask_depth − bid_depth, when
 * both are streamed) and the bin's trades (`trades.ts`: volume per tick from fill_mass, inferred aggressor side)
 * into a TradeLog that follows the ring.
 */

import { GOLD_CODE_COLUMNS, GOLD_FLOAT_COLUMNS } from '../gold/config';
import type { GoldFeatureRuntime } from '../gold/runtime';
import type { RuntimeConfigMessage, StreamBin } from '../stream/contract';
import { decodeDslState, type DslRuntime } from '../gold/dslRuntime';
import { createDslRuntime, createGoldRuntime, dslInput, goldInput } from '../stream/gold';
import { closeOfBin, EMA_SIGNAL_FIELD, EmaLinesRuntime, emaField, parseSmaLinesParams, SmaRuntime, smaField } from './ema';
import { priceIntToTick } from './geometry';
import { BOOK_FIELD, bookColumn } from './fields';
import { BinRing, type RingOptions } from './ring';
import { TradeLog, tradesOfBin, type TradeBinInput } from './trades';
import { parseVisualization, type Visualization } from './vizconfig';

export const GOLD_FIELDS = [...GOLD_FLOAT_COLUMNS, ...GOLD_CODE_COLUMNS] as const;

export interface ViewerModel {
  readonly config: RuntimeConfigMessage;
  readonly ring: BinRing;
  readonly gold: GoldFeatureRuntime | null;
  /** Why gold is off (null when on). */
  readonly goldNote: string | null;
  readonly silverFields: readonly string[];
  readonly goldFields: readonly string[];
  /** The Gold DSL runtime of the version (null without a DSL, or when it cannot run: `dslNote`). */
  readonly dsl: DslRuntime | null;
  readonly dslNote: string | null;
  /** Ring field of each DSL output, in spec order (the names the viewer offers). */
  readonly dslFields: readonly string[];
  /** The first enabled `ema_lines` overlay's runtime (null when there is none or its params are bad). */
  readonly ema: EmaLinesRuntime | null;
  /** SMAs of `sma_lines` overlays not already computed by `ema` (null when none). */
  readonly sma: SmaRuntime | null;
  /** Per drawable ema_lines / sma_lines overlay id: what to draw. */
  readonly lineSets: ReadonlyMap<string, LineSet>;
  /** Ring fields computed in the browser from the spot (ema_<p>, sma_<p>, ema_signal). */
  readonly derivedFields: readonly string[];
  /** Overlay problems (bad params, a second ema_lines); shown by the app, never fatal. */
  readonly lineNotes: readonly string[];
  /** Trades derived from fill_mass (empty when fill_mass is not streamed). */
  readonly trades: TradeLog;
  /** fill_mass decay constant (s) of the runtime (tau_rest_decay). */
  readonly tauS: number;
  /** The previous bin's trade input (null before the first bin and after an invalid one). */
  prevTrade: TradeBinInput | null;
  /** Added to the stream's bin_seq (session-relative) so a continued replay (a speed change reopens the stream
   * from the last bin's time) carries on the same series; set by `continueWith`. */
  seqOffset: number;
  /** When true, the next bin sets seqOffset from the held history (see continueWith). */
  rebase: boolean;
}

/**
 * Keep the history across a new stream of the same replay (a speed change reopens it from the last bin's time):
 * bins already held (by end time) are skipped, and the first new one continues the bin_seq series when it is the
 * next cell, so gold and trades carry on without a reset.
 */
export function continueWith(m: ViewerModel): void {
  m.rebase = true;
}

export interface LineSet {
  readonly overlayId: string;
  readonly type: 'ema_lines' | 'sma_lines';
  /** CSS px. */
  readonly lineWidth: number;
  readonly emaPeriods: readonly number[];
  readonly smaPeriods: readonly number[];
  /** Legend labels (null: no EMA group, e.g. sma_lines). */
  readonly emaLabel: string | null;
  readonly smaLabel: string;
}

interface Lines {
  ema: EmaLinesRuntime | null;
  sma: SmaRuntime | null;
  lineSets: Map<string, LineSet>;
  derivedFields: string[];
  lineNotes: string[];
}

/** The EMA / SMA runtimes and line sets of the enabled ema_lines / sma_lines overlays. */
export function buildLines(viz: Visualization): Lines {
  const out: Lines = { ema: null, sma: null, lineSets: new Map(), derivedFields: [], lineNotes: [] };
  const smaOnly: number[] = [];
  let emaId = '';
  for (const o of viz.overlays) {
    const where = `overlay ${o.id} (${o.type}) params`;
    try {
      if (o.type === 'ema_lines') {
        if (out.ema) {
          out.lineNotes.push(`overlay ${o.id}: only one ema_lines overlay is drawn (${emaId}, it computes ema_signal); skipped`);
          continue;
        }
        out.ema = EmaLinesRuntime.fromOverlayParams(o.params, where);
        emaId = o.id;
        const p = out.ema.params;
        out.lineSets.set(o.id, {
          overlayId: o.id, type: 'ema_lines', lineWidth: p.line_width, emaPeriods: p.periods, smaPeriods: p.sma_periods,
          emaLabel: p.lines_label, smaLabel: p.sma_label,
        });
      } else if (o.type === 'sma_lines') {
        const p = parseSmaLinesParams(o.params, where);
        out.lineSets.set(o.id, {
          overlayId: o.id, type: 'sma_lines', lineWidth: p.line_width, emaPeriods: [], smaPeriods: p.periods,
          emaLabel: null, smaLabel: o.label || 'SMA',
        });
        for (const q of p.periods) if (!smaOnly.includes(q)) smaOnly.push(q);
      }
    } catch (e) {
      out.lineNotes.push(`${(e as Error).message}; not drawn`);
    }
  }
  const emaSma = out.ema?.params.sma_periods ?? [];
  const extra = smaOnly.filter((q) => !emaSma.includes(q));
  if (extra.length) out.sma = new SmaRuntime(extra);
  if (out.ema) out.derivedFields.push(...out.ema.params.periods.map(emaField), ...emaSma.map(smaField), EMA_SIGNAL_FIELD);
  out.derivedFields.push(...extra.map(smaField));
  return out;
}

export function createViewerModel(config: RuntimeConfigMessage, capacity: number,
  viz: Visualization = parseVisualization(config.raw.visualization), ring: RingOptions = {}): ViewerModel {
  const silverFields = config.grid_schema_fields.filter((f) => f.dtype === 'float64').map((f) => f.name);
  let gold: GoldFeatureRuntime | null = null;
  let goldNote: string | null = null;
  try {
    gold = createGoldRuntime(config);
  } catch (e) {
    goldNote = `gold off: ${(e as Error).message}`;
  }
  const goldFields = gold ? [...GOLD_FIELDS] : [];
  let dsl: DslRuntime | null = null;
  let dslNote: string | null = null;
  try {
    dsl = createDslRuntime(config);
  } catch (e) {
    dslNote = `gold DSL off: ${(e as Error).message}`;
  }
  const handed = (config.raw.replay as Record<string, unknown> | undefined)?.gold_dsl_state;
  if (dsl && handed) {
    try {
      dsl.setState(decodeDslState(handed)); // the server's state just before this client's first bin
    } catch (e) {
      dslNote = `gold DSL warms up from this bin: ${(e as Error).message}`;
    }
  }
  const dslFields = (dsl?.outputNames ?? []).map((n) => (silverFields.includes(n) || (goldFields as readonly string[]).includes(n) ? `dsl:${n}` : n));
  const lines = buildLines(viz);
  const taken = new Set([...silverFields, ...goldFields, ...dslFields]);
  const clash = lines.derivedFields.filter((f) => taken.has(f));
  if (clash.length) {
    lines.lineNotes.push(`${clash.join(', ')}: also a streamed field; the browser-computed value is buffered`);
  }
  const book = silverFields.includes('bid_depth') && silverFields.includes('ask_depth') ? [BOOK_FIELD] : [];
  const tau = Number(config.raw.tau_rest_decay);
  return {
    config, ring: new BinRing(capacity, config.grid_rows, [...book, ...silverFields, ...goldFields, ...dslFields, ...lines.derivedFields], {
      ...ring, pinned: [...book, ...(ring.pinned ?? [])],
    }),
    gold, goldNote, silverFields, goldFields, dsl, dslNote, dslFields, ...lines,
    trades: new TradeLog(capacity), tauS: tau > 0 ? tau : 30, prevTrade: null, seqOffset: 0, rebase: false,
  };
}

/** One value on the centre row (k = 0) given the push offset (`BinRing.push` fills from row `offset`). */
function centre(v: number, radius: number, offset: number): Float64Array {
  const a = new Float64Array(radius - offset + 1).fill(NaN);
  a[radius - offset] = v;
  return a;
}

/** Push one decoded bin (runs the gold step when gold is on, the EMA / SMA steps when lines are configured);
 * false when the bin is not newer than the held history (a continued stream's overlap) and was skipped. */
export function ingestBin(m: ViewerModel, bin: StreamBin): boolean {
  const c = m.config;
  const u = bin.update;
  const tsMs = Number(u.bin_end_ns / 1_000_000n);
  const newest = m.ring.newest();
  if (newest && tsMs <= newest.tsMs) return false;
  if (m.rebase) {
    m.rebase = false;
    const next = newest !== undefined && Math.abs(tsMs - newest.tsMs - c.cell_width_ms) < c.cell_width_ms / 2;
    m.seqOffset = newest === undefined ? 0 : newest.binSeq + (next ? 1 : 2) - u.bin_seq; // not the next cell: a gap
  }
  const seq = u.bin_seq + m.seqOffset;
  const values: Record<string, ArrayLike<number>> = {};
  for (const f of m.silverFields) if (bin.frame.has(f)) values[f] = bin.frame.column(f) as Float64Array;
  if (m.gold) {
    const g = m.gold.step({ ...goldInput(bin), binSeq: seq });
    for (const f of GOLD_FIELDS) values[f] = g[f];
  }
  if (m.dsl) {
    const d = m.dsl.step(dslInput(bin, m.dsl, c.cell_width_ms));
    m.dsl.outputNames.forEach((name, i) => { values[m.dslFields[i]] = d.values[name]; });
  }
  const R = c.grid_radius_ticks;
  const offset = bin.frame.numRows === 1 ? R : 0; // ema_ensemble: the single k = 0 row
  if (m.ema || m.sma) {
    const close = closeOfBin(bin, c.price_scale);
    if (m.ema) {
      const st = m.ema.step(close);
      m.ema.params.periods.forEach((p, i) => { values[emaField(p)] = centre(st.emas[i], R, offset); });
      m.ema.params.sma_periods.forEach((p, i) => { values[smaField(p)] = centre(st.smas[i], R, offset); });
      values[EMA_SIGNAL_FIELD] = centre(st.signal, R, offset);
    }
    if (m.sma) {
      const smas = m.sma.step(close);
      m.sma.periods.forEach((p, i) => { values[smaField(p)] = centre(smas[i], R, offset); });
    }
  }
  if (m.ring.has(BOOK_FIELD)) values[BOOK_FIELD] = bookColumn(values.bid_depth, values.ask_depth, bin.frame.numRows);
  const scalars = {
    binSeq: seq,
    spotTick: priceIntToTick(u.spot_ref_price_int, c.tick_int),
    bidTick: u.book_valid ? priceIntToTick(u.best_bid_price_int, c.tick_int) : NaN,
    askTick: u.book_valid ? priceIntToTick(u.best_ask_price_int, c.tick_int) : NaN,
    bookValid: u.book_valid,
    tsMs,
  };
  const p = m.ring.push(scalars, values, offset);
  if (m.ring.has('fill_mass')) {
    const cur: TradeBinInput | null = u.book_valid && Number.isFinite(scalars.spotTick)
      ? { spotTick: scalars.spotTick, bidTick: scalars.bidTick, askTick: scalars.askTick, fill: Float64Array.from(m.ring.column('fill_mass', m.ring.size - 1)), seq }
      : null;
    // Diff consecutive bins of one session only, and not the session's first bin: it closes the warm-up and its
    // fill_mass does not decay like the later boundaries (on the real ESH4 sample bin 0 → 1 shows spurious fills
    // at 14 ticks, while every later pair matches the F records exactly).
    const prev = m.prevTrade && m.prevTrade.seq === seq - 1 && u.bin_seq >= 2 ? m.prevTrade : null;
    if (cur) m.trades.add(p, tradesOfBin(prev, cur, R, c.cell_width_ms, m.tauS));
    m.prevTrade = cur;
  }
  return true;
}
