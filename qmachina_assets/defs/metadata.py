"""Structured metadata Dagster understands, beside the Markdown and images: the column schema of a Parquet
file (`dagster/column_schema`), its row count (`dagster/row_count`) and where the partition lives
(`dagster/uri`)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq


def table_metadata(parquet: Path | None, rows: int, location: Path) -> dict[str, object]:
    out: dict[str, object] = {
        "dagster/row_count": dg.MetadataValue.int(int(rows)),
        "dagster/uri": dg.MetadataValue.url(location.resolve().as_uri()),
    }
    if parquet is not None and parquet.is_file():
        schema = pq.read_schema(parquet)
        out["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])
    return out
