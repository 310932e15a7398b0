"""The Databento Live (Raw API) vocabulary both ends of the loopback use (notes/databento.md §e).

Control lines are `key=value` pairs joined by `|` and ended by `\\n`; after the authentication reply the
gateway speaks DBN only: a version-3 Metadata header (mixed schema, stype_out instrument_id), then records.
Record bodies are built with `databento_dbn` (the reference encoder), so the client decodes exactly what
the real service sends.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import string

import databento_dbn as dbnlib

LSG_VERSION = "0.1.0+qmachina-loopback"
BUCKET_ID_LENGTH = 5


def parse_line(line: bytes | str) -> dict[str, str]:
    """`a=1|b=2\\n` -> {"a": "1", "b": "2"} (a value may contain `=`; keys are whatever precedes it)."""
    text = line.decode() if isinstance(line, bytes) else line
    out: dict[str, str] = {}
    for token in text.strip().split("|"):
        if token:
            key, _, value = token.partition("=")
            out[key] = value
    return out


def format_line(**fields: object) -> bytes:
    return ("|".join(f"{k}={v}" for k, v in fields.items() if v is not None) + "\n").encode()


def new_challenge() -> str:
    return "".join(secrets.choice(string.ascii_letters) for _ in range(32))


def cram_response(challenge: str, key: str) -> str:
    """What a client answers to `cram=<challenge>`: sha256 of `challenge|key`, then `-` and the key's bucket id."""
    return f"{hashlib.sha256(f'{challenge}|{key}'.encode()).hexdigest()}-{key[-BUCKET_ID_LENGTH:]}"


def check_cram(challenge: str, answer: str, keys: list[str]) -> bool:
    """Whether `answer` proves knowledge of one of `keys` (candidates found by bucket id, never the key sent)."""
    _, _, bucket = answer.rpartition("-")
    return any(secrets.compare_digest(cram_response(challenge, k), answer)
               for k in keys if k[-BUCKET_ID_LENGTH:] == bucket)


def session_metadata(dataset: str, start_ns: int) -> bytes:
    """The DBN v3 header a Live session starts with: mixed schema, no symbols, stype_out instrument_id."""
    md = dbnlib.Metadata(dataset=dataset, start=int(start_ns), stype_in=None,
                         stype_out=dbnlib.SType.INSTRUMENT_ID, schema=None, symbols=[], partial=[], not_found=[],
                         mappings=[], end=None, limit=None, ts_out=False)
    return bytes(md.encode())


def heartbeat(ts_event: int) -> bytes:
    return bytes(dbnlib.SystemMsg(int(ts_event), "Heartbeat", dbnlib.SystemCode.HEARTBEAT))


def system(ts_event: int, msg: str, code: dbnlib.SystemCode) -> bytes:
    return bytes(dbnlib.SystemMsg(int(ts_event), msg, code))


def error(ts_event: int, msg: str, code: dbnlib.ErrorCode = dbnlib.ErrorCode.INTERNAL_ERROR) -> bytes:
    return bytes(dbnlib.ErrorMsg(int(ts_event), msg, True, code))


def symbol_mapping(ts_event: int, publisher_id: int, instrument_id: int, symbol: str, day: dt.date) -> bytes:
    start = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000_000
    # stype_out_symbol is the raw symbol too: `Live.symbology_map` maps instrument ids to it
    return bytes(dbnlib.SymbolMappingMsg(int(publisher_id), int(instrument_id), int(ts_event),
                                         dbnlib.SType.RAW_SYMBOL, symbol, dbnlib.SType.RAW_SYMBOL,
                                         symbol, start, start + 86_400_000_000_000))
