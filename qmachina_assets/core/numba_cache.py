"""Keep numba's on-disk cache honest across modules.

Numba keys a cached kernel on its own source file's stamp only. A kernel that calls (and inlines)
functions from another module would silently keep stale machine code after that module changes, so
each kernel module calls `drop_stale_cache(__file__, deps)` at import: when the dependencies' bytes
changed since the last import, the module's cache entries are deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def drop_stale_cache(module_file: str, deps: tuple[str, ...]) -> None:
    """Delete `module_file`'s numba cache entries if any of `deps` (sibling file names) changed."""
    here = Path(module_file).resolve()
    digest = hashlib.sha256(b"".join((here.parent / f).read_bytes() for f in deps)).hexdigest()
    cache_dir = here.parent / "__pycache__"
    stamp = cache_dir / f"{here.stem}.deps.sha256"
    try:
        if stamp.is_file() and stamp.read_text() == digest:
            return
        for f in cache_dir.glob(f"{here.stem}.*.nb[ic]"):
            f.unlink(missing_ok=True)
        cache_dir.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # read-only install: nothing cached there either
        pass
