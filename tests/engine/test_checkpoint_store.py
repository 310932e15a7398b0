"""Checkpoints in the lake: a mid-day start from the cache equals the uninterrupted run."""

import datetime as dt

import numpy as np

from qmachina_assets.core.engine.checkpoints import checkpoint_path, engine_at
from qmachina_assets.core.engine.engine import Engine, SilverChunk, checkpoint_key
from qmachina_assets.core.ingest import lake as lakemod
from qmachina_assets.core.ingest.bronze import build_bronze
from tests.conftest import ESH4_1225, sample


def test_mid_day_start_from_cache_matches_full_replay(lake, instrument):
    f = lakemod.land_raw_file(sample(ESH4_1225), lake, instrument)
    manifest, _ = build_bronze([f.path], date=f.date, symbol="ESH4", lake=lake, instrument=instrument)
    cell = instrument.cell_width_ms * 1_000_000
    start = int(dt.datetime(2023, 12, 25, 23, 0, tzinfo=dt.UTC).timestamp()) * 10**9
    end = start + 1200 * cell
    boundary = start + 600 * cell
    from qmachina_assets.core.ingest.bronze import load_bronze

    _, records = load_bronze(lake, "ESH4", "2023-12-25")
    ref = Engine(instrument, start, end)
    whole = SilverChunk.concat([ref.feed(np.array(records)), ref.flush()], instrument.grid_radius_ticks)

    for expect_cached in (False, True):
        engine, rest, cached = engine_at(lake, "ESH4", "2023-12-25", instrument, boundary, start, end)
        assert cached is expect_cached
        tail = SilverChunk.concat([engine.feed(np.array(rest)), engine.flush()], instrument.grid_radius_ticks)
        keep = whole.bins["bin_start_ns"] >= boundary - cell  # the bin open at the boundary onwards
        for name, col in tail.bins.items():
            np.testing.assert_array_equal(col, whole.bins[name][keep], err_msg=name)
        rows = np.repeat(keep, 2 * instrument.grid_radius_ticks + 1)
        for name, col in tail.grid.items():
            np.testing.assert_array_equal(col, whole.grid[name][rows], err_msg=name)
    key = checkpoint_key(instrument, f"{manifest.data_sha256}:{start}:{end}", boundary)
    assert checkpoint_path(lake, "ESH4", "2023-12-25", key).is_file()
