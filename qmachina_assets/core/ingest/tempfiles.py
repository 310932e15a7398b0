"""Temporary names for atomic writes, and the sweep of the ones a killed writer left behind.

Every write into the lake (or any `--out` directory) goes to a temporary name beside its final path and is
renamed into place only when complete. A writer killed mid-way (kill -9, OOM, power loss) cannot clean up,
so the temporary name says who wrote it:

    .<final name>.qmtmp-<host>-<pid>-<token>

A temporary entry is *stale* when it was made on this host by a process that no longer runs. Stale entries
are removed at the next atomic write into the same directory (`sweep_stale`) and, lake-wide, by
`qmachina lake gc` (`gc`). Entries of live processes and of other hosts (a shared lake) are never touched; a
reused pid only delays the sweep of its entry until that process ends.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

MARK = ".qmtmp-"
_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"
_NAME = re.compile(r"^\..+\.qmtmp-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]+$")


def temp_path(final: Path) -> Path:
    """A fresh temporary path beside `final` naming this host and process."""
    return final.parent / f".{final.name}{MARK}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def is_stale(path: Path) -> bool:
    """True for a temporary entry of this host whose writer process is gone."""
    m = _NAME.match(path.name)
    return m is not None and m["host"] == _HOST and not _alive(int(m["pid"]))


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_symlink() and p.is_file())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_stale(directory: Path) -> list[Path]:
    """Remove the stale temporary entries directly inside `directory`; returns what was removed."""
    removed = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:
        return removed
    for p in entries:
        if MARK in p.name and is_stale(p):
            _remove(p)
            removed.append(p)
    return removed


@dataclass(frozen=True)
class Orphan:
    path: Path
    bytes: int


def gc(root: Path, *, dry_run: bool = False) -> list[Orphan]:
    """Every stale temporary entry under `root` (recursively; not inside other temporary entries), removed
    unless `dry_run`."""
    found: list[Orphan] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            if MARK not in name:
                continue
            p = here / name
            if is_stale(p):
                found.append(Orphan(p, _size(p)))
                if not dry_run:
                    _remove(p)
        dirnames[:] = [d for d in dirnames if MARK not in d]  # never descend into temporary directories
    return found


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside `final`; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(final.parent)
    tmp = temp_path(final)
    tmp.touch()
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temp directory beside `final`; rename it to `final` only if the block succeeds (the
    rename fails if `final` appeared meanwhile: immutable partitions are never overwritten), remove it
    otherwise. Readers see no partition or a complete one, never a half-written one."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(final.parent)
    tmp = temp_path(final)
    tmp.mkdir()
    try:
        yield tmp
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
