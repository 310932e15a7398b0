"""Temporary names carry the writer's pid; a killed writer's leftovers are swept at the next write into the
same directory and by `qmachina lake gc`; a live writer's are never touched. `qmachina silver` enforces the
instrument lock like `ingest` does."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from qmachina_assets.cli import main
from qmachina_assets.core.ingest import dbn, tempfiles
from qmachina_assets.core.ingest.synth import SynthParams, generate_records, write_records
from qmachina_assets.core.instrument import locked_instrument
from qmachina_assets.core.paths import PROJECT_ROOT
from tests.conftest import sample

KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from qmachina_assets.core.ingest import dbn
    out = Path(sys.argv[1])
    with dbn.atomic_dir(out / "partition") as tmp:
        (tmp / "big.bin").write_bytes(b"x" * 100_000)
        with dbn.atomic_path(out / "file.parquet") as f:
            f.write_bytes(b"y" * 50_000)
            os.kill(os.getpid(), signal.SIGKILL)
""")


def _killed_writer(out) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)], cwd=PROJECT_ROOT,
                          capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()


def _temps(directory):
    return sorted(p.name for p in directory.iterdir() if tempfiles.MARK in p.name)


def test_a_killed_writer_leaves_pid_named_temps_swept_at_the_next_write(tmp_path):
    _killed_writer(tmp_path)
    left = _temps(tmp_path)
    assert len(left) == 2 and all(n.startswith((".partition.qmtmp-", ".file.parquet.qmtmp-")) for n in left)
    assert not (tmp_path / "partition").exists() and not (tmp_path / "file.parquet").exists()
    mine = tempfiles.temp_path(tmp_path / "in-progress")  # a live writer's temp (this process) survives
    mine.write_bytes(b"z")
    with dbn.atomic_path(tmp_path / "other.parquet") as f:
        f.write_bytes(b"ok")
    assert _temps(tmp_path) == [mine.name]
    assert (tmp_path / "other.parquet").read_bytes() == b"ok"


def test_lake_gc_removes_orphans_everywhere_but_not_live_ones(tmp_path, capsys):
    lake = tmp_path / "lake"
    deep = lake / "research" / "datasets"
    deep.mkdir(parents=True)
    _killed_writer(deep)
    live = tempfiles.temp_path(lake / "silver")
    live.mkdir(parents=True)
    assert main(["lake", "gc", "--lake", str(lake), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 2 stale temporary entries" in out and len(_temps(deep)) == 2
    assert main(["lake", "gc", "--lake", str(lake)]) == 0
    out = capsys.readouterr().out
    assert "removed 2 stale temporary entries, 0.1 MB" in out  # 150 kB
    assert _temps(deep) == [] and live.is_dir()


def test_a_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), dbn.atomic_dir(tmp_path / "p") as tmp:
        (tmp / "a").write_text("x")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), dbn.atomic_path(tmp_path / "f") as tmp:
        tmp.write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rel,needle", [
    ("databento-python/XNAS.ITCH/test_data.mbo.dbn.zst", "dataset is 'XNAS.ITCH'; the instrument lock expects"),
    ("databento-python/IFEU.IMPACT/test_data.mbo.dbn.zst", "dataset is 'IFEU.IMPACT'; the instrument lock"),
])
def test_silver_refuses_files_outside_the_lock(tmp_path, capsys, rel, needle):
    assert main(["silver", str(sample(rel)), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(sample(rel)) in err
    assert not (tmp_path / "o").exists()


def test_silver_refuses_another_root_on_the_locked_venue(tmp_path, capsys):
    inst = locked_instrument()
    params = SynthParams(n_records=2000, seed=1, date=dt.date(2024, 3, 15), symbol="ESH4")
    records = generate_records(params, inst)
    nq = write_records(tmp_path / "nq.dbn", records, params.model_copy(update={"symbol": "NQH4"}), inst)
    assert main(["silver", str(nq), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "symbol 'NQH4' is not an outright contract of the locked root 'ES'" in err
    es = write_records(tmp_path / "es.dbn", records, params, inst)
    assert main(["silver", str(es), "--out", str(tmp_path / "o"), "--symbol", "NQH4"]) == 2
    assert "--symbol" in capsys.readouterr().err
    assert main(["silver", str(es), "--out", str(tmp_path / "o"), "--start-et", "09:30", "--end-et", "09:35"]) == 0
    assert (tmp_path / "o" / "bins.parquet").is_file() and not _temps(tmp_path / "o")
    assert os.path.getsize(tmp_path / "o" / "grid.parquet") > 0
    assert pq.read_metadata(tmp_path / "o" / "bins.parquet").num_rows == 5 * 60 * 10  # 5 min of 100 ms bins
