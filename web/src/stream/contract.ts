/**
 * The WebSocket stream contract (SPEC §7.2), decoded and validated on the client.
 *
 * `ws://host:8002/v1/stream?serving=<alias|serving_id>` sends, in order:
 *   1. once, a JSON `runtime_config` (the version's runtime snapshot: grid geometry, `grid_schema_fields`,
 *      `gold_config`, `model_config`, projection horizons, ...);
 *   2. per bin, a JSON `grid_update` (bin scalars; 64-bit integers as decimal strings) immediately
 *      followed by one binary frame: an Arrow IPC *stream* (schema + one record batch) of the silver grid,
 *      one row per k ascending, whose schema is exactly `grid_schema_fields` (names, order and types).
 * A JSON `{"type": "error", "message": ...}` may arrive instead (setup failure; the server then closes).
 * With `&signals=1` (qmachina_serving/README.md "Messages"): `runtime_config.replay.signals` describes the served
 * signal (name, params, EvalParams), each bin's binary frame is followed by a JSON `signal` message (the bin's score
 * and the trade events known at its close), and one with `final: true` precedes `end_of_stream`.
 *
 * `StreamDecoder` is the state machine: feed it every WebSocket message in arrival order; it returns typed
 * events or throws a `StreamContractError` naming the broken rule (the decoder then stays failed).
 */

import { DataType, Precision, tableFromIPC, type Table } from 'apache-arrow';
import { parseGoldConfig, type GoldFeatureConfig } from '../gold/config';

export class StreamContractError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StreamContractError';
  }
}

function fail(message: string): never {
  throw new StreamContractError(message);
}

// ---- runtime_config --------------------------------------------------------------------------------

export const STREAM_DTYPES = ['int8', 'int32', 'int64', 'float64'] as const;
export type StreamDtype = (typeof STREAM_DTYPES)[number];

export interface GridSchemaField {
  readonly name: string;
  readonly dtype: StreamDtype;
  readonly role: string | null;
}

export interface ModelConfig {
  readonly model: string;
  readonly [key: string]: unknown;
}

export interface RuntimeConfigMessage {
  readonly type: 'runtime_config';
  readonly product_type: string;
  readonly symbol: string | null;
  readonly price_scale: number;
  readonly tick_size: number;
  readonly bucket_size_dollars: number | null;
  readonly grid_radius_ticks: number;
  readonly cell_width_ms: number;
  readonly projection_horizons_bins: readonly number[];
  readonly projection_horizons_ms: readonly number[];
  readonly config_version: string | null;
  readonly stream_format: 'dense_grid';
  readonly grid_schema_fields: readonly GridSchemaField[];
  readonly grid_rows: number;
  readonly model_config: ModelConfig;
  readonly gold_config: GoldFeatureConfig;
  readonly display_name: string | null;
  /** Tick (or equity bucket) in integer price units: round(size / price_scale), as InstrumentConfig.tick_int. */
  readonly tick_int: bigint;
  /** `replay.signals`: what the `signal` messages trade (present only on a `signals=1` stream). */
  readonly signals: SignalsInfo | null;
  /** The whole message as received (serving, visualization, signal, projection, ... for the viewer). */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** The `EvalParams` the served signal is traded with (core/research/evaluation.py; prices in ticks, times in bins). */
export interface SignalEvalParams {
  readonly threshold: number;
  readonly tp_ticks: number;
  readonly sl_ticks: number;
  readonly max_hold_bins: number;
  readonly cooldown_bins: number;
  readonly tick_size: number;
  readonly latency_bins: number;
  readonly entry_mode: 'mid' | 'cross';
  readonly cost_ticks_per_trade: number;
  /** Every field as received (warmup_bins, allow_overlap, ...). */
  readonly raw: Readonly<Record<string, unknown>>;
}

/** `runtime_config.replay.signals` (served_signal.SignalSetup.describe). */
export interface SignalsInfo {
  readonly signal: string;
  readonly signal_params: Readonly<Record<string, unknown>>;
  readonly eval: SignalEvalParams;
  /** `experiment`: the evaluating experiment's eval settings; `defaults`: registered without one. */
  readonly eval_source: 'experiment' | 'defaults';
  readonly lookback_bins: number;
  /** False for EMA signals (their horizon is cut at a tolerance). */
  readonly lookback_exact: boolean;
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function req<T>(o: Obj, msg: string, key: string, check: (v: unknown) => v is T, want: string): T {
  const v = o[key];
  if (!check(v)) fail(`${msg}.${key}: ${want} expected, got ${v === undefined ? 'nothing' : JSON.stringify(v)}`);
  return v;
}

const isStr = (v: unknown): v is string => typeof v === 'string';
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isPos = (v: unknown): v is number => isNum(v) && v > 0;
const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isPosInt = (v: unknown): v is number => isInt(v) && (v as number) > 0;
const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
const isIntList = (v: unknown): v is number[] => Array.isArray(v) && v.every(isInt);
const isDigits = (v: unknown): v is string => typeof v === 'string' && /^-?\d+$/.test(v);

function optStr(o: Obj, msg: string, key: string): string | null {
  const v = o[key];
  if (v === undefined || v === null) return null;
  if (!isStr(v)) fail(`${msg}.${key}: a string expected, got ${JSON.stringify(v)}`);
  return v;
}

function parseJsonText(text: string): Obj {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    fail(`text frame is not JSON (${(e as Error).message}): ${text.slice(0, 80)}`);
  }
  if (!isObj(v)) fail(`text frame is not a JSON object: ${text.slice(0, 80)}`);
  if (!isStr(v.type)) fail(`text frame has no "type": ${text.slice(0, 80)}`);
  return v;
}

/** Validate a decoded `runtime_config` object (SPEC §7.2 item 1). */
export function parseRuntimeConfig(o: Obj): RuntimeConfigMessage {
  const m = 'runtime_config';
  if (o.type !== 'runtime_config') fail(`${m}: type "runtime_config" expected, got ${JSON.stringify(o.type)}`);
  const format = req(o, m, 'stream_format', isStr, 'a string');
  if (format !== 'dense_grid') fail(`${m}.stream_format: only "dense_grid" is supported, got ${JSON.stringify(format)}`);
  const productType = req(o, m, 'product_type', isStr, 'a string');
  const priceScale = req(o, m, 'price_scale', isPos, 'a number > 0');
  const tickSize = req(o, m, 'tick_size', isPos, 'a number > 0');
  const bucket = o.bucket_size_dollars === undefined ? null : req(o, m, 'bucket_size_dollars', isPos, 'a number > 0');
  const radius = req(o, m, 'grid_radius_ticks', isPosInt, 'an integer >= 1');
  const cellMs = req(o, m, 'cell_width_ms', isPosInt, 'an integer >= 1');
  const rows = req(o, m, 'grid_rows', isPosInt, 'an integer >= 1');
  if (rows !== 2 * radius + 1) fail(`${m}.grid_rows: ${rows} rows, but grid_radius_ticks ${radius} means 2R+1 = ${2 * radius + 1}`);

  // projection horizons: bins unique positive integers, ms[i] = bins[i] * cell_width_ms
  const hBins = req(o, m, 'projection_horizons_bins', isIntList, 'a list of integers');
  const hMs = req(o, m, 'projection_horizons_ms', isIntList, 'a list of integers');
  if (hBins.some((b) => b <= 0)) fail(`${m}.projection_horizons_bins: every horizon must be >= 1 bin, got [${hBins}]`);
  if (new Set(hBins).size !== hBins.length) fail(`${m}.projection_horizons_bins: horizons must be unique, got [${hBins}]`);
  if (hMs.length !== hBins.length) fail(`${m}.projection_horizons_ms: ${hMs.length} horizons, projection_horizons_bins has ${hBins.length}`);
  hBins.forEach((b, i) => {
    if (hMs[i] !== b * cellMs) {
      fail(`${m}.projection_horizons_ms[${i}]: ${hMs[i]} ms, but projection_horizons_bins[${i}] = ${b} bins x cell_width_ms ${cellMs} = ${b * cellMs} ms`);
    }
  });
  if (o.projection !== undefined && o.projection !== null) {
    if (!isObj(o.projection)) fail(`${m}.projection: an object expected`);
    const p = o.projection;
    const same = (a: unknown, b: readonly number[]) => Array.isArray(a) && a.length === b.length && a.every((x, i) => x === b[i]);
    if (p.horizons_bins !== undefined && !same(p.horizons_bins, hBins)) {
      fail(`${m}.projection.horizons_bins: ${JSON.stringify(p.horizons_bins)} differs from projection_horizons_bins [${hBins}]`);
    }
    if (p.horizons_ms !== undefined && !same(p.horizons_ms, hMs)) {
      fail(`${m}.projection.horizons_ms: ${JSON.stringify(p.horizons_ms)} differs from projection_horizons_ms [${hMs}]`);
    }
  }

  // grid schema
  const rawFields = o.grid_schema_fields;
  if (!Array.isArray(rawFields) || rawFields.length === 0) fail(`${m}.grid_schema_fields: a non-empty list expected`);
  const seen = new Set<string>();
  const fields: GridSchemaField[] = rawFields.map((f, i) => {
    const at = `${m}.grid_schema_fields[${i}]`;
    if (!isObj(f)) fail(`${at}: an object {name, dtype, role} expected`);
    if (!isStr(f.name) || f.name === '') fail(`${at}.name: a non-empty string expected`);
    if (!isStr(f.dtype) || !(STREAM_DTYPES as readonly string[]).includes(f.dtype)) {
      fail(`${at}.dtype: one of ${STREAM_DTYPES.join(', ')} expected for ${f.name}, got ${JSON.stringify(f.dtype)}`);
    }
    if (seen.has(f.name)) fail(`${at}: field ${f.name} is listed twice`);
    seen.add(f.name);
    return { name: f.name, dtype: f.dtype as StreamDtype, role: isStr(f.role) ? f.role : null };
  });
  const k = fields.find((f) => f.name === 'k');
  if (!k) fail(`${m}.grid_schema_fields: the grid index field k is missing`);
  if (k.dtype !== 'int32') fail(`${m}.grid_schema_fields: k must be int32, got ${k.dtype}`);

  const modelCfg = o.model_config;
  if (!isObj(modelCfg) || !isStr(modelCfg.model)) fail(`${m}.model_config: an object with a "model" name expected`);

  if (!isObj(o.gold_config)) fail(`${m}.gold_config: an object expected`);
  let gold: GoldFeatureConfig;
  try {
    gold = parseGoldConfig(o.gold_config);
  } catch (e) {
    fail(`${m}.${(e as Error).message}`);
  }
  if (gold.cell_width_ms !== cellMs) fail(`${m}.gold_config.cell_width_ms: ${gold.cell_width_ms}, but the stream's cell_width_ms is ${cellMs}`);

  const size = productType === 'future_mbo' ? tickSize : bucket;
  if (size === null) fail(`${m}.bucket_size_dollars: required for product_type ${productType}`);
  const tickInt = Math.round(size / priceScale);
  if (!(tickInt > 0)) fail(`${m}: tick size ${size} / price_scale ${priceScale} is not a positive integer tick`);

  return {
    type: 'runtime_config', product_type: productType, symbol: optStr(o, m, 'symbol'), price_scale: priceScale,
    tick_size: tickSize, bucket_size_dollars: bucket, grid_radius_ticks: radius, cell_width_ms: cellMs,
    projection_horizons_bins: hBins, projection_horizons_ms: hMs, config_version: optStr(o, m, 'config_version'),
    stream_format: 'dense_grid', grid_schema_fields: fields, grid_rows: rows, model_config: modelCfg as ModelConfig,
    gold_config: gold, display_name: optStr(o, m, 'display_name'), tick_int: BigInt(tickInt),
    signals: parseReplaySignals(o.replay), raw: o,
  };
}

/** `runtime_config.replay.signals` (absent or null: a stream without signal messages). */
export function parseReplaySignals(replay: unknown): SignalsInfo | null {
  if (!isObj(replay) || replay.signals === undefined || replay.signals === null) return null;
  const m = 'runtime_config.replay.signals';
  const o = replay.signals;
  if (!isObj(o)) fail(`${m}: an object {signal, signal_params, eval, eval_source, lookback_bins, lookback_exact} expected, got ${JSON.stringify(o)}`);
  const signal = req(o, m, 'signal', isStr, 'a signal name');
  if (signal === '') fail(`${m}.signal: a non-empty signal name expected`);
  const params = req(o, m, 'signal_params', isObj, 'an object');
  const source = req(o, m, 'eval_source', isStr, '"experiment" or "defaults"');
  if (source !== 'experiment' && source !== 'defaults') fail(`${m}.eval_source: "experiment" or "defaults" expected, got ${JSON.stringify(source)}`);
  const lookback = req(o, m, 'lookback_bins', isInt, 'an integer');
  if (lookback < 0) fail(`${m}.lookback_bins: >= 0 expected, got ${lookback}`);
  const exact = req(o, m, 'lookback_exact', isBool, 'a boolean');
  const ev = req(o, m, 'eval', isObj, 'an object (EvalParams)');
  const e = `${m}.eval`;
  const nonNeg = (v: unknown): v is number => isNum(v) && v >= 0;
  const entryMode = req(ev, e, 'entry_mode', isStr, '"mid" or "cross"');
  if (entryMode !== 'mid' && entryMode !== 'cross') fail(`${e}.entry_mode: "mid" or "cross" expected, got ${JSON.stringify(entryMode)}`);
  const evalParams: SignalEvalParams = {
    threshold: req(ev, e, 'threshold', isPos, 'a number > 0'),
    tp_ticks: req(ev, e, 'tp_ticks', isPos, 'a number > 0'),
    sl_ticks: req(ev, e, 'sl_ticks', isPos, 'a number > 0'),
    max_hold_bins: req(ev, e, 'max_hold_bins', isPosInt, 'an integer >= 1'),
    cooldown_bins: req(ev, e, 'cooldown_bins', isPosInt, 'an integer >= 1'),
    tick_size: req(ev, e, 'tick_size', isPos, 'a number > 0'),
    latency_bins: req(ev, e, 'latency_bins', (v): v is number => isInt(v) && v >= 0, 'an integer >= 0'),
    entry_mode: entryMode,
    cost_ticks_per_trade: req(ev, e, 'cost_ticks_per_trade', nonNeg, 'a number >= 0'),
    raw: ev,
  };
  return { signal, signal_params: params, eval: evalParams, eval_source: source, lookback_bins: lookback, lookback_exact: exact };
}

// ---- grid_update -----------------------------------------------------------------------------------

export interface GridUpdate {
  readonly type: 'grid_update';
  readonly ts_ns: bigint;
  readonly bin_seq: number;
  readonly bin_start_ns: bigint;
  readonly bin_end_ns: bigint;
  readonly bin_event_count: number;
  readonly event_id: number;
  readonly mid_price: number;
  readonly spot_ref_price_int: bigint;
  readonly best_bid_price_int: bigint;
  readonly best_ask_price_int: bigint;
  readonly book_valid: boolean;
  /** The bin's deadline on the serving process's wall clock (qmachina_serving adds it; null when absent). */
  readonly due_unix_ns: bigint | null;
}

/** Validate a decoded `grid_update` object (SPEC §7.2 item 2; 64-bit integers are decimal strings). */
export function parseGridUpdate(o: Obj): GridUpdate {
  const m = 'grid_update';
  if (o.type !== 'grid_update') fail(`${m}: type "grid_update" expected, got ${JSON.stringify(o.type)}`);
  const big = (key: string) => BigInt(req(o, m, key, isDigits, 'a decimal integer string'));
  const u: GridUpdate = {
    type: 'grid_update',
    ts_ns: big('ts_ns'),
    bin_seq: req(o, m, 'bin_seq', isInt, 'an integer'),
    bin_start_ns: big('bin_start_ns'),
    bin_end_ns: big('bin_end_ns'),
    bin_event_count: req(o, m, 'bin_event_count', isInt, 'an integer'),
    event_id: req(o, m, 'event_id', isInt, 'an integer'),
    mid_price: req(o, m, 'mid_price', isNum, 'a number'),
    spot_ref_price_int: big('spot_ref_price_int'),
    best_bid_price_int: big('best_bid_price_int'),
    best_ask_price_int: big('best_ask_price_int'),
    book_valid: req(o, m, 'book_valid', isBool, 'a boolean'),
    due_unix_ns: o.due_unix_ns === undefined ? null : big('due_unix_ns'),
  };
  if (u.bin_end_ns < u.bin_start_ns) fail(`${m}: bin_end_ns ${u.bin_end_ns} is before bin_start_ns ${u.bin_start_ns}`);
  return u;
}

// ---- the binary grid frame -------------------------------------------------------------------------

export type ColumnArray = Float64Array | Int32Array | Int8Array | BigInt64Array;

export interface GridFrame {
  readonly table: Table;
  readonly numRows: number;
  /** The column's values (zero-copy for a one-batch frame); throws StreamContractError if absent. */
  column(name: string): ColumnArray;
  has(name: string): boolean;
}

function arrowMatches(type: DataType, dtype: StreamDtype): boolean {
  switch (dtype) {
    case 'float64':
      return DataType.isFloat(type) && type.precision === Precision.DOUBLE;
    case 'int8':
    case 'int32':
    case 'int64':
      return DataType.isInt(type) && type.isSigned && type.bitWidth === Number(dtype.slice(3));
  }
}

function bytesOf(data: ArrayBufferLike | ArrayBufferView): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}

/** Decode and check one binary frame against the runtime_config (schema, one batch, rows, k order). */
export function decodeGridFrame(data: ArrayBufferLike | ArrayBufferView, config: RuntimeConfigMessage): GridFrame {
  const bytes = bytesOf(data);
  const m = 'grid frame';
  if (bytes.byteLength >= 6 && String.fromCharCode(...bytes.subarray(0, 6)) === 'ARROW1') {
    fail(`${m}: an Arrow IPC stream expected, got the IPC file format`);
  }
  let table: Table;
  try {
    table = tableFromIPC(bytes);
  } catch (e) {
    fail(`${m}: not a decodable Arrow IPC stream (${(e as Error).message})`);
  }
  const want = config.grid_schema_fields;
  const got = table.schema.fields;
  const names = got.map((f) => f.name);
  if (got.length !== want.length || want.some((f, i) => f.name !== names[i])) {
    fail(`${m}: schema fields [${names.join(', ')}] differ from runtime_config.grid_schema_fields [${want.map((f) => f.name).join(', ')}]`);
  }
  want.forEach((f, i) => {
    if (!arrowMatches(got[i].type, f.dtype)) fail(`${m}: field ${f.name} is Arrow ${String(got[i].type)}, grid_schema_fields says ${f.dtype}`);
  });
  if (table.batches.length !== 1) fail(`${m}: one record batch expected, got ${table.batches.length}`);
  const expectRows = config.model_config.model === 'ema_ensemble' ? 1 : config.grid_rows;
  if (table.numRows !== expectRows) fail(`${m}: ${table.numRows} rows, expected ${expectRows}`);
  for (const f of want) {
    const nulls = table.getChild(f.name)!.nullCount;
    if (nulls > 0) fail(`${m}: field ${f.name} has ${nulls} nulls (silver columns are never null)`);
  }
  const cache = new Map<string, ColumnArray>();
  const column = (name: string): ColumnArray => {
    let arr = cache.get(name);
    if (arr === undefined) {
      const vec = table.getChild(name);
      if (vec === null) fail(`${m}: field ${name} is not streamed (grid_schema_fields)`);
      arr = vec.toArray() as ColumnArray;
      cache.set(name, arr);
    }
    return arr;
  };
  const k = column('k');
  const r = expectRows === 1 ? 0 : config.grid_radius_ticks;
  for (let j = 0; j < k.length; j++) {
    if (k[j] !== j - r) fail(`${m}: rows must be k = ${-r}..${r} ascending; row ${j} has k = ${k[j]}`);
  }
  return { table, numRows: table.numRows, column, has: (name) => names.includes(name) };
}

// ---- signal (signals=1) ----------------------------------------------------------------------------

export const SIGNAL_OUTCOMES = ['tp', 'sl', 'timeout', 'truncated'] as const;
export type SignalOutcome = (typeof SIGNAL_OUTCOMES)[number];

/** An entry or exit of the served signal's Trader, at its own bin (which may precede the message's). */
export interface SignalEvent {
  readonly event: 'entry' | 'exit';
  /** The event's bin in this stream's numbering (negative: before the stream's first bin). */
  readonly bin_seq: number;
  /** Its bin close (ns, decimal string). */
  readonly ts_ns: string;
  /** +1 long, -1 short. */
  readonly direction: 1 | -1;
  /** Fill price in dollars. */
  readonly price: number;
  /** Exits only. */
  readonly outcome?: SignalOutcome;
  readonly pnl_ticks?: number;
}

/** One bin's `signal` message (or the session end's, `final: true`). */
export interface SignalMessage {
  readonly type: 'signal';
  readonly bin_seq: number;
  readonly ts_ns: string;
  /** null where the score is undefined (warm-up, invalid book) and in the final message. */
  readonly score: number | null;
  readonly events: readonly SignalEvent[];
  readonly final: boolean;
}

/** Validate a decoded `signal` message (qmachina_serving/README.md "Messages", served_signal.py). */
export function parseSignal(o: Obj): SignalMessage {
  const m = 'signal';
  if (o.type !== 'signal') fail(`${m}: type "signal" expected, got ${JSON.stringify(o.type)}`);
  const binSeq = req(o, m, 'bin_seq', isInt, 'an integer');
  const ts = req(o, m, 'ts_ns', isDigits, 'a decimal integer string');
  if (!('score' in o)) fail(`${m}.score: a number or null expected, got nothing`);
  const score = o.score;
  if (score !== null && !isNum(score)) fail(`${m}.score: a finite number or null expected, got ${JSON.stringify(score)}`);
  if (o.final !== undefined && o.final !== true) fail(`${m}.final: true or absent expected, got ${JSON.stringify(o.final)}`);
  const raw = req(o, m, 'events', Array.isArray, 'a list');
  const events = (raw as unknown[]).map((e, i): SignalEvent => {
    const at = `${m}.events[${i}]`;
    if (!isObj(e)) fail(`${at}: an object {event, bin_seq, ts_ns, direction, price} expected`);
    const kind = req(e, at, 'event', isStr, '"entry" or "exit"');
    if (kind !== 'entry' && kind !== 'exit') fail(`${at}.event: "entry" or "exit" expected, got ${JSON.stringify(kind)}`);
    const seq = req(e, at, 'bin_seq', isInt, 'an integer');
    if (seq > binSeq) fail(`${at}.bin_seq: ${seq} is after the message's bin ${binSeq} (an event is known at or after its own bin)`);
    const ets = req(e, at, 'ts_ns', isDigits, 'a decimal integer string');
    const dir = req(e, at, 'direction', isInt, '+1 or -1');
    if (dir !== 1 && dir !== -1) fail(`${at}.direction: +1 or -1 expected, got ${dir}`);
    const price = req(e, at, 'price', isPos, 'a price in dollars > 0');
    if (kind === 'entry') {
      if (e.outcome !== undefined || e.pnl_ticks !== undefined) fail(`${at}: an entry carries no outcome or pnl_ticks`);
      return { event: kind, bin_seq: seq, ts_ns: ets, direction: dir, price };
    }
    const outcome = req(e, at, 'outcome', isStr, `one of ${SIGNAL_OUTCOMES.join(', ')}`);
    if (!(SIGNAL_OUTCOMES as readonly string[]).includes(outcome)) fail(`${at}.outcome: one of ${SIGNAL_OUTCOMES.join(', ')} expected, got ${JSON.stringify(outcome)}`);
    const pnl = req(e, at, 'pnl_ticks', isNum, 'a number (ticks)');
    return { event: kind, bin_seq: seq, ts_ns: ets, direction: dir, price, outcome: outcome as SignalOutcome, pnl_ticks: pnl };
  });
  return { type: 'signal', bin_seq: binSeq, ts_ns: ts, score: score as number | null, events, final: o.final === true };
}

// ---- the stream state machine ----------------------------------------------------------------------

export interface StreamBin {
  readonly update: GridUpdate;
  readonly frame: GridFrame;
}

export type StreamEvent =
  | { readonly kind: 'runtime_config'; readonly config: RuntimeConfigMessage }
  /** A grid_update whose binary frame must be the next message. */
  | { readonly kind: 'grid_update'; readonly update: GridUpdate }
  | { readonly kind: 'bin'; readonly bin: StreamBin }
  /** signals=1: a bin's signal message (right after its binary frame), or the session end's (`final`). */
  | { readonly kind: 'signal'; readonly signal: SignalMessage }
  /** The server's `{"type": "error"}` (it closes the connection afterwards). */
  | { readonly kind: 'server_error'; readonly message: string }
  /** The server's `{"type": "end_of_stream"}`: the replay is over (a normal close follows). */
  | { readonly kind: 'end_of_stream'; readonly bins: number }
  /** Live (`source=live`): an unrepairable gap in the market feed [start_ns, end_ns]; the book is invalid until the
   * next snapshot completes. */
  | { readonly kind: 'gap'; readonly gap: FeedGap }
  /** Live: the source became unavailable (Redis / the live process; the connection stays open) or available. */
  | { readonly kind: 'source_status'; readonly status: SourceStatus };

export type StreamMessageData = string | ArrayBufferLike | ArrayBufferView;

export interface FeedGap {
  /** null when the live process could not tell (the message still says there was a gap). */
  readonly start_ns: bigint | null;
  readonly end_ns: bigint | null;
  readonly raw: Readonly<Record<string, unknown>>;
}

export interface SourceStatus {
  readonly available: boolean;
  readonly reason: string | null;
}

/** Whether a runtime_config is a live stream's (`source: "live"`), which may be replaced on the same connection. */
export function isLiveConfig(c: RuntimeConfigMessage | null): boolean {
  return c !== null && c.raw.source === 'live';
}

function parseGap(o: Obj): FeedGap {
  const m = 'gap';
  const big = (key: string) => (isDigits(o[key]) ? BigInt(o[key] as string) : null);
  const g = { start_ns: big('start_ns'), end_ns: big('end_ns'), raw: o };
  if (g.start_ns !== null && g.end_ns !== null && g.end_ns < g.start_ns) fail(`${m}: end_ns ${g.end_ns} is before start_ns ${g.start_ns}`);
  return g;
}

function parseSourceStatus(o: Obj): SourceStatus {
  const m = 'source_status';
  const status = req(o, m, 'status', isStr, 'a string');
  if (status !== 'available' && status !== 'unavailable') fail(`${m}.status: "available" or "unavailable" expected, got ${JSON.stringify(status)}`);
  return { available: status === 'available', reason: isStr(o.reason) ? o.reason : null };
}

export class StreamDecoder {
  private _config: RuntimeConfigMessage | null = null;
  private pending: GridUpdate | null = null;
  private failed: StreamContractError | null = null;
  private closed = false;
  private _bins = 0;
  /** signals=1: the last bin (bin_seq, ts_ns) and whether its signal message came; the final message came. */
  private lastBin: { seq: number; ts: string; signalled: boolean } | null = null;
  private finalSignal = false;

  get config(): RuntimeConfigMessage | null {
    return this._config;
  }

  /** Complete bins decoded so far. */
  get bins(): number {
    return this._bins;
  }

  /** The contract error that stopped the stream, if any. */
  get error(): StreamContractError | null {
    return this.failed;
  }

  /** The stream ends (`end_of_stream`, which the connection intercepts): with signals=1 the final signal message
   * must have come after the last bin. Throws (and stays failed) otherwise. */
  checkEnd(): void {
    if (this.failed) throw this.failed;
    const c = this._config;
    if (c !== null && c.signals !== null && this.lastBin !== null && !this.finalSignal) {
      this.failed = new StreamContractError(
        this.lastBin.signalled ? 'end_of_stream without the final signal message (signals=1: it closes the session\'s open position)'
          : `end_of_stream while the signal message of bin_seq ${this.lastBin.seq} was expected`);
      throw this.failed;
    }
    this.closed = true;
  }

  /** Decode the next WebSocket message (text as string, binary as ArrayBuffer/view). */
  push(data: StreamMessageData): StreamEvent {
    if (this.failed) throw this.failed;
    try {
      return this.next(data);
    } catch (e) {
      this.failed = e instanceof StreamContractError ? e : new StreamContractError(String(e));
      throw this.failed;
    }
  }

  /** A `signal` message: only on a signals=1 stream, once right after each bin's frame, then one final. */
  private signal(o: Obj): SignalMessage {
    const c = this._config;
    if (c === null) fail('signal before runtime_config');
    if (c.signals === null) fail('signal message, but runtime_config.replay.signals is absent (the stream was not opened with signals=1)');
    if (this.finalSignal) fail('a signal message after the final one');
    const msg = parseSignal(o);
    if (msg.final) {
      if (this.lastBin !== null && msg.bin_seq < this.lastBin.seq) fail(`signal (final): bin_seq ${msg.bin_seq} is before the last bin ${this.lastBin.seq}`);
      this.finalSignal = true;
      return msg;
    }
    const last = this.lastBin;
    if (last === null) fail(`signal for bin_seq ${msg.bin_seq} before any bin`);
    if (last.signalled) fail(`a second signal message for bin_seq ${last.seq}`);
    if (msg.bin_seq !== last.seq || msg.ts_ns !== last.ts) {
      fail(`signal: bin_seq ${msg.bin_seq} / ts_ns ${msg.ts_ns} right after the frame of bin_seq ${last.seq} / ts_ns ${last.ts} (it names the bin it follows)`);
    }
    last.signalled = true;
    return msg;
  }

  private next(data: StreamMessageData): StreamEvent {
    if (this.closed) fail('message after the server ended the stream (error or end_of_stream)');
    if (typeof data !== 'string') {
      if (this.pending === null) {
        fail(this._config === null
          ? 'binary frame before runtime_config'
          : 'binary frame without a preceding grid_update');
      }
      const frame = decodeGridFrame(data, this._config!);
      const bin = { update: this.pending, frame };
      this.pending = null;
      this._bins++;
      this.lastBin = { seq: bin.update.bin_seq, ts: String(bin.update.ts_ns), signalled: false };
      return { kind: 'bin', bin };
    }
    const o = parseJsonText(data);
    if (o.type === 'error') {
      this.closed = true;
      return { kind: 'server_error', message: isStr(o.message) ? o.message : JSON.stringify(o.message) };
    }
    if (this.pending !== null) fail(`${o.type} while the binary frame of grid_update bin_seq ${this.pending.bin_seq} was expected`);
    switch (o.type) {
      case 'runtime_config':
        // a replay sends it once, first; a live stream may replace it (contract roll, new day, live restart)
        if (this._config !== null && !isLiveConfig(this._config)) fail('a second runtime_config (it is sent once, first)');
        this._config = parseRuntimeConfig(o);
        this.lastBin = null;
        return { kind: 'runtime_config', config: this._config };
      case 'gap':
        if (!isLiveConfig(this._config)) fail('gap outside a live stream (source=live)');
        return { kind: 'gap', gap: parseGap(o) };
      case 'source_status':
        // may come before any runtime_config: the live source is not published yet
        return { kind: 'source_status', status: parseSourceStatus(o) };
      case 'end_of_stream':
        if (this._config === null) fail('end_of_stream before runtime_config');
        this.closed = true;
        return { kind: 'end_of_stream', bins: this._bins };
      case 'grid_update':
        if (this._config === null) fail('grid_update before runtime_config');
        if (this.finalSignal) fail('grid_update after the final signal message (only end_of_stream may follow it)');
        if (this._config.signals !== null && this.lastBin !== null && !this.lastBin.signalled) {
          fail(`grid_update while the signal message of bin_seq ${this.lastBin.seq} was expected (signals=1: one after each bin's frame)`);
        }
        this.pending = parseGridUpdate(o);
        return { kind: 'grid_update', update: this.pending };
      case 'signal':
        return { kind: 'signal', signal: this.signal(o) };
      default:
        fail(`unknown message type ${JSON.stringify(o.type)}`);
    }
  }
}

// ---- the URL ---------------------------------------------------------------------------------------

/** `ws(s)://host/v1/stream?serving=<name>`: the only query parameter the server accepts. */
export function streamUrl(base: string, serving: string): string {
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(serving)) fail(`serving: ${JSON.stringify(serving)} is not an alias or serving_id`);
  const url = new URL('/v1/stream', base);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  url.search = new URLSearchParams({ serving }).toString();
  return url.toString();
}

/** The serving named by a stream URL; throws if the URL carries anything but `serving`. */
export function checkStreamUrl(url: string): string {
  const u = new URL(url);
  const keys = [...u.searchParams.keys()];
  const extra = keys.filter((k) => k !== 'serving');
  if (extra.length) fail(`stream URL: only the serving parameter is allowed, got ${extra.join(', ')}`);
  const values = u.searchParams.getAll('serving');
  if (values.length !== 1 || values[0] === '') fail('stream URL: exactly one non-empty serving parameter expected');
  return values[0];
}
