/**
 * The viewer's WebSocket connection manager: one `StreamDecoder` per socket, states for the indicator,
 * automatic reconnect with backoff, and the stream-end / error handling of qmachina_serving's protocol:
 *
 * - `connecting` → `live` on the first message; a drop (not a final close code) → `reconnecting` after a
 *   backoff delay → `connecting` ...;
 * - a JSON `end_of_stream` (the serving's end of window/data; handled here, before the decoder) → `ended`;
 * - with `signals=1`, a `signal` message after each bin (and a final one before `end_of_stream`) → `onSignal`;
 * - a JSON `error` from the server → reported; the close code that follows decides about reconnecting;
 * - a SPEC §7.2 contract violation (StreamContractError from the decoder) → `error`: the socket is closed
 *   and not reopened (the same stream would break the same way), the handler shows it.
 *
 * The WebSocket constructor and timers are injectable for tests.
 */

import {
  StreamContractError, StreamDecoder, type FeedGap, type RuntimeConfigMessage, type SignalMessage, type SourceStatus, type StreamBin,
} from '../stream/contract';
import { Backoff, shouldReconnect, type BackoffOptions } from './backoff';

export type ConnState = 'idle' | 'connecting' | 'live' | 'reconnecting' | 'error' | 'ended';

export interface ConnectionHandlers {
  onState?(state: ConnState, detail: string): void;
  onConfig?(config: RuntimeConfigMessage): void;
  onBin?(bin: StreamBin): void;
  /** signals=1: a bin's `signal` message (after its onBin), and the final one before onEnd. */
  onSignal?(signal: SignalMessage): void;
  /** A contract violation (the stream is stopped) or a server `error` message. */
  onError?(error: Error, source: 'contract' | 'server' | 'socket'): void;
  onEnd?(info: Readonly<Record<string, unknown>>): void;
  /** Live streams: a feed gap, the source's availability. */
  onGap?(gap: FeedGap): void;
  onSourceStatus?(status: SourceStatus): void;
}

export interface SocketLike {
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  close(code?: number, reason?: string): void;
}

export type SocketFactory = (url: string) => SocketLike;

export interface ConnectionOptions {
  readonly backoff?: BackoffOptions;
  readonly socket?: SocketFactory;
  readonly setTimer?: (fn: () => void, ms: number) => unknown;
  readonly clearTimer?: (id: unknown) => void;
  readonly random?: () => number;
}

export class ServerStreamError extends Error {
  /** `dates_with_data` of a 4410 (no data) error: the days the page can offer instead. */
  readonly datesWithData: readonly string[];

  constructor(message: string, readonly code: number | null, detail: Readonly<Record<string, unknown>> = {}) {
    super(message);
    this.name = 'ServerStreamError';
    const d = detail.dates_with_data;
    this.datesWithData = Array.isArray(d) ? d.filter((x): x is string => typeof x === 'string') : [];
  }
}

function peekType(text: string): string | null {
  // cheap check before JSON.parse of every grid_update: only end_of_stream is intercepted here
  if (!text.includes('"end_of_stream"')) return null;
  try {
    const o = JSON.parse(text) as { type?: unknown };
    return typeof o?.type === 'string' ? o.type : null;
  } catch {
    return null;
  }
}

export class StreamConnection {
  private ws: SocketLike | null = null;
  private decoder: StreamDecoder | null = null;
  private timer: unknown = null;
  private readonly backoff: Backoff;
  private readonly socket: SocketFactory;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (id: unknown) => void;
  private _state: ConnState = 'idle';
  private ended = false;
  private stopped = false;
  private _connects = 0;
  /** The server sent an `error` message on this socket (its close then needs no second message). */
  private serverError = false;
  url: string;

  constructor(url: string, private readonly h: ConnectionHandlers, opts: ConnectionOptions = {}) {
    this.url = url;
    this.backoff = new Backoff(opts.backoff, opts.random);
    this.socket = opts.socket ?? ((u) => new WebSocket(u) as unknown as SocketLike);
    this.setTimer = opts.setTimer ?? ((fn, ms) => setTimeout(fn, ms));
    this.clearTimer = opts.clearTimer ?? ((id) => clearTimeout(id as ReturnType<typeof setTimeout>));
  }

  get state(): ConnState {
    return this._state;
  }

  /** Sockets opened so far. */
  get connects(): number {
    return this._connects;
  }

  private set(state: ConnState, detail: string): void {
    this._state = state;
    this.h.onState?.(state, detail);
  }

  /** Open the stream (again, from scratch: a new decoder, a new replay session). */
  start(url: string = this.url): void {
    this.url = url;
    this.teardown();
    this.stopped = false;
    this.ended = false;
    this.backoff.reset();
    this.open();
  }

  /** Close for good (no reconnect). */
  stop(detail = 'stopped'): void {
    this.stopped = true;
    this.teardown();
    this.set('ended', detail);
  }

  private teardown(): void {
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = null;
      ws.onclose = null;
      try {
        ws.close(1000, 'client closed');
      } catch {
        /* already closed */
      }
    }
  }

  private open(): void {
    this.set('connecting', this.url);
    this.decoder = new StreamDecoder();
    this.serverError = false;
    this._connects++;
    let ws: SocketLike;
    try {
      ws = this.socket(this.url);
    } catch (e) {
      this.h.onError?.(e as Error, 'socket');
      this.set('error', (e as Error).message);
      return;
    }
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    let got = false;
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      if (!got) {
        got = true;
        this.backoff.reset();
        this.set('live', this.url);
      }
      this.message(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.closed(ev.code, ev.reason);
    };
    ws.onerror = () => {
      /* a close event always follows; the close code decides */
    };
  }

  private message(data: unknown): void {
    const decoder = this.decoder!;
    if (decoder.error) return; // the stream already failed; ignore whatever is still in flight
    if (typeof data === 'string' && peekType(data) === 'end_of_stream') {
      try {
        decoder.checkEnd();
      } catch (e) {
        this.violation(e);
        return;
      }
      this.ended = true;
      const info = JSON.parse(data) as Record<string, unknown>;
      this.h.onEnd?.(info);
      this.set('ended', `end of stream after ${decoder.bins} bins`);
      return;
    }
    let ev;
    try {
      ev = decoder.push(data as string | ArrayBuffer);
    } catch (e) {
      this.violation(e);
      return;
    }
    switch (ev.kind) {
      case 'runtime_config':
        this.h.onConfig?.(ev.config);
        break;
      case 'bin':
        this.h.onBin?.(ev.bin);
        break;
      case 'signal':
        this.h.onSignal?.(ev.signal);
        break;
      case 'server_error': {
        let code: number | null = null;
        let detail: Record<string, unknown> = {};
        try {
          detail = JSON.parse(data as string) as Record<string, unknown>;
          if (typeof detail.code === 'number') code = detail.code;
        } catch {
          /* the decoder already parsed it; keep null */
        }
        this.serverError = true;
        this.h.onError?.(new ServerStreamError(ev.message, code, detail), 'server');
        break;
      }
      case 'gap':
        this.h.onGap?.(ev.gap);
        break;
      case 'source_status':
        this.h.onSourceStatus?.(ev.status);
        break;
      case 'grid_update':
      case 'end_of_stream':
        break;
    }
  }

  private violation(e: unknown): void {
    const err = e instanceof StreamContractError ? e : new StreamContractError(String(e));
    this.h.onError?.(err, 'contract');
    this.stopped = true; // never reconnect into the same violation
    this.teardown();
    this.set('error', `stream contract violation: ${err.message}`);
  }

  private closed(code: number, reason: string): void {
    if (this.stopped) return;
    if (this.ended && code === 1000) return; // already 'ended'
    if (!shouldReconnect(code, this.ended)) {
      // after a server `error` message (already reported in full) the close only names its code
      this.set(code === 1000 ? 'ended' : 'error', this.serverError ? `closed ${code}` : `closed ${code}${reason ? `: ${reason}` : ''}`);
      return;
    }
    const delay = this.backoff.next();
    if (delay === null) {
      this.set('error', `closed ${code}; giving up after ${this.backoff.attempt} reconnects`);
      return;
    }
    this.set('reconnecting', `closed ${code}${reason ? `: ${reason}` : ''}; retry in ${(delay / 1000).toFixed(1)} s`);
    this.timer = this.setTimer(() => {
      this.timer = null;
      this.open();
    }, delay);
  }
}
