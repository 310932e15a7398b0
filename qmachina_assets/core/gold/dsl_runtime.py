"""Gold DSL executor: a validated spec compiled to a flat program that one numba kernel advances bin by bin.

Batch (`execute`: a silver partition fed in chunks) and stream (`DslRuntime.step`: one bin or a few, as
the engine emits them) are the same kernel over the same explicit state, so a served DSL output equals
the evaluated one to the bit, and a checkpoint of the state (`DslRuntime.checkpoint`) resumes exactly.
The browser's twin (`web/src/gold/dsl*.ts`) compiles the same spec to the same program and state layout.

The program: nodes in topological order (nodes that feed no output are dropped), one row per node in an
int table (`prog_i`, columns `I_*`) and a float table (`prog_f`), expressions as postfix code over a
value stack. Values: a scalar or a bin value in column 0 of the node's row of `vals`, a cell value in
its 2R+1 columns (k = -R..R).

State (all of it in five arrays, see `STATE_ARRAYS`):
- `slot_tick`, `slot_seq`: the absolute tick each slot (tick mod 2R+1) holds and the last bin_seq it was
  advanced on, as in `gold.GoldRuntime`: a cell continues its series when the slot holds its tick and
  the previous bin_seq (the series of `gold.series_ids`); otherwise the series restarts.
- `bin_state`: [previous bin valid, its bin_seq]: bin-shaped series run over contiguous valid bins.
- `state_i`, `state_f`: per temporal / norm node and slot (2R+1 slots for cell values, 1 for bin values),
  `I_ISIZE` ints and `I_FSIZE` floats: sample counts, window cursors, rings, sorted copies, moments.

Windows that aggregate the last W samples keep them in a *doubled* ring (each sample written at i mod W
and i mod W + W), so the last min(W, n) samples are always contiguous, oldest first, and the aggregate
kernels (`_agg`, `_moments`) sum them in the order every implementation uses.

Semantics (unchanged from the series-major executor this replaces; SPEC §8.4 as amended in dsl.py):
invalid bins (book_valid false or no spot) compute nothing, break every series and emit `fill_nan`
(0 when unset); undefined values are NaN; expressions follow numpy's float semantics (IEEE division,
NaN-propagating min/max, comparisons false on NaN), evaluated left to right.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit
from pydantic import BaseModel

from qmachina_assets.core.gold import dsl, rolling
from qmachina_assets.core.gold import features as gold
from qmachina_assets.core.gold.dsl import (
    Const,
    Expr,
    GoldDslSpec,
    Norm,
    Output,
    SilverRef,
    SpatialNeighborhood,
    TemporalWindow,
)
from qmachina_assets.core.gold.features import GoldFeatureConfig
from qmachina_assets.core.gold.redundancy import RedundancyReport, redundancy
from qmachina_assets.core.numba_cache import drop_stale_cache

drop_stale_cache(__file__, ("rolling.py",))

#: Bumped when the program or state layout changes (checkpoints of another layout are refused).
RUNTIME_VERSION = "dsl-runtime-1"

# ---- the program ----------------------------------------------------------------------------------

# node kinds
K_SILVER, K_CONST, K_EXPR, K_WINDOW, K_SORTED, K_MOMENTS, K_EWM, K_SHIFT, K_TANH, K_SPATIAL, K_OUTPUT = range(11)
# shapes
SCALAR, BIN, CELL = 0, 1, 2
# prog_i columns: kind, shape, source (node row, or silver field index), window / lag, min_periods, mode
# (agg code, sorted method, diff flag, zscore flag, int8 flag, spatial radius (-1 = all)), state offsets
# and sizes per slot, expression code range, output index, has_fill, aux (weights offset in consts)
(I_KIND, I_SHAPE, I_SRC, I_W, I_MINP, I_MODE, I_IOFF, I_FOFF, I_ISIZE, I_FSIZE, I_CODE0, I_CODE1, I_OUT,
 I_HASFILL, I_AUX) = range(15)
N_I = 15
# prog_f columns: a (alpha / eps / tanh scale / fill / const value)
F_A = 0
N_F = 1

# window aggregates (`_agg`); weighted spatial sum is -1
AGG_MEAN, AGG_SUM, AGG_STD, AGG_MIN, AGG_MAX = 0, 1, 2, 3, 4
AGG_CODES = {"mean": AGG_MEAN, "sum": AGG_SUM, "std": AGG_STD, "min": AGG_MIN, "max": AGG_MAX}
# sorted-window methods
SORT_MEDIAN, SORT_ROBUST, SORT_RANK = 0, 1, 2

# expression opcodes (postfix; arg = node row for LOAD, consts index for CONST)
(OP_LOAD, OP_CONST, OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_NE, OP_AND, OP_MIN,
 OP_MAX, OP_NEG, OP_ABS, OP_SIGN, OP_TANH, OP_EXP, OP_LOG1P, OP_SQRT, OP_NAN0, OP_CLIP, OP_WHERE) = range(25)
_BINOP_CODES = {ast.Add: OP_ADD, ast.Sub: OP_SUB, ast.Mult: OP_MUL, ast.Div: OP_DIV}
_CMP_CODES = {ast.Lt: OP_LT, ast.LtE: OP_LE, ast.Gt: OP_GT, ast.GtE: OP_GE, ast.Eq: OP_EQ, ast.NotEq: OP_NE}
_UNARY_FN = {"abs": OP_ABS, "sign": OP_SIGN, "tanh": OP_TANH, "exp": OP_EXP, "log1p": OP_LOG1P, "sqrt": OP_SQRT,
             "nan_to_zero": OP_NAN0}

#: The state arrays of a runtime, in checkpoint order.
STATE_ARRAYS = ("slot_tick", "slot_seq", "bin_state", "state_i", "state_f")
_EMPTY_TICK = np.iinfo(np.int64).min


class _ExprCompiler:
    """Postfix code of a checked expression tree, in `dsl`'s evaluation order (left to right)."""

    def __init__(self, rows: Mapping[str, int], consts: list[float], dt_s: float):
        self.rows, self.consts, self.dt_s = rows, consts, dt_s
        self.code: list[tuple[int, int]] = []
        self.depth = 0
        self._sp = 0

    def _emit(self, op: int, arg: int = 0, pushes: int = 0) -> None:
        self.code.append((op, arg))
        self._sp += pushes
        self.depth = max(self.depth, self._sp)

    def _const(self, value: float) -> None:
        self.consts.append(float(value))
        self._emit(OP_CONST, len(self.consts) - 1, 1)

    def emit(self, node: ast.AST) -> None:
        if isinstance(node, ast.Expression):
            self.emit(node.body)
        elif isinstance(node, ast.Constant):
            self._const(float(node.value))
        elif isinstance(node, ast.Name):
            if node.id in self.rows:
                self._emit(OP_LOAD, self.rows[node.id], 1)
            else:
                assert node.id == "dt_s", node.id
                self._const(self.dt_s)
        elif isinstance(node, ast.UnaryOp):
            self.emit(node.operand)
            if isinstance(node.op, ast.USub):
                self._emit(OP_NEG)
        elif isinstance(node, ast.BinOp):
            self.emit(node.left)
            self.emit(node.right)
            self._emit(_BINOP_CODES[type(node.op)], 0, -1)
        elif isinstance(node, ast.Compare):  # a < b < c -> (a < b) and (b < c); b is evaluated twice (pure)
            left = node.left
            for i, (op, comp) in enumerate(zip(node.ops, node.comparators, strict=True)):
                self.emit(left)
                self.emit(comp)
                self._emit(_CMP_CODES[type(op)], 0, -1)
                if i:
                    self._emit(OP_AND, 0, -1)
                left = comp
        else:
            assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            fn = node.func.id
            for a in node.args[:1 if fn in ("min", "max") else None]:
                self.emit(a)
            if fn in ("min", "max"):  # fold left: min(a, b, c) = min(min(a, b), c)
                for a in node.args[1:]:
                    self.emit(a)
                    self._emit(OP_MIN if fn == "min" else OP_MAX, 0, -1)
            elif fn == "clip":
                self._emit(OP_CLIP, 0, -2)
            elif fn == "where":
                self._emit(OP_WHERE, 0, -2)
            else:
                self._emit(_UNARY_FN[fn])


class Program:
    """A valid spec compiled for the kernel (shared by every runtime of the spec)."""

    def __init__(self, spec: GoldDslSpec, radius: int, tick_int: int, cell_width_ms: int):
        spec = dsl.validate_or_raise(spec)
        self.spec, self.radius, self.tick_int, self.cell_width_ms = spec, radius, tick_int, cell_width_ms
        self.width = 2 * radius + 1
        order, _ = dsl.topo_order(spec.nodes)
        live = _live_nodes(spec)
        self.nodes = [n for n in order if n in live]
        rows = {n: i for i, n in enumerate(self.nodes)}
        shapes = _shapes(spec, self.nodes)
        self.fields: list[str] = []
        self.outputs: list[tuple[str, str]] = []  # (column, dtype) in spec order
        out_index = {}
        for n in spec.outputs:
            node = spec.nodes[n]
            out_index[n] = len(self.outputs)
            self.outputs.append((node.name, node.dtype))  # type: ignore[union-attr]
        prog_i = np.zeros((len(self.nodes), N_I), np.int64)
        prog_f = np.zeros((len(self.nodes), N_F), np.float64)
        consts: list[float] = []
        code: list[tuple[int, int]] = []
        depth = 1
        n_i = n_f = 0
        dt_s = cell_width_ms / 1000.0
        for r, n in enumerate(self.nodes):
            node = spec.nodes[n]
            row = prog_i[r]
            row[I_SHAPE] = shapes[n]
            slots = self.width if shapes[n] == CELL else 1
            isize = fsize = 0
            if isinstance(node, SilverRef):
                row[I_KIND] = K_SILVER
                if node.field not in self.fields:
                    self.fields.append(node.field)
                row[I_SRC] = self.fields.index(node.field)
            elif isinstance(node, Const):
                row[I_KIND] = K_CONST
                prog_f[r, F_A] = node.value
            elif isinstance(node, Expr):
                row[I_KIND] = K_EXPR
                tree, problems = dsl.parse_expr(node.expr, set(node.inputs))
                assert tree is not None, problems
                comp = _ExprCompiler({local: rows[ref] for local, ref in node.inputs.items()}, consts, dt_s)
                comp.emit(tree)
                row[I_CODE0], row[I_CODE1] = len(code), len(code) + len(comp.code)
                code += comp.code
                depth = max(depth, comp.depth)
                row[I_MODE] = 1 if node.dtype == "int8" else 0
            elif isinstance(node, TemporalWindow):
                row[I_SRC] = rows[node.source]
                row[I_MINP] = node.min_periods
                if node.agg in ("diff", "lag"):
                    row[I_KIND], row[I_W], row[I_MODE] = K_SHIFT, node.lag_bins, int(node.agg == "diff")
                    isize, fsize = 1, node.lag_bins
                elif node.agg == "ewm":
                    row[I_KIND] = K_EWM
                    prog_f[r, F_A] = node.alpha
                    isize, fsize = 1, 1
                elif node.agg == "median":
                    row[I_KIND], row[I_W], row[I_MODE] = K_SORTED, node.window_bins, SORT_MEDIAN
                    isize, fsize = 3, 2 * node.window_bins
                elif node.agg == "std":
                    row[I_KIND], row[I_W], row[I_MODE] = K_MOMENTS, node.window_bins, 0
                    isize, fsize = 2, 2 + 2 * node.window_bins
                else:
                    row[I_KIND], row[I_W], row[I_MODE] = K_WINDOW, node.window_bins, AGG_CODES[node.agg]
                    isize, fsize = 1, 2 * node.window_bins
            elif isinstance(node, Norm):
                row[I_SRC] = rows[node.source]
                if node.method == "tanh":
                    row[I_KIND] = K_TANH
                    prog_f[r, F_A] = node.scale
                else:
                    row[I_W], row[I_MINP] = node.window_bins, node.min_periods
                    prog_f[r, F_A] = node.eps
                    if node.method == "zscore":
                        row[I_KIND], row[I_MODE] = K_MOMENTS, 1
                        isize, fsize = 2, 2 + 2 * node.window_bins
                    else:
                        row[I_KIND] = K_SORTED
                        row[I_MODE] = SORT_ROBUST if node.method == "robust_zscore" else SORT_RANK
                        isize, fsize = 3, 2 * node.window_bins
            elif isinstance(node, SpatialNeighborhood):
                row[I_KIND], row[I_SRC] = K_SPATIAL, rows[node.source]
                row[I_W] = -1 if node.radius_ticks == "all" else int(node.radius_ticks)
                row[I_MODE] = -1 if node.agg == "weighted" else AGG_CODES[node.agg]
                if node.weights is not None:
                    row[I_AUX] = len(consts)
                    consts += [float(x) for x in node.weights]
            else:
                assert isinstance(node, Output)
                row[I_KIND], row[I_SRC], row[I_OUT] = K_OUTPUT, rows[node.source], out_index[n]
                row[I_HASFILL] = int(node.fill_nan is not None)
                prog_f[r, F_A] = 0.0 if node.fill_nan is None else float(node.fill_nan)
            row[I_IOFF], row[I_FOFF], row[I_ISIZE], row[I_FSIZE] = n_i, n_f, isize, fsize
            n_i += slots * isize
            n_f += slots * fsize
        self.prog_i, self.prog_f = prog_i, prog_f
        self.code = np.array(code, np.int64).reshape(-1, 2)
        self.consts = np.array(consts, np.float64)
        self.stack_depth = depth
        self.state_sizes = (n_i, n_f)
        self.out_names = [c for c, _ in self.outputs]

    @property
    def state_bytes(self) -> int:
        return 8 * (sum(self.state_sizes) + 2 * self.width + 2)


def _live_nodes(spec: GoldDslSpec) -> set[str]:
    """Nodes an output depends on (the others cannot change any stored column)."""
    live: set[str] = set()
    todo = list(spec.outputs)
    while todo:
        n = todo.pop()
        if n not in live:
            live.add(n)
            todo += dsl.node_refs(spec.nodes[n])
    return live


def _shapes(spec: GoldDslSpec, order: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in order:
        node = spec.nodes[n]
        if isinstance(node, SilverRef):
            out[n] = CELL
        elif isinstance(node, Const):
            out[n] = SCALAR
        elif isinstance(node, Expr):
            out[n] = max((out[r] for r in node.inputs.values()), default=SCALAR)
        elif isinstance(node, SpatialNeighborhood):
            out[n] = BIN if node.radius_ticks == "all" else CELL
        else:
            out[n] = out[node.source]  # type: ignore[union-attr]
    return out


# ---- numba kernels: one sample of one series (the math every path runs) ---------------------------


@njit(cache=True, inline="always")
def _agg(x, lo, hi, agg, minp):
    """Aggregate of the defined values of x[lo..hi] (inclusive), summed oldest first; NaN if fewer than
    minp defined values (std: also fewer than 2)."""
    c = 0
    s = 0.0
    if agg >= AGG_MIN:  # min or max
        best = np.nan
        for i in range(lo, hi + 1):
            v = x[i]
            if not math.isnan(v):
                if c == 0 or (v < best if agg == AGG_MIN else v > best):
                    best = v
                c += 1
        return best if c >= minp else np.nan
    for i in range(lo, hi + 1):
        v = x[i]
        if not math.isnan(v):
            s += v
            c += 1
    if c < minp or c == 0:
        return np.nan
    if agg == AGG_SUM:
        return s
    m = s / c
    if agg == AGG_MEAN:
        return m
    if c < 2:
        return np.nan
    ss = 0.0
    for i in range(lo, hi + 1):
        v = x[i]
        if not math.isnan(v):
            ss += (v - m) * (v - m)
    return math.sqrt(ss / (c - 1))


@njit(cache=True, inline="always")
def _moments(x, lo, hi):
    """(count, mean, sum of squared deviations) of the defined values of x[lo..hi], two passes."""
    n = 0
    s = 0.0
    for i in range(lo, hi + 1):
        if not math.isnan(x[i]):
            s += x[i]
            n += 1
    if n == 0:
        return 0, 0.0, 0.0
    m = s / n
    m2 = 0.0
    for i in range(lo, hi + 1):
        if not math.isnan(x[i]):
            m2 += (x[i] - m) * (x[i] - m)
    return n, m, m2


@njit(cache=True, inline="always")
def _upper_bound(a, n, x):
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")
def _ring_push(sf, f0, w, t, v):
    """Write sample t of a series into its doubled ring sf[f0 .. f0+2w); returns the start of the last
    min(w, t+1) samples (contiguous, oldest first)."""
    p = t % w
    sf[f0 + p] = v
    sf[f0 + p + w] = v
    m = w if t + 1 > w else t + 1
    return f0 + (t - m + 1) % w, m


@njit(cache=True, inline="always")
def _step_window(v, si, i0, sf, f0, w, minp, agg):
    """mean / sum / min / max over the last w samples."""
    t = si[i0]
    si[i0] = t + 1
    lo, m = _ring_push(sf, f0, w, t, v)
    return _agg(sf, lo, lo + m - 1, agg, minp)


@njit(cache=True, inline="always")
def _step_sorted(v, si, i0, sf, f0, w, minp, eps, method):
    """Sorted-window methods over the last w samples: median, robust z-score (rolling.robust_z), rank."""
    fifo = sf[f0:f0 + w]
    srt = sf[f0 + w:f0 + 2 * w]
    head, length, ns = rolling.window_push(fifo, srt, si[i0], si[i0 + 1], si[i0 + 2], v)
    si[i0] = head
    si[i0 + 1] = length
    si[i0 + 2] = ns
    if method == SORT_ROBUST:
        return rolling.robust_z(v, srt, ns, minp, eps)
    if ns < minp or ns == 0:
        return np.nan
    if method == SORT_MEDIAN:
        return rolling.sorted_median(srt, ns)
    return np.nan if math.isnan(v) else _upper_bound(srt, ns, v) / ns


@njit(cache=True, inline="always")
def _step_moments(v, si, i0, sf, f0, w, minp, eps, zscore):
    """Rolling sample std (zscore false) or z-score (x - mean) / std over the last w samples: Welford
    add/remove updates, recomputed exactly (two passes) every w samples of the series so rounding drift
    stays bounded. std: NaN below max(minp, 2) defined values; z: 0 there or when std <= eps."""
    t = si[i0]
    n = si[i0 + 1]
    m = sf[f0]
    m2 = sf[f0 + 1]
    ring = f0 + 2
    old = sf[ring + t % w]  # sample t - w (when t >= w), about to be overwritten
    lo, cnt = _ring_push(sf, ring, w, t, v)
    if t % w == 0:
        n, m, m2 = _moments(sf, lo, lo + cnt - 1)
    else:
        if t >= w and not math.isnan(old):
            n -= 1
            if n == 0:
                m = 0.0
                m2 = 0.0
            else:
                d = old - m
                m -= d / n
                m2 -= d * (old - m)
        if not math.isnan(v):
            n += 1
            d = v - m
            m += d / n
            m2 += d * (v - m)
    si[i0] = t + 1
    si[i0 + 1] = n
    sf[f0] = m
    sf[f0 + 1] = m2
    sd = math.sqrt(max(m2, 0.0) / (n - 1)) if n >= 2 and n >= minp else np.nan
    if not zscore:
        return sd
    if math.isnan(v):
        return np.nan
    return (v - m) / sd if sd > eps else 0.0  # NaN sd (warm-up) compares false -> 0


@njit(cache=True, inline="always")
def _step_ewm(v, si, i0, sf, f0, alpha, minp):
    """ewm (adjust=False): the first defined value, then alpha * x + (1 - alpha) * m; NaN skipped."""
    c = si[i0]
    m = sf[f0] if c > 0 else np.nan
    if not math.isnan(v):
        m = v if c == 0 else alpha * v + (1.0 - alpha) * m
        c += 1
        si[i0] = c
        sf[f0] = m
    return m if c >= minp else np.nan


@njit(cache=True, inline="always")
def _step_shift(v, si, i0, sf, f0, lag, diff):
    """x[t - lag] (lag) or x[t] - x[t - lag] (diff); NaN for the first lag samples of a series."""
    t = si[i0]
    si[i0] = t + 1
    p = f0 + t % lag
    y = np.nan
    if t >= lag:
        y = v - sf[p] if diff else sf[p]
    sf[p] = v
    return y


@njit(cache=True, inline="always")
def _spatial(row, j, w, r, agg, consts, aux):
    """Over k-r..k+r clipped to the grid (NaN ignored), or all k when r < 0; `weighted` (agg < 0) sums
    weights[o + r] * x[k + o] over the in-grid offsets (NaN propagates)."""
    if r < 0:
        return _agg(row, 0, w - 1, agg, 1)
    lo = max(0, j - r)
    hi = min(w - 1, j + r)
    if agg < 0:
        s = 0.0
        for i in range(lo, hi + 1):
            s += consts[aux + i - j + r] * row[i]
        return s
    return _agg(row, lo, hi, agg, 1)


@njit(cache=True, error_model="numpy", inline="always")
def _binop(op, a, b):
    if op == OP_ADD:
        return a + b
    if op == OP_SUB:
        return a - b
    if op == OP_MUL:
        return a * b
    if op == OP_DIV:
        return a / b
    if op == OP_MIN:
        return np.nan if math.isnan(a) or math.isnan(b) else (a if a <= b else b)
    if op == OP_MAX:
        return np.nan if math.isnan(a) or math.isnan(b) else (a if a >= b else b)
    if op == OP_AND:
        return 1.0 if a != 0.0 and b != 0.0 else 0.0
    if op == OP_LT:
        r = a < b
    elif op == OP_LE:
        r = a <= b
    elif op == OP_GT:
        r = a > b
    elif op == OP_GE:
        r = a >= b
    elif op == OP_EQ:
        r = a == b
    else:
        r = a != b
    return 1.0 if r else 0.0


@njit(cache=True, error_model="numpy", inline="always")
def _unop(op, x):
    if op == OP_NEG:
        return -x
    if op == OP_ABS:
        return abs(x)
    if op == OP_SIGN:
        return x if math.isnan(x) else (1.0 if x > 0 else (-1.0 if x < 0 else 0.0))
    if op == OP_TANH:
        return math.tanh(x)
    if op == OP_EXP:
        return math.exp(x)
    if op == OP_LOG1P:
        return math.log1p(x) if x >= -1.0 else np.nan
    if op == OP_SQRT:
        return math.sqrt(x) if x >= 0.0 else np.nan
    return 0.0 if math.isnan(x) else x  # OP_NAN0


@njit(cache=True, error_model="numpy")
def _eval_expr(code, c0, c1, consts, prog_i, vals, stack, width):
    """Evaluate postfix code over `width` lanes; the result is left in stack[0, :width]."""
    sp = 0
    for pc in range(c0, c1):
        op = code[pc, 0]
        arg = code[pc, 1]
        if op == OP_LOAD:
            if prog_i[arg, I_SHAPE] == CELL:
                for j in range(width):
                    stack[sp, j] = vals[arg, j]
            else:
                x = vals[arg, 0]
                for j in range(width):
                    stack[sp, j] = x
            sp += 1
        elif op == OP_CONST:
            x = consts[arg]
            for j in range(width):
                stack[sp, j] = x
            sp += 1
        elif op == OP_CLIP:  # min(max(x, lo), hi)
            for j in range(width):
                stack[sp - 3, j] = _binop(OP_MIN, _binop(OP_MAX, stack[sp - 3, j], stack[sp - 2, j]), stack[sp - 1, j])
            sp -= 2
        elif op == OP_WHERE:
            for j in range(width):
                c = stack[sp - 3, j]
                stack[sp - 3, j] = stack[sp - 2, j] if (c != 0.0 and not math.isnan(c)) else stack[sp - 1, j]
            sp -= 2
        elif op >= OP_NEG:
            for j in range(width):
                stack[sp - 1, j] = _unop(op, stack[sp - 1, j])
        else:
            for j in range(width):
                stack[sp - 2, j] = _binop(op, stack[sp - 2, j], stack[sp - 1, j])
            sp -= 1


@njit(cache=True)
def _node_temporal(n, kind, prog_i, prog_f, vals, state_i, state_f, fresh, fresh_bin, s0, w):
    """A temporal / norm node over one bin: each lane is one sample of its series (slot (s0 + j) mod w for
    cell values, slot 0 for a bin value); a lane whose series restarts has its counters zeroed first."""
    src = prog_i[n, I_SRC]
    ioff = prog_i[n, I_IOFF]
    foff = prog_i[n, I_FOFF]
    isz = prog_i[n, I_ISIZE]
    fsz = prog_i[n, I_FSIZE]
    win = prog_i[n, I_W]
    minp = prog_i[n, I_MINP]
    mode = prog_i[n, I_MODE]
    a = prog_f[n, F_A]
    cell = prog_i[n, I_SHAPE] == CELL
    width = w if cell else 1
    s = s0 if cell else 0
    for j in range(width):
        restart = fresh[j] if cell else fresh_bin
        i0 = ioff + s * isz
        f0 = foff + s * fsz
        if restart:
            for q in range(isz):
                state_i[i0 + q] = 0
        v = vals[src, j]
        if kind == K_WINDOW:
            y = _step_window(v, state_i, i0, state_f, f0, win, minp, mode)
        elif kind == K_SORTED:
            y = _step_sorted(v, state_i, i0, state_f, f0, win, minp, a, mode)
        elif kind == K_MOMENTS:
            y = _step_moments(v, state_i, i0, state_f, f0, win, minp, a, mode == 1)
        elif kind == K_EWM:
            y = _step_ewm(v, state_i, i0, state_f, f0, a, minp)
        else:
            y = _step_shift(v, state_i, i0, state_f, f0, win, mode == 1)
        vals[n, j] = y
        s += 1
        if s == w:
            s = 0


@njit(cache=True)
def _node_spatial(n, prog_i, vals, consts, w):
    r = prog_i[n, I_W]
    agg = prog_i[n, I_MODE]
    aux = prog_i[n, I_AUX]
    row = vals[prog_i[n, I_SRC]]
    for j in range(w if r >= 0 else 1):
        vals[n, j] = _spatial(row, j, w, r, agg, consts, aux)


@njit(cache=True)
def _node_expr(n, prog_i, code, consts, vals, stack, w):
    width = w if prog_i[n, I_SHAPE] == CELL else 1
    _eval_expr(code, prog_i[n, I_CODE0], prog_i[n, I_CODE1], consts, prog_i, vals, stack, width)
    if prog_i[n, I_MODE] == 1:  # int8: NaN -> 0, clipped, truncated
        for j in range(width):
            x = stack[0, j]
            x = 0.0 if math.isnan(x) else x
            vals[n, j] = math.trunc(min(max(x, -128.0), 127.0))
    else:
        for j in range(width):
            vals[n, j] = stack[0, j]


@njit(cache=True)
def _node_output(n, prog_i, prog_f, vals, out, r0, nan_count, w):
    src = prog_i[n, I_SRC]
    o = prog_i[n, I_OUT]
    has_fill = prog_i[n, I_HASFILL] == 1
    fill = prog_f[n, F_A]
    per_bin = prog_i[src, I_SHAPE] != CELL
    for j in range(w):
        x = vals[src, 0] if per_bin else vals[src, j]
        if math.isnan(x):
            nan_count[o] += 1
            if has_fill:
                x = fill
        out[o, r0 + j] = x


@njit(cache=True)
def run_bins(seqs, valid, spot_ticks, inp, prog_i, prog_f, code, consts, slot_tick, slot_seq, bin_state,
             state_i, state_f, vals, stack, fresh, out, nan_count):
    """Advance the program over consecutive bins (rows of `inp`: bin-major, k = -R..R); writes every
    output into `out` (float64, one row per output) and counts NaN values on valid rows before the fill."""
    n_nodes = prog_i.shape[0]
    w = vals.shape[1]
    radius = w // 2
    for b in range(seqs.shape[0]):
        r0 = b * w
        if not valid[b]:
            bin_state[0] = 0
            for n in range(n_nodes):
                if prog_i[n, I_KIND] == K_OUTPUT:
                    o = prog_i[n, I_OUT]
                    for j in range(w):
                        out[o, r0 + j] = prog_f[n, F_A]
            continue
        seq = seqs[b]
        fresh_bin = not (bin_state[0] == 1 and bin_state[1] == seq - 1)
        bin_state[0] = 1
        bin_state[1] = seq
        base = spot_ticks[b] - radius
        s0 = base % w  # slot of k = -R; k = -R + j is in slot (s0 + j) mod w
        s = s0
        for j in range(w):
            tick = base + j
            fresh[j] = slot_tick[s] != tick or slot_seq[s] != seq - 1
            slot_tick[s] = tick
            slot_seq[s] = seq
            s += 1
            if s == w:
                s = 0
        for n in range(n_nodes):
            kind = prog_i[n, I_KIND]
            if kind == K_CONST:
                continue
            if kind == K_SILVER:
                src = prog_i[n, I_SRC]
                for j in range(w):
                    vals[n, j] = inp[src, r0 + j]
            elif kind == K_EXPR:
                _node_expr(n, prog_i, code, consts, vals, stack, w)
            elif kind == K_TANH:
                src = prog_i[n, I_SRC]
                scale = prog_f[n, F_A]
                for j in range(w if prog_i[n, I_SHAPE] == CELL else 1):
                    vals[n, j] = math.tanh(vals[src, j] / scale)
            elif kind == K_SPATIAL:
                _node_spatial(n, prog_i, vals, consts, w)
            elif kind == K_OUTPUT:
                _node_output(n, prog_i, prog_f, vals, out, r0, nan_count, w)
            else:
                _node_temporal(n, kind, prog_i, prog_f, vals, state_i, state_f, fresh, fresh_bin, s0, w)


@njit(cache=True)
def _prefill_scalars(prog_i, prog_f, code, consts, vals, stack):
    """Constants and constant expressions, computed once (they never change)."""
    for n in range(prog_i.shape[0]):
        if prog_i[n, I_SHAPE] != SCALAR:
            continue
        if prog_i[n, I_KIND] == K_CONST:
            vals[n, 0] = prog_f[n, F_A]
        elif prog_i[n, I_KIND] == K_EXPR:
            _eval_expr(code, prog_i[n, I_CODE0], prog_i[n, I_CODE1], consts, prog_i, vals, stack, 1)
            x = stack[0, 0]
            if prog_i[n, I_MODE] == 1:
                x = 0.0 if math.isnan(x) else math.trunc(min(max(x, -128.0), 127.0))
            vals[n, 0] = x


# ---- the runtime -----------------------------------------------------------------------------------

_OUT_DTYPES = {"float32": np.float32, "float64": np.float64, "int8": np.int8}


class DslRuntime:
    """Incremental Gold DSL outputs for a stream: explicit state, advanced one bin (or a few) at a time.

    `step(bins, grid)` takes silver column dicts of consecutive bins (as `gold.GoldRuntime.step`) and returns
    bin_seq, k, one column per output (spec order, output dtype) and gold_valid per grid row.
    `nan_counts` accumulates, per output, the NaN values on valid rows before `fill_nan`.
    """

    def __init__(self, spec: GoldDslSpec | Program, radius: int | None = None, tick_int: int | None = None,
                 cell_width_ms: int | None = None):
        if isinstance(spec, Program):
            self.program = spec
        else:
            assert radius is not None and tick_int is not None and cell_width_ms is not None
            self.program = Program(spec, radius, tick_int, cell_width_ms)
        p = self.program
        w = p.width
        self.slot_tick = np.full(w, _EMPTY_TICK, np.int64)
        self.slot_seq = np.zeros(w, np.int64)
        self.bin_state = np.zeros(2, np.int64)
        self.state_i = np.zeros(p.state_sizes[0], np.int64)
        self.state_f = np.zeros(p.state_sizes[1], np.float64)
        self._vals = np.zeros((len(p.nodes), w), np.float64)
        self._stack = np.zeros((p.stack_depth, w), np.float64)
        self._fresh = np.zeros(w, np.bool_)
        self.nan_counts = np.zeros(len(p.outputs), np.int64)
        _prefill_scalars(p.prog_i, p.prog_f, p.code, p.consts, self._vals, self._stack)

    @property
    def spec(self) -> GoldDslSpec:
        return self.program.spec

    def step_raw(self, seqs: np.ndarray, valid: np.ndarray, spot_ticks: np.ndarray, inp: np.ndarray) -> np.ndarray:
        """The kernel call: (n_outputs, rows) float64 before the output cast."""
        p = self.program
        out = np.empty((len(p.outputs), inp.shape[1]), np.float64)
        run_bins(seqs, valid, spot_ticks, inp, p.prog_i, p.prog_f, p.code, p.consts, self.slot_tick, self.slot_seq,
                 self.bin_state, self.state_i, self.state_f, self._vals, self._stack, self._fresh, out,
                 self.nan_counts)
        return out

    def step(self, bins: Mapping[str, np.ndarray], grid: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        p = self.program
        w = p.width
        seqs = np.asarray(bins["bin_seq"], np.int64)
        n_rows = len(grid["k"])
        if n_rows != len(seqs) * w:
            raise ValueError(f"grid: expected {len(seqs)} bins x {w} rows (radius {p.radius}), got {n_rows}")
        k = np.asarray(grid["k"])
        if n_rows and not (k.reshape(len(seqs), w) == np.arange(-p.radius, p.radius + 1)).all():
            raise ValueError("grid: rows must be ordered (bin_seq, k) with k = -R..R for every bin")
        spot = np.asarray(bins["spot_ref_price_int"], np.int64)
        valid = np.asarray(bins["book_valid"], np.bool_) & (spot > 0)
        inp = np.empty((len(p.fields), n_rows), np.float64)
        for i, f in enumerate(p.fields):
            inp[i] = grid[f]
        raw = self.step_raw(seqs, valid, spot // p.tick_int, inp)
        out: dict[str, np.ndarray] = {"bin_seq": np.repeat(seqs, w), "k": np.asarray(k, np.int32)}
        for o, (name, dtype) in enumerate(p.outputs):
            out[name] = raw[o] if dtype == "float64" else raw[o].astype(_OUT_DTYPES[dtype])
        out["gold_valid"] = np.repeat(valid, w)
        return out

    # ---- checkpoints -------------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Copies of the state arrays (`STATE_ARRAYS`)."""
        return {name: getattr(self, name).copy() for name in STATE_ARRAYS}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        for name in STATE_ARRAYS:
            cur = getattr(self, name)
            new = np.asarray(state[name])
            if new.shape != cur.shape or new.dtype != cur.dtype:
                raise ValueError(f"DSL state {name}: expected {cur.dtype}{cur.shape}, got {new.dtype}{new.shape}")
            cur[:] = new

    def state_key(self) -> str:
        """What a checkpoint must match: runtime version, spec hash, grid and cell geometry."""
        p = self.program
        return f"{RUNTIME_VERSION}|{p.spec.spec_hash}|{p.radius}|{p.tick_int}|{p.cell_width_ms}"

    def checkpoint(self) -> bytes:
        buf = io.BytesIO()
        meta = np.frombuffer(json.dumps({"key": self.state_key()}).encode(), np.uint8)
        np.savez(buf, meta=meta, **self.state())
        return buf.getvalue()

    def state_json(self) -> dict[str, Any]:
        """The state as JSON for the browser's `DslRuntime.setState` (web/src/gold/dslRuntime.ts `decodeDslState`):
        the key and each array little-endian in base64 (NaN and int64 survive), with its dtype."""
        out: dict[str, Any] = {"key": self.state_key()}
        for name, arr in self.state().items():
            le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
            out[name] = {"dtype": arr.dtype.name, "b64": base64.b64encode(le.tobytes()).decode()}
        return out

    def restore(self, blob: bytes) -> None:
        """Load `checkpoint()` bytes of a runtime of the same spec and geometry (ValueError otherwise)."""
        z = np.load(io.BytesIO(blob))
        key = json.loads(bytes(z["meta"]).decode())["key"]
        if key != self.state_key():
            raise ValueError(f"DSL checkpoint is for {key}, this runtime is {self.state_key()}")
        self.load_state({name: z[name] for name in STATE_ARRAYS})


# ---- batch -----------------------------------------------------------------------------------------


def _execute(spec: GoldDslSpec, bins: Mapping[str, np.ndarray], grid: Mapping[str, np.ndarray], radius: int,
             tick_int: int, cell_width_ms: int, chunk_bins: int = 2048) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    rt = DslRuntime(spec, radius, tick_int, cell_width_ms)
    w = rt.program.width
    n = len(bins["bin_seq"])
    if n <= chunk_bins or len(grid["k"]) != n * w:
        out = rt.step(bins, grid)  # one call (which names a shape mismatch)
    else:
        parts = [rt.step({c: v[i:i + chunk_bins] for c, v in bins.items()},
                         {c: v[i * w:(i + chunk_bins) * w] for c, v in grid.items()}) for i in range(0, n, chunk_bins)]
        out = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    return out, dict(zip(rt.program.out_names, rt.nan_counts.tolist(), strict=True))


def execute(spec: GoldDslSpec, bins: Mapping[str, np.ndarray], grid: Mapping[str, np.ndarray], radius: int,
            tick_int: int, cell_width_ms: int) -> dict[str, np.ndarray]:
    """Run a valid spec over a silver partition (numpy column dicts, as `gold.compute_gold`): bin_seq, k,
    one column per output (spec order), gold_valid. The stream's kernel over the whole partition, fed in
    2048-bin chunks (the state carries over, so the result is the same to the bit)."""
    return _execute(spec, bins, grid, radius, tick_int, cell_width_ms)[0]


# ---- preview ---------------------------------------------------------------------------------------


class OutputPreview(BaseModel):
    """Distribution of one output over the valid rows of the sample, and its overlap with built-in gold."""

    name: str
    n: int
    nan_share: float  # before fill_nan
    mean: float | None
    std: float | None
    p01: float | None
    p25: float | None
    p50: float | None
    p75: float | None
    p99: float | None
    corr_with_builtin: dict[str, float | None]
    max_abs_corr: float | None
    max_abs_corr_with: str | None
    redundant_with: list[str]  # built-ins with |Pearson| or |Spearman| >= REDUNDANT_CORR
    rank_corr_with_builtin: dict[str, float | None] = {}
    explained_r2: float | None = None  # R² of a least-squares fit on the built-ins and the other outputs
    explained_by: list[str] = []  # its largest contributors, when explained_r2 >= the redundancy threshold


class PreviewResult(BaseModel):
    spec_hash: str
    n_bins_sampled: int
    n_rows: int
    execution_time_ms: float
    outputs: list[OutputPreview]
    redundancy: RedundancyReport | None = None  # outputs vs built-ins (`builtin:<name>`) and each other


REDUNDANT_CORR = 0.95


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2:
        return None
    x, y = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / den if den > 0 else None


def preview(spec: GoldDslSpec, bins: Mapping[str, np.ndarray], grid: Mapping[str, np.ndarray], radius: int,
            tick_int: int, cell_width_ms: int, sample_bins: int = 2000, start_bin: int = 0,
            config: GoldFeatureConfig | None = None) -> PreviewResult:
    """Run a spec on `sample_bins` bins from `start_bin` and summarise every output; correlations are
    against `gold.compute_gold(config)` on the same sample (config: the locked instrument's by default), and
    `redundancy` (core/gold/redundancy.py) flags outputs that duplicate a built-in or each other by rank
    correlation or are explained by the rest (R²), each with its figure."""
    if config is None:
        from qmachina_assets.core.instrument import locked_instrument

        config = GoldFeatureConfig.from_instrument(locked_instrument(), cell_width_ms=cell_width_ms)
    w = 2 * radius + 1
    b0, b1 = start_bin, min(start_bin + sample_bins, len(bins["bin_seq"]))
    sb = {c: np.asarray(v)[b0:b1] for c, v in bins.items()}
    sg = {c: np.asarray(v)[b0 * w:b1 * w] for c, v in grid.items()}
    t0 = time.perf_counter()
    out, nans = _execute(spec, sb, sg, radius, tick_int, cell_width_ms)
    elapsed = (time.perf_counter() - t0) * 1000.0
    ref = gold.compute_gold(dict(sb), dict(sg), config, radius, tick_int)
    valid = out["gold_valid"]
    gold_cols = (*gold.GOLD_FLOAT_COLUMNS, *gold.GOLD_CODE_COLUMNS)
    names = [spec.nodes[o].name for o in spec.outputs]  # type: ignore[union-attr]
    red = redundancy({**{n: out[n][valid] for n in names}, **{f"builtin:{g}": ref[g][valid] for g in gold_cols}},
                     targets=names, rank_corr=REDUNDANT_CORR, r2=REDUNDANT_CORR)
    explained = {e.name: e for e in red.explained}
    previews = []
    for name in names:
        x = out[name][valid].astype(np.float64)
        fin = x[np.isfinite(x)]
        q = np.quantile(fin, [0.01, 0.25, 0.5, 0.75, 0.99]).tolist() if fin.size else [None] * 5
        corrs = {g: _corr(x, ref[g][valid].astype(np.float64)) for g in gold_cols}
        known = {g: abs(c) for g, c in corrs.items() if c is not None}
        best = max(known, key=known.__getitem__) if known else None
        ranks = {g: red.rank_corr[name].get(f"builtin:{g}") for g in gold_cols}
        by_rank = [g for g, c in ranks.items() if c is not None and abs(c) >= REDUNDANT_CORR]
        previews.append(OutputPreview(
            name=name, n=int(x.size), nan_share=nans[name] / x.size if x.size else 0.0,
            mean=float(fin.mean()) if fin.size else None, std=float(fin.std()) if fin.size else None,
            p01=q[0], p25=q[1], p50=q[2], p75=q[3], p99=q[4], corr_with_builtin=corrs,
            max_abs_corr=known[best] if best else None, max_abs_corr_with=best,
            redundant_with=sorted({*(g for g, c in known.items() if c >= REDUNDANT_CORR), *by_rank},
                                  key=gold_cols.index),
            rank_corr_with_builtin=ranks, explained_r2=red.r2.get(name),
            explained_by=explained[name].by if name in explained else []))
    return PreviewResult(spec_hash=spec.spec_hash, n_bins_sampled=b1 - b0, n_rows=(b1 - b0) * w,
                         execution_time_ms=elapsed, outputs=previews, redundancy=red)
