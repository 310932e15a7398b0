"""Bytes on the wire: a bin's two WebSocket frames built once, written as-is to every subscriber.

Per client and bin, the ASGI path costs two `send` calls, each framing its payload again (a 25 KB copy
plus a join) and making its own socket write; at 200 clients that was ~30 µs per client-bin, two thirds
of it in the writes. The server frames are identical for every client (no masking server-side, no
permessage-deflate: it is switched off), so `bin_wire` builds `text frame + binary frame` once per bin
and `DirectWriter` writes those bytes with ONE transport write per client.

`DirectWriter.of(send)` attaches only to uvicorn's sans-I/O `websockets` protocol (the one `serve` runs;
uvicorn is pinned < 0.55) with no extension negotiated, and mirrors its `send` exactly: wait while the
transport is paused (high-water mark), refuse after a close or a disconnect. Data frames written around
the protocol object leave its state untouched (it tracks only continuation and close state); pings and
the close handshake still go through it. With any other protocol, `of` returns None and the subscriber
uses the two ASGI sends.

A client that stops reading (`Connection`): uvicorn's `send` waits while the transport is paused, so a
close frame sent the ASGI way never leaves, and its `transport.close()` waits for the buffer to drain,
which a dead reader never does. `Connection.close_now` queues the close frame behind the buffered bytes
without waiting (a client that resumes reading gets it), and `Connection.cut` aborts the socket with
SO_LINGER 0 (an RST), releasing the transport buffer and the kernel send queue at once: a plain close
would leave the kernel an orphan socket still holding the unsent bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
from typing import Any

OP_TEXT, OP_BINARY = 0x1, 0x2


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final, uncompressed server frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def bin_wire(grid_update: str, arrow: bytes) -> bytes:
    """A bin's grid_update text frame immediately followed by its Arrow binary frame."""
    return b"".join((ws_frame(OP_TEXT, grid_update.encode()), ws_frame(OP_BINARY, arrow)))


class ClientGone(ConnectionError):
    """The connection is closing or closed."""


class DirectWriter:
    """Writes pre-built frames to one uvicorn sans-I/O WebSocket connection (see the module docstring)."""

    __slots__ = ("_open", "proto")

    def __init__(self, proto: Any, open_state: Any):
        self.proto = proto
        self._open = open_state

    @classmethod
    def of(cls, send: Any) -> DirectWriter | None:
        proto = getattr(send, "__self__", None)
        if type(proto).__name__ != "WebSocketsSansIOProtocol":
            return None
        try:
            from websockets.protocol import State

            conn = proto.conn
            ok = (not conn.extensions and proto.handshake_complete and hasattr(proto, "writable")
                  and hasattr(proto, "disconnected") and hasattr(proto, "close_sent") and proto.transport is not None)
        except AttributeError:
            return None
        return cls(proto, State.OPEN) if ok else None

    async def write(self, data: bytes) -> None:
        p = self.proto
        if not p.writable.is_set():  # transport paused: wait as uvicorn's own send does
            await p.writable.wait()
        if p.disconnected or p.close_sent or p.conn.state is not self._open:
            raise ClientGone
        p.transport.write(data)

    def try_write(self, data: bytes) -> bool:
        """`write` without waiting: True when written now; False when the transport is paused or the
        connection is closing (the caller queues the frame and its sender task deals with it)."""
        p = self.proto
        if not p.writable.is_set() or p.disconnected or p.close_sent or p.conn.state is not self._open:
            return False
        p.transport.write(data)
        return True


def _unsent(sock: socket.socket) -> int:
    """Bytes in the kernel send queue not yet acknowledged (Linux TIOCOUTQ / SIOCOUTQ)."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


class Connection:
    """The transport under one ASGI WebSocket `send` (uvicorn's protocols): back-pressure, pinned bytes, abort."""

    __slots__ = ("proto", "sansio", "transport", "writable")

    def __init__(self, send: Any):
        self.proto = getattr(send, "__self__", None)
        self.transport = getattr(self.proto, "transport", None)
        w = getattr(self.proto, "writable", None)
        self.writable: asyncio.Event | None = w if isinstance(w, asyncio.Event) else None
        self.sansio = type(self.proto).__name__ == "WebSocketsSansIOProtocol"

    def set_send_buffer(self, size: int) -> None:
        """Cap the socket's kernel send buffer (SO_SNDBUF; Linux reserves twice the value)."""
        sock = None if self.transport is None else self.transport.get_extra_info("socket")
        if sock is not None and size > 0:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def pinned_bytes(self) -> int:
        """Bytes this connection holds on the server: the transport's buffer plus the kernel's unsent queue."""
        t = self.transport
        if t is None or self.gone:
            return 0
        n = t.get_write_buffer_size()
        sock = t.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                n += _unsent(sock)
        return n

    @property
    def gone(self) -> bool:
        """The connection is lost (uvicorn called connection_lost)."""
        return bool(getattr(self.proto, "disconnected", False))

    @property
    def handshake_done(self) -> bool:
        """Both close frames exchanged (sans-I/O protocol only)."""
        conn = getattr(self.proto, "conn", None)
        return self.sansio and getattr(conn, "close_rcvd", None) is not None

    def close_now(self, code: int, reason: str) -> bool:
        """Queue a close frame without waiting for the transport to drain (sans-I/O protocol: mirrors its
        `send` of websocket.close, minus the wait and the close timer); False when not possible here."""
        p = self.proto
        if not self.sansio or self.transport is None:
            return False
        if p.disconnected or p.close_sent or self.transport.is_closing():
            return True
        p.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        p.conn.send_close(code, reason)
        self.transport.write(b"".join(p.conn.data_to_send()))
        p.close_sent = True
        return True

    def cut(self) -> str:
        """End the connection now: a graceful close after a completed closing handshake, else an abort.
        Returns what happened: "gone" (already lost), "closed", "aborted" or "unknown" (no transport)."""
        t = self.transport
        if t is None:
            return "unknown"
        if self.gone:
            return "gone"
        if self.handshake_done and t.get_write_buffer_size() == 0:
            t.close()
            return "closed"
        sock = t.get_extra_info("socket")
        if sock is not None:  # linger 0: close() sends RST and drops the kernel's send queue instead of
            with contextlib.suppress(OSError):  # keeping an orphan that probes a zero window for minutes
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t.abort()
        return "aborted"
