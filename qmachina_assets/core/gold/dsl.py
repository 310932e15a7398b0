"""Gold DSL v1 (SPEC §8.4, rebuilt): a typed, versioned DAG of feature nodes over one silver partition.

A spec is a pydantic model (`GoldDslSpec`) whose `nodes` map names to one of seven node types
(discriminator `type`, extra keys forbidden). `validate` returns every problem as a `DslError` naming
the node; `builtin_spec` / `config_from_spec` map the built-in gold set to a graph and back (exactly,
or refusing). `dsl_runtime` compiles a valid spec and executes it: `execute` over a partition (batch),
`DslRuntime.step` bin by bin (stream), one kernel for both; `preview` summarises a sample.

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
  evaluated left to right with numpy's float semantics, so `c1*a + c2*b` does the same float
  operations, in the same order, as the hand-written kernel.
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
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from qmachina_assets.core.engine import silver
from qmachina_assets.core.gold import features as gold
from qmachina_assets.core.gold.features import GoldFeatureConfig
from qmachina_assets.core.paths import PROJECT_ROOT

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


def node_refs(node: _Node) -> list[str]:
    if isinstance(node, Expr):
        return list(node.inputs.values())
    src = getattr(node, "source", None)
    return [src] if src is not None else []


def topo_order(nodes: Mapping[str, _Node]) -> tuple[list[str], list[str]]:
    """Kahn's algorithm over existing references: (topological order, nodes left with in-degree > 0)."""
    indeg = {n: 0 for n in nodes}
    users: dict[str, list[str]] = {n: [] for n in nodes}
    for n, node in nodes.items():
        for r in set(node_refs(node)):
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
_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div)
_CMPOPS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)
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
        for r in node_refs(node):
            if r not in nodes:
                dangling = True
                errors.append(_err(name, "dangling_ref", f"references unknown node '{r}'"))
            elif isinstance(nodes[r], Output):
                errors.append(_err(name, "output", f"consumes output node '{r}'; outputs cannot feed other nodes"))
    order, left = topo_order(nodes)
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
            if any(r not in info for r in node_refs(node)):
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


# ---- what the browser runs -------------------------------------------------------------------------

#: The browser executor's capability list (web/src/gold/dsl.ts reads the same file).
BROWSER_CAPABILITIES_PATH = PROJECT_ROOT / "web" / "src" / "gold" / "dsl-capabilities.json"


def browser_capabilities(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    p = Path(path) if path is not None else BROWSER_CAPABILITIES_PATH
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise DslValidationError([_err(None, "parse", f"cannot read the browser's capabilities ({exc})")],
                                 str(p)) from exc


def expr_functions(expr: Expr) -> set[str]:
    """The EXPR_FUNCTIONS an expression calls."""
    tree, _ = parse_expr(expr.expr, set(expr.inputs))
    if tree is None:
        return set()
    return {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def browser_problems(spec: GoldDslSpec, streamed: set[str] | None = None,
                     capabilities: dict[str, Any] | None = None) -> list[str]:
    """Why the browser cannot run `spec`, naming each node: a node type, option or expression function outside
    the browser executor's capabilities, or (with `streamed`, the wire's columns) a silver column the stream
    does not carry. [] when it can."""
    caps = capabilities if capabilities is not None else browser_capabilities()
    types: dict[str, dict[str, list[str]]] = caps.get("node_types", {})
    functions = set(caps.get("expr_functions", []))
    out = []
    for name, node in spec.nodes.items():
        rules = types.get(node.type)  # type: ignore[attr-defined]
        if rules is None:
            out.append(f"node '{name}': node type '{node.type}' is not run by the browser")  # type: ignore[attr-defined]
            continue
        for field, allowed in rules.items():
            value = getattr(node, field, None)
            if value not in allowed:
                out.append(f"node '{name}': {node.type} {field} '{value}' is not run by the browser "  # type: ignore[attr-defined]
                           f"(it runs {', '.join(allowed)})")
        if isinstance(node, Expr):
            for fn in sorted(expr_functions(node) - functions):
                out.append(f"node '{name}': expression function '{fn}' is not run by the browser")
        if isinstance(node, SilverRef) and streamed is not None and node.field not in streamed:
            out.append(f"node '{name}': silver column '{node.field}' is not in the stream_schema, so the browser "
                       "cannot compute it")
    return out
