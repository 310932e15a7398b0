"""Gold DSL v1 (SPEC §8.4, rebuilt): a typed, versioned DAG of feature nodes over one silver partition.

A spec is a pydantic model (`GoldDslSpec`) whose `nodes` map names to one of seven node types
(discriminator `type`, extra keys forbidden). `validate` returns every problem as a `DslError` naming
the node; `execute` runs a valid spec over silver column dicts (the inputs of `gold.compute_gold`);
`preview` summarises a sample; `builtin_spec` / `config_from_spec` map the built-in gold set to a
graph and back (exactly, or refusing).

Departures from the seed's v1 (SPEC §10):
- **Series, not relative k.** Temporal and norm nodes run per gold series (`gold.series_ids`: one
  absolute price level while it stays in the window over contiguous valid bins), the same series as
  the built-in features; bin-shaped values (a spatial reduction over all k) run per run of
  contiguous valid bins. Rows of invalid bins (book_valid false or no spot) belong to no series, and
  every output there is `fill_nan` (0 when unset), as in `compute_gold`.
- **Causal only.** Windows hold the current and earlier samples; a negative lag, `center: true` or a
  forward offset is refused by `validate` (kind `lookahead`).
- **Typed.** Each node has an inferred dtype (int / float) and shape (`scalar`, `bin`, `cell`);
  mismatches are validation errors rather than silent casts.
- **`expr` replaces `arithmetic`**: a safe expression (parsed with `ast`, never evaluated by Python)
  evaluated left to right with numpy, so `c1*a + c2*b` does the same float operations, in the same
  order, as the hand-written kernel.
- **The built-in mapping applies c1..c7** and everything else in `GoldFeatureConfig`; rollup and
  derivative weights appear as their raw values plus a `*_sum` constant, and the graph divides
  (`w / total * x`, the kernel's operation order): the normalisation is visible and the reverse
  mapping recovers the configuration exactly.
- **`spec_hash`** covers `version` and `nodes` (the computation), not `name` / `description`.

Undefined values are NaN while a node warms up (e.g. `diff` at a series' first sample) and stay NaN
through `expr` arithmetic; `output.fill_nan` decides what is stored.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import re
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from numba import njit, prange
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from qmachina_assets.core.engine import silver
from qmachina_assets.core.gold import features as gold
from qmachina_assets.core.gold import rolling
from qmachina_assets.core.gold.features import GoldFeatureConfig
from qmachina_assets.core.gold.redundancy import RedundancyReport, redundancy

DSL_VERSION = 1
SILVER_FIELDS: dict[str, np.dtype] = dict(silver.SILVER_COLUMNS)
RESERVED_OUTPUTS = ("bin_seq", "k", "gold_valid")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SNAKE = re.compile(r"[a-z][a-z0-9_]*")
_LOOKAHEAD_KEYS = ("offset", "shift", "lead", "lead_bins", "future", "future_bins", "forward")

# ---- the spec --------------------------------------------------------------------------------------


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SilverRef(_Node):
    """A silver grid column (SILVER allow-list); int columns are int-typed."""

    type: Literal["silver_ref"]
    field: str


class Const(_Node):
    """A float constant (scalar shape)."""

    type: Literal["const"]
    value: float


class TemporalWindow(_Node):
    """Causal rolling aggregate over each series' current and earlier samples (NaN ignored).

    `window_bins` for mean/sum/std/min/max/median; `alpha` for ewm (adjust=False, NaN skipped);
    `lag_bins` for diff (x_t - x_{t-lag}) and lag (x_{t-lag}). std is the sample std (ddof 1).
    """

    type: Literal["temporal_window"]
    source: str
    agg: Literal["mean", "sum", "std", "min", "max", "median", "ewm", "diff", "lag"]
    window_bins: Annotated[int, Field(ge=1)] | None = None
    alpha: Annotated[float, Field(gt=0, lt=1)] | None = None
    min_periods: int = Field(1, ge=1)
    lag_bins: int = 1
    center: bool = False  # present so a centred window is refused by validate, never computed


class SpatialNeighborhood(_Node):
    """Per bin over the k axis: k-r..k+r clipped at the grid edge (NaN ignored), or `all` k (-> bin shape).
    `weighted` = Σ weights[o + r] · x[k + o] over in-grid offsets o."""

    type: Literal["spatial_neighborhood"]
    source: str
    radius_ticks: Annotated[int, Field(ge=1)] | Literal["all"]
    agg: Literal["mean", "sum", "max", "min", "std", "weighted"]
    weights: list[float] | None = None


class Expr(_Node):
    """Safe arithmetic over named inputs (see `EXPR_FUNCTIONS`); int8 results are NaN -> 0, truncated."""

    type: Literal["expr"]
    inputs: dict[str, str] = Field(default_factory=dict)
    expr: str = Field(min_length=1, max_length=4000)
    dtype: Literal["float64", "int8"] = "float64"


class Norm(_Node):
    """Causal per-series normalisation. robust_zscore: (x - median) / (1.4826 MAD) over the last
    `window_bins` (rolling.robust_z); zscore: (x - mean) / std; both 0 while fewer than `min_periods`
    defined values or scale <= eps. rank: share of the window's defined values <= x (NaN while fewer than
    min_periods). tanh: tanh(x / scale). NaN where the input is NaN."""

    type: Literal["norm"]
    source: str
    method: Literal["robust_zscore", "zscore", "rank", "tanh"]
    window_bins: Annotated[int, Field(ge=1)] | None = None
    min_periods: int = Field(1, ge=1)
    scale: Annotated[float, Field(gt=0)] | None = None
    eps: float = Field(1e-12, gt=0)
    center: bool = False


class Output(_Node):
    """A stored gold column: NaN -> `fill_nan` (kept when unset); rows of invalid bins -> fill_nan or 0."""

    type: Literal["output"]
    source: str
    name: str
    dtype: Literal["float32", "float64", "int8"] = "float32"
    fill_nan: float | None = None


Node = Annotated[SilverRef | Const | TemporalWindow | SpatialNeighborhood | Expr | Norm | Output,
                 Field(discriminator="type")]
_NODE_ADAPTER: TypeAdapter[Any] = TypeAdapter(Node)


class GoldDslSpec(BaseModel):
    """A versioned DAG of gold feature nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    name: str = Field(min_length=1)
    description: str = ""
    nodes: dict[str, Node]

    @property
    def spec_hash(self) -> str:
        """First 16 hex of sha256 over compact sorted JSON of version + nodes (defaults included)."""
        body = {"version": self.version,
                "nodes": {k: v.model_dump(mode="json") for k, v in self.nodes.items()}}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def outputs(self) -> list[str]:
        return [n for n, node in self.nodes.items() if isinstance(node, Output)]


# ---- errors ----------------------------------------------------------------------------------------

ErrorKind = Literal["parse", "name", "dangling_ref", "cycle", "unknown_field", "missing_param", "bad_param",
                    "lookahead", "type", "shape", "output", "expr_syntax", "expr_name"]


class DslError(BaseModel):
    """One validation problem; `message` starts with the node it concerns."""

    node: str | None
    kind: ErrorKind
    message: str

    def __str__(self) -> str:
        return self.message


def _err(node: str | None, kind: ErrorKind, text: str) -> DslError:
    where = f"node '{node}'" if node is not None else "spec"
    return DslError(node=node, kind=kind, message=f"{where}: {text}")


class DslValidationError(ValueError):
    """A spec failed validation; `errors` holds every problem."""

    def __init__(self, errors: list[DslError], source: str | None = None):
        self.errors = errors
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(e.message for e in errors))


class DslMappingError(ValueError):
    """`config_from_spec` refused: the spec is not the built-in set (the message names the node)."""


# ---- parsing and validation ------------------------------------------------------------------------


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(x) for x in loc)


def parse_spec(data: Any) -> tuple[GoldDslSpec | None, list[DslError]]:
    """Parse a raw mapping node by node, so every structural error names its node and field."""
    if not isinstance(data, Mapping):
        return None, [_err(None, "parse", f"expected a mapping, got {type(data).__name__}")]
    errors: list[DslError] = []
    head = {k: v for k, v in data.items() if k != "nodes"}
    try:
        GoldDslSpec.model_validate({**head, "nodes": {}})
    except ValidationError as exc:
        errors += [_err(None, "parse", f"field '{_loc(e['loc'])}': {e['msg']}") for e in exc.errors()]
    raw_nodes = data.get("nodes")
    if not isinstance(raw_nodes, Mapping):
        return None, [*errors, _err(None, "parse", "field 'nodes': expected a mapping of node name -> node")]
    for name, raw in raw_nodes.items():
        if isinstance(raw, Mapping) and raw.get("type") in ("temporal_window", "norm"):
            ahead = [k for k in _LOOKAHEAD_KEYS if k in raw]
            if ahead:
                errors.append(_err(str(name), "lookahead", f"field '{ahead[0]}': a forward offset reads future "
                                                           "bins; windows are causal (current and earlier bins)"))
                continue
        try:
            _NODE_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            for e in exc.errors():
                loc = e["loc"][1:] if len(e["loc"]) > 1 else e["loc"]
                field = f"field '{_loc(loc)}': " if loc else ""
                errors.append(_err(str(name), "parse", f"{field}{e['msg']}"))
    if errors:
        return None, errors
    return GoldDslSpec.model_validate(data), []


def _refs(node: _Node) -> list[str]:
    if isinstance(node, Expr):
        return list(node.inputs.values())
    src = getattr(node, "source", None)
    return [src] if src is not None else []


def _topo(nodes: Mapping[str, _Node]) -> tuple[list[str], list[str]]:
    """Kahn's algorithm over existing references: (topological order, nodes left with in-degree > 0)."""
    indeg = {n: 0 for n in nodes}
    users: dict[str, list[str]] = {n: [] for n in nodes}
    for n, node in nodes.items():
        for r in set(_refs(node)):
            if r in nodes:
                indeg[n] += 1
                users[r].append(n)
    ready = deque(n for n in nodes if indeg[n] == 0)
    order: list[str] = []
    while ready:
        n = ready.popleft()
        order.append(n)
        for u in users[n]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    return order, [n for n in nodes if indeg[n] > 0]


def _not_default(node: _Node, field: str) -> bool:
    return getattr(node, field) != type(node).model_fields[field].default


def _params(name: str, node: _Node) -> list[DslError]:
    """Per-node parameter checks: missing, inapplicable, look-ahead."""
    out: list[DslError] = []

    def unused(fields: tuple[str, ...], what: str) -> None:
        for f in fields:
            if _not_default(node, f):
                out.append(_err(name, "bad_param", f"{f} does not apply to {what}"))

    if isinstance(node, TemporalWindow | Norm) and node.center:
        out.append(_err(name, "lookahead", "center: true reads future bins; windows are causal"))
    if isinstance(node, TemporalWindow):
        what = f"agg '{node.agg}'"
        lag = ("lag_bins",) if node.lag_bins >= 0 else ()
        if node.lag_bins < 0:
            out.append(_err(name, "lookahead", f"lag_bins {node.lag_bins} < 0 reads future bins"))
        if node.agg in ("diff", "lag"):
            if node.lag_bins == 0:
                out.append(_err(name, "bad_param", "lag_bins must be >= 1"))
            unused(("window_bins", "alpha", "min_periods"), what)
        elif node.agg == "ewm":
            if node.alpha is None:
                out.append(_err(name, "missing_param", "agg 'ewm' requires alpha in (0, 1)"))
            unused(("window_bins", *lag), what)
        else:
            if node.window_bins is None:
                out.append(_err(name, "missing_param", f"{what} requires window_bins >= 1"))
            elif node.min_periods > node.window_bins:
                out.append(_err(name, "bad_param", "min_periods must be <= window_bins"))
            unused(("alpha", *lag), what)
    elif isinstance(node, SpatialNeighborhood):
        if node.agg == "weighted":
            if node.radius_ticks == "all":
                out.append(_err(name, "bad_param", "agg 'weighted' needs an integer radius_ticks"))
            elif node.weights is None or len(node.weights) != 2 * node.radius_ticks + 1:
                got = "none" if node.weights is None else str(len(node.weights))
                out.append(_err(name, "missing_param", f"agg 'weighted' requires weights of length "
                                                       f"2*radius_ticks+1 = {2 * node.radius_ticks + 1} (got {got})"))
        elif node.weights is not None:
            out.append(_err(name, "bad_param", f"weights do not apply to agg '{node.agg}'"))
    elif isinstance(node, Norm):
        what = f"method '{node.method}'"
        if node.method == "tanh":
            if node.scale is None:
                out.append(_err(name, "missing_param", "method 'tanh' requires scale > 0"))
            unused(("window_bins", "min_periods", "eps"), what)
        else:
            if node.window_bins is None:
                out.append(_err(name, "missing_param", f"{what} requires window_bins >= 1"))
            elif node.min_periods > node.window_bins:
                out.append(_err(name, "bad_param", "min_periods must be <= window_bins"))
            unused(("scale",) if node.method != "rank" else ("scale", "eps"), what)
    elif isinstance(node, SilverRef):
        if node.field not in SILVER_FIELDS:
            out.append(_err(name, "unknown_field", f"silver field '{node.field}' is not in the SILVER allow-list"))
    elif isinstance(node, Output):
        if not _SNAKE.fullmatch(node.name):
            out.append(_err(name, "output", f"output name '{node.name}' is not snake_case"))
        elif node.name in RESERVED_OUTPUTS:
            out.append(_err(name, "output", f"output name '{node.name}' is reserved ({', '.join(RESERVED_OUTPUTS)})"))
        if node.dtype == "int8" and node.fill_nan is not None and (
                node.fill_nan != int(node.fill_nan) or not -128 <= node.fill_nan <= 127):
            out.append(_err(name, "bad_param", "fill_nan of an int8 output must be an integer in [-128, 127]"))
    return out


# ---- expressions -----------------------------------------------------------------------------------

#: name -> (min args, max args or None)
EXPR_FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "abs": (1, 1), "sign": (1, 1), "tanh": (1, 1), "exp": (1, 1), "log1p": (1, 1), "sqrt": (1, 1),
    "nan_to_zero": (1, 1), "min": (2, None), "max": (2, None), "clip": (3, 3), "where": (3, 3),
}
EXPR_CONSTANTS = ("dt_s",)
_BINOPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide}
_CMPOPS = {ast.Lt: np.less, ast.LtE: np.less_equal, ast.Gt: np.greater, ast.GtE: np.greater_equal,
           ast.Eq: np.equal, ast.NotEq: np.not_equal}
_MAX_EXPR_NODES = 2000
_MAX_EXPR_DEPTH = 100


def _finite_number(v: object) -> bool:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def parse_expr(text: str, names: set[str]) -> tuple[ast.Expression | None, list[tuple[ErrorKind, str]]]:
    """Parse and check an expression: only numbers, `names`, dt_s, + - * /, unary -, comparisons and
    EXPR_FUNCTIONS calls. Returns (tree or None, [(kind, problem)])."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return None, [("expr_syntax", f"expression does not parse: {exc}")]
    problems: list[tuple[ErrorKind, str]] = []
    count = 0
    called = {id(c.func) for c in ast.walk(tree) if isinstance(c, ast.Call)}
    for node in ast.walk(tree):
        count += 1
        if isinstance(node, ast.Expression | ast.operator | ast.cmpop | ast.unaryop | ast.expr_context):
            continue
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                problems.append(("expr_syntax", f"operator {type(node.op).__name__} is not allowed"))
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, ast.USub | ast.UAdd):
                problems.append(("expr_syntax", f"operator {type(node.op).__name__} is not allowed"))
        elif isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _CMPOPS:
                    problems.append(("expr_syntax", f"comparison {type(op).__name__} is not allowed"))
        elif isinstance(node, ast.Constant):
            if not _finite_number(node.value):
                problems.append(("expr_syntax", f"literal {node.value!r:.40} is not a finite number"))
        elif isinstance(node, ast.Name):
            if id(node) in called:
                continue
            if node.id in EXPR_FUNCTIONS and node.id not in names:
                problems.append(("expr_name", f"'{node.id}' is a function, not a value"))
            elif node.id not in names and node.id not in EXPR_CONSTANTS:
                problems.append(("expr_name", f"unknown name '{node.id}' (not an input or dt_s)"))
        elif isinstance(node, ast.Call):
            fn = node.func.id if isinstance(node.func, ast.Name) else None
            if fn not in EXPR_FUNCTIONS:
                label = fn if fn is not None else ast.unparse(node.func)
                problems.append(("expr_name", f"unknown function '{label}'"))
            elif node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
                problems.append(("expr_syntax", f"{fn}(): keyword or starred arguments are not allowed"))
            else:
                lo, hi = EXPR_FUNCTIONS[fn]
                if len(node.args) < lo or (hi is not None and len(node.args) > hi):
                    want = str(lo) if lo == hi else f"{lo}..{hi}" if hi else f">= {lo}"
                    problems.append(("expr_syntax", f"{fn}() takes {want} arguments, got {len(node.args)}"))
        else:
            problems.append(("expr_syntax", f"{type(node).__name__} is not allowed in an expression"))
    if count > _MAX_EXPR_NODES:
        problems.append(("expr_syntax", f"expression too large ({count} > {_MAX_EXPR_NODES} syntax nodes)"))
    depth, stack = 0, [(tree, 1)]
    while stack:
        node, d = stack.pop()
        depth = max(depth, d)
        stack.extend((c, d + 1) for c in ast.iter_child_nodes(node))
    if depth > _MAX_EXPR_DEPTH:
        problems.append(("expr_syntax", f"expression nested too deeply ({depth} > {_MAX_EXPR_DEPTH} levels)"))
    return (tree if not problems else None), problems


def _truthy(c: Any) -> Any:
    return np.not_equal(c, 0) & ~np.isnan(c)


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:
    """Evaluate a checked expression tree with numpy, strictly left to right."""
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant):
        return np.float64(node.value)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        x = _eval(node.operand, env)
        return np.negative(x) if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.BinOp):
        left = _eval(node.left, env)
        return _BINOPS[type(node.op)](left, _eval(node.right, env))
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        acc = None
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, env)
            c = _CMPOPS[type(op)](left, right)
            acc = c if acc is None else acc & c
            left = right
        return np.asarray(acc, np.float64)
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    args = [_eval(a, env) for a in node.args]
    fn = node.func.id
    if fn in ("min", "max"):
        ufunc = np.minimum if fn == "min" else np.maximum
        acc = args[0]
        for a in args[1:]:
            acc = ufunc(acc, a)
        return acc
    if fn == "clip":
        return np.minimum(np.maximum(args[0], args[1]), args[2])
    if fn == "where":
        return np.where(_truthy(args[0]), args[1], args[2])
    if fn == "nan_to_zero":
        return np.where(np.isnan(args[0]), 0.0, args[0])
    return {"abs": np.abs, "sign": np.sign, "tanh": np.tanh, "exp": np.exp, "log1p": np.log1p,
            "sqrt": np.sqrt}[fn](args[0])


# ---- validation: graph, types, shapes --------------------------------------------------------------

_SHAPE_RANK = {"scalar": 0, "bin": 1, "cell": 2}


def _infer(name: str, node: _Node, info: Mapping[str, tuple[str, str]],
           nodes: Mapping[str, _Node]) -> tuple[tuple[str, str] | None, list[DslError]]:
    """(dtype, shape) of a node from its inputs' (dtype, shape), with the type/shape errors."""
    if isinstance(node, SilverRef):
        dt = SILVER_FIELDS.get(node.field)
        return (("int" if dt is not None and dt.kind in "iu" else "float"), "cell"), []
    if isinstance(node, Const):
        return ("float", "scalar"), []
    if isinstance(node, Expr):
        shape = max((info[r][1] for r in node.inputs.values()), key=_SHAPE_RANK.__getitem__, default="scalar")
        return ("int" if node.dtype == "int8" else "float", shape), []
    src = node.source  # type: ignore[attr-defined]
    sdt, sshape = info[src]
    kind = type(node).__name__
    if isinstance(node, TemporalWindow | Norm):
        if sshape == "scalar":
            return None, [_err(name, "shape", f"{kind} over '{src}', a constant (scalar shape): needs a bin or "
                                              "cell series")]
        return ("float", sshape), []
    if isinstance(node, SpatialNeighborhood):
        if sshape != "cell":
            return None, [_err(name, "shape", f"spatial_neighborhood over '{src}' of shape '{sshape}': needs a "
                                              "per-(bin, k) 'cell' source")]
        return ("float", "bin" if node.radius_ticks == "all" else "cell"), []
    assert isinstance(node, Output)
    errs = []
    if sshape == "scalar":
        errs.append(_err(name, "shape", f"output of '{src}', a constant (scalar shape)"))
    if node.dtype == "int8" and sdt != "int":
        errs.append(_err(name, "type", f"int8 output from float source '{src}' (make the source an int8 expr)"))
    if isinstance(nodes.get(src), Output):
        return None, errs
    return (sdt, sshape), errs


def validate(spec: GoldDslSpec | Mapping[str, Any]) -> list[DslError]:
    """Every problem of a spec (or of a raw mapping, parsed node by node); empty when valid."""
    if not isinstance(spec, GoldDslSpec):
        parsed, errors = parse_spec(spec)
        if parsed is None:
            return errors
        spec = parsed
    nodes = spec.nodes
    errors = []
    for name, node in nodes.items():
        if not _IDENT.fullmatch(name):
            errors.append(_err(name, "name", "node names must be identifiers ([A-Za-z_][A-Za-z0-9_]*)"))
        errors += _params(name, node)
    dangling = False
    for name, node in nodes.items():
        for r in _refs(node):
            if r not in nodes:
                dangling = True
                errors.append(_err(name, "dangling_ref", f"references unknown node '{r}'"))
            elif isinstance(nodes[r], Output):
                errors.append(_err(name, "output", f"consumes output node '{r}'; outputs cannot feed other nodes"))
    order, left = _topo(nodes)
    for n in left:
        errors.append(_err(n, "cycle", f"is on or downstream of a cycle (nodes left by Kahn's algorithm: "
                                       f"{', '.join(left)})"))
    outs = spec.outputs
    if not outs:
        errors.append(_err(None, "output", "at least one output node is required"))
    seen: dict[str, str] = {}
    for n in outs:
        col = nodes[n].name  # type: ignore[union-attr]
        if col in seen:
            errors.append(_err(n, "output", f"output name '{col}' is also produced by node '{seen[col]}'"))
        seen.setdefault(col, n)
    for name, node in nodes.items():
        if not isinstance(node, Expr):
            continue
        for local in node.inputs:
            if not _IDENT.fullmatch(local) or local in EXPR_FUNCTIONS or local in EXPR_CONSTANTS:
                errors.append(_err(name, "expr_name", f"input name '{local}' is not an identifier or shadows a "
                                                      "function / dt_s"))
        for kind, text in parse_expr(node.expr, set(node.inputs))[1]:
            errors.append(_err(name, kind, text))
    if not dangling:
        info: dict[str, tuple[str, str]] = {}
        for n in order:
            node = nodes[n]
            if any(r not in info for r in _refs(node)):
                continue
            res, errs = _infer(n, node, info, nodes)
            errors += errs
            if res is not None:
                info[n] = res
    return errors


def validate_or_raise(spec: GoldDslSpec | Mapping[str, Any], source: str | None = None) -> GoldDslSpec:
    """The parsed spec, or DslValidationError listing every problem."""
    errors = validate(spec)
    if errors:
        raise DslValidationError(errors, source)
    return spec if isinstance(spec, GoldDslSpec) else GoldDslSpec.model_validate(spec)


# ---- numba kernels (one segment = one series, contiguous and in time order) ------------------------

_MEAN, _SUM, _STD, _MIN, _MAX = 0, 1, 2, 3, 4
_AGG_CODES = {"mean": _MEAN, "sum": _SUM, "std": _STD, "min": _MIN, "max": _MAX}


@njit(cache=True)
def _agg(x, lo, hi, agg, minp):
    """Aggregate of the defined values of x[lo..hi] (inclusive), summed oldest first; NaN if fewer than
    minp defined values (std: also fewer than 2)."""
    c = 0
    s = 0.0
    if agg >= _MIN:  # min or max
        best = np.nan
        for i in range(lo, hi + 1):
            v = x[i]
            if not math.isnan(v):
                if c == 0 or (v < best if agg == _MIN else v > best):
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
    if agg == _SUM:
        return s
    m = s / c
    if agg == _MEAN:
        return m
    if c < 2:
        return np.nan
    ss = 0.0
    for i in range(lo, hi + 1):
        v = x[i]
        if not math.isnan(v):
            ss += (v - m) * (v - m)
    return math.sqrt(ss / (c - 1))


@njit(cache=True, parallel=True)
def _k_window(x, starts, w, minp, agg):
    y = np.empty(x.shape[0])
    for g in prange(starts.shape[0] - 1):
        a = starts[g]
        for t in range(a, starts[g + 1]):
            y[t] = _agg(x, max(a, t - w + 1), t, agg, minp)
    return y


@njit(cache=True)
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


@njit(cache=True, parallel=True)
def _k_sorted(x, starts, w, minp, eps, method):
    """Sorted-window methods: 0 median, 1 robust z-score (rolling.robust_z), 2 rank."""
    y = np.empty(x.shape[0])
    for g in prange(starts.shape[0] - 1):
        fifo = np.zeros(w)
        srt = np.zeros(w)
        head = 0
        length = 0
        ns = 0
        for t in range(starts[g], starts[g + 1]):
            v = x[t]
            head, length, ns = rolling.window_push(fifo, srt, head, length, ns, v)
            if method == 1:
                y[t] = rolling.robust_z(v, srt, ns, minp, eps)
            elif ns < minp or ns == 0:
                y[t] = np.nan
            elif method == 0:
                y[t] = rolling.sorted_median(srt, ns)
            else:
                y[t] = np.nan if math.isnan(v) else _upper_bound(srt, ns, v) / ns
    return y


@njit(cache=True)
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


@njit(cache=True, parallel=True)
def _k_moments(x, starts, w, minp, eps, zscore):
    """Rolling sample std (zscore false) or z-score (x - mean) / std (zscore true) over the last w samples.
    Welford add/remove updates, recomputed exactly every w steps so rounding drift stays bounded: O(1)
    per sample for any window. std: NaN below max(minp, 2) defined values; z: 0 there or when std <= eps."""
    y = np.empty(x.shape[0])
    for g in prange(starts.shape[0] - 1):
        a = starts[g]
        n = 0
        m = 0.0
        m2 = 0.0
        for t in range(a, starts[g + 1]):
            v = x[t]
            if (t - a) % w == 0:
                n, m, m2 = _moments(x, max(a, t - w + 1), t)
            else:
                if t - w >= a and not math.isnan(x[t - w]):
                    old = x[t - w]
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
            sd = math.sqrt(max(m2, 0.0) / (n - 1)) if n >= 2 and n >= minp else np.nan
            if not zscore:
                y[t] = sd
            elif math.isnan(v):
                y[t] = np.nan
            else:
                y[t] = (v - m) / sd if sd > eps else 0.0  # NaN sd (warm-up) compares false -> 0
    return y


@njit(cache=True, parallel=True)
def _k_ewm(x, starts, alpha, minp):
    y = np.empty(x.shape[0])
    for g in prange(starts.shape[0] - 1):
        m = np.nan
        c = 0
        for t in range(starts[g], starts[g + 1]):
            v = x[t]
            if not math.isnan(v):
                m = v if c == 0 else alpha * v + (1.0 - alpha) * m
                c += 1
            y[t] = m if c >= minp else np.nan
    return y


@njit(cache=True, parallel=True)
def _k_shift(x, starts, lag, diff):
    y = np.empty(x.shape[0])
    for g in prange(starts.shape[0] - 1):
        a = starts[g]
        for t in range(a, starts[g + 1]):
            if t - lag < a:
                y[t] = np.nan
            else:
                y[t] = x[t] - x[t - lag] if diff else x[t - lag]
    return y


@njit(cache=True)
def _k_tanh(x, scale):
    y = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        y[i] = math.tanh(x[i] / scale)
    return y


@njit(cache=True, parallel=True)
def _k_spatial(x2, r, agg, weights):
    """Per bin and k over k-r..k+r clipped to the grid; r < 0: one value per bin over all k."""
    nb, w = x2.shape
    y = np.empty((nb, 1 if r < 0 else w))
    for b in prange(nb):
        row = x2[b]
        if r < 0:
            y[b, 0] = _agg(row, 0, w - 1, agg, 1)
            continue
        for j in range(w):
            lo = max(0, j - r)
            hi = min(w - 1, j + r)
            if agg < 0:  # weighted, NaN propagates
                s = 0.0
                for i in range(lo, hi + 1):
                    s += weights[i - j + r] * row[i]
                y[b, j] = s
            else:
                y[b, j] = _agg(row, lo, hi, agg, 1)
    return y


# ---- execution -------------------------------------------------------------------------------------


@njit(cache=True)
def _series_order(sid):
    """Rows grouped by series id (ids >= 0), in row order within a series (a stable counting sort), and
    the segment starts (n_series + 1)."""
    n_ids = 0
    for s in sid:
        n_ids = max(n_ids, s + 1)
    starts = np.zeros(n_ids + 1, np.int64)
    for s in sid:
        if s >= 0:
            starts[s + 1] += 1
    for g in range(n_ids):
        starts[g + 1] += starts[g]
    pos = starts[:-1].copy()
    order = np.empty(starts[n_ids], np.int64)
    for i in range(sid.shape[0]):
        s = sid[i]
        if s >= 0:
            order[pos[s]] = i
            pos[s] += 1
    return order, starts


class _Frame:
    """Row layout and series of one silver partition."""

    def __init__(self, bins: Mapping[str, np.ndarray], grid: Mapping[str, np.ndarray], radius: int, tick_int: int):
        w = 2 * radius + 1
        n_bins = len(bins["bin_seq"])
        if len(grid["k"]) != n_bins * w:
            raise ValueError(f"grid: expected {n_bins} bins x {w} rows (radius {radius}), got {len(grid['k'])}")
        k = np.asarray(grid["k"])
        if n_bins and not (k.reshape(n_bins, w) == np.arange(-radius, radius + 1)).all():
            raise ValueError("grid: rows must be ordered (bin_seq, k) with k = -R..R for every bin")
        self.radius, self.width, self.n_bins, self.n_rows = radius, w, n_bins, n_bins * w
        self.seqs = np.asarray(bins["bin_seq"], np.int64)
        spot = np.asarray(bins["spot_ref_price_int"], np.int64)
        self.valid = np.asarray(bins["book_valid"], np.bool_) & (spot > 0)
        self.k = k
        sid = gold.series_ids(self.seqs, self.valid, spot // tick_int, radius)
        self.order, self.starts = _series_order(sid)  # = compute_gold's stable argsort, in O(rows)
        self._bin_of_sorted: np.ndarray | None = None
        self.valid_bins = np.flatnonzero(self.valid).astype(np.int64)
        vb = self.valid_bins
        brk = np.ones(len(vb), np.bool_)
        brk[1:] = (np.diff(vb) != 1) | (np.diff(self.seqs[vb]) != 1)
        self.bin_starts = np.append(np.flatnonzero(brk), len(vb)).astype(np.int64)

    @property
    def bin_of_sorted(self) -> np.ndarray:
        if self._bin_of_sorted is None:
            self._bin_of_sorted = self.order // self.width
        return self._bin_of_sorted


class _Val:
    """A node's value: a scalar, a per-bin array, or a per-row array held in grid order (`nat`) and/or in
    series order over valid rows (`srt`), converted lazily."""

    def __init__(self, shape: str, *, scalar: float | None = None, nat: np.ndarray | None = None,
                 srt: np.ndarray | None = None):
        self.shape, self.scalar, self.nat, self.srt = shape, scalar, nat, srt

    def natural(self, f: _Frame) -> np.ndarray:
        if self.nat is None:
            assert self.srt is not None
            out = np.full(f.n_rows, np.nan)
            out[f.order] = self.srt
            self.nat = out
        return self.nat

    def sorted(self, f: _Frame) -> np.ndarray:
        if self.srt is None:
            self.srt = np.ascontiguousarray(self.natural(f)[f.order])
        return self.srt


def _series_apply(f: _Frame, v: _Val, fn: Any) -> _Val:
    """Run a per-series kernel fn(x, starts) over a bin- or cell-shaped value."""
    if v.shape == "cell":
        return _Val("cell", srt=fn(v.sorted(f), f.starts))
    x = np.ascontiguousarray(v.nat[f.valid_bins])
    out = np.full(f.n_bins, np.nan)
    out[f.valid_bins] = fn(x, f.bin_starts)
    return _Val("bin", nat=out)


def _run_temporal(node: TemporalWindow, f: _Frame, v: _Val) -> _Val:
    if node.agg in ("diff", "lag"):
        return _series_apply(f, v, lambda x, s: _k_shift(x, s, node.lag_bins, node.agg == "diff"))
    if node.agg == "ewm":
        return _series_apply(f, v, lambda x, s: _k_ewm(x, s, node.alpha, node.min_periods))
    w = node.window_bins
    if node.agg == "median":
        return _series_apply(f, v, lambda x, s: _k_sorted(x, s, w, node.min_periods, 0.0, 0))
    if node.agg == "std":
        return _series_apply(f, v, lambda x, s: _k_moments(x, s, w, node.min_periods, 0.0, False))
    return _series_apply(f, v, lambda x, s: _k_window(x, s, w, node.min_periods, _AGG_CODES[node.agg]))


def _run_norm(node: Norm, f: _Frame, v: _Val) -> _Val:
    if node.method == "tanh":
        if v.shape == "cell" and v.srt is not None:
            return _Val("cell", srt=_k_tanh(v.srt, node.scale))
        return _Val(v.shape, nat=_k_tanh(np.ascontiguousarray(v.natural(f) if v.shape == "cell" else v.nat),
                                         node.scale))
    w, mp, eps = node.window_bins, node.min_periods, node.eps
    if node.method == "zscore":
        return _series_apply(f, v, lambda x, s: _k_moments(x, s, w, mp, eps, True))
    method = 1 if node.method == "robust_zscore" else 2
    return _series_apply(f, v, lambda x, s: _k_sorted(x, s, w, mp, eps, method))


def _run_spatial(node: SpatialNeighborhood, f: _Frame, v: _Val) -> _Val:
    x2 = np.ascontiguousarray(v.natural(f)).reshape(f.n_bins, f.width)
    r = -1 if node.radius_ticks == "all" else int(node.radius_ticks)
    agg = -1 if node.agg == "weighted" else _AGG_CODES[node.agg]
    weights = np.asarray(node.weights if node.weights is not None else [0.0], np.float64)
    y = _k_spatial(x2, r, agg, weights)
    return _Val("bin", nat=y[:, 0].copy()) if r < 0 else _Val("cell", nat=y.reshape(-1))


_CHUNK_ROWS = 1 << 15  # expressions run in cache-sized chunks (elementwise, so chunking changes no result)


def _run_expr(node: Expr, f: _Frame, vals: Mapping[str, _Val], dt_s: float) -> _Val:
    tree, problems = parse_expr(node.expr, set(node.inputs))
    assert tree is not None, problems
    ins = {local: vals[ref] for local, ref in node.inputs.items()}
    shapes = {v.shape for v in ins.values()}
    shape = "cell" if "cell" in shapes else "bin" if "bin" in shapes else "scalar"
    cells = [v for v in ins.values() if v.shape == "cell"]
    domain = "sorted" if cells and all(v.srt is not None for v in cells) else "natural"
    env: dict[str, Any] = {"dt_s": np.float64(dt_s)}
    env.update({local: np.float64(v.scalar) for local, v in ins.items() if v.shape == "scalar"})
    arrays = {local: v for local, v in ins.items() if v.shape != "scalar"}

    def run(chunk_env: dict[str, Any]) -> Any:
        with np.errstate(all="ignore"):
            res = np.asarray(_eval(tree, {**env, **chunk_env}), np.float64)
            if node.dtype == "int8":
                res = np.trunc(np.clip(np.where(np.isnan(res), 0.0, res), -128, 127))
        return res

    if shape == "scalar":
        return _Val("scalar", scalar=float(run({})))
    if shape == "bin":
        out = np.empty(f.n_bins)
        for lo in range(0, f.n_bins, _CHUNK_ROWS):
            out[lo:lo + _CHUNK_ROWS] = run({k: v.nat[lo:lo + _CHUNK_ROWS] for k, v in arrays.items()})
        return _Val("bin", nat=out)
    if domain == "sorted":
        n = len(f.order)
        out = np.empty(n)
        for lo in range(0, n, _CHUNK_ROWS):
            hi = lo + _CHUNK_ROWS
            out[lo:hi] = run({k: v.srt[lo:hi] if v.shape == "cell" else v.nat[f.bin_of_sorted[lo:hi]]
                              for k, v in arrays.items()})
        return _Val("cell", srt=out)
    out = np.empty((f.n_bins, f.width))
    nat = {k: v.natural(f).reshape(f.n_bins, f.width) if v.shape == "cell" else v.nat[:, None]
           for k, v in arrays.items()}
    step = max(1, _CHUNK_ROWS // f.width)
    for lo in range(0, f.n_bins, step):
        out[lo:lo + step] = run({k: x[lo:lo + step] for k, x in nat.items()})
    return _Val("cell", nat=out.reshape(-1))


_OUT_DTYPES = {"float32": np.float32, "float64": np.float64, "int8": np.int8}


@njit(cache=True, parallel=True)
def _k_output(x, per_bin, order, valid, width, fill, has_fill, out):
    """Cast into `out` (grid order): x is per bin (per_bin), per row in series order over valid rows
    (`order` given) or per row in grid order. NaN -> fill when has_fill; rows of invalid bins -> fill.
    Returns the NaN count on valid rows."""
    n_nan = 0
    n_bins = valid.shape[0]
    if order.shape[0] > 0 or x.shape[0] == 0:
        for t in prange(order.shape[0]):
            v = x[t]
            if math.isnan(v):
                n_nan += 1
                if has_fill:
                    v = fill
            out[order[t]] = v
        for b in prange(n_bins):
            if not valid[b]:
                for j in range(width):
                    out[b * width + j] = fill
        return n_nan
    for b in prange(n_bins):
        for j in range(width):
            i = b * width + j
            if not valid[b]:
                out[i] = fill
                continue
            v = x[b] if per_bin else x[i]
            if math.isnan(v):
                n_nan += 1
                if has_fill:
                    v = fill
            out[i] = v
    return n_nan


def _run_output(node: Output, f: _Frame, v: _Val) -> tuple[np.ndarray, int]:
    """Stored column and the number of NaN values on valid rows before the fill."""
    out = np.empty(f.n_rows, _OUT_DTYPES[node.dtype])
    fill = 0.0 if node.fill_nan is None else float(node.fill_nan)
    none = np.empty(0, np.int64)
    if v.shape == "bin":
        args = (np.ascontiguousarray(v.nat), True, none)
    elif v.nat is None:
        args = (v.srt, False, f.order)
    else:
        args = (np.ascontiguousarray(v.nat), False, none)
    n_nan = _k_output(*args, f.valid, f.width, fill, node.fill_nan is not None, out)
    return out, int(n_nan)


def _execute(spec: GoldDslSpec, bins: Mapping[str, np.ndarray], grid: Mapping[str, np.ndarray], radius: int,
             tick_int: int, cell_width_ms: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    spec = validate_or_raise(spec)
    f = _Frame(bins, grid, radius, tick_int)
    order, _ = _topo(spec.nodes)
    uses = {n: 0 for n in spec.nodes}
    for node in spec.nodes.values():
        for r in _refs(node):
            uses[r] += 1
    vals: dict[str, _Val] = {}
    cols: dict[str, np.ndarray] = {}
    nans: dict[str, int] = {}
    dt_s = cell_width_ms / 1000.0
    for n in order:
        node = spec.nodes[n]
        if isinstance(node, SilverRef):
            vals[n] = _Val("cell", nat=np.asarray(grid[node.field], np.float64))
        elif isinstance(node, Const):
            vals[n] = _Val("scalar", scalar=node.value)
        elif isinstance(node, Expr):
            vals[n] = _run_expr(node, f, vals, dt_s)
        elif isinstance(node, TemporalWindow):
            vals[n] = _run_temporal(node, f, vals[node.source])
        elif isinstance(node, Norm):
            vals[n] = _run_norm(node, f, vals[node.source])
        elif isinstance(node, SpatialNeighborhood):
            vals[n] = _run_spatial(node, f, vals[node.source])
        else:
            assert isinstance(node, Output)
            cols[node.name], nans[node.name] = _run_output(node, f, vals[node.source])
        for r in _refs(node):
            uses[r] -= 1
            if uses[r] == 0:
                vals.pop(r, None)
    out = {"bin_seq": np.repeat(f.seqs, f.width), "k": np.asarray(f.k, np.int32)}
    out.update({spec.nodes[n].name: cols[spec.nodes[n].name] for n in spec.outputs})  # type: ignore[union-attr]
    out["gold_valid"] = np.repeat(f.valid, f.width)
    return out, nans


def execute(spec: GoldDslSpec, bins: Mapping[str, np.ndarray], grid: Mapping[str, np.ndarray], radius: int,
            tick_int: int, cell_width_ms: int) -> dict[str, np.ndarray]:
    """Run a valid spec over a silver partition (numpy column dicts, as `gold.compute_gold`): bin_seq, k,
    one column per output (spec order), gold_valid."""
    return _execute(spec, bins, grid, radius, tick_int, cell_width_ms)[0]


# ---- the built-in set as a graph, and back ---------------------------------------------------------

_D = (1, 2, 3)
STATE5_EXPR = ("where(k == 0, 0, where(k > 0, where(d > 0, 2, where(d < 0, -1, 0)), "
               "where(d > 0, 1, where(d < 0, -2, 0))))")


def builtin_spec(config: GoldFeatureConfig) -> GoldDslSpec:
    """The whole built-in gold set (gold.compute_gold) as a DSL graph; every config value is a node field."""
    n: dict[str, _Node] = {}
    for field in (*gold.GOLD_INPUTS, "k", "ask_reprice_sign", "bid_reprice_sign"):
        n[field] = SilverRef(type="silver_ref", field=field)
    for i in range(1, 8):
        n[f"c{i}"] = Const(type="const", value=getattr(config, f"c{i}"))
    n["composite_eps"] = Const(type="const", value=config.composite_eps)
    ins = {f"c{i}": f"c{i}" for i in range(1, 4)} | {f: f for f in ("v_add", "v_rest_depth", "a_add")}
    n["pressure_variant"] = Expr(type="expr", inputs=ins,
                                 expr="c1 * v_add + c2 * max(v_rest_depth, 0) + c3 * max(a_add, 0)")
    ins = {f"c{i}": f"c{i}" for i in range(4, 8)} | {f: f for f in ("v_pull", "v_fill", "v_rest_depth", "a_pull")}
    n["vacuum_variant"] = Expr(type="expr", inputs=ins,
                               expr="c4 * v_pull + c5 * v_fill + c6 * max(-v_rest_depth, 0) + c7 * max(a_pull, 0)")
    n["composite_raw"] = Expr(type="expr", inputs={"p": "pressure_variant", "v": "vacuum_variant",
                                                   "eps": "composite_eps"},
                              expr="(p - v) / (abs(p) + abs(v) + eps)")
    ins = {}
    for i, (w, rho) in enumerate(zip(config.flow_windows, config.flow_rollup_weights, strict=True)):
        n[f"rollup_weight_{i}"] = Const(type="const", value=rho)
        n[f"composite_mean_{i}_w{w}"] = TemporalWindow(type="temporal_window", source="composite_raw", agg="mean",
                                                       window_bins=w)
        ins[f"w{i}"] = f"rollup_weight_{i}"
        ins[f"m{i}"] = f"composite_mean_{i}_w{w}"
    n["rollup_weight_sum"] = Const(type="const", value=sum(config.flow_rollup_weights))
    ins["total"] = "rollup_weight_sum"
    n["composite"] = Expr(type="expr", inputs=ins,
                          expr=" + ".join(f"w{i} / total * m{i}" for i in range(len(config.flow_windows))))
    prev = "composite"
    for d in _D:
        n[f"composite_diff_{d}"] = TemporalWindow(type="temporal_window", source=prev, agg="diff", lag_bins=1)
        n[f"composite_d{d}"] = Expr(type="expr", inputs={"x": f"composite_diff_{d}"}, expr="x / dt_s")
        prev = f"composite_d{d}"
    ins = {}
    for d, dw in zip(_D, config.flow_derivative_weights, strict=True):
        n[f"flow_z_d{d}"] = Norm(type="norm", source=f"composite_d{d}", method="robust_zscore",
                                 window_bins=config.flow_zscore_window_bins,
                                 min_periods=config.flow_zscore_min_periods, eps=config.scale_eps)
        n[f"flow_tanh_d{d}"] = Norm(type="norm", source=f"flow_z_d{d}", method="tanh", scale=config.flow_tanh_scale)
        n[f"derivative_weight_{d}"] = Const(type="const", value=dw)
        ins[f"w{d}"] = f"derivative_weight_{d}"
        ins[f"t{d}"] = f"flow_tanh_d{d}"
    n["derivative_weight_sum"] = Const(type="const", value=sum(config.flow_derivative_weights))
    ins["total"] = "derivative_weight_sum"
    n["flow_score"] = Expr(type="expr", inputs=ins, expr="clip(" + " + ".join(
        f"nan_to_zero(w{d} / total * t{d})" for d in _D) + ", -1, 1)")
    n["flow_neutral_threshold"] = Const(type="const", value=config.flow_neutral_threshold)
    n["flow_state"] = Expr(type="expr", inputs={"s": "flow_score", "theta": "flow_neutral_threshold"},
                           expr="(s >= theta) - (s <= -theta)", dtype="int8")
    n["reprice_direction"] = Expr(type="expr", inputs={"a": "ask_reprice_sign", "b": "bid_reprice_sign"},
                                  expr="sign(a + b)", dtype="int8")
    n["state5"] = Expr(type="expr", inputs={"k": "k", "d": "reprice_direction"}, expr=STATE5_EXPR, dtype="int8")
    sources = {"pressure_variant": "pressure_variant", "vacuum_variant": "vacuum_variant",
               "composite_raw": "composite_raw", "composite": "composite", "composite_d1": "composite_d1",
               "composite_d2": "composite_d2", "composite_d3": "composite_d3", "flow_score": "flow_score",
               "state5_code": "state5", "flow_state_code": "flow_state"}
    for col, src in sources.items():
        is_code = col in gold.GOLD_CODE_COLUMNS
        n[f"output_{col}"] = Output(type="output", source=src, name=col, dtype="int8" if is_code else "float64",
                                    fill_nan=0.0 if col.startswith("composite_d") else None)
    return GoldDslSpec(version=1, name="builtin",
                       description=f"The built-in gold set ({gold.GOLD_VERSION}) as a Gold DSL graph.", nodes=n)


def _need(spec: GoldDslSpec, name: str, cls: type[_Node]) -> Any:
    node = spec.nodes.get(name)
    if not isinstance(node, cls):
        what = "missing" if node is None else f"a {node.type} node"  # type: ignore[attr-defined]
        raise DslMappingError(f"node '{name}': expected a {cls.__name__} node of the built-in set, found {what}")
    return node


def config_from_spec(spec: GoldDslSpec, cell_width_ms: int) -> GoldFeatureConfig:
    """The GoldFeatureConfig a built-in spec encodes; DslMappingError naming the first node that differs
    from `builtin_spec(recovered)` when the spec is not exactly the built-in set."""
    comp = _need(spec, "composite", Expr)
    windows, rollup = [], []
    i = 0
    while f"m{i}" in comp.inputs and f"w{i}" in comp.inputs:
        windows.append(_need(spec, comp.inputs[f"m{i}"], TemporalWindow).window_bins)
        rollup.append(_need(spec, comp.inputs[f"w{i}"], Const).value)
        i += 1
    score = _need(spec, "flow_score", Expr)
    deriv = [_need(spec, score.inputs.get(f"w{d}", f"derivative_weight_{d}"), Const).value for d in _D]
    z = _need(spec, "flow_z_d1", Norm)
    fields: dict[str, Any] = {f"c{i}": _need(spec, f"c{i}", Const).value for i in range(1, 8)}
    fields |= dict(
        cell_width_ms=cell_width_ms, flow_windows=tuple(windows), flow_rollup_weights=tuple(rollup),
        flow_derivative_weights=tuple(deriv), flow_tanh_scale=_need(spec, "flow_tanh_d1", Norm).scale,
        flow_neutral_threshold=_need(spec, "flow_neutral_threshold", Const).value,
        flow_zscore_window_bins=z.window_bins, flow_zscore_min_periods=z.min_periods,
        composite_eps=_need(spec, "composite_eps", Const).value, scale_eps=z.eps)
    try:
        config = GoldFeatureConfig(**fields)
    except ValidationError as exc:
        raise DslMappingError(f"spec '{spec.name}': the recovered gold config is invalid: {exc}") from exc
    rebuilt = builtin_spec(config)
    if rebuilt.spec_hash == spec.spec_hash:
        return config
    for name in [*rebuilt.nodes, *(k for k in spec.nodes if k not in rebuilt.nodes)]:
        mine, theirs = spec.nodes.get(name), rebuilt.nodes.get(name)
        if mine != theirs:
            got = "missing" if mine is None else mine.model_dump(mode="json")
            want = "absent" if theirs is None else theirs.model_dump(mode="json")
            raise DslMappingError(f"node '{name}': differs from the built-in set (spec: {got}; built-in: {want})")
    raise DslMappingError(f"spec '{spec.name}': version differs from the built-in set")  # pragma: no cover


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
    ref = gold.compute_gold(sb, sg, config, radius, tick_int)
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


# ---- YAML ------------------------------------------------------------------------------------------


def dump_spec(spec: GoldDslSpec, path: str | os.PathLike[str] | None = None, header: str = "") -> str:
    """YAML text of a spec (node order kept, fields in model order); written to `path` when given."""
    body = yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True),
                          sort_keys=False, default_flow_style=False, width=120)
    text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body
    if path is not None:
        Path(path).write_text(text)
    return text


def load_spec(path: str | os.PathLike[str]) -> GoldDslSpec:
    """Load and validate a YAML spec; errors name the file, the node and the field."""
    p = Path(path)
    if not p.is_file():
        raise DslValidationError([_err(None, "parse", "file not found")], str(p))
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise DslValidationError([_err(None, "parse", f"not valid YAML ({exc})")], str(p)) from exc
    return validate_or_raise(raw, source=str(p))


def write_builtin_yaml(path: str | os.PathLike[str] | None = None) -> Path:
    """(Re)generate configs/gold/builtin.yaml from the locked instrument's gold config."""
    from qmachina_assets.core.instrument import locked_instrument
    from qmachina_assets.core.paths import configs_root

    p = Path(path) if path is not None else configs_root() / "gold" / "builtin.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    spec = builtin_spec(GoldFeatureConfig.from_instrument(locked_instrument()))
    dump_spec(spec, p, header=f"Generated by qmachina_assets.core.gold.dsl.write_builtin_yaml() from "
                              f"configs/instrument.yaml; do not edit.\nspec_hash {spec.spec_hash}")
    return p


if __name__ == "__main__":  # pragma: no cover
    print(write_builtin_yaml())
