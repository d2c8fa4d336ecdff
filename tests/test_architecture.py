"""The layout's rules, held against the code (docs/architecture.md).

Read with the standard library's ``ast``: every ``import`` in ``src/chainsight``, including the
ones under ``if TYPE_CHECKING:`` and inside functions, is an edge of the import graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "chainsight"
MAX_MODULE_LINES = 600
MAX_FUNCTION_CODE_LINES = 60
# Entry points of the command line: they import the toolbox on purpose.
TOOL_ENTRY_POINTS = frozenset({"chainsight.__main__"})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The chainsight modules ``path`` imports (``from a import b`` counts b if it is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    edges = found & known
    # ``from chainsight.x import y`` loads the package chainsight too; that edge says nothing.
    edges.discard("chainsight")
    return edges


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) - {name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_src() -> None:
    assert _cycles(_graph()) == []


def test_the_library_never_imports_the_tools() -> None:
    offenders = [
        f"{name} -> {target}"
        for name, targets in _graph().items()
        if not name.startswith("chainsight.tools") and name not in TOOL_ENTRY_POINTS
        for target in targets
        if target.startswith("chainsight.tools")
    ]
    assert offenders == []


def test_the_stage_wing_never_imports_configure() -> None:
    offenders = [
        f"{name} -> {target}"
        for name, targets in _graph().items()
        if name.startswith("chainsight.stages")
        for target in targets
        if target == "chainsight.config.configure"
    ]
    assert offenders == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_size(name: str) -> None:
    lines = _modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_MODULE_LINES, f"{name} has {lines} lines"


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> int:
    """Lines of the body that hold code: no blank line, comment or docstring."""
    first = node.body[0]
    start = first.lineno
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        start = (first.end_lineno or first.lineno) + 1
    end = node.end_lineno or node.lineno
    return sum(
        1 for text in lines[start - 1 : end] if text.strip() and not text.strip().startswith("#")
    )


def test_function_size() -> None:
    too_long = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                count = _code_lines(node, lines)
                if count > MAX_FUNCTION_CODE_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name} ({count} code lines)")
    assert too_long == []


def test_the_size_rule_counts_code_not_docstrings_or_comments() -> None:
    source = 'def f():\n    """Doc.\n\n    More."""\n    # why\n\n    a = 1\n    return a\n'
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.FunctionDef)
    assert _code_lines(node, source.splitlines()) == 2
