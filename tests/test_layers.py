"""The house rules of imports, checked on the source: drivers know no acquisition,
production code knows no simulators or tests, each wing of acquisition/ imports only the
wings below it, and no module imports itself back through others (imports inside
functions count: they hide a circle, they do not remove it)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("acquisition", "drivers", "simulators")
# acquisition's wings, bottom first; a module may import its own wing and those before it.
# "shared" is the package's top-level modules (events, logs, exit codes, gas physics).
WINGS = ["shared", "config", "store", "samples", "safety", "site", "run", "dut", "results",
         "report", "export", "mqtt", "daemon", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every project module `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in (*PACKAGES, "tests")}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for package in PACKAGES
               for path in (REPO / package).rglob("*.py")}
    return {name: {imported for imported in imports_of(path) if imported in modules}
            | {imported for imported in imports_of(path) if imported.startswith("tests")}
            for name, path in modules.items()}


def wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else "shared"


def test_drivers_import_no_acquisition(graph: dict[str, set[str]]) -> None:
    wrong = {(name, imported) for name, targets in graph.items() if name.startswith("drivers")
             for imported in targets if not imported.startswith("drivers")}
    assert not wrong


def test_production_code_imports_no_simulator_or_test(graph: dict[str, set[str]]) -> None:
    wrong = {(name, imported) for name, targets in graph.items()
             if name.startswith(("acquisition", "drivers"))
             for imported in targets if imported.startswith(("simulators", "tests"))}
    assert not wrong


def test_every_wing_imports_only_wings_below_it(graph: dict[str, set[str]]) -> None:
    assert {wing(name) for name in graph if name.startswith("acquisition.")} <= set(WINGS)
    upward = {(name, imported) for name, targets in graph.items()
              if name.startswith("acquisition.")
              for imported in targets if imported.startswith("acquisition.")
              and WINGS.index(wing(imported)) > WINGS.index(wing(name))}
    assert not upward, sorted(upward)


def test_no_import_circles(graph: dict[str, set[str]]) -> None:
    # A package's __init__ is not an edge: importing a.b.c runs a/__init__ and a/b/__init__.
    edges = {name: {imported for imported in targets if not imported.startswith("tests")
                    and imported not in _packages(graph)}
             for name, targets in graph.items()}
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import circle: {' -> '.join(error.args[1])}")


def _packages(graph: dict[str, set[str]]) -> set[str]:
    return {name for name in graph if any(other.startswith(name + ".") for other in graph)}
