"""The house's import structure: layers, and no import circles anywhere.

Layers, bottom up: ``gdro_core`` (the algorithms); the simulator ``gdro_lab`` and the adapters
``gdro_torch``, ``gdro_verl``, ``gdro_trl`` (each imports only the core, never a sibling);
``gdro_cli`` (the command line, above all of them). Every import counts, including the ones inside
functions (an import deferred for start-up time is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "gdro_core": ROOT / "gdro_core",
    "gdro_lab": ROOT / "gdro_lab",
    "gdro_torch": ROOT / "adapters" / "gdro_torch",
    "gdro_verl": ROOT / "adapters" / "gdro_verl",
    "gdro_trl": ROOT / "adapters" / "gdro_trl",
    "gdro_cli": ROOT / "gdro_cli",
}
LAYER = {"gdro_core": 0, "gdro_lab": 1, "gdro_torch": 1, "gdro_verl": 1, "gdro_trl": 1, "gdro_cli": 2}


def module_name(package: str, path: Path) -> str:
    rel = path.relative_to(PACKAGES[package]).with_suffix("")
    parts = [package, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            out[module_name(package, path)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The first-party modules ``name`` imports (absolute and relative, at any depth)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(target: str) -> str | None:
        while target and target not in known:  # ``from gdro_core.x import Name`` -> gdro_core.x
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            # ``from pkg import sub`` imports the module pkg.sub; ``from mod import Name`` imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] in PACKAGES and (hit := resolve(t)) is not None and hit != name:
                found.add(hit)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def test_the_graph_is_read() -> None:
    g = graph()
    assert len(g) > 70
    assert "gdro_core.controller" in g["gdro_core"]  # the package re-exports its modules
    assert "gdro_core._backend" in g["gdro_core.sampler"]  # ``from gdro_core import _backend``
    assert "gdro_core" in g["gdro_cli.flags"] and "gdro_torch.config" in g["gdro_cli.train"]


def test_no_import_circles_anywhere() -> None:
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert circles == []


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_imports_a_layer_above_or_a_sibling(package: str) -> None:
    bad = []
    for name, targets in graph().items():
        if name.split(".")[0] != package:
            continue
        for t in targets:
            other = t.split(".")[0]
            if other != package and LAYER[other] >= LAYER[package]:
                bad.append(f"{name} -> {t}")
    assert bad == []
