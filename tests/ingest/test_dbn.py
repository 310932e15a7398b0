"""DBN decoding and writing against real Databento files and the `databento` reference decoder."""

import databento
import numpy as np
import pytest

from qmachina_assets.core.ingest import dbn
from tests.conftest import ESH1_V3, ESH4_1224, ESH4_1225, ESM4_0508, sample
from tests.support.dbn_files import write_mbp1_header


@pytest.mark.parametrize(
    "rel,version,records",
    [(ESH4_1225, 1, 68_792), (ESH4_1224, 1, 8_725), (ESM4_0508, 1, 13_796), (ESH1_V3, 3, 2),
     ("dbn/test_data.mbo.v1.dbn.zst", 1, 2), ("dbn/test_data.mbo.v2.dbn.zst", 2, 2)],
)
def test_real_files_decode_like_databento(rel, version, records):
    path = sample(rel)
    header, arr = dbn.load_mbo(path)
    assert header.version == version
    assert header.schema == "mbo"
    assert len(arr) == records
    reference = databento.DBNStore.from_file(path).to_ndarray()
    assert np.array_equal(arr, reference)
    chunks = list(dbn.iter_mbo_chunks(path, chunk_records=5_000))
    assert np.array_equal(np.concatenate(chunks), reference)


def test_write_roundtrip_v3_zstd_and_raw(tmp_path):
    _, arr = dbn.load_mbo(sample(ESM4_0508))
    for name in ("x.dbn", "x.dbn.zst"):
        out = dbn.write_mbo(tmp_path / name, np.array(arr), dataset="GLBX.MDP3", symbols=["ESM4"],
                            start_ns=1, end_ns=2, mappings={"ESM4": []})
        store = databento.DBNStore.from_file(out)
        assert store.metadata.version == 3
        assert np.array_equal(store.to_ndarray(), arr)
        header, back = dbn.load_mbo(out)
        assert header.compressed == name.endswith(".zst")
        assert np.array_equal(back, arr)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_truncated_zstd_is_an_error_naming_the_file(tmp_path):
    data = sample(ESH4_1225).read_bytes()
    bad = tmp_path / "cut.dbn.zst"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(dbn.DbnError, match=r"cut\.dbn\.zst: truncated"):
        dbn.load_mbo(bad)
    with pytest.raises(dbn.DbnError, match="truncated"):
        list(dbn.iter_mbo_chunks(bad))


def test_truncated_raw_body_is_an_error(tmp_path):
    bad = tmp_path / "cut.dbn"
    bad.write_bytes(sample(ESH1_V3).read_bytes()[:-10])
    with pytest.raises(dbn.DbnError, match=r"cut\.dbn: truncated: .*56-byte MBO records"):
        dbn.load_mbo(bad)


def test_corrupt_header_and_empty_file(tmp_path):
    raw = sample(ESH1_V3).read_bytes()
    corrupt = tmp_path / "corrupt.dbn"
    corrupt.write_bytes(b"XYZ" + raw[3:])
    with pytest.raises(dbn.DbnError, match=r"corrupt\.dbn: corrupt header.*expected b'DBN'"):
        dbn.read_header(corrupt)
    garbled = tmp_path / "garbled.dbn"
    garbled.write_bytes(raw[:8] + b"\xff" * 40)
    with pytest.raises(dbn.DbnError, match=r"garbled\.dbn: (corrupt|truncated) header"):
        dbn.read_header(garbled)
    empty = tmp_path / "empty.dbn.zst"
    empty.write_bytes(b"")
    with pytest.raises(dbn.DbnError, match=r"empty\.dbn\.zst: empty file"):
        dbn.read_header(empty)


def test_non_mbo_schemas_are_refused(tmp_path):
    with pytest.raises(dbn.DbnError, match="schema is 'mbp-1'; expected 'mbo'"):
        dbn.load_mbo(write_mbp1_header(tmp_path / "quotes.mbp1.dbn"))
    with pytest.raises(dbn.DbnError, match="schema is 'definition'; expected 'mbo'"):
        dbn.load_mbo(sample("dbn/test_data.definition.dbn"))
