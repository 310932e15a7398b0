"""Golden vectors for cross-language gold parity (SPEC §4.5 [REBUILD]).

A window of real silver is cut to a small radius (the fixture must stay small enough to commit) and
the expected built-in gold is computed from exactly that cut silver, so any implementation that reads
`bins.arrow` + `grid.arrow` + `config.json` must reproduce `expected.arrow` (to 1e-9; codes exactly).
Arrow IPC files because the browser decodes Arrow anyway and floats survive bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from qmachina_assets.core.engine import engine as eng
from qmachina_assets.core.gold import features as gold
from qmachina_assets.core.instrument import InstrumentConfig
from qmachina_assets.core.paths import PROJECT_ROOT

FIXTURE_RADIUS = 5
FIXTURE_BINS = 700
BIN_FIELDS = ("bin_seq", "spot_ref_price_int", "book_valid", "ask_reprice_sign", "bid_reprice_sign")


def _busiest_window(bins: dict[str, np.ndarray], n: int) -> int:
    """Start of the n-bin window with the most events that also holds spot moves (a real test)."""
    events = np.asarray(bins["bin_event_count"], np.float64)
    moves = (np.asarray(bins["best_ask_move_ticks"]) != 0).astype(np.float64)
    score = np.convolve(events + 1000 * moves, np.ones(n), mode="valid")
    return int(np.argmax(score))


def _write_arrow(path: Path, columns: dict[str, np.ndarray]) -> None:
    table = pa.Table.from_pydict({k: np.ascontiguousarray(v) for k, v in columns.items()})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def write_parity_fixtures(source: Path, out_dir: Path, instrument: InstrumentConfig,
                          n_bins: int = FIXTURE_BINS, radius: int = FIXTURE_RADIUS) -> dict:
    """Run the engine on `source`, cut the busiest `n_bins` to ±`radius`, write the fixture set."""
    bins_t, grid_t = eng.run_file(source, instrument)
    bins = {c: bins_t[c].to_numpy() for c in bins_t.column_names}
    full_r = instrument.grid_radius_ticks
    w_full = 2 * full_r + 1
    b0 = _busiest_window(bins, n_bins)
    b1 = b0 + n_bins
    keep = np.zeros(w_full, bool)
    keep[full_r - radius: full_r + radius + 1] = True
    rows = np.tile(keep, n_bins)
    cut_bins = {c: bins[c][b0:b1] for c in BIN_FIELDS}
    cut_grid = {"bin_seq": grid_t["bin_seq"].to_numpy()[b0 * w_full: b1 * w_full][rows]}
    for name in ("k", *gold.GOLD_INPUTS):  # the silver columns gold reads
        cut_grid[name] = grid_t[name].to_numpy()[b0 * w_full: b1 * w_full][rows]
    cfg = gold.GoldFeatureConfig.from_instrument(instrument)
    expected = gold.compute_gold(cut_bins, cut_grid, cfg, radius, instrument.tick_int)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_arrow(out_dir / "bins.arrow", cut_bins)
    _write_arrow(out_dir / "grid.arrow", cut_grid)
    _write_arrow(out_dir / "expected.arrow", expected)
    meta = {
        "gold_version": gold.GOLD_VERSION,
        "gold_config": cfg.model_dump(mode="json"),
        "config_hash": cfg.config_hash,
        "grid_radius_ticks": radius,
        "tick_int": instrument.tick_int,
        "source": source.name,
        "bins": n_bins,
        "first_bin_seq": int(cut_bins["bin_seq"][0]),
        "tolerance": 1e-9,
        "columns": {"float": list(gold.GOLD_FLOAT_COLUMNS), "code": list(gold.GOLD_CODE_COLUMNS)},
    }
    (out_dir / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def read_arrow(path: Path) -> dict[str, np.ndarray]:
    with pa.memory_map(str(path)) as src:
        table = pa.ipc.open_file(src).read_all()
    return {c: table[c].to_numpy() for c in table.column_names}


# ---- Gold DSL --------------------------------------------------------------------------------------

DSL_FIXTURE_BINS = 300
DSL_BIN_FIELDS = ("bin_seq", "spot_ref_price_int", "book_valid")


def _project_path(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return p.name


def write_dsl_fixtures(source: Path, out_dir: Path, instrument: InstrumentConfig, spec_paths: list[Path],
                       n_bins: int = DSL_FIXTURE_BINS, radius: int = FIXTURE_RADIUS) -> dict:
    """Golden vectors of Gold DSL specs for the browser's executor: one cut of real silver (`bins.arrow`,
    `grid.arrow`: every column the specs read) and per spec `<name>.spec.json` + `<name>.expected.arrow`
    (`dsl_runtime.execute` on exactly that cut: the outputs and gold_valid per grid row), and `<name>.state.json`,
    the runtime's state after the first half of the bins (what the server hands a browser that starts mid-day).
    `config.json` lists the specs, the geometry and the tolerance."""
    from qmachina_assets.core.gold import dsl, dsl_runtime

    specs = {p.stem: dsl.load_spec(p) for p in spec_paths}
    fields = sorted({n.field for s in specs.values() for n in s.nodes.values() if isinstance(n, dsl.SilverRef)}
                    | {"k"})
    bins_t, grid_t = eng.run_file(source, instrument)
    bins = {c: bins_t[c].to_numpy() for c in bins_t.column_names}
    full_r = instrument.grid_radius_ticks
    w_full = 2 * full_r + 1
    b0 = _busiest_window(bins, n_bins)
    b1 = b0 + n_bins
    keep = np.tile(np.arange(w_full) - full_r, n_bins)
    rows = np.abs(keep) <= radius
    cut_bins = {c: bins[c][b0:b1] for c in DSL_BIN_FIELDS}
    cut_grid = {c: grid_t[c].to_numpy()[b0 * w_full: b1 * w_full][rows] for c in fields}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_arrow(out_dir / "bins.arrow", cut_bins)
    _write_arrow(out_dir / "grid.arrow", cut_grid)
    half = n_bins // 2
    for name, spec in specs.items():
        rt = dsl_runtime.DslRuntime(spec, radius, instrument.tick_int, instrument.cell_width_ms)
        rt.step({c: v[:half] for c, v in cut_bins.items()},
                {c: v[:half * (2 * radius + 1)] for c, v in cut_grid.items()})
        state = {"after_bins": half, **rt.state_json()}
        (out_dir / f"{name}.state.json").write_text(json.dumps(state, indent=1) + "\n")
        expected = dsl_runtime.execute(spec, cut_bins, cut_grid, radius, instrument.tick_int, instrument.cell_width_ms)
        _write_arrow(out_dir / f"{name}.expected.arrow",
                     {c: v for c, v in expected.items() if c not in ("bin_seq", "k")})
        (out_dir / f"{name}.spec.json").write_text(json.dumps(spec.model_dump(mode="json"), indent=1) + "\n")
    meta = {
        "runtime_version": dsl_runtime.RUNTIME_VERSION,
        "specs": {name: {"spec_hash": s.spec_hash, "source": _project_path(p),
                         "outputs": [s.nodes[o].name for o in s.outputs]}  # type: ignore[union-attr]
                  for (name, s), p in zip(specs.items(), spec_paths, strict=True)},
        "grid_radius_ticks": radius,
        "tick_int": instrument.tick_int,
        "cell_width_ms": instrument.cell_width_ms,
        "source": source.name,
        "bins": n_bins,
        "first_bin_seq": int(cut_bins["bin_seq"][0]),
        "tolerance": 1e-9,
    }
    (out_dir / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
