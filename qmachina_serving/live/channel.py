"""The live frames of one serving alias in Redis: what `qmachina live` writes and every serving replica reads.

Per (workspace, alias):
- `qmachina:live:<workspace>:<alias>` — a Redis Stream, bounded (`XADD MAXLEN ~ N`). Each entry is one
  message the stream's clients get, already encoded: `kind=bin` (`text`: the whole grid_update JSON,
  `arrow`: the bin's Arrow IPC bytes) or `kind=msg` (`text`: a JSON message: `runtime_config`, `gap`,
  `source_status`). Replicas send the stored bytes as they are, so every replica's frames are identical.
- `<stream>:config` — the current `runtime_config` message (the live process sets it at start, at a roll,
  and when Redis comes back): a client that joins gets it first, then the latest bin of the stream (the
  checkpoint frame), then every new entry.

The live process never waits on Redis: a failed write marks the channel down (the bins of that time are
not published; the capture to disk goes on) and it tries again at most every `retry_s`; when it is back it
re-sets every config key (a restarted Redis lost them). Replicas tell their clients `source_status`
themselves, from their own connection to Redis.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from qmachina_serving.stream.protocol import dumps

log = logging.getLogger("qmachina_serving.live.channel")

PREFIX = "qmachina:live"
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def stream_key(workspace: str, alias: str) -> str:
    return f"{PREFIX}:{workspace}:{alias}"


def config_key(workspace: str, alias: str) -> str:
    return stream_key(workspace, alias) + ":config"


def connect(url: str, timeout_s: float = 1.0) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


class Publisher:
    """Writes the live frames of several aliases (see the module docstring). Not thread-safe."""

    def __init__(self, url: str, maxlen: int = 20_000, retry_s: float = 1.0):
        self.url = url
        self.maxlen = int(maxlen)
        self.retry_s = float(retry_s)
        self.client = connect(url)
        self.available = True
        self.configs: dict[tuple[str, str], str] = {}  # (workspace, alias) -> runtime_config JSON
        self.dropped_bins = 0
        self.published_bins = 0
        self.outages = 0
        self._next_try = 0.0
        self.last_error: str | None = None

    def _down(self, exc: Exception) -> None:
        if self.available:
            self.outages += 1
            log.warning("redis unavailable (%s): bins are not published until it returns; capture continues", exc)
        self.available = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        self._next_try = time.monotonic() + self.retry_s

    def _usable(self) -> bool:
        """True when writes may be tried now (after an outage: once per `retry_s`, re-publishing the configs)."""
        if self.available:
            return True
        if time.monotonic() < self._next_try:
            return False
        try:
            pipe = self.client.pipeline(transaction=False)
            for (ws, alias), text in self.configs.items():
                pipe.set(config_key(ws, alias), text)  # (a restarted Redis lost them)
            pipe.execute()
        except REDIS_ERRORS as exc:
            self._down(exc)
            return False
        log.info("redis available again")
        self.available = True
        return True

    def _xadd(self, pipe: Any, workspace: str, alias: str, fields: dict[str, Any]) -> None:
        pipe.xadd(stream_key(workspace, alias), fields, maxlen=self.maxlen, approximate=True)

    def set_config(self, workspace: str, alias: str, message: dict[str, Any]) -> None:
        """The alias's runtime_config: stored for joining clients and sent to connected ones (it replaces
        theirs: a new run, a roll)."""
        text = dumps(message)
        self.configs[(workspace, alias)] = text
        if not self._usable():
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(config_key(workspace, alias), text)
            self._xadd(pipe, workspace, alias, {"kind": "msg", "text": text})
            pipe.execute()
        except REDIS_ERRORS as exc:
            self._down(exc)

    def message(self, workspace: str, alias: str, message: dict[str, Any]) -> None:
        if not self._usable():
            return
        try:
            self.client.xadd(stream_key(workspace, alias), {"kind": "msg", "text": dumps(message)},
                             maxlen=self.maxlen, approximate=True)
        except REDIS_ERRORS as exc:
            self._down(exc)

    def bins(self, batches: list[tuple[str, str, list[tuple[str, bytes]]]]) -> None:
        """[(workspace, alias, [(grid_update JSON, arrow bytes), ...]), ...] in one round trip."""
        n = sum(len(b) for _, _, b in batches)
        if not n:
            return
        if not self._usable():
            self.dropped_bins += n
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for ws, alias, frames in batches:
                for text, arrow in frames:
                    self._xadd(pipe, ws, alias, {"kind": "bin", "text": text, "arrow": arrow})
            pipe.execute()
            self.published_bins += n
        except REDIS_ERRORS as exc:
            self.dropped_bins += n
            self._down(exc)

    def close(self) -> None:
        self.client.close()
