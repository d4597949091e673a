"""gdro_verl's import structure: no circles, verl primitives at the bottom, hooks on their own."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "adapters" / "gdro_verl"


def _imports() -> dict[str, set[str]]:
    """module -> the gdro_verl modules it imports, anywhere in its body (lazy imports too)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "gdro_verl" and len(parts) > 1 and parts[1] in modules:
                    found.add(parts[1])
        found.discard(path.stem)
        graph[path.stem] = found
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_import_circle_inside_gdro_verl() -> None:
    graph = _imports()
    assert {"_compat", "hooks", "runtime", "feedback", "dataset"} <= set(graph)
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph) or [])}"


def test_layers() -> None:
    """``_compat`` imports nothing of the package; feedback and runtime do not import each other
    both ways; only the hooks patch verl; nothing imports the dataset class (a marker finds it)."""
    graph = _imports()
    assert graph["_compat"] == set()
    assert "runtime" not in graph["feedback"]
    assert all("dataset" not in deps for name, deps in graph.items() if name != "__init__")
    patches = [
        p.stem
        for p in PACKAGE.glob("*.py")
        if "setattr(module" in p.read_text() or "setattr(cls" in p.read_text()
    ]
    assert patches == ["hooks"]


def test_the_check_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
