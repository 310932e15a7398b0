"""Raw capture of a live feed: one DBN file per UTC day in `lake/raw/...`, landed like any downloaded file.

While a day is open its records are appended to a hidden body file beside the final name
(`.live-es-20231225.mbo.dbn.body`; names starting with `.` are ignored by the raw-file sensor) and a
hidden state file holds the day's symbols, instrument ids and gaps. When the day closes, the DBN v3
header (dataset, every contract seen that day with its instrument id, the day's bounds) and the body are
written to a temporary name, the capture manifest is written, and the file is renamed into place: the
sensor then sees one complete raw file per day, never a partial one.

A run that stops mid-day leaves the body and state behind; the next run of the same day appends to them
(after cutting a torn trailing record), so a day is one file whatever the number of runs.

An unrepairable gap is captured the way Databento marks a re-snapshot: one `R` record with the snapshot
flags (no F_LAST) at the last received ts_recv, later followed by the snapshot the reconnection brought.
The engine (live, and silver on this file) clears the book there and reports every bin until the
snapshot completes as `book_valid` false; the manifest lists the gap (start/end ns, records missed
unknown).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.lake import DAY_NS, raw_root
from qmachina_assets.core.instrument import InstrumentConfig

#: Flags of the clear that marks an unrepairable gap (a snapshot starts; it has not ended).
GAP_CLEAR_FLAGS = dbn.F_SNAPSHOT | dbn.F_BAD_TS_RECV


def day_of(ns: int) -> dt.date:
    return dt.datetime.fromtimestamp(int(ns) // 1_000_000_000, dt.UTC).date()


def day_start_ns(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def gap_clear(instrument_id: int, publisher_id: int, ts_recv: int, ts_event: int) -> np.ndarray:
    """The one-record marker of an unrepairable gap (see the module docstring)."""
    r = np.zeros(1, dtype=dbn.MBO_DTYPE)
    r["length"] = dbn.MBO_LENGTH_WORDS
    r["rtype"] = dbn.MBO_RTYPE
    r["publisher_id"] = publisher_id
    r["instrument_id"] = instrument_id
    r["ts_recv"] = ts_recv
    r["ts_event"] = ts_event
    r["price"] = dbn.UNDEF_PRICE
    r["flags"] = GAP_CLEAR_FLAGS
    r["action"] = b"R"
    r["side"] = b"N"
    return r


class DayCapture:
    """The open capture of one UTC day (see the module docstring)."""

    def __init__(self, lake: Path, instrument: InstrumentConfig, day: dt.date, run_id: str):
        self.lake = lake
        self.instrument = instrument
        self.day = day
        self.start_ns = day_start_ns(day)
        self.end_ns = self.start_ns + DAY_NS
        d = raw_root(lake, instrument) / day.isoformat()
        d.mkdir(parents=True, exist_ok=True)
        stem = f"live-{instrument.symbol_root.lower()}-{day:%Y%m%d}.mbo"
        self.final = d / f"{stem}.dbn"
        self.manifest_path = d / f"{stem}.manifest.json"
        self.body_path = d / f".{stem}.dbn.body"
        self.state_path = d / f".{stem}.state.json"
        if self.final.exists():
            raise FileExistsError(f"{self.final}: the live capture of {day} was already closed and landed; "
                                  "a closed day is immutable (stop the run, or capture another day)")
        self.state: dict[str, Any] = {"day": day.isoformat(), "symbols": {}, "gaps": [], "runs": [],
                                      "records": 0, "first_ts_recv": None, "last_ts_recv": None}
        resumed = 0
        if self.body_path.exists():
            size = self.body_path.stat().st_size
            whole = size - size % dbn.MBO_RECORD_SIZE
            if whole != size:  # a run died mid-write: drop the torn record
                with self.body_path.open("r+b") as fh:
                    fh.truncate(whole)
            resumed = whole // dbn.MBO_RECORD_SIZE
            if self.state_path.exists():
                self.state = json.loads(self.state_path.read_text())
            self.state["records"] = resumed
        self.resumed_records = resumed
        self.state["runs"].append({"run_id": run_id, "resumed_at_record": resumed})
        self._fh = self.body_path.open("ab")
        self._save_state()

    # ---- writing --------------------------------------------------------------------------------
    def tail(self, n: int) -> np.ndarray:
        """The last `n` records captured (a resumed run's dedupe window)."""
        self._fh.flush()
        total = self.state["records"]
        k = min(n, total)
        if not k:
            return np.zeros(0, dbn.MBO_DTYPE)
        with self.body_path.open("rb") as fh:
            fh.seek((total - k) * dbn.MBO_RECORD_SIZE)
            return np.frombuffer(fh.read(k * dbn.MBO_RECORD_SIZE), dtype=dbn.MBO_DTYPE).copy()

    def records(self) -> np.ndarray:
        """Every record of the day so far (memory-mapped)."""
        self._fh.flush()
        if not self.state["records"]:
            return np.zeros(0, dbn.MBO_DTYPE)
        return np.memmap(self.body_path, dtype=dbn.MBO_DTYPE, mode="r", shape=(self.state["records"],))

    def append(self, recs: np.ndarray) -> None:
        if not len(recs):
            return
        self._fh.write(recs.tobytes())
        st = self.state
        st["records"] += len(recs)
        if st["first_ts_recv"] is None:
            st["first_ts_recv"] = int(recs["ts_recv"][0])
        st["last_ts_recv"] = int(recs["ts_recv"][-1])

    def add_symbol(self, symbol: str, instrument_id: int) -> None:
        if self.state["symbols"].get(symbol) != instrument_id:
            self.state["symbols"][symbol] = int(instrument_id)
            self._save_state()

    def add_gap(self, gap: dict[str, Any]) -> None:
        self.state["gaps"].append(gap)
        self._save_state()

    def sync(self) -> None:
        """Make what was appended durable (the supervisor calls this about once a second)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._save_state()

    def _save_state(self) -> None:
        with dbn.atomic_path(self.state_path) as tmp:
            tmp.write_text(json.dumps(self.state))

    # ---- closing ----------------------------------------------------------------------------------
    def suspend(self) -> None:
        """The run stops before the day ends: keep body and state for the next run."""
        self.sync()
        self._fh.close()

    def close_day(self) -> Path:
        """Header + body under a temporary name, the manifest, then the rename (the sensor lands it)."""
        self.sync()
        self._fh.close()
        st = self.state
        symbols = sorted(st["symbols"])
        nxt = self.day + dt.timedelta(days=1)
        header = dbn.encode_metadata(dataset=self.instrument.dataset, symbols=symbols, start_ns=self.start_ns,
                                     end_ns=self.end_ns,
                                     mappings={s: [(self.day, nxt, st["symbols"][s])] for s in symbols})
        digest = hashlib.sha256(header)
        with dbn.atomic_path(self.final) as tmp:
            with tmp.open("wb") as out, self.body_path.open("rb") as body:
                out.write(header)
                while block := body.read(1 << 22):
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            manifest = {**st, "file": str(self.final), "sha256": digest.hexdigest(), "dataset": self.instrument.dataset,
                        "closed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                        "repaired_gaps": sum(1 for g in st["gaps"] if g.get("repaired")),
                        "unrepaired_gaps": sum(1 for g in st["gaps"] if not g.get("repaired"))}
            with dbn.atomic_path(self.manifest_path) as mtmp:
                mtmp.write_text(json.dumps(manifest, indent=2))
        self.body_path.unlink()
        self.state_path.unlink()
        return self.final


def read_manifest(final: Path) -> dict[str, Any]:
    """The capture manifest beside a landed live day file."""
    return json.loads(final.with_name(final.name.removesuffix(".dbn") + ".manifest.json").read_text())


def copy_to(path: Path, out: Path) -> None:
    shutil.copyfile(path, out)
