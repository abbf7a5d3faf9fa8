"""The package layout keeps its shape: no import cycles, no package importing one above it, and
the core never importing the web service (docs/architecture.md draws the floors)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tal", "service")
# Lower floors never import higher ones; packages on one floor may import each other.
FLOORS: dict[str, int] = {
    "tal.arch": 0,
    "tal.tasks": 0,
    "tal.blobs": 0,
    "tal.hypernet": 1,
    "tal.transfer": 1,
    "tal.checkpoints": 2,
    "tal.heads": 3,
    "tal.predict": 4,
    "tal.training": 5,
    "tal.evaluation": 6,
    "tal.client": 7,
    "tal.cli": 8,
    "tal": 8,  # the package's own __init__: the public names
    "service": 9,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` counts ``a.b.c`` when that is
    a module, else ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in known}


def floor(module: str) -> int:
    owner = max((p for p in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return FLOORS[owner]


GRAPH = {name: imports(path, set(modules())) - {name} for name, path in modules().items()}


def test_every_module_has_a_floor() -> None:
    for name in GRAPH:
        assert floor(name) >= 0, name


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_a_higher_floor(module: str) -> None:
    upward = sorted(t for t in GRAPH[module] if floor(t) > floor(module))
    assert not upward, f"{module} (floor {floor(module)}) imports {upward}"


def test_the_core_never_imports_the_service() -> None:
    assert not [
        m for m in GRAPH if m.startswith("tal") and any(t.startswith("service") for t in GRAPH[m])
    ]


def test_no_import_cycles() -> None:
    """Depth-first search for a back edge, naming the cycle it closes."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(GRAPH[node]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
