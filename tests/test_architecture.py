"""The import rules of docs/architecture.md, checked on the source: no import circle (counting
imports inside functions too), instruments and the theory's math import nothing of the app, the
engine only the instruments' declared protocols, and no module over the size a newcomer reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

SRC = REPO / "src"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.glob("**/*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in it (a lazy import is still an arrow)."""
    found = set()
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:  # `from pkg import name`: the module or pkg
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found - {module_name(path)}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) for name, path in mods.items()}


def circles_in(graph: dict[str, set[str]]) -> list[str]:
    """Every circle a depth-first search meets (a module found on its own stack). A package's
    ``__init__`` importing its own submodules is not an arrow back."""
    state: dict[str, int] = {}
    circles = []

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for target in sorted(t for t in graph[name] if not t.startswith(name + ".")):
            if state.get(target) == 1:
                circles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return circles


def test_no_import_circle(graph) -> None:
    assert circles_in(graph) == []
    planted = graph | {"gradprobe.theory": graph["gradprobe.theory"] | {"gradprobe.cli"}}
    assert circles_in(planted)  # the check sees the circle this issue removed


def outside(graph: dict[str, set[str]], prefix: str) -> dict[str, set[str]]:
    return {name: {t for t in targets if not t.startswith(prefix)}
            for name, targets in graph.items() if name.startswith(prefix)}


def test_instruments_import_nothing_of_the_app(graph) -> None:
    assert all(not targets for targets in outside(graph, "gradprobe.instruments").values())


def test_the_engine_imports_only_the_instruments_protocols(graph) -> None:
    found = set().union(*outside(graph, "gradprobe.engine").values())
    assert found <= {"gradprobe.instruments.schedule"}, found


def test_the_theory_math_is_a_numpy_library(graph) -> None:
    """The mean-field math imports no gradprobe module outside the theory package, and no
    torch, Lightning or Hydra: a library anyone can import."""
    math_modules = ("gradprobe.theory.meanfield", "gradprobe.theory.gaussian")
    for name in math_modules:
        assert {t for t in graph[name] if not t.startswith("gradprobe.theory")} == set(), name
        tree = ast.parse(modules()[name].read_text())
        roots = {alias.name.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.Import) for alias in node.names}
        roots |= {node.module.split(".")[0] for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module and not node.level}
        assert not roots & {"torch", "pytorch_lightning", "hydra", "omegaconf"}, name


def test_no_module_is_too_long_to_read() -> None:
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long
