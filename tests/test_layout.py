"""The architecture, checked: no import circle, and plugins never see the runner class."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

# Only the wiring for ``up`` may import the concrete runner; plugins get the SupervisorView.
RUNNER_USERS = {"supervisor.launch"}


def modules() -> dict[str, Path]:
    found = {}
    for path in (REPO / "supervisor").rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        if not name.endswith("__main__"):
            found[name] = path
    return found


def project_imports(path: Path, known: set[str]) -> set[str]:
    """Project modules that ``path`` imports at module level, ``if TYPE_CHECKING:`` blocks included:
    a circle through type hints is still a circle in the design."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [f"{child.module}.{alias.name}" for alias in child.names]
                found.update(n for n in [child.module, *names] if n in known)
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names if alias.name in known)
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):  # imported when called
                visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_no_import_circle_between_the_supervisor_modules() -> None:
    known = modules()
    graph = {name: project_imports(path, set(known)) - {name} for name, path in known.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError("import circle: " + " -> ".join([*trail[trail.index(name):], name]))
        if name in done:
            return
        for other in sorted(graph[name]):
            if other != "supervisor":
                visit(other, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_no_plugin_imports_the_runner() -> None:
    known = modules()
    users = {name for name, path in known.items() if "supervisor.runner" in project_imports(path, set(known))}
    assert users <= RUNNER_USERS, users - RUNNER_USERS


@pytest.mark.timeout(60)
def test_every_module_imports_in_a_fresh_interpreter() -> None:
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", script, *sorted(modules())], cwd=REPO, capture_output=True,
                            text=True, timeout=50)
    assert result.returncode == 0, result.stderr


# What code running inside a worker or the template may import: the standard library, the server it
# runs and the framework of its middlewares, and its own package. Never the supervisor's modules.
# a2wsgi: the optional WSGI adapter, imported only when the app is a WSGI app (supervisor.child.interface).
CHILD_ALLOWED = ("supervisor.child", "uvicorn", "starlette", "a2wsgi")


def all_imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (a function's import runs in the same process)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_child_code_imports_only_the_standard_library_uvicorn_starlette_and_itself() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    offenders = {}
    for name, path in modules().items():
        if not name.startswith("supervisor.child"):
            continue
        bad = {mod for mod in all_imports(path)
               if mod.split(".")[0] not in stdlib
               and not any(mod == ok or mod.startswith(ok + ".") for ok in CHILD_ALLOWED)}
        if bad:
            offenders[name] = sorted(bad)
    assert not offenders, offenders
