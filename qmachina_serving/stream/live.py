"""`?serving=ALIAS&source=live`: the alias's Redis Stream (written by `qmachina live`) fanned out to clients.

One `LiveChannel` per (workspace, alias) in this replica, started by its first client and stopped when its
last one leaves: a task reads the stream (`XREAD BLOCK`) and offers every entry to every subscriber with the
replay's fan-out (`session.Subscriber`: bounded queue with skip-ahead, one transport write of the shared
bytes, stalled readers dropped with 4429). The bytes come from Redis as the live process encoded them, so
every replica sends identical frames.

A client gets: the alias's current `runtime_config` (`source: "live"`; later ones replace it on the same
connection: a roll, a new day, a restart of the live process), then the latest bin of the stream (the
checkpoint frame: the picture now), then every new entry (bins, `gap`, `source_status`). When Redis cannot
be read, every client gets `source_status` unavailable (the connection stays open) and the channel retries
every `RETRY_S`; when it answers again, `source_status` available, the config if it changed, and the
stream continues from the last entry read. Before the live process has published the alias, a client gets
`source_status` unavailable first and its `runtime_config` as soon as it appears.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from qmachina_serving.live.channel import config_key, stream_key
from qmachina_serving.settings import ServingSettings
from qmachina_serving.stream.protocol import CloseCode, StreamError, dumps
from qmachina_serving.stream.session import FanOut, Subscriber, clock
from qmachina_serving.stream.wire import OP_TEXT, bin_wire, ws_frame

log = logging.getLogger("qmachina_serving.stream.live")

RETRY_S = 0.5
BLOCK_MS = 1000
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _text(s: str) -> dict[str, Any]:
    return {"type": "websocket.send", "text": s}


def status_message(available: bool, reason: str) -> str:
    return dumps({"type": "source_status", "status": "available" if available else "unavailable", "reason": reason})


class LiveChannel:
    """One alias's live stream in this replica (see the module docstring)."""

    def __init__(self, hub: LiveHub, workspace: str, alias: str):
        self.hub = hub
        self.workspace = workspace
        self.alias = alias
        self.key = stream_key(workspace, alias)
        self.subscribers: set[Subscriber] = set()
        self.config: str | None = None  # the current runtime_config message (JSON)
        self.latest_bin: tuple[str, bytes] | None = None
        self.available: bool | None = None
        self.last_id: bytes | str = "$"
        self.ready = asyncio.Event()  # the first read (config + latest bin) is done, or failed
        self.task: asyncio.Task[None] | None = None
        self.entries = 0
        self.bins = 0
        self.dropped = 0
        self.written_ms: deque[float] = deque(maxlen=4096)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"live {self.key}")

    # ---- clients -------------------------------------------------------------------------------------
    def subscribe(self, ws: Any) -> Subscriber:
        s = self.hub.settings
        first = self.config if self.config is not None else status_message(
            False, "redis unavailable" if self.available is False else "the live process has not published "
                                                                          f"alias {self.alias!r} yet")
        sub = Subscriber(ws, _text(first), s.client_queue_bins, s.max_stall_s, s.direct_write, on_stall=self._drop,
                         send_buffer_bytes=s.send_buffer_bytes)
        self.subscribers.add(sub)
        sub.start()
        if self.config is not None and self.available is False:
            self._offer_text(status_message(False, "redis unavailable"), [sub])
        elif self.latest_bin is not None and self.config is not None:
            self._offer_bin(*self.latest_bin, [sub])  # the checkpoint frame: the latest bin
        return sub

    def leave(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if sub.task is not None and not sub.task.done() and sub.task is not asyncio.current_task():
            sub.task.cancel()
        if not self.subscribers:
            self.stop()

    def stop(self) -> None:
        self.hub.forget(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _drop(self, sub: Subscriber) -> None:
        if sub.dropped:
            return
        sub.dropped = True
        self.dropped += 1
        self.leave(sub)
        sub.queue.clear()
        self.hub.replay.spawn_close(sub.ws, CloseCode.SLOW_CONSUMER,
                                    f"slow consumer: no progress for {self.hub.settings.max_stall_s:g} s",
                                    conn=sub.conn)

    def _offer(self, text: dict[str, Any], data: dict[str, Any] | None, wire: bytes,
               subs: list[Subscriber] | None = None) -> None:
        targets = list(self.subscribers) if subs is None else subs
        now = clock()
        fan = FanOut(now, len(targets), self.written_ms)
        for s in [s for s in targets if not s.offer(text, data, wire, fan, now)]:
            self._drop(s)

    def _offer_text(self, msg: str, subs: list[Subscriber] | None = None) -> None:
        self._offer(_text(msg), None, ws_frame(OP_TEXT, msg.encode()), subs)

    def _offer_bin(self, text: str, arrow: bytes, subs: list[Subscriber] | None = None) -> None:
        self._offer(_text(text), {"type": "websocket.send", "bytes": arrow}, bin_wire(text, arrow), subs)

    # ---- the reader ----------------------------------------------------------------------------------
    def _set_available(self, available: bool, reason: str) -> None:
        if self.available is available:
            return
        was = self.available
        self.available = available
        if was is not None or not available:
            self._offer_text(status_message(available, reason))

    async def _open(self, client: aioredis.Redis) -> None:
        """Config and the latest bin; the read continues after the newest entry."""
        config = await client.get(config_key(self.workspace, self.alias))
        if config is not None:
            text = config.decode()
            if text != self.config:
                first = self.config is None
                self.config = text
                if not first or self.subscribers:
                    self._offer_text(text)  # replaces the clients' (or is the first they get)
        if self.last_id == "$":
            newest = await client.xrevrange(self.key, count=1)
            self.last_id = newest[0][0] if newest else "0-0"
            for _, fields in await client.xrevrange(self.key, count=64):
                if fields.get(b"kind") == b"bin":
                    self.latest_bin = (fields[b"text"].decode(), fields[b"arrow"])
                    break

    async def _run(self) -> None:
        client = aioredis.Redis.from_url(self.hub.redis_url, socket_timeout=BLOCK_MS / 1000 + 2,
                                         socket_connect_timeout=1.0)
        opened = False
        try:
            while True:
                try:
                    if not opened:
                        await self._open(client)
                        opened = True
                        self._set_available(True, "redis available")
                        self.ready.set()
                    resp = await client.xread({self.key: self.last_id}, count=512, block=BLOCK_MS)
                except REDIS_ERRORS as exc:
                    opened = False
                    self._set_available(False, f"redis unavailable: {type(exc).__name__}")
                    self.ready.set()
                    await asyncio.sleep(RETRY_S)
                    continue
                for _, entries in resp or ():
                    for entry_id, fields in entries:
                        self.last_id = entry_id
                        self._deliver(fields)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live channel %s failed", self.key)
            for s in list(self.subscribers):
                s.finish([StreamError(CloseCode.INTERNAL_ERROR, "live stream failed").message_json()],
                         CloseCode.INTERNAL_ERROR, "live stream failed")
        finally:
            self.ready.set()
            await client.aclose()

    def _deliver(self, fields: dict[bytes, bytes]) -> None:
        self.entries += 1
        text = fields[b"text"].decode()
        if fields.get(b"kind") == b"bin":
            arrow = fields[b"arrow"]
            self.latest_bin = (text, arrow)
            self.bins += 1
            if self.config is not None:
                self._offer_bin(text, arrow)
            return
        if json.loads(text).get("type") == "runtime_config":  # rare: a new run, a roll, a new day
            if text == self.config:
                return
            self.config = text
        self._offer_text(text)

    def stats(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "alias": self.alias, "subscribers": len(self.subscribers),
                "available": self.available, "entries": self.entries, "bins": self.bins, "dropped": self.dropped,
                "last_id": self.last_id.decode() if isinstance(self.last_id, bytes) else self.last_id}


def parse_live_query(items: list[tuple[str, str]]) -> str:
    """`serving=ALIAS&source=live` (nothing else: the market as it happens has no date, window or speed)."""
    seen: dict[str, str] = {}
    for k, v in items:
        if k not in ("serving", "source"):
            raise StreamError(CloseCode.BAD_REQUEST, f"parameter {k!r} is not allowed with source=live (allowed: "
                                                     "serving, source)")
        if k in seen:
            raise StreamError(CloseCode.BAD_REQUEST, f"parameter {k!r} given twice")
        seen[k] = v
    alias = seen.get("serving", "").strip()
    if not alias:
        raise StreamError(CloseCode.BAD_REQUEST, "missing parameter 'serving' (an alias)")
    return alias


class LiveHub:
    """The live channels of this replica (keyed by workspace and alias)."""

    def __init__(self, settings: ServingSettings, replay_hub: Any):
        self.settings = settings
        self.replay = replay_hub  # the replay hub: spawn_close for dropped clients
        self.redis_url = settings.redis_url
        self.channels: dict[tuple[str, str], LiveChannel] = {}
        self.started = time.time()

    @property
    def n_subscribers(self) -> int:
        return sum(len(c.subscribers) for c in self.channels.values())

    async def join(self, workspace: str, alias: str, ws: Any) -> tuple[LiveChannel, Subscriber]:
        if self.n_subscribers + self.replay.n_subscribers >= self.settings.max_subscribers:
            raise StreamError(CloseCode.UNAVAILABLE, f"server at capacity ({self.settings.max_subscribers} clients)")
        ch = self.channels.get((workspace, alias))
        if ch is None:
            ch = LiveChannel(self, workspace, alias)
            self.channels[(workspace, alias)] = ch
            ch.start()
        await ch.ready.wait()
        return ch, ch.subscribe(ws)

    def forget(self, ch: LiveChannel) -> None:
        if self.channels.get((ch.workspace, ch.alias)) is ch:
            del self.channels[(ch.workspace, ch.alias)]

    async def shutdown(self) -> None:
        for ch in list(self.channels.values()):
            for sub in list(ch.subscribers):
                sub.finish([], CloseCode.GOING_AWAY, "server shutting down")
            if ch.task is not None:
                ch.task.cancel()

    def stats(self) -> dict[str, Any]:
        return {"channels": [c.stats() for c in self.channels.values()]}
