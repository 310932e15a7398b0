"""Silver dataset contract (SPEC §3.3–§3.5): column names, dtypes and Arrow schemas, defined once.

Two tables: `bins` (one row per emitted bin) and `grid` (one row per (bin, k), `bin_seq` + the SILVER
allow-list in canonical order). Everything that writes or reads silver imports the lists below so the
wire contract cannot drift between the engine, the Dagster asset and serving.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

#: SPEC §3.3: the 24 float64 columns, in canonical order (also the engine's per-row float layout).
SILVER_FLOAT_COLUMNS: tuple[str, ...] = (
    "add_mass", "pull_mass", "fill_mass", "rest_depth", "bid_depth", "ask_depth",
    "v_add", "v_pull", "v_fill", "v_rest_depth", "v_bid_depth", "v_ask_depth",
    "a_add", "a_pull", "a_fill", "a_rest_depth", "a_bid_depth", "a_ask_depth",
    "j_add", "j_pull", "j_fill", "j_rest_depth", "j_bid_depth", "j_ask_depth",
)

#: SPEC §3.3: the int columns after the floats (k comes first of all).
SILVER_INT_TAIL: tuple[tuple[str, np.dtype], ...] = (
    ("last_event_id", np.dtype(np.int64)),
    ("best_ask_move_ticks", np.dtype(np.int32)),
    ("best_bid_move_ticks", np.dtype(np.int32)),
    ("ask_reprice_sign", np.dtype(np.int8)),
    ("bid_reprice_sign", np.dtype(np.int8)),
    ("microstate_id", np.dtype(np.int8)),
    ("chase_up_flag", np.dtype(np.int8)),
    ("chase_down_flag", np.dtype(np.int8)),
)

#: The SILVER allow-list with dtypes, canonical Arrow order: k, 24 floats, int tail.
SILVER_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("k", np.dtype(np.int32)),
    *((name, np.dtype(np.float64)) for name in SILVER_FLOAT_COLUMNS),
    *SILVER_INT_TAIL,
)

#: Grid table = bin_seq + silver columns.
GRID_COLUMNS: tuple[tuple[str, np.dtype], ...] = (("bin_seq", np.dtype(np.int64)), *SILVER_COLUMNS)

#: Per-bin scalars (SPEC §3.5) plus the rebuild's validity / diagnostics flags.
BIN_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("bin_seq", np.dtype(np.int64)),
    ("ts_ns", np.dtype(np.int64)),  # = bin_end_ns: state is "as of bin close"
    ("bin_start_ns", np.dtype(np.int64)),
    ("bin_end_ns", np.dtype(np.int64)),
    ("bin_event_count", np.dtype(np.int64)),  # records applied in the bin (all actions)
    ("event_id", np.dtype(np.int64)),  # global record counter at emission
    ("spot_ref_price_int", np.dtype(np.int64)),
    ("mid_price", np.dtype(np.float64)),
    ("best_bid_price_int", np.dtype(np.int64)),  # 1e-9 units, 0 when the side is empty
    ("best_ask_price_int", np.dtype(np.int64)),
    ("book_valid", np.dtype(np.bool_)),  # book complete (no clear/snapshot in progress) and two-sided
    ("crossed", np.dtype(np.bool_)),  # crossed/locked at the close or at any F_LAST point in the bin
    ("crossed_events", np.dtype(np.int64)),  # F_LAST points in the bin with best_bid >= best_ask
    ("unknown_order_events", np.dtype(np.int64)),  # C/M/F on ids not in the book
    ("skipped_records", np.dtype(np.int64)),  # null price, off-tick, size-0 Add, bad side
    ("closes_mid_event", np.dtype(np.bool_)),  # last record before the boundary lacked F_LAST
    *SILVER_INT_TAIL[1:],  # the BBO permutation labels (SPEC §3.4), also broadcast onto the grid
    ("anchor_tick", np.dtype(np.int64)),  # absolute tick of the engine's window centre slot
    ("out_of_window_orders", np.dtype(np.int64)),  # live orders outside the absolute-tick window
    ("mid_high_price", np.dtype(np.float64)),  # intrabin extremes of the mid over F_LAST points with an
    ("mid_low_price", np.dtype(np.float64)),  # uncrossed two-sided book, incl. open and close; 0 = none
)

#: The BBO label columns broadcast from the bins table onto every grid row.
LABEL_COLUMNS: tuple[str, ...] = tuple(name for name, _ in SILVER_INT_TAIL[1:])


def _arrow(dtype: np.dtype) -> pa.DataType:
    return pa.from_numpy_dtype(dtype)


def grid_schema() -> pa.Schema:
    """Arrow schema of the grid table (bin_seq + SILVER in canonical order)."""
    return pa.schema([pa.field(name, _arrow(dt), nullable=False) for name, dt in GRID_COLUMNS])


def silver_schema() -> pa.Schema:
    """Arrow schema of the SILVER allow-list alone (the wire contract, SPEC §3.3)."""
    return pa.schema([pa.field(name, _arrow(dt), nullable=False) for name, dt in SILVER_COLUMNS])


def bins_schema() -> pa.Schema:
    """Arrow schema of the bins table."""
    return pa.schema([pa.field(name, _arrow(dt), nullable=False) for name, dt in BIN_COLUMNS])


def microstate_labels(ask_move: np.ndarray, bid_move: np.ndarray) -> dict[str, np.ndarray]:
    """SPEC §3.4 labels from the per-bin BBO moves (ticks versus the previous emitted bin)."""
    a = np.sign(ask_move).astype(np.int8)
    b = np.sign(bid_move).astype(np.int8)
    micro = ((a + 1) * 3 + (b + 1)).astype(np.int8)
    return {
        "best_ask_move_ticks": ask_move.astype(np.int32),
        "best_bid_move_ticks": bid_move.astype(np.int32),
        "ask_reprice_sign": a,
        "bid_reprice_sign": b,
        "microstate_id": micro,
        "chase_up_flag": ((a > 0) & (b > 0)).astype(np.int8),
        "chase_down_flag": ((a < 0) & (b < 0)).astype(np.int8),
    }


def table_from_columns(columns: dict[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    """Arrow table in the schema's column order from numpy columns (zero-copy where dtypes match)."""
    arrays = [pa.array(np.ascontiguousarray(columns[f.name], dtype=f.type.to_pandas_dtype())) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)
