"""Landing raw files and building bronze partitions: figures on real files, immutability, bad input."""

import datetime as dt
import os

import numpy as np
import pytest

from qmachina_assets.core.ingest import bronze, bronze_checks, dbn
from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.instrument import InstrumentLockError
from tests.conftest import ESH1_V3, ESH4_1225, ESM4_0508, sample
from tests.support.dbn_files import write_mbp1_header


def _build(lake_root, instrument, rel_or_path):
    src = rel_or_path if os.path.isabs(str(rel_or_path)) else sample(rel_or_path)
    f = lakemod.land_raw_file(src, lake_root, instrument)
    sym = f.symbols[0]
    m, created = bronze.build_bronze(lakemod.raw_files_for(lake_root, instrument, f.date, sym), date=f.date,
                                     symbol=sym, lake=lake_root, instrument=instrument)
    return f, m, created


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_real_esh4_day_manifest(lake, instrument):
    f, m, created = _build(lake, instrument, ESH4_1225)
    assert created and f.date == dt.date(2023, 12, 25) and f.symbols == ("ESH4",)
    # figures from ../shared/data/databento/PROVENANCE.md
    assert m.record_count == 68_792
    assert m.action_counts == {"A": 29_216, "C": 17_999, "M": 12_233, "R": 0, "T": 2_973, "F": 6_371,
                               "N": 0, "other": 0}
    assert m.snapshot_records == 8_725 and m.starts_with_snapshot
    assert m.instrument_ids == [17077] and m.dbn_version == 1
    assert m.sources[0].sha256 == "04597c542c1f0a9d0f6c5e8b73c7624db67d978061b42742b86e09ae608c0bc5"
    assert m.unknown_cancel == 0 and m.unknown_modify == 0  # Databento semantics: partial cancels
    assert m.ts_recv_backwards == 0 and m.last_record_has_f_last
    assert m.first_ts_recv == 1703462400000000000  # snapshot stamped at UTC midnight
    # the bronze copy is DBN v3 with identical records
    _, stored = bronze.load_bronze(lake, "ESH4", "2023-12-25")
    _, original = dbn.load_mbo(sample(ESH4_1225))
    assert np.array_equal(stored, original)
    assert (lake / "bronze/ESH4/2023-12-25/manifest.json").is_file()
    outcomes = {o.name: o for o in bronze_checks.evaluate(m, lake / "bronze/ESH4/2023-12-25/mbo.dbn")}
    assert all(outcomes[n].passed for n in ("schema_is_mbo", "ts_recv_non_decreasing", "f_last_present",
                                            "snapshot_at_start", "sequence_gaps"))


def test_esm4_starts_with_clear_and_snapshot(lake, instrument):
    _, m, _ = _build(lake, instrument, ESM4_0508)
    assert m.action_counts["R"] == 1 and m.starts_with_snapshot
    assert m.snapshot_records == 13_601


def test_mid_day_start_without_snapshot_is_flagged(lake, instrument):
    _, m, _ = _build(lake, instrument, ESH1_V3)  # two Cancels at 13:00 UTC, no snapshot
    assert not m.starts_with_snapshot and m.mid_day_start_without_snapshot
    assert m.unknown_cancel == 2
    outcomes = {o.name: o for o in bronze_checks.evaluate(m, lake / "bronze/ESH1/2020-12-28/mbo.dbn")}
    assert not outcomes["snapshot_at_start"].passed and outcomes["snapshot_at_start"].severity == "WARN"
    assert not outcomes["unknown_order_ids"].passed and outcomes["unknown_order_ids"].metadata["unknown_cancel"] == 2


def test_bronze_is_immutable(lake, instrument, tmp_path):
    f, m, _ = _build(lake, instrument, ESM4_0508)
    again, created = bronze.build_bronze([f.path], date=f.date, symbol="ESM4", lake=lake, instrument=instrument)
    assert not created and again == m
    # a different file for the same partition: refused, the stored partition untouched
    _, arr = dbn.load_mbo(f.path)
    other = dbn.write_mbo(tmp_path / "other.dbn", np.array(arr[:100]), dataset="GLBX.MDP3", symbols=["ESM4"],
                          start_ns=1715126400000000000, end_ns=1715212800000000000)
    before = (lake / "bronze/ESM4/2024-05-08/mbo.dbn").read_bytes()
    with pytest.raises(FileExistsError, match="immutable"):
        bronze.build_bronze([other], date=f.date, symbol="ESM4", lake=lake, instrument=instrument)
    assert (lake / "bronze/ESM4/2024-05-08/mbo.dbn").read_bytes() == before


def test_landing_same_name_different_bytes_is_refused(lake, instrument, tmp_path):
    f = _land(sample(ESM4_0508), lake, instrument)
    assert f.path.is_file()
    _, arr = dbn.load_mbo(f.path)
    impostor = tmp_path / f.path.name
    dbn.write_mbo(impostor, np.array(arr[:10]), dataset="GLBX.MDP3", symbols=["ESM4"],
                  start_ns=1715126400000000000, end_ns=1715212800000000000)
    before = f.path.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        _land(impostor, lake, instrument)
    assert f.path.read_bytes() == before
    assert _land(sample(ESM4_0508), lake, instrument).path == f.path  # same bytes: a no-op


def _land(src, root, instrument):
    return lakemod.land_raw_file(src, root, instrument)


@pytest.mark.parametrize(
    "kind", ["truncated", "corrupt_header", "empty", "non_mbo", "mbp1", "other_dataset", "other_root"]
)
def test_bad_input_is_refused_and_nothing_is_written(lake, instrument, tmp_path, kind):
    src = tmp_path / "bad.dbn.zst"
    data = sample(ESH4_1225).read_bytes()
    expected = {
        "truncated": r"bad\.dbn\.zst: truncated",
        "corrupt_header": r"bad\.dbn\.zst: corrupt",
        "empty": r"bad\.dbn\.zst: empty file",
        "non_mbo": r"test_data\.definition\.dbn: schema is 'definition'; expected 'mbo'",
        "mbp1": r"bad\.dbn\.zst: schema is 'mbp-1'; expected 'mbo'",
        "other_dataset": r"test_data\.mbo\.dbn\.zst: dataset is 'XNAS\.ITCH'; the instrument lock expects 'GLBX\.MDP3'",
        "other_root": r"bad\.dbn\.zst: symbol 'NQH4' is not an outright contract of the locked root 'ES'",
    }[kind]
    if kind == "truncated":
        src.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "corrupt_header":
        src.write_bytes(data[:20] + b"\x00" * 64 + data[84:])
    elif kind == "empty":
        src.write_bytes(b"")
    elif kind == "non_mbo":
        src = sample("dbn/test_data.definition.dbn")
    elif kind == "mbp1":
        write_mbp1_header(src, compress=True)
    elif kind == "other_dataset":
        src = sample("databento-python/XNAS.ITCH/test_data.mbo.dbn.zst")
    else:
        _, arr = dbn.load_mbo(sample(ESM4_0508))
        dbn.write_mbo(src, np.array(arr), dataset="GLBX.MDP3", symbols=["NQH4"],
                      start_ns=1715126400000000000, end_ns=1715212800000000000)
    _land(sample(ESM4_0508), lake, instrument)  # something already in the lake
    before = _tree(lake)
    with pytest.raises((dbn.DbnError, InstrumentLockError), match=expected):
        _land(src, lake, instrument)
    assert _tree(lake) == before


def test_failed_bronze_build_leaves_no_partial_partition(lake, instrument, tmp_path):
    # a truncated file that got into the raw tree by hand (bypassing ingest): bronze fails cleanly
    data = sample(ESH4_1225).read_bytes()
    day = lake / "raw/databento/future_mbo/ES/2023-12-25"
    day.mkdir(parents=True)
    (day / "esh4.dbn.zst").write_bytes(data[: len(data) // 2])
    with pytest.raises(dbn.DbnError, match="truncated"):
        bronze.build_bronze([day / "esh4.dbn.zst"],
                            date=dt.date(2023, 12, 25), symbol="ESH4", lake=lake, instrument=instrument)
    assert not (lake / "bronze/ESH4/2023-12-25").exists()
    assert not list((lake / "bronze/ESH4").iterdir())  # no temp directory left


def test_discover_reports_unusable_files(lake, instrument):
    _land(sample(ESM4_0508), lake, instrument)
    junk = lake / "raw/databento/future_mbo/ES/2024-05-09/junk.dbn"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"not dbn at all")
    files, problems = lakemod.discover_raw_files(lake, instrument)
    assert [f.symbols for f in files] == [("ESM4",)]
    assert len(problems) == 1 and "junk.dbn: corrupt header" in problems[0]
