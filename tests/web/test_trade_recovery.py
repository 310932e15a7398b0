"""The viewer recovers trades from silver (web/src/viewer/trades.ts): the volume traded at a tick during bin n is
fill_n − fill_{n−1}·e^(−cell/τ), divided by e^(−cell/2τ) and rounded. This checks that assumption about silver's
fill_mass against the real F records of the ESH4 2023-12-25 sample, 18:00-18:05 ET (3000 bins): every bin after
the first two matches exactly (the first emitted bin closes the warm-up, so the viewer skips the first pair)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq

from qmachina_assets.core.engine.silver_partition import silver_dir
from qmachina_assets.core.ingest.bronze import load_bronze
from tests.support.serving import DATE, build_served_lake


def test_fill_mass_diffs_are_the_traded_volume(tmp_path):
    world = build_served_lake(tmp_path)
    s = silver_dir(world.lake, "ESH4", DATE)
    bins = pq.read_table(s / "bins.parquet").to_pandas()
    grid = pq.read_table(s / "grid.parquet", columns=["bin_seq", "k", "fill_mass"]).to_pandas()
    inst = world.instrument
    r, tick = int(inst.grid_radius_ticks), int(inst.tick_int)
    fill = grid.pivot(index="bin_seq", columns="k", values="fill_mass").to_numpy()
    spot = bins["spot_ref_price_int"].to_numpy() // tick
    ends = bins["bin_end_ns"].to_numpy()
    cell_s, tau = inst.cell_width_ms / 1000, inst.tau_rest_decay
    decay, in_bin = math.exp(-cell_s / tau), math.exp(-cell_s / 2 / tau)
    _, rec = load_bronze(world.lake, "ESH4", DATE)
    fills = rec[rec["action"] == b"F"]
    fts = fills["ts_recv"].view(np.int64)
    checked = traded = exact = 0
    for n in range(2, len(bins)):
        if spot[n] == 0 or spot[n - 1] == 0:
            continue
        derived = {}
        for row in range(2 * r + 1):
            t = spot[n] + row - r
            prev = t - spot[n - 1] + r
            if 0 <= prev <= 2 * r:
                v = round((fill[n, row] - fill[n - 1, prev] * decay) / in_bin)
                if v >= 1:
                    derived[int(t)] = v
        real: dict[int, int] = {}
        for f in fills[(fts > ends[n - 1]) & (fts <= ends[n])]:
            t = int(f["price"]) // tick
            if abs(t - spot[n]) <= r and abs(t - spot[n - 1]) <= r:
                real[t] = real.get(t, 0) + int(f["size"])
        assert sum(derived.values()) == sum(real.values()), (n, derived, real)  # every contract, every bin
        exact += derived == real
        checked += 1
        traded += sum(real.values())
    print(f"bins {checked}, traded {traded}, per-tick identical in {exact} bins")
    assert checked > 2900 and traded > 500, (checked, traded)
    # per tick: the engine credits a fill to the resting order's level in its book, the F record carries the trade
    # price; they differ for a contract now and then
    assert exact >= 0.99 * checked, (exact, checked)
