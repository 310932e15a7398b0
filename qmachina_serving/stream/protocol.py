"""The stream's wire vocabulary: message types and close codes (the contract clients code against).

Messages on `/v1/stream` (SPEC §7.2 with the §10.19 fixes):

1. one JSON `runtime_config` (the published runtime snapshot's message, plus `replay`);
2. per bin, a JSON `grid_update` (bin scalars; big ints as strings; `due_unix_ns` = the wall-clock
   deadline of the bin on the session's paced clock) immediately followed by one binary message: an
   Arrow IPC stream (schema + one record batch of 2R+1 rows, k ascending, or the EMA ensemble's single
   k = 0 row; the version's wire schema);
3. at the end of the window or of the data, a JSON `end_of_stream`, then a normal close (1000).

With `signals=1`, each bin's binary message is followed by a JSON `signal` message (the served signal's score
and the entry/exit events its close made known) and `end_of_stream` is preceded by a `signal` message with `final: true`
(qmachina_serving/README.md, "Messages").

A failure is a JSON `error` message (`code`, `message`) followed by a close with that code. Codes
4000-4999 are 4000 + the HTTP status the failure corresponds to.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any


class CloseCode(IntEnum):
    NORMAL = 1000  # after end_of_stream
    GOING_AWAY = 1001  # the server is shutting down
    INTERNAL_ERROR = 1011  # the replay failed after it started
    BAD_REQUEST = 4400  # missing `serving`, an unknown parameter, a malformed or out-of-range value
    UNAUTHORIZED = 4401  # no valid credential (Bearer header, session cookie or a single-use ticket)
    ORIGIN_FORBIDDEN = 4403  # browser Origin not allowed (refused at the handshake: HTTP 403)
    UNKNOWN_SERVING = 4404  # no alias or version of that name in the registry
    NO_DATA = 4410  # no bronze partition for (symbol, date), or no records in the window
    NOT_SERVABLE = 4422  # the version does not match this server's instrument lock / wire schema
    SLOW_CONSUMER = 4429  # the client stopped reading for longer than max_stall_s: dropped
    TOO_MANY = 4429  # (same code) a workspace quota (concurrent streams) or the auth rate limit was reached
    NOT_IMPLEMENTED = 4501  # a model without a stream producer in this server
    UNAVAILABLE = 4503  # too many sessions or subscribers, or the server is not ready


#: Documentation of every code (also served in the runtime_config message of each stream).
CLOSE_CODES: dict[int, str] = {
    CloseCode.NORMAL: "end of stream (after end_of_stream)",
    CloseCode.GOING_AWAY: "server shutting down",
    CloseCode.INTERNAL_ERROR: "the replay failed",
    CloseCode.BAD_REQUEST: "missing serving, unknown parameter or invalid value",
    CloseCode.ORIGIN_FORBIDDEN: "origin not allowed",
    CloseCode.UNKNOWN_SERVING: "unknown serving alias or version id",
    CloseCode.NO_DATA: "no data for the date/window",
    CloseCode.NOT_SERVABLE: "version not servable by this server",
    CloseCode.UNAUTHORIZED: "authentication required (Bearer header, session cookie or ?ticket=)",
    CloseCode.SLOW_CONSUMER: "slow consumer dropped, or a quota reached (the error message names it)",
    CloseCode.NOT_IMPLEMENTED: "model not streamed by this server",
    CloseCode.UNAVAILABLE: "server at capacity or not ready",
}


class StreamError(Exception):
    """A stream cannot be set up or continued; closes the socket with `code` after an error message."""

    def __init__(self, code: CloseCode, message: str, detail: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = CloseCode(code)
        self.message = message
        self.detail = detail or {}  # extra machine-readable fields of the error message (e.g. dates_with_data)

    @property
    def reason(self) -> str:
        """The close reason: at most 123 UTF-8 bytes (RFC 6455 §5.5)."""
        raw = self.message.encode()
        return raw[:123].decode(errors="ignore") if len(raw) > 123 else self.message

    def message_json(self) -> str:
        return dumps({"type": "error", "code": int(self.code), "message": self.message, **self.detail})


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)
