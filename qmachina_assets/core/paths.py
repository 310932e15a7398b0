"""Where the project's files live: repo root, configs, lake. Overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def lake_root() -> Path:
    """The data lake: `QMACHINA_LAKE_URI` or `QMACHINA_LAKE_DIR`, else `lake/` in the checkout.

    The lake is addressed by a URI so Dagster workers on several machines name the same one: a path or a
    `file://` URI (a local disk, or a shared mount: NFS, or an object store mounted with an fsspec/FUSE
    filesystem). The writers need POSIX rename and memory-mapping, so other schemes are refused here
    rather than failing later (docs/scale.md: the object-store path).
    """
    return parse_lake_uri(os.environ.get("QMACHINA_LAKE_URI") or os.environ.get("QMACHINA_LAKE_DIR")
                          or str(PROJECT_ROOT / "lake"))


def parse_lake_uri(uri: str) -> Path:
    """Local path of a lake URI (`/path`, `relative/path` or `file:///path`); a clear error for other schemes."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ValueError(f"lake URI {uri!r}: file:// URIs name a local path (file:///mnt/lake), "
                                 f"not host {parsed.netloc!r}")
            return Path(unquote(parsed.path)).resolve()
        return Path(uri).resolve()
    raise ValueError(f"lake URI {uri!r}: scheme {parsed.scheme!r} is not supported; the lake writers need a "
                     f"POSIX filesystem: mount the bucket (s3fs, gcsfuse, or an fsspec FUSE mount) and give "
                     f"its path or file:// URI (docs/scale.md)")


def configs_root() -> Path:
    return Path(os.environ.get("QMACHINA_CONFIGS_DIR", PROJECT_ROOT / "configs")).resolve()


def shared_data_root() -> Path:
    """Real Databento sample files shipped beside the checkout (`../shared/data/databento`)."""
    return Path(
        os.environ.get("QMACHINA_SAMPLE_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data" / "databento")
    ).resolve()
