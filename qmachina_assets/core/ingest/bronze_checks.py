"""Data-quality rules for a bronze partition, decided from its manifest and stored file.

Kept outside the Dagster layer so the CLI and tests apply the very same rules. Blocking (ERROR)
rules mark data the engine cannot use; WARN rules mark data that is legitimate but worth a look
(icebergs and mid-day starts make some unknown order ids normal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.bronze import BronzeManifest


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    severity: Literal["ERROR", "WARN"]
    description: str
    metadata: dict = field(default_factory=dict)


# name -> (blocking, description); the Dagster check specs are generated from this table
BRONZE_RULES: dict[str, tuple[bool, str]] = {
    "schema_is_mbo": (True, "stored file decodes as DBN MBO (schema, rtype, whole records)"),
    "ts_recv_non_decreasing": (True, "ts_recv never goes backwards (the replay order)"),
    "f_last_present": (True, "F_LAST marks event ends, and the file ends on one"),
    "sequence_gaps": (False, "venue sequence: gaps counted, regressions among live records flagged"),
    "unknown_order_ids": (False, "Cancel/Modify/Fill of order ids not in the book (counted)"),
    "snapshot_at_start": (False, "a file that starts mid-day without a snapshot cannot build a full book"),
}


def evaluate(manifest: BronzeManifest, data_path: Path) -> list[CheckOutcome]:
    out: list[CheckOutcome] = []

    def add(name: str, passed: bool, meta: dict) -> None:
        blocking, desc = BRONZE_RULES[name]
        out.append(CheckOutcome(name, bool(passed), "ERROR" if blocking else "WARN", desc, meta))

    try:
        header, records = dbn.load_mbo(data_path)
        ok = header.schema == "mbo" and len(records) == manifest.record_count
        add("schema_is_mbo", ok, {"schema": header.schema, "records": len(records),
                                  "manifest_records": manifest.record_count})
    except dbn.DbnError as exc:
        add("schema_is_mbo", False, {"error": str(exc)})
    add("ts_recv_non_decreasing", manifest.ts_recv_backwards == 0,
        {"backwards_steps": manifest.ts_recv_backwards,
         "ts_recv_before_ts_event": manifest.ts_recv_before_ts_event})
    add("f_last_present",
        manifest.record_count == 0 or (manifest.f_last_count > 0 and manifest.last_record_has_f_last),
        {"f_last_records": manifest.f_last_count, "last_record_has_f_last": manifest.last_record_has_f_last})
    add("sequence_gaps", manifest.sequence_regressions == 0,
        {"gaps": manifest.sequence_gaps, "regressions": manifest.sequence_regressions})
    add("unknown_order_ids", manifest.unknown_order_events == 0,
        {"unknown_cancel": manifest.unknown_cancel, "unknown_modify": manifest.unknown_modify,
         "unknown_fill": manifest.unknown_fill, "duplicate_add": manifest.duplicate_add})
    add("snapshot_at_start", not manifest.mid_day_start_without_snapshot,
        {"starts_with_snapshot": manifest.starts_with_snapshot,
         "mid_day_start_without_snapshot": manifest.mid_day_start_without_snapshot})
    return out
