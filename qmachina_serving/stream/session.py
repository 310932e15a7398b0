"""Replay sessions and fan-out: one engine replay per (version, symbol, date, window, speed), shared.

Session (SPEC §10.19 fixes):
- The first client of a key starts a session; every later client with the same key joins it (from the
  next bin on) instead of starting its own replay. The session stops when its last client leaves.
- Each bin is computed and encoded once (`replay.BinProducer`, in a worker thread, kept `ahead_bins`
  ahead of the clock); at its deadline its two WebSocket frames are built once (`wire.bin_wire`) and
  the very same bytes object is queued to every subscriber and written with one transport write
  (`wire.DirectWriter`; the plain ASGI sends of the same messages when the protocol is not uvicorn's
  sans-I/O one).
- Pacing is on absolute deadlines: bin n is due at `t0 + (bin_end_n - bin_end_0) / speed`
  (= t0 + n·cell/speed for the contiguous bins the engine emits), t0 = first bin ready + `lead_in_s`.
  Sending never shifts the schedule, so there is no drift; a late bin (producer behind at a very high
  speed) goes out at once and the next deadline is unchanged. `due_unix_ns` in each grid_update is
  the bin's deadline on the wall clock (clients measure their latency against it).
- The end is the emission window's end or the end of the data: a final `end_of_stream` message, then
  a normal close (1000).

Slow-client policy (per subscriber, never blocking the session or other clients):
- Each client has its own sender task and a bounded queue of `client_queue_bins` bins. A client with an
  empty queue and a transport that takes bytes is written by the fan-out loop directly (`Subscriber.offer`,
  `DirectWriter.try_write`): the sender task only works off a backlog (and the hello and final messages).
- Skip ahead: when a new bin finds the queue full, the oldest queued bin is discarded; the client
  keeps receiving the newest bins in order, with a gap in `bin_seq` (each grid_update is still
  followed by its binary frame: a bin is skipped whole).
- Drop: a client that has something to send (bins, or the final messages) and has not completed a send
  for `max_stall_s` (its socket is not being read) is removed from the session: its sender notices it
  itself (it waits for a paused transport with that deadline), and so does the fan-out when it offers the
  next bin. The close frame 4429 is queued behind the unread bytes at once (`wire.Connection.close_now`:
  a client that resumes reading within `close_grace_s` gets it and closes cleanly); after `close_grace_s`
  the socket is aborted (RST), freeing the transport buffer and the kernel send queue.
- Memory one dead reader pins, at most, for `max_stall_s + close_grace_s` after its last completed write:
  its queue (≤ `client_queue_bins` bins, bytes shared with the other clients), the transport buffer
  (≤ asyncio's 64 KiB high-water mark + one bin) and the kernel send queue (≤ 2 × `send_buffer_bytes`,
  SO_SNDBUF). `stats()` reports each session's largest `pinned_bytes` (transport + unsent kernel bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from qmachina_assets.core.gold.dsl_runtime import DslRuntime
from qmachina_serving.settings import ServingSettings
from qmachina_serving.stream.protocol import CLOSE_CODES, CloseCode, StreamError, dumps
from qmachina_serving.stream.replay import (
    BinProducer,
    Frame,
    ReplayPlan,
    plan_key,
    shaper_for,
    signal_setup,
    spawn_pool,
)
from qmachina_serving.stream.source import ServedVersion
from qmachina_serving.stream.wire import OP_TEXT, Connection, DirectWriter, bin_wire, ws_frame

log = logging.getLogger("qmachina_serving.stream")


clock = time.monotonic


async def _sleep_until(due: float) -> bool:
    """Sleep until the monotonic clock reaches `due` (never earlier); True when it was already past.

    uvloop's timers have millisecond granularity and may fire up to ~1 ms early; the remainder is then
    spent yielding to the loop (other tasks keep running) rather than in another timer."""
    delay = due - clock()
    if delay <= 0:
        return True
    while delay > 0:
        await asyncio.sleep(delay if delay > 0.001 else 0)
        delay = due - clock()
    return False


def _send_text(text: str) -> dict[str, Any]:
    return {"type": "websocket.send", "text": text}


class FanOut:
    """One bin's delivery: how many subscribers still have to write it; the time the last one did."""

    __slots__ = ("due", "pending", "sink")

    def __init__(self, due: float, pending: int, sink: deque[float]):
        self.due = due
        self.pending = pending
        self.sink = sink

    def done(self, now: float) -> None:
        self.sink.append((now - self.due) * 1e3)


class Subscriber:
    """One client of a session: its queue of shared frame messages and its sender task."""

    def __init__(self, ws: Any, hello: dict[str, Any], maxlen: int, max_stall_s: float, direct: bool = True,
                 on_stall: Any = None, send_buffer_bytes: int = 0, ready: asyncio.Event | None = None):
        self.ws = ws
        self.hello = hello
        self.ready = ready  # set when `hello` is final (a Gold DSL session: once its state is known)
        self.greeted = False  # the hello is written (the stall clock runs from then: a DSL hello is large)
        self.writer = DirectWriter.of(ws.send) if direct else None  # one write of the shared bin bytes
        self.conn = Connection(ws.send)
        self.conn.set_send_buffer(send_buffer_bytes)
        self.on_stall = on_stall  # called (once) when the sender gives up on a client that stopped reading
        # (text message, binary message or None for a text-only message, the pre-built wire bytes, fan-out,
        # a text message after the binary one or None: the bin's `signal` message with signals=1)
        self.queue: deque[tuple[dict[str, Any], dict[str, Any] | None, bytes, FanOut, dict[str, Any] | None]] = deque()
        self.maxlen = maxlen
        self.max_stall_s = max_stall_s
        self._waiter: asyncio.Future[None] | None = None  # set while the sender waits for work
        self.sending = False
        self.last_progress = clock()
        self.sent = 0
        self.skipped = 0
        self.final: tuple[list[str], int, str] | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.stalled = False  # the sender gave up waiting for the transport
        self.dropped = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, text: dict[str, Any], data: dict[str, Any] | None, wire: bytes, fan: FanOut, now: float,
              extra: dict[str, Any] | None = None) -> bool:
        """Queue one bin (skip-ahead when full); False when the client is stalled and must be dropped."""
        if self.closed:
            return True
        if not self.greeted:
            pass
        elif not self.queue and not self.sending:
            self.last_progress = now  # idle until now: the stall clock starts with this bin
            w = self.writer
            if w is not None and self.final is None and w.try_write(wire):
                # the fast path: an idle client whose transport takes bytes gets them now, from the fan-out
                # loop itself; waking its sender task instead costs a task switch per client and bin
                self.sent += 1
                fan.pending -= 1
                if fan.pending == 0:
                    fan.done(clock())
                return True
        elif now - self.last_progress > self.max_stall_s:
            return False
        if len(self.queue) >= self.maxlen:
            self.queue.popleft()
            self.skipped += 1
        self.queue.append((text, data, wire, fan, extra))
        self._wake()
        return True

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def finish(self, messages: list[str], code: int, reason: str) -> None:
        """After the queued bins: send `messages`, then close with `code`."""
        if self.final is None:
            self.final = (messages, int(code), reason)
            self._wake()

    async def _ready(self) -> bool:
        """Wait until the transport takes more bytes, at most until the stall deadline; False: stalled."""
        gate = self.conn.writable
        if gate is None or gate.is_set():
            return True
        left = self.last_progress + self.max_stall_s - clock()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gate.wait(), left)
                return True
        return False

    async def _send(self, message: dict[str, Any]) -> bool:
        if not await self._ready():
            return False
        if self.conn.writable is not None:
            await self.ws.send(message)
            return True
        try:  # a protocol without a visible write gate: bound the send itself
            await asyncio.wait_for(self.ws.send(message), max(self.last_progress + self.max_stall_s - clock(), 0))
        except TimeoutError:
            return False
        return True

    async def _run(self) -> None:
        writer = self.writer
        loop = asyncio.get_running_loop()
        try:
            if self.ready is not None:
                await self.ready.wait()
            if not await self._send(self.hello):
                return self._stall()
            self.greeted = True
            self.last_progress = clock()
            while True:
                while self.queue:
                    text, data, wire, fan, extra = self.queue.popleft()
                    self.sending = True
                    if writer is not None:
                        if not await self._ready():
                            return self._stall()
                        await writer.write(wire)
                    elif not (await self._send(text) and (data is None or await self._send(data))
                              and (extra is None or await self._send(extra))):
                        return self._stall()
                    self.sending = False
                    self.sent += 1
                    self.last_progress = now = clock()
                    fan.pending -= 1
                    if fan.pending == 0:
                        fan.done(now)
                if self.final is not None:
                    messages, code, reason = self.final
                    self.last_progress = clock()  # the final messages get their own stall allowance
                    for m in messages:
                        if not await self._send(_send_text(m)):
                            return self._stall()
                    if not await self._send({"type": "websocket.close", "code": code, "reason": reason}):
                        return self._stall()  # a dead reader at the end: cut it too, do not leave it open
                    return
                self._waiter = loop.create_future()
                await self._waiter
                self._waiter = None
        except asyncio.CancelledError:
            raise
        except Exception:  # the client went away (disconnect / ClientDisconnected / closed state)
            pass
        finally:
            self.sending = False
            self.closed = True

    def _stall(self) -> None:
        self.stalled = True
        self.closed = True
        if self.on_stall is not None:
            self.on_stall(self)


class Session:
    """One shared, paced replay (see the module docstring)."""

    def __init__(self, hub: StreamHub, key: tuple[Any, ...], version: ServedVersion, plan: ReplayPlan):
        self.hub = hub
        self.key = key
        self.id = "rs_" + hashlib.sha256(repr(key).encode()).hexdigest()[:12]
        self.version = version
        self.plan = plan
        self.settings = hub.settings
        self.state = "starting"
        self.subscribers: set[Subscriber] = set()
        self.task: asyncio.Task[None] | None = None
        self.bins_sent = 0
        self.last_bin_seq: int | None = None
        self.skipped = 0  # of subscribers that left
        self.dropped = 0
        self.pinned_max = 0  # the largest transport + kernel backlog of a subscriber seen (bytes)
        self.lateness_ms: deque[float] = deque(maxlen=4096)  # pacer: fan-out time - deadline
        self.written_ms: deque[float] = deque(maxlen=4096)  # deadline -> the last subscriber's frame written
        self.open_info: dict[str, Any] = {}
        self.t0: float | None = None
        self.created = time.time()
        replay = {"session_id": self.id, **plan.describe(), "cell_width_ms": int(version.runtime.cell_width_ms)}
        if plan.signals:  # what the `signal` messages trade (signal, EvalParams, where they came from)
            replay["signals"] = signal_setup(version).describe()
        hello = {**version.runtime_config, "replay": replay,
                 "stream_contract": {"version": 1, "close_codes": {str(int(k)): v for k, v in CLOSE_CODES.items()},
                                     "client_queue_bins": self.settings.client_queue_bins,
                                     "max_stall_s": self.settings.max_stall_s}}
        self._hello_body = hello
        self.hello = _send_text(dumps(hello))
        # A Gold DSL version: every client's hello carries the DSL state just before its first bin
        # (`replay.gold_dsl_state`, DslRuntime.state_json), kept by `fan_dsl`, which steps each fanned-out bin.
        self.dsl_ready: asyncio.Event | None = asyncio.Event() if version.snapshot.get("gold_dsl") else None
        self.fan_dsl: DslRuntime | None = None
        self.producer = BinProducer(hub.lake, plan, version, feed_records=self.settings.feed_records,
                                    inline_warmup_records=self.settings.inline_warmup_records, pool=hub.pool)

    # ---- membership --------------------------------------------------------------------------
    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"session {self.id}")

    def subscribe(self, ws: Any) -> Subscriber:
        hello = self._dsl_hello() if self.fan_dsl is not None else self.hello
        sub = Subscriber(ws, hello, self.settings.client_queue_bins, self.settings.max_stall_s,
                         self.settings.direct_write, on_stall=self._drop,
                         send_buffer_bytes=self.settings.send_buffer_bytes, ready=self.dsl_ready)
        self.subscribers.add(sub)
        sub.start()
        return sub

    def leave(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            self.skipped += sub.skipped
        if sub.task is not None and not sub.task.done() and sub.task is not asyncio.current_task():
            sub.task.cancel()
        if not self.subscribers and self.state != "ended":
            self.stop()  # nobody listens: stop the replay

    def stop(self) -> None:
        """End the replay now: leave the hub at once (a new client starts a new session), cancel the task."""
        self.state = "ended"
        self.hub.forget(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _drop(self, sub: Subscriber) -> None:
        if sub.dropped:
            return
        sub.dropped = True
        self.dropped += 1
        self.pinned_max = max(self.pinned_max, sub.conn.pinned_bytes())
        self.leave(sub)
        sub.queue.clear()
        log.info("session %s: dropped a client stalled > %.1f s (sent %d bins, skipped %d)", self.id,
                 self.settings.max_stall_s, sub.sent, sub.skipped)
        self.hub.spawn_close(sub.ws, CloseCode.SLOW_CONSUMER,
                             f"slow consumer: no progress for {self.settings.max_stall_s:g} s", conn=sub.conn)

    def _dsl_hello(self) -> dict[str, Any]:
        assert self.fan_dsl is not None
        body = self._hello_body
        return _send_text(dumps({**body, "replay": {**body["replay"], "gold_dsl_state": self.fan_dsl.state_json()}}))

    def _dsl_opened(self) -> None:
        """After the producer opened (warm-up or checkpoint done, no bin produced): the DSL state every client
        that joined so far starts from."""
        dsl = self.producer.dsl
        if dsl is not None:
            self.fan_dsl = DslRuntime(dsl.runtime.program)
            self.fan_dsl.load_state(dsl.runtime.state())
            hello = self._dsl_hello()
            for s in self.subscribers:
                s.hello = hello
        self._release_hellos()

    def _release_hellos(self) -> None:
        if self.dsl_ready is not None:
            self.dsl_ready.set()

    # ---- the replay --------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        ex = self.hub.executor
        producer = self.producer
        ahead = self.settings.ahead_bins
        refill: asyncio.Future[list[Frame]] | None = None
        try:
            self.open_info = await loop.run_in_executor(ex, producer.open)
            self._dsl_opened()
            buf: deque[Frame] = deque(await loop.run_in_executor(ex, producer.produce, ahead))
            self.state = "running"
            if not buf:
                self._end()
                return
            first_end = buf[0].bin_end_ns
            lead = self.settings.lead_in_s
            self.t0 = t0 = clock() + lead
            wall0 = time.time_ns() + int(lead * 1e9)
            scale = 1e-9 / self.plan.speed
            while True:
                if refill is None and not producer.finished and len(buf) < ahead // 2:
                    refill = loop.run_in_executor(ex, producer.produce, ahead // 2)
                if refill is not None and (not buf or refill.done()):
                    buf.extend(await refill)
                    refill = None
                    continue
                if not buf:
                    break
                frame = buf.popleft()
                offset = (frame.bin_end_ns - first_end) * scale
                due = t0 + offset
                late = await _sleep_until(due)
                self._fan_out(frame, wall0 + int(offset * 1e9), due)
                if late:
                    await asyncio.sleep(0)  # behind schedule: let the senders run between bins
            self._end()
        except asyncio.CancelledError:
            self.state = "ended"
            raise
        except StreamError as err:
            self._fail(err)
        except Exception as exc:  # any producer failure ends the stream with 1011
            log.exception("session %s failed", self.id)
            self._fail(StreamError(CloseCode.INTERNAL_ERROR, f"replay failed: {type(exc).__name__}: {exc}"))
        finally:
            self.hub.forget(self)

    def _fan_out(self, frame: Frame, due_wall_ns: int, due: float) -> None:
        update = frame.grid_update(due_wall_ns)
        text = _send_text(update)
        data = {"type": "websocket.send", "bytes": frame.arrow}
        wire = bin_wire(update, frame.arrow) if self.settings.direct_write else b""
        extra = None
        if frame.signal is not None:  # signals=1: the bin's signal message right after its frame, same write
            extra = _send_text(frame.signal)
            if wire:
                wire += ws_frame(OP_TEXT, frame.signal.encode())
        now = clock()
        self.lateness_ms.append((now - due) * 1e3)
        if self.fan_dsl is not None and frame.dsl_in is not None:
            self.fan_dsl.step_raw(*frame.dsl_in)  # a client joining after this bin starts from this state
        fan = FanOut(due, len(self.subscribers), self.written_ms)
        stalled = [s for s in self.subscribers if not s.offer(text, data, wire, fan, now, extra)]
        for s in stalled:
            self._drop(s)
        self.bins_sent += 1
        self.last_bin_seq = frame.bin_seq

    def _end(self) -> None:
        self.state = "ended"
        self._release_hellos()
        msg = dumps({"type": "end_of_stream", "reason": "end_of_window" if self.plan.end_ns else "end_of_data",
                     "bins": self.bins_sent, "last_bin_seq": self.last_bin_seq, "session_id": self.id})
        final = self.producer.final_signal  # signals=1: what the session's end closes (Trader.finish)
        for s in self.subscribers:
            s.finish([msg] if final is None else [final, msg], CloseCode.NORMAL, "end of stream")

    def _fail(self, err: StreamError) -> None:
        self.state = "ended"
        self._release_hellos()
        for s in self.subscribers:
            s.finish([err.message_json()], err.code, err.reason)

    def stats(self) -> dict[str, Any]:
        subs = list(self.subscribers)

        def pct(values: deque[float]) -> dict[str, float] | None:
            if not values:
                return None
            a = np.asarray(values)
            return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
                    "max": round(float(a.max()), 3)}

        return {"session_id": self.id, "version_id": self.version.version_id, "state": self.state,
                "replay": self.plan.describe(), "subscribers": len(subs),
                "direct_writers": sum(1 for s in subs if s.writer is not None), "bins_sent": self.bins_sent,
                "last_bin_seq": self.last_bin_seq, "skipped": self.skipped + sum(s.skipped for s in subs),
                "dropped": self.dropped, "open": self.open_info,
                "pinned_bytes": max([self.pinned_max, *(s.conn.pinned_bytes() for s in subs)]),
                "pacer_lateness_ms": pct(self.lateness_ms), "all_written_ms": pct(self.written_ms)}


class StreamHub:
    """Every live session of the process, keyed by `replay.plan_key`; capacity limits; shutdown."""

    def __init__(self, settings: ServingSettings, lake: Path):
        self.settings = settings
        self.lake = lake
        self.sessions: dict[tuple[Any, ...], Session] = {}
        self.executor = ThreadPoolExecutor(max_workers=min(8, settings.max_sessions),
                                           thread_name_prefix="qmachina-producer")
        self._pool: Executor | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.ready = False
        self.started_sessions = 0
        self.finished: dict[str, int] = {"sessions": 0, "bins_sent": 0, "skipped": 0, "dropped": 0,
                                         "aborted": 0}

    def pool(self) -> Executor:
        """Worker process for large checkpoint misses (spawned on first use)."""
        if self._pool is None or getattr(self._pool, "_broken", False):
            self._pool = spawn_pool()
        return self._pool

    @property
    def n_subscribers(self) -> int:
        return sum(len(s.subscribers) for s in self.sessions.values())

    def join(self, version: ServedVersion, plan: ReplayPlan, ws: Any) -> tuple[Session, Subscriber]:
        if self.n_subscribers >= self.settings.max_subscribers:
            raise StreamError(CloseCode.UNAVAILABLE, f"server at capacity ({self.settings.max_subscribers} clients)")
        key = plan_key(version, plan)
        session = self.sessions.get(key)
        if session is None:
            if len(self.sessions) >= self.settings.max_sessions:
                raise StreamError(CloseCode.UNAVAILABLE, f"server at capacity ({self.settings.max_sessions} "
                                                         "replay sessions)")
            shaper_for(version)  # 4501 before a session exists
            if plan.signals:
                signal_setup(version)  # 4422 / 4501 (no signal, an ML signal) before a session exists
            session = Session(self, key, version, plan)
            self.sessions[key] = session
            self.started_sessions += 1
            session.start()
        return session, session.subscribe(ws)

    def forget(self, session: Session) -> None:
        """Remove an ended session (idempotent) and add its figures to the totals."""
        if self.sessions.get(session.key) is not session:
            return
        del self.sessions[session.key]
        self.finished["sessions"] += 1
        self.finished["bins_sent"] += session.bins_sent
        self.finished["skipped"] += session.skipped + sum(s.skipped for s in session.subscribers)
        self.finished["dropped"] += session.dropped

    def spawn_close(self, ws: Any, code: int, reason: str, conn: Connection | None = None) -> None:
        """Close a dropped client with `code` and cut its socket after `close_grace_s` (module docstring)."""
        grace = self.settings.close_grace_s
        conn = conn or Connection(ws.send)

        async def close() -> None:
            if not conn.close_now(int(code), reason):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.send({"type": "websocket.close", "code": int(code), "reason": reason}),
                                           grace)
            deadline = clock() + grace
            while clock() < deadline and not conn.gone and not conn.handshake_done:
                await asyncio.sleep(0.05)
            if conn.cut() == "aborted":
                self.finished["aborted"] += 1

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def shutdown(self) -> None:
        for s in list(self.sessions.values()):
            for sub in list(s.subscribers):
                sub.finish([], CloseCode.GOING_AWAY, "server shutting down")
            if s.task is not None:
                s.task.cancel()
        await asyncio.sleep(0)
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        live = [s.stats() for s in self.sessions.values()]
        return {"sessions": live, "live_sessions": len(live), "subscribers": sum(s["subscribers"] for s in live),
                "started_sessions": self.started_sessions, "finished": dict(self.finished)}
