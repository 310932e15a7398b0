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
"""

from __future__ import annotations

import struct
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
