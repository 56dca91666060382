"""The package's shape: no import cycle, arrows pointing one way, long code that says why.

Every ``import`` and ``from ... import`` of ``pvdetect`` modules in ``src/`` counts, also those
inside functions (a lazy import is still a dependency); only imports for type annotations
(under ``if TYPE_CHECKING:``) do not.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "pvdetect"

#: rank of each part: a module may import its own part and parts of a lower rank only
RANKS = {
    # the foundations every part may use
    "__init__": 0,
    "errors": 0,
    "io": 0,
    "device": 0,
    "extras": 0,
    "validation": 0,
    "staging": 0,
    "logs": 0,
    "data": 1,
    "synth": 2,
    "model": 2,
    "evaluation": 3,
    "config": 3,
    "training": 4,
    "inference": 4,
    "acquire": 4,
    "mapping": 5,
    "serve": 6,
    "commands": 7,
    "cli": 8,
    "__main__": 9,
}
#: at most this many lines in a module, and per function, unless its docstring says why
MODULE_LINES, FUNCTION_LINES = 500, 80
#: the phrase a docstring uses to say why a module or function is longer
WHY = "Why this long:"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in MODULES:
            return ".".join(parts[:i])
    return None


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name.startswith("pvdetect"):
                target = _resolve(name)
                if target is not None:
                    found.add(target)
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_has_a_rank() -> None:
    assert {_part(m) for m in MODULES} <= set(RANKS), {_part(m) for m in MODULES} - set(RANKS)


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components: none may hold two modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


def test_arrows_point_one_way() -> None:
    wrong = defaultdict(list)
    for module, targets in GRAPH.items():
        own = _part(module)
        for target in targets:
            other = _part(target)
            foundations = RANKS[other] == RANKS[own] == 0  # they may use each other
            if other != own and RANKS[other] >= RANKS[own] and not foundations:
                wrong[module].append(target)
    assert dict(wrong) == {}


def test_data_imports_no_model_or_command_code() -> None:
    for module, targets in GRAPH.items():
        if _part(module) == "data":
            assert {_part(t) for t in targets} <= {"data", "errors", "io"}, (module, targets)


def _too_long() -> list[str]:
    out = []
    for name, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        if len(text.splitlines()) > MODULE_LINES and WHY not in (ast.get_docstring(tree) or ""):
            out.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > FUNCTION_LINES and WHY not in (ast.get_docstring(node) or ""):
                    out.append(f"{name}.{node.name}: {n} lines")
    return out


def test_long_modules_and_functions_say_why() -> None:
    assert _too_long() == []


@pytest.mark.parametrize("bad", ["data", "synth"])
def test_the_check_catches_a_wrong_arrow(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The arrow test fails for an import from data/ or synth/ into the model side."""
    module = next(m for m in GRAPH if _part(m) == bad)
    monkeypatch.setitem(GRAPH, module, GRAPH[module] | {"pvdetect.training.train"})
    with pytest.raises(AssertionError):
        test_arrows_point_one_way()
