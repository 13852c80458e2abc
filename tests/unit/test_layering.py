"""The package layering (README, "Packages"): one ground package under
everything, the CLI on top, no cycles, and a job that ships only what it runs.

Imports are read from the sources (every ``import``, lazy ones inside functions
included), so a cycle hidden behind a function-level import is still caught."""

from __future__ import annotations

import ast

import pytest

from rtd_core.config import PROJECT_ROOT
from stack.flink_cluster import JOB_PACKAGES

pytestmark = pytest.mark.unit

PACKAGES = tuple(sorted(
    p.name for p in PROJECT_ROOT.iterdir()
    if (p / "__init__.py").is_file() and p.name != "tests"))


def _imports(package: str) -> dict[str, set[str]]:
    """Per module of ``package``, the project's packages it imports (itself excluded)."""
    found: dict[str, set[str]] = {}
    for file in sorted((PROJECT_ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(file.relative_to(PROJECT_ROOT))] = (names & set(PACKAGES)) - {package}
    return found


GRAPH = {package: set().union(*_imports(package).values()) for package in PACKAGES}


def test_the_project_has_the_packages_this_test_reads() -> None:
    # Guards the test itself: an empty graph would pass every check below.
    assert {"rtd", "rtd_core", "operators", "flink_jobs", "stack", "bench"} <= set(PACKAGES)
    assert GRAPH["rtd"] and GRAPH["flink_jobs"]


def test_the_ground_package_imports_no_other_package() -> None:
    assert GRAPH["rtd_core"] == set()


def test_nothing_imports_the_cli() -> None:
    users = {package for package, deps in GRAPH.items() if "rtd" in deps}
    assert users == set()


def test_no_package_cycles() -> None:
    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for dep in sorted(GRAPH[node]):
                if dep == start:
                    return [*path, dep]
                if dep not in path:
                    stack.append((dep, [*path, dep]))
        return None

    cycles = [cycle for package in PACKAGES if (cycle := cycle_from(package))]
    assert cycles == []


def test_the_job_ships_only_what_it_imports() -> None:
    """--pyFiles (JOB_PACKAGES) holds every package the job's code imports, and not the
    CLI, the stack manager, the simulator, the audit service or the benchmarks."""
    assert {"rtd", "stack", "simulator", "audit", "bench", "replay",
            "model_training"}.isdisjoint(JOB_PACKAGES)
    outside = {f"{module} -> {dep}" for package in JOB_PACKAGES
               for module, deps in _imports(package).items()
               for dep in deps if dep not in JOB_PACKAGES}
    assert outside == set()
