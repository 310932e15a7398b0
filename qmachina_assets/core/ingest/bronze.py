"""Bronze: a validated, immutable copy of one (UTC date, symbol) of raw MBO, plus its manifest.

The bronze file is an *uncompressed* DBN v3 MBO file holding only the partition's instrument: the
engine memory-maps it (zero-copy record array), and any Databento tool can still read it. Its
manifest records the lineage (source files and their sha256) and the figures the asset checks gate
on. All figures come from one streaming pass (bounded memory) through a numba kernel.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np
from numba import types
from numba.typed import Dict
from pydantic import BaseModel, ConfigDict

from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.lake import DAY_NS, bronze_dir, sha256_file
from qmachina_assets.core.instrument import InstrumentConfig
from qmachina_assets.core.paths import PROJECT_ROOT

MANIFEST_NAME = "manifest.json"
DATA_NAME = "mbo.dbn"
MID_DAY_GRACE_NS = 60 * 1_000_000_000  # a file without snapshot starting later than this is "mid-day"

# counter slots of the scan kernel
(
    N_RECORDS, A, C, M, R, T, F, N, OTHER_ACTION, N_FLAST, N_SNAPSHOT, TS_BACKWARDS, TS_RECV_BEFORE_EVENT,
    SEQ_GAPS, SEQ_REGRESSIONS, UNKNOWN_CANCEL, UNKNOWN_MODIFY, UNKNOWN_FILL, DUPLICATE_ADD, ZERO_SIZE_ADD,
    PRICE_OFF_TICK, LAST_TS_RECV, LAST_SEQ, SEEN_LIVE, LAST_FLAGS, N_SLOTS,
) = range(26)


class SourceFile(BaseModel):
    path: str
    sha256: str
    bytes: int
    dbn_version: int
    compressed: bool


class BronzeManifest(BaseModel):
    """Lineage and data-quality figures of one bronze partition (written as manifest.json)."""

    model_config = ConfigDict(extra="forbid")

    date: str
    symbol: str
    dataset: str
    schema_name: str = "mbo"
    dbn_version: int  # of the source file(s); the bronze copy itself is DBN v3
    sources: list[SourceFile]
    data_file: str
    data_sha256: str
    data_bytes: int
    record_count: int
    dropped_other_instruments: int
    instrument_ids: list[int]
    first_ts_event: int | None
    last_ts_event: int | None
    first_ts_recv: int | None
    last_ts_recv: int | None
    action_counts: dict[str, int]
    f_last_count: int
    last_record_has_f_last: bool
    snapshot_records: int
    starts_with_snapshot: bool
    mid_day_start_without_snapshot: bool
    ts_recv_backwards: int
    ts_recv_before_ts_event: int
    sequence_gaps: int
    sequence_regressions: int
    unknown_cancel: int
    unknown_modify: int
    unknown_fill: int
    duplicate_add: int
    zero_size_add: int
    price_off_tick: int
    instrument_config_version: str
    code_version: str
    created_at: str

    @property
    def unknown_order_events(self) -> int:
        return self.unknown_cancel + self.unknown_modify + self.unknown_fill


@numba.njit(cache=True)
def _scan(action, flags, ts_recv, ts_event, seq, order_id, size, price, tick_int, state, orders):
    """One pass of bookkeeping over a chunk; `state` and `orders` carry across chunks.

    `orders` maps live order id -> remaining size with Databento semantics: A inserts, C subtracts
    (partial cancels), M sets the new size (unknown M inserts, as Databento's own book example does),
    R clears, T/F/N leave it alone. It only tracks ids; price levels are the engine's business.
    """
    for i in range(action.shape[0]):
        a = action[i]
        fl = flags[i]
        state[N_RECORDS] += 1
        if fl & 128:
            state[N_FLAST] += 1
        snap = (fl & 32) != 0
        if snap:
            state[N_SNAPSHOT] += 1
        tr = np.int64(ts_recv[i])
        if state[N_RECORDS] > 1 and tr < state[LAST_TS_RECV]:
            state[TS_BACKWARDS] += 1
        state[LAST_TS_RECV] = tr
        if not snap and np.int64(ts_recv[i]) < np.int64(ts_event[i]):
            state[TS_RECV_BEFORE_EVENT] += 1
        if not snap:
            s = np.int64(seq[i])
            if state[SEEN_LIVE] == 1:
                if s < state[LAST_SEQ]:
                    state[SEQ_REGRESSIONS] += 1
                elif s > state[LAST_SEQ] + 1:
                    state[SEQ_GAPS] += 1
            state[SEEN_LIVE] = 1
            state[LAST_SEQ] = s
        state[LAST_FLAGS] = fl
        oid = np.int64(order_id[i])
        q = np.int64(size[i])
        if a == 65:  # 'A'
            state[A] += 1
            if q == 0:
                state[ZERO_SIZE_ADD] += 1
            if price[i] % tick_int != 0:
                state[PRICE_OFF_TICK] += 1
            if oid in orders:
                state[DUPLICATE_ADD] += 1
            orders[oid] = q
        elif a == 67:  # 'C'
            state[C] += 1
            if oid in orders:
                left = orders[oid] - q
                if left > 0:
                    orders[oid] = left
                else:
                    del orders[oid]
            else:
                state[UNKNOWN_CANCEL] += 1
        elif a == 77:  # 'M'
            state[M] += 1
            if price[i] % tick_int != 0:
                state[PRICE_OFF_TICK] += 1
            if oid not in orders:
                state[UNKNOWN_MODIFY] += 1
            if q > 0:
                orders[oid] = q
            elif oid in orders:
                del orders[oid]
        elif a == 82:  # 'R'
            state[R] += 1
            orders.clear()
        elif a == 84:  # 'T'
            state[T] += 1
        elif a == 70:  # 'F'
            state[F] += 1
            if oid not in orders:
                state[UNKNOWN_FILL] += 1
        elif a == 78:  # 'N'
            state[N] += 1
        else:
            state[OTHER_ACTION] += 1


class BronzeScan:
    """Streaming accumulator of the manifest figures over record chunks."""

    def __init__(self, tick_int: int) -> None:
        self.tick_int = np.int64(tick_int)
        self.state = np.zeros(N_SLOTS, np.int64)
        self.orders = Dict.empty(key_type=types.int64, value_type=types.int64)
        self.instrument_ids: set[int] = set()
        self.first: np.void | None = None
        self.last: np.void | None = None

    def update(self, rec: np.ndarray) -> None:
        if not len(rec):
            return
        if self.first is None:
            self.first = rec[0].copy()
        self.last = rec[-1].copy()
        self.instrument_ids.update(int(x) for x in np.unique(rec["instrument_id"]))
        _scan(
            rec["action"].view(np.uint8), rec["flags"], rec["ts_recv"], rec["ts_event"], rec["sequence"],
            rec["order_id"], rec["size"], rec["price"], self.tick_int, self.state, self.orders,
        )


def code_version() -> str:
    """Git commit of the checkout (or QMACHINA_CODE_VERSION), recorded in every manifest."""
    if v := os.environ.get("QMACHINA_CODE_VERSION"):
        return v
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def day_start_ns(date: dt.date) -> int:
    return int(dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def read_manifest(lake: Path, symbol: str, date: dt.date | str) -> BronzeManifest | None:
    path = bronze_dir(lake, symbol, date) / MANIFEST_NAME
    if not path.is_file():
        return None
    return BronzeManifest.model_validate_json(path.read_text())


def build_bronze(
    raw_paths: list[Path],
    *,
    date: dt.date,
    symbol: str,
    lake: Path,
    instrument: InstrumentConfig,
    chunk_records: int = 2_000_000,
    progress: Callable[[int], None] | None = None,
) -> tuple[BronzeManifest, bool]:
    """Write the bronze partition (date, symbol) from its raw files; returns (manifest, created).

    `progress` is called after each chunk with the number of records scanned so far.
    Immutable: if the partition exists and was built from the same source bytes it is returned as
    is (created=False); if the sources differ it is an error, never an overwrite. The partition is
    assembled in a temporary directory and renamed into place, so a crash leaves nothing behind.
    """
    if not raw_paths:
        raise FileNotFoundError(f"no raw file for partition {date}|{symbol} under {lake / 'raw'}")
    if len(raw_paths) > 1:
        raise ValueError(f"partition {date}|{symbol} has {len(raw_paths)} raw files "
                         f"({', '.join(str(p) for p in raw_paths)}); expected exactly one per UTC day")
    raw = Path(raw_paths[0])
    header = dbn.read_header(raw)
    dbn.require_mbo(header)
    instrument.check_lock(source=str(raw), dataset=header.dataset, symbols=[symbol])
    src_sha = sha256_file(raw)
    final = bronze_dir(lake, symbol, date)
    existing = read_manifest(lake, symbol, date)
    if existing is not None:
        if [s.sha256 for s in existing.sources] == [src_sha]:
            return existing, False
        raise FileExistsError(
            f"{final}: bronze partition {date}|{symbol} is immutable and was built from "
            f"{existing.sources[0].path} (sha256 {existing.sources[0].sha256[:12]}); {raw} has sha256 "
            f"{src_sha[:12]}. Delete the partition explicitly to rebuild it."
        )

    ids = header.instrument_ids(symbol)
    if not ids and len(header.symbols) > 1:
        raise dbn.DbnError(raw, f"no instrument_id mapping for {symbol!r} in a multi-symbol file")
    id_arr = np.array(sorted(ids), dtype=np.uint32)
    scan = BronzeScan(instrument.tick_int)
    dropped = 0
    with dbn.atomic_dir(final) as tmp_dir:
        data_path = tmp_dir / DATA_NAME
        head = dbn.encode_metadata(
            dataset=header.dataset, symbols=[symbol], start_ns=header.start_ns,
            end_ns=header.end_ns if header.end_ns is not None else header.start_ns + DAY_NS,
            mappings={symbol: header.mappings.get(symbol, [])},
        )
        digest = hashlib.sha256(head)
        with data_path.open("wb") as out:
            out.write(head)
            for chunk in dbn.iter_mbo_chunks(raw, chunk_records):
                if len(id_arr):
                    keep = np.isin(chunk["instrument_id"], id_arr)
                    dropped += int(len(chunk) - keep.sum())
                    chunk = chunk[keep]
                scan.update(chunk)
                body = chunk.tobytes()
                digest.update(body)
                out.write(body)
                if progress is not None:
                    progress(int(scan.state[N_RECORDS]))
            out.flush()
            os.fsync(out.fileno())
        st = scan.state
        first, last = scan.first, scan.last
        starts_snap = bool(first is not None and int(first["flags"]) & dbn.F_SNAPSHOT)
        manifest = BronzeManifest(
            date=str(date), symbol=symbol, dataset=header.dataset, dbn_version=header.version,
            sources=[SourceFile(path=str(raw), sha256=src_sha, bytes=raw.stat().st_size,
                                dbn_version=header.version, compressed=header.compressed)],
            data_file=str(final / DATA_NAME), data_sha256=digest.hexdigest(),
            data_bytes=data_path.stat().st_size, record_count=int(st[N_RECORDS]),
            dropped_other_instruments=dropped, instrument_ids=sorted(scan.instrument_ids),
            first_ts_event=None if first is None else int(first["ts_event"]),
            last_ts_event=None if last is None else int(last["ts_event"]),
            first_ts_recv=None if first is None else int(first["ts_recv"]),
            last_ts_recv=None if last is None else int(last["ts_recv"]),
            action_counts={k: int(st[i]) for k, i in
                           (("A", A), ("C", C), ("M", M), ("R", R), ("T", T), ("F", F), ("N", N),
                            ("other", OTHER_ACTION))},
            f_last_count=int(st[N_FLAST]),
            last_record_has_f_last=bool(last is not None and int(last["flags"]) & dbn.F_LAST),
            snapshot_records=int(st[N_SNAPSHOT]), starts_with_snapshot=starts_snap,
            mid_day_start_without_snapshot=bool(
                first is not None and not starts_snap
                and int(first["ts_recv"]) - day_start_ns(date) > MID_DAY_GRACE_NS
            ),
            ts_recv_backwards=int(st[TS_BACKWARDS]), ts_recv_before_ts_event=int(st[TS_RECV_BEFORE_EVENT]),
            sequence_gaps=int(st[SEQ_GAPS]), sequence_regressions=int(st[SEQ_REGRESSIONS]),
            unknown_cancel=int(st[UNKNOWN_CANCEL]), unknown_modify=int(st[UNKNOWN_MODIFY]),
            unknown_fill=int(st[UNKNOWN_FILL]), duplicate_add=int(st[DUPLICATE_ADD]),
            zero_size_add=int(st[ZERO_SIZE_ADD]), price_off_tick=int(st[PRICE_OFF_TICK]),
            instrument_config_version=instrument.config_version, code_version=code_version(),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        (tmp_dir / MANIFEST_NAME).write_text(json.dumps(manifest.model_dump(), indent=2))
    return manifest, True


def load_bronze(lake: Path, symbol: str, date: dt.date | str) -> tuple[BronzeManifest, np.ndarray]:
    """The manifest and the memory-mapped record array of a bronze partition."""
    manifest = read_manifest(lake, symbol, date)
    if manifest is None:
        raise FileNotFoundError(f"{bronze_dir(lake, symbol, date)}: bronze partition not materialized")
    _, records = dbn.load_mbo(bronze_dir(lake, symbol, date) / DATA_NAME)
    return manifest, records
