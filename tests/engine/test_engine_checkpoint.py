"""Checkpoint at a bin boundary, restore, continue: bit-identical silver to an uninterrupted run."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from qmachina_assets.core.engine.engine import Engine, SilverChunk
from qmachina_assets.core.ingest import dbn
from qmachina_assets.core.ingest.synth import SynthParams, generate_records
from tests.conftest import ESH4_1225, ESM4_0508, sample


def _assert_same(a: SilverChunk, b: SilverChunk) -> None:
    for part in ("bins", "grid"):
        da, db = getattr(a, part), getattr(b, part)
        for k in da:
            np.testing.assert_array_equal(da[k], db[k], err_msg=f"{part}.{k}")


def _split_runs(instrument, recs: np.ndarray, cuts: list[int], **kw) -> None:
    r = instrument.grid_radius_ticks
    ref = Engine(instrument, **kw)
    whole = SilverChunk.concat([ref.feed(recs), ref.flush()], r)
    eng = Engine(instrument, **kw)
    parts: list[SilverChunk] = []
    prev = 0
    for cut in [*cuts, len(recs)]:
        parts.append(eng.feed(recs[prev:cut]))
        prev = cut
        blob = eng.checkpoint()
        eng = Engine.restore(instrument, blob)  # a fresh process would do exactly this
    parts.append(eng.flush())
    _assert_same(whole, SilverChunk.concat(parts, r))
    assert eng.counters == ref.counters


def _cuts_at_bin_boundaries(recs: np.ndarray, cell_ns: int, n: int) -> list[int]:
    """Record indices where a new bin starts (checkpoint at a bin boundary), spread over the file."""
    ts = recs["ts_recv"].astype(np.int64)
    starts = np.flatnonzero(np.diff(ts // cell_ns) > 0) + 1
    pick = np.linspace(0, len(starts) - 1, n + 2).astype(int)[1:-1]
    return sorted(set(starts[pick].tolist()))


@pytest.mark.parametrize("rel", [ESH4_1225, ESM4_0508])
def test_restore_continue_equals_uninterrupted_real(instrument, rel):
    _, recs = dbn.load_mbo(sample(rel))
    recs = np.array(recs)
    cell = instrument.cell_width_ms * 1_000_000
    ts = recs["ts_recv"].astype(np.int64)
    # a window keeps the grid small; warm-up before it goes through the checkpoints too
    start = int(ts[len(ts) // 2]) // cell * cell
    end = start + 3000 * cell
    cuts = [*_cuts_at_bin_boundaries(recs, cell, 5), 37, len(recs) // 3]  # plus two arbitrary points
    _split_runs(instrument, recs, sorted(set(cuts)), start_ns=start, end_ns=end)


def test_restore_continue_equals_uninterrupted_synthetic(instrument):
    recs = generate_records(SynthParams(n_records=60_000, seed=11, date=dt.date(2024, 3, 6), symbol="ESH4"),
                            instrument)
    base = int(dt.datetime(2024, 3, 6, 14, tzinfo=dt.UTC).timestamp()) * 10**9
    cell = instrument.cell_width_ms * 1_000_000
    cuts = _cuts_at_bin_boundaries(recs, cell, 6)
    _split_runs(instrument, recs, cuts, start_ns=base, end_ns=base + 600 * 10**9)


def test_restore_small_table_capacity_then_growth(instrument):
    """A checkpoint with many live orders restores into a right-sized table and keeps growing."""
    recs = generate_records(SynthParams(n_records=30_000, seed=12, date=dt.date(2024, 3, 7), symbol="ESH4",
                                        target_live_orders=4000), instrument)
    base = int(dt.datetime(2024, 3, 7, 14, tzinfo=dt.UTC).timestamp()) * 10**9
    _split_runs(instrument, recs, [10_000, 20_000], start_ns=base, end_ns=base + 300 * 10**9)
