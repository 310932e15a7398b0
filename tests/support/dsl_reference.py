"""A deliberately plain Gold DSL reference: whole-array numpy per node, per-series Python loops over explicit
windows (numpy's median / std / mean), no state machines. Slow; independent of `dsl_runtime`, which it
checks to a tolerance (summation orders and libm calls differ in the last bits)."""

from __future__ import annotations

import ast
import math

import numpy as np

from qmachina_assets.core.gold import dsl
from qmachina_assets.core.gold.features import series_ids

_BIN = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}
_CMP = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
        ast.Eq: np.equal, ast.NotEq: np.not_equal}
_FN = {"abs": np.abs, "sign": np.sign, "tanh": np.tanh, "exp": np.exp, "log1p": np.log1p, "sqrt": np.sqrt,
       "nan_to_zero": lambda x: np.where(np.isnan(x), 0.0, x)}


def _eval(node: ast.AST, env: dict):
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant):
        return np.float64(node.value)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        x = _eval(node.operand, env)
        return -x if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.BinOp):
        return _BIN[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.Compare):
        vals = [_eval(node.left, env), *(_eval(c, env) for c in node.comparators)]
        acc = True
        for op, a, b in zip(node.ops, vals[:-1], vals[1:], strict=True):
            acc = acc & _CMP[type(op)](a, b)
        return np.asarray(acc, np.float64)
    fn = node.func.id  # type: ignore[attr-defined]
    args = [_eval(a, env) for a in node.args]  # type: ignore[attr-defined]
    if fn in ("min", "max"):
        f = np.minimum if fn == "min" else np.maximum
        acc = args[0]
        for a in args[1:]:
            acc = f(acc, a)
        return acc
    if fn == "clip":
        return np.minimum(np.maximum(args[0], args[1]), args[2])
    if fn == "where":
        return np.where((args[0] != 0) & ~np.isnan(args[0]), args[1], args[2])
    return _FN[fn](args[0])


def _window_stat(node, x: np.ndarray, t: int) -> float:
    """One sample of a temporal / norm node over the series values x[..t]."""
    if isinstance(node, dsl.TemporalWindow) and node.agg in ("diff", "lag"):
        if t < node.lag_bins:
            return math.nan
        return x[t] - x[t - node.lag_bins] if node.agg == "diff" else x[t - node.lag_bins]
    if isinstance(node, dsl.TemporalWindow) and node.agg == "ewm":
        m, c = math.nan, 0
        for v in x[:t + 1]:
            if not math.isnan(v):
                m = v if c == 0 else node.alpha * v + (1 - node.alpha) * m
                c += 1
        return m if c >= node.min_periods else math.nan
    win = x[max(0, t - node.window_bins + 1):t + 1]
    d = win[~np.isnan(win)]
    v, mp = x[t], node.min_periods
    if isinstance(node, dsl.TemporalWindow):
        if d.size < mp or d.size == 0 or (node.agg == "std" and d.size < 2):
            return math.nan
        return float({"mean": np.mean, "sum": np.sum, "min": np.min, "max": np.max, "median": np.median,
                      "std": lambda a: np.std(a, ddof=1)}[node.agg](d))
    if math.isnan(v):
        return math.nan
    if node.method == "rank":
        return math.nan if d.size < mp or d.size == 0 else float((d <= v).mean())
    if node.method == "zscore":
        sd = float(np.std(d, ddof=1)) if d.size >= max(mp, 2) else math.nan
        return (v - d.mean()) / sd if sd > node.eps else 0.0
    if d.size < mp or d.min() == d.max():
        return 0.0
    med = float(np.median(d))
    s = 1.4826 * float(np.median(np.abs(d - med)))
    return (v - med) / s if s > node.eps else 0.0


def _spatial(node, x: np.ndarray) -> np.ndarray:
    n_bins, w = x.shape
    r = w if node.radius_ticks == "all" else node.radius_ticks
    out = np.full((n_bins, 1 if node.radius_ticks == "all" else w), math.nan)
    for b in range(n_bins):
        for j in range(out.shape[1]):
            lo, hi = (0, w - 1) if node.radius_ticks == "all" else (max(0, j - r), min(w - 1, j + r))
            win = x[b, lo:hi + 1]
            if node.agg == "weighted":
                out[b, j] = sum(node.weights[i - j + r] * x[b, i] for i in range(lo, hi + 1))
                continue
            d = win[~np.isnan(win)]
            if d.size == 0 or (node.agg == "std" and d.size < 2):
                continue
            out[b, j] = {"mean": np.mean, "sum": np.sum, "min": np.min, "max": np.max,
                         "std": lambda a: np.std(a, ddof=1)}[node.agg](d)
    return out[:, 0] if node.radius_ticks == "all" else out


def reference_execute(spec: dsl.GoldDslSpec, bins: dict, grid: dict, radius: int, tick_int: int,
                      cell_width_ms: int) -> dict[str, np.ndarray]:
    w = 2 * radius + 1
    seqs = np.asarray(bins["bin_seq"], np.int64)
    n_bins = len(seqs)
    spot = np.asarray(bins["spot_ref_price_int"], np.int64)
    valid = np.asarray(bins["book_valid"], bool) & (spot > 0)
    sid = series_ids(seqs, valid, spot // tick_int, radius).reshape(n_bins, w)
    bin_sid = np.full(n_bins, -1)
    run = -1
    for b in range(n_bins):
        if valid[b]:
            run += 0 if b and valid[b - 1] and seqs[b] == seqs[b - 1] + 1 else 1
            bin_sid[b] = run
    order, _ = dsl.topo_order(spec.nodes)
    vals: dict[str, object] = {}
    cols: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for n in order:
            node = spec.nodes[n]
            if isinstance(node, dsl.SilverRef):
                vals[n] = np.asarray(grid[node.field], np.float64).reshape(n_bins, w)
            elif isinstance(node, dsl.Const):
                vals[n] = np.float64(node.value)
            elif isinstance(node, dsl.Expr):
                tree, _ = dsl.parse_expr(node.expr, set(node.inputs))
                env = {k: (v[:, None] if isinstance(v, np.ndarray) and v.ndim == 1 else v)
                       for k, v in ((loc, vals[ref]) for loc, ref in node.inputs.items())}
                env["dt_s"] = np.float64(cell_width_ms / 1000.0)
                y = np.asarray(_eval(tree, env), np.float64)
                if node.dtype == "int8":
                    y = np.trunc(np.clip(np.where(np.isnan(y), 0.0, y), -128, 127))
                rank = max((np.ndim(vals[r]) for r in node.inputs.values()), default=0)  # shape from the inputs
                y = y.reshape(n_bins) if rank == 1 and y.ndim == 2 else y
                vals[n] = np.broadcast_to(y, [(), (n_bins,), (n_bins, w)][rank]).copy()
            elif isinstance(node, dsl.Norm) and node.method == "tanh":
                vals[n] = np.tanh(vals[node.source] / node.scale)
            elif isinstance(node, dsl.TemporalWindow | dsl.Norm):
                x = vals[node.source]
                ids = sid if x.ndim == 2 else bin_sid
                y = np.full(x.shape, math.nan)
                for g in np.unique(ids[ids >= 0]):
                    where = np.nonzero(ids == g)  # row-major: time order within a series
                    xs = x[where]
                    y[where] = [_window_stat(node, xs, t) for t in range(len(xs))]
                vals[n] = y
            elif isinstance(node, dsl.SpatialNeighborhood):
                vals[n] = _spatial(node, vals[node.source])
            else:
                assert isinstance(node, dsl.Output)
                x = vals[node.source]
                x = np.broadcast_to(x[:, None] if x.ndim == 1 else x, (n_bins, w)).astype(np.float64)
                fill = 0.0 if node.fill_nan is None else node.fill_nan
                if node.fill_nan is not None:
                    x = np.where(np.isnan(x), fill, x)
                x = np.where(valid[:, None], x, fill)
                cols[node.name] = x.reshape(-1).astype({"float32": np.float32, "float64": np.float64,
                                                        "int8": np.int8}[node.dtype])
    out = {"bin_seq": np.repeat(seqs, w), "k": np.asarray(grid["k"], np.int32)}
    out.update({spec.nodes[o].name: cols[spec.nodes[o].name] for o in spec.outputs})  # type: ignore[union-attr]
    out["gold_valid"] = np.repeat(valid, w)
    return out
