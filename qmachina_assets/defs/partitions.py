"""Partitions of the data layers: one dynamic partition per landed session, key `YYYY-MM-DD|SYMBOL`.

A key exists only once a raw file for that (UTC trading date, contract) has landed: the raw-file sensor and
`qmachina ingest` add it (`qmachina sessions sync` re-registers a lake in a fresh instance). So the partition
space is the data, not date × every symbol ever seen. Backfilling a date range of one symbol is
`qmachina backfill --symbol ESH4 --from D --to D` (the keys of that symbol in the range, nothing else).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import dagster as dg

SESSIONS = "sessions"
session_partitions_def = dg.DynamicPartitionsDefinition(name=SESSIONS)


def session_key(date: dt.date | str, symbol: str) -> str:
    """`YYYY-MM-DD|SYMBOL` (the same string the earlier date × symbol keys had)."""
    day = date if isinstance(date, dt.date) else dt.date.fromisoformat(str(date))
    return f"{day.isoformat()}|{symbol}"


def parse_session_key(key: str | dg.MultiPartitionKey) -> tuple[dt.date, str]:
    """(date, symbol) of a session key; a malformed key is an error naming it."""
    date, sep, symbol = str(key).partition("|")
    try:
        if not sep or not symbol:
            raise ValueError
        return dt.date.fromisoformat(date), symbol
    except ValueError:
        raise ValueError(f"session partition key {str(key)!r}: expected 'YYYY-MM-DD|SYMBOL'") from None


def register_sessions(instance: dg.DagsterInstance, keys: Iterable[str]) -> list[str]:
    """Add the session keys the instance does not have yet; returns the new ones (sorted)."""
    new = sorted({k for k in keys if not instance.has_dynamic_partition(SESSIONS, k)})
    for k in new:
        parse_session_key(k)
    if new:
        instance.add_dynamic_partitions(SESSIONS, new)
    return new


def sessions_of(instance: dg.DagsterInstance, symbol: str | None = None, start: dt.date | None = None,
                end: dt.date | None = None) -> list[str]:
    """Registered session keys, optionally one symbol's within [start, end] (inclusive), by date."""
    out = []
    for k in instance.get_dynamic_partitions(SESSIONS):
        day, sym = parse_session_key(k)
        if symbol is not None and sym != symbol:
            continue
        if (start is not None and day < start) or (end is not None and day > end):
            continue
        out.append(k)
    return sorted(out)
