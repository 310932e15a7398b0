"""Lake layout and landing of raw files.

Layout (all below the lake root, `lake/` by default):
  raw/databento/{product_type}/{symbol_root}/{YYYY-MM-DD}/{file name}   files as delivered (`.dbn[.zst]`)
  bronze/{symbol}/{YYYY-MM-DD}/{mbo.dbn, manifest.json}                   validated, immutable partition

The raw tree is keyed by UTC day (Databento cuts daily files on UTC days) and by root, not by
contract: one delivered file may hold several contracts of the root, each becoming its own bronze
partition. Nothing is ever overwritten: landing the same bytes twice is a no-op, different bytes
under an existing name is an error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.instrument import InstrumentConfig

RAW_SUFFIXES = (".dbn", ".dbn.zst")
DAY_NS = 86_400_000_000_000


def sha256_file(path: str | os.PathLike[str], block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while b := fh.read(block):
            h.update(b)
    return h.hexdigest()


def is_raw_name(name: str) -> bool:
    return name.endswith(RAW_SUFFIXES) and not name.startswith(".")


def raw_root(lake: Path, instrument: InstrumentConfig) -> Path:
    return lake / "raw" / "databento" / instrument.product_type / instrument.symbol_root


def bronze_dir(lake: Path, symbol: str, date: dt.date | str) -> Path:
    return lake / "bronze" / symbol / str(date)


@dataclass(frozen=True)
class RawFile:
    """A raw file in the lake and the partitions it feeds (read from its header only)."""

    path: Path
    date: dt.date
    symbols: tuple[str, ...]  # outright contracts of the locked root found in the header


def file_day(header: dbn.DbnHeader) -> dt.date:
    """The UTC trading day a file covers; a file spanning more than one UTC day is refused."""
    if header.end_ns is not None and header.end_ns - header.start_ns > DAY_NS:
        raise dbn.DbnError(
            header.path,
            f"covers {(header.end_ns - header.start_ns) / DAY_NS:.2f} days; expected one file per UTC day",
        )
    return header.start_date


def outright_symbols(header: dbn.DbnHeader, instrument: InstrumentConfig) -> tuple[str, ...]:
    """Contracts of the locked root in the file; spreads are skipped, anything else is a lock error."""
    symbols = [s for s in (header.symbols or tuple(header.mappings)) if "-" not in s]
    if not symbols:
        raise dbn.DbnError(header.path, "header names no outright symbol; expected e.g. "
                           f"{instrument.symbol!r}")
    instrument.check_lock(source=header.path, dataset=header.dataset, symbols=symbols)
    return tuple(sorted(symbols))


def inspect_raw(path: str | os.PathLike[str], instrument: InstrumentConfig, *, full: bool = False) -> RawFile:
    """Validate a raw file against the lock. `full=True` also decodes the body (truncation, rtypes)."""
    header = dbn.read_header(path)
    dbn.require_mbo(header)
    symbols = outright_symbols(header, instrument)
    day = file_day(header)
    if full:
        for _ in dbn.iter_mbo_chunks(path):
            pass
    return RawFile(path=Path(path), date=day, symbols=symbols)


def land_raw_file(src: str | os.PathLike[str], lake: Path, instrument: InstrumentConfig) -> RawFile:
    """Validate `src` completely, then copy it into the raw tree atomically (temp name, rename)."""
    info = inspect_raw(src, instrument, full=True)
    src = Path(src)
    name = src.name if src.name.endswith(RAW_SUFFIXES) else src.name + ".dbn"
    dest = raw_root(lake, instrument) / info.date.isoformat() / name
    if dest.exists():
        if sha256_file(dest) == sha256_file(src):
            return RawFile(path=dest, date=info.date, symbols=info.symbols)
        raise FileExistsError(f"{dest}: already in the lake with different content; refusing to overwrite "
                              f"it with {src} (raw files are immutable: land it under another name)")
    with dbn.atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return RawFile(path=dest, date=info.date, symbols=info.symbols)


def discover_raw_files(lake: Path, instrument: InstrumentConfig) -> tuple[list[RawFile], list[str]]:
    """Every raw file under the root's tree (header-only read) and the problems of unusable ones."""
    found, problems = [], []
    root = raw_root(lake, instrument)
    if not root.is_dir():
        return found, problems
    for path in sorted(p for p in root.rglob("*") if p.is_file() and is_raw_name(p.name)):
        try:
            found.append(inspect_raw(path, instrument))
        except (dbn.DbnError, ValueError) as exc:
            problems.append(str(exc))
    return found, problems


def raw_files_for(lake: Path, instrument: InstrumentConfig, date: dt.date, symbol: str) -> list[Path]:
    """Raw files of one (date, symbol) partition."""
    day_dir = raw_root(lake, instrument) / date.isoformat()
    if not day_dir.is_dir():
        return []
    out = []
    for path in sorted(p for p in day_dir.iterdir() if p.is_file() and is_raw_name(p.name)):
        header = dbn.read_header(path)
        if symbol in header.symbols or symbol in header.mappings:
            out.append(path)
    return out
