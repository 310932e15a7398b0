"""Small DBN files built on the fly for bad-input tests."""

from pathlib import Path

import databento_dbn
import zstandard


def write_mbp1_header(path: Path, compress: bool = False) -> Path:
    """A valid DBN v3 header whose schema is mbp-1 (no records): a well-formed file of the wrong schema."""
    md = databento_dbn.Metadata(
        dataset="GLBX.MDP3", start=0, stype_in=databento_dbn.SType.RAW_SYMBOL,
        stype_out=databento_dbn.SType.INSTRUMENT_ID, schema=databento_dbn.Schema.MBP_1, symbols=["ESH4"],
        partial=[], not_found=[], mappings=[], end=None, limit=None, ts_out=False,
    )
    raw = bytes(md.encode())
    path.write_bytes(zstandard.ZstdCompressor().compress(raw) if compress else raw)
    return path
