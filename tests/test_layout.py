"""The package layout holds: core stages import only stages below them, no import cycles between modules,
no Dagster or FastAPI in the core, and nothing outside the core imports a private name of it.

Read from the source (ast), so a lazy import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from qmachina_assets.core.paths import PROJECT_ROOT

CORE = PROJECT_ROOT / "qmachina_assets" / "core"
# Bottom-up data flow: a stage may import itself, the shared root modules and the stages before it.
STAGES = ("ingest", "engine", "gold", "research", "registry", "control")
SHARED = {"instrument", "paths", "numba_cache"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PROJECT_ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import statement in the file, at any depth."""
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [a.name for a in node.names]))
    return out


def _py_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "migrations" not in p.parts)


def _stage(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["qmachina_assets", "core"] or len(parts) < 3:
        return None
    return parts[2]


def test_core_has_no_loose_modules_beyond_the_shared_ones() -> None:
    loose = {p.stem for p in CORE.glob("*.py")} - {"__init__"}
    assert loose == SHARED
    assert {p.name for p in CORE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(STAGES)
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((CORE / stage / "__init__.py").read_text()))
        assert doc, f"core/{stage}/__init__.py needs a docstring saying what the stage takes in and gives out"


@pytest.mark.parametrize("path", _py_files(CORE), ids=lambda p: str(p.relative_to(CORE)))
def test_core_stage_imports_only_stages_below(path: Path) -> None:
    own = _stage(_module_name(path))
    for module, _ in _imports(path):
        assert not module.startswith(("dagster", "fastapi", "qmachina_serving", "qmachina_assets.defs")), (
            f"{path.relative_to(PROJECT_ROOT)} imports {module}: the core is importable without Dagster/FastAPI")
        target = _stage(module)
        if target is None or target in SHARED:
            continue
        if own in SHARED:
            pytest.fail(f"{path.relative_to(PROJECT_ROOT)} is shared by every stage but imports {module}")
        assert STAGES.index(target) <= STAGES.index(own), (
            f"{path.relative_to(PROJECT_ROOT)} ({own}) imports {module} ({target}), a stage above it")


def test_no_import_cycles_between_project_modules() -> None:
    files = {_module_name(p): p for root in ("qmachina_assets", "qmachina_serving")
             for p in _py_files(PROJECT_ROOT / root)}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        for module, names in _imports(path):
            for target in (module, *(f"{module}.{n}" for n in names)):
                if target in files and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                # a package __init__ importing its own children is not a cycle between modules
                cycle = [*stack[stack.index(m):], m]
                if not all(c.startswith(m + ".") or c == m for c in cycle):
                    pytest.fail("import cycle: " + " -> ".join(cycle))
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(files):
        if n not in state:
            visit(n)


def test_nothing_outside_the_core_imports_a_private_core_name() -> None:
    roots = [PROJECT_ROOT / d for d in ("qmachina_serving", "tests", "bench")]
    roots += [PROJECT_ROOT / "qmachina_assets" / "defs"]
    files = [*(p for r in roots for p in _py_files(r)), PROJECT_ROOT / "qmachina_assets" / "cli.py",
             PROJECT_ROOT / "qmachina_assets" / "definitions.py"]
    bad = []
    for path in files:
        for module, names in _imports(path):
            if module.startswith("qmachina_assets.core"):
                bad += [f"{path.relative_to(PROJECT_ROOT)}: {module}.{n}" for n in names if n.startswith("_")]
        text = path.read_text()
        tree = ast.parse(text)
        aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                   and (node.module or "").startswith("qmachina_assets.core") for a in node.names}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.value.id[:1].islower()):  # a module's private name (class internals are seams)
                bad.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, "private core names used outside the core:\n" + "\n".join(bad)
