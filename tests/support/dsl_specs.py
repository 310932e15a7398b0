"""Random valid Gold DSL specs (every node type, aggregation, method and expression function) drawn by
hypothesis, and small synthetic silver, for the executor's property tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

#: Silver grid columns the random specs read (float and int columns).
FLOAT_FIELDS = ("v_add", "v_pull", "bid_depth", "ask_depth")
INT_FIELDS = ("k", "ask_reprice_sign")
TEMPORAL_AGGS = ("mean", "sum", "std", "min", "max", "median", "ewm", "diff", "lag")
NORM_METHODS = ("robust_zscore", "zscore", "rank", "tanh")
SPATIAL_AGGS = ("mean", "sum", "max", "min", "std", "weighted")
UNARY = ("abs", "sign", "tanh", "exp", "log1p", "sqrt", "nan_to_zero")


class Draw:
    """Choices drawn from hypothesis' `data` (so failures shrink)."""

    def __init__(self, data: Any):
        self.data = data

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def choice(self, items: Any) -> Any:
        items = list(items)
        return items[self.int(0, len(items) - 1)]

    def num(self, lo: float, hi: float, digits: int = 3) -> float:
        return round(lo + (hi - lo) * self.int(0, 1000) / 1000, digits)


def _expr(d: Draw, names: list[str], depth: int) -> str:
    """A random expression over `names` using every operator and function of the DSL."""
    if depth <= 0 or d.int(0, 3) == 0:
        return d.choice(names) if d.int(0, 4) else repr(d.num(-2, 2))
    kind = d.int(0, 7)
    a = _expr(d, names, depth - 1)
    b = _expr(d, names, depth - 1)
    if kind == 0:
        return f"({a} {d.choice('+-*/')} {b})"
    if kind == 1:
        ops = ["<", "<=", ">", ">=", "==", "!="]
        if d.int(0, 2) == 0:
            return f"({a} {d.choice(ops)} {b} {d.choice(ops)} {_expr(d, names, 0)})"
        return f"({a} {d.choice(ops)} {b})"
    if kind == 2:
        return f"{d.choice(UNARY)}({a})"
    if kind == 3:
        fn = d.choice(["min", "max"])
        extra = f", {_expr(d, names, 0)}" if d.int(0, 1) else ""
        return f"{fn}({a}, {b}{extra})"
    if kind == 4:
        return f"clip({a}, -1.5, 1.5)"
    if kind == 5:
        return f"where({a}, {b}, {_expr(d, names, depth - 1)})"
    if kind == 6:
        return f"-{a}"
    return f"({a} * dt_s)"


def random_spec(d: Draw, n_ops: int | None = None) -> dict:
    """A valid spec (raw mapping): 1-3 silver columns, `n_ops` random nodes, 1-4 outputs."""
    nodes: dict[str, dict] = {}
    shape: dict[str, str] = {}
    is_int: dict[str, bool] = {}
    for i in range(d.int(1, 3)):
        field = d.choice(FLOAT_FIELDS + INT_FIELDS)
        nodes[f"s{i}"] = {"type": "silver_ref", "field": field}
        shape[f"s{i}"], is_int[f"s{i}"] = "cell", field in INT_FIELDS
    n_ops = d.int(1, 8) if n_ops is None else n_ops
    for i in range(n_ops):
        name = f"n{i}"
        series = [n for n in nodes if shape[n] != "scalar"]
        cells = [n for n in nodes if shape[n] == "cell"]
        kind = d.int(0, 4)
        if kind == 0:
            agg = d.choice(TEMPORAL_AGGS)
            node: dict[str, Any] = {"type": "temporal_window", "source": d.choice(series), "agg": agg}
            if agg in ("diff", "lag"):
                node["lag_bins"] = d.int(1, 4)
            elif agg == "ewm":
                node["alpha"] = d.num(0.05, 0.95)
                node["min_periods"] = d.int(1, 3)
            else:
                node["window_bins"] = d.int(1, 12)
                node["min_periods"] = d.int(1, node["window_bins"])
            shape[name], is_int[name] = shape[node["source"]], False
        elif kind == 1:
            method = d.choice(NORM_METHODS)
            node = {"type": "norm", "source": d.choice(series), "method": method}
            if method == "tanh":
                node["scale"] = d.num(0.2, 5)
            else:
                node["window_bins"] = d.int(1, 12)
                node["min_periods"] = d.int(1, node["window_bins"])
                if method != "rank" and d.int(0, 1):
                    node["eps"] = d.choice([1e-12, 1e-6, 0.5])
            shape[name], is_int[name] = shape[node["source"]], False
        elif kind == 2:
            agg = d.choice(SPATIAL_AGGS)
            radius: Any = d.int(1, 3) if agg == "weighted" or d.int(0, 3) else "all"
            node = {"type": "spatial_neighborhood", "source": d.choice(cells), "radius_ticks": radius, "agg": agg}
            if agg == "weighted":
                node["weights"] = [d.num(-1, 1) for _ in range(2 * radius + 1)]
            shape[name], is_int[name] = "bin" if radius == "all" else "cell", False
        elif kind == 3:
            picks = sorted({d.choice(list(nodes)) for _ in range(d.int(1, 3))})
            local = {f"x{j}": p for j, p in enumerate(picks)}
            int8 = d.int(0, 3) == 0
            node = {"type": "expr", "inputs": local, "expr": _expr(d, list(local), d.int(1, 3))}
            if int8:
                node["dtype"] = "int8"
            order = {"scalar": 0, "bin": 1, "cell": 2}
            shape[name] = max((shape[p] for p in picks), key=order.__getitem__)
            is_int[name] = int8
        else:
            node = {"type": "const", "value": d.num(-3, 3)}
            shape[name], is_int[name] = "scalar", False
        nodes[name] = node
    candidates = [n for n in nodes if shape[n] != "scalar"]
    for j in range(d.int(1, 4)):
        src = d.choice(candidates)
        dtype = "int8" if is_int[src] and d.int(0, 1) else d.choice(["float32", "float64"])
        out: dict[str, Any] = {"type": "output", "source": src, "name": f"out_{j}", "dtype": dtype}
        if d.int(0, 1):
            out["fill_nan"] = float(d.int(-2, 2)) if dtype == "int8" else d.num(-1, 1)
        nodes[f"o{j}"] = out
    return {"version": 1, "name": "random", "nodes": nodes}


def synthetic_silver(rng: np.random.Generator, n_bins: int, radius: int) -> tuple[dict, dict]:
    """Silver columns with spot moves (some farther than the window), invalid bins, bin_seq gaps and zeros."""
    w = 2 * radius + 1
    steps = rng.choice([-1, 0, 0, 0, 1, 2 * radius + 2], size=n_bins)
    spot = 1000 + np.cumsum(steps)
    valid = rng.random(n_bins) > 0.08
    seqs = np.cumsum(np.where(rng.random(n_bins) < 0.05, 3, 1)).astype(np.int64)
    tick = 250_000_000
    spot_int = spot.astype(np.int64) * tick
    spot_int[rng.random(n_bins) < 0.03] = 0
    bins = {"bin_seq": seqs, "spot_ref_price_int": spot_int, "book_valid": valid}
    grid: dict[str, np.ndarray] = {"k": np.tile(np.arange(-radius, radius + 1, dtype=np.int32), n_bins)}
    for f in FLOAT_FIELDS:
        x = rng.normal(size=n_bins * w) * rng.choice([0.5, 3.0], size=n_bins * w)
        grid[f] = np.where(rng.random(n_bins * w) < 0.25, 0.0, x).round(3)
    grid["ask_reprice_sign"] = np.repeat(rng.choice(np.array([-1, 0, 1], np.int8), size=n_bins), w)
    return bins, grid
