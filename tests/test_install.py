"""What installing webapp-supervisor puts in a user's environment: the supervisor, and only its own libraries.

The bundled example (``webapp/``, its Alembic migrations) stays in the repository: it is neither in the
wheel nor among the required dependencies, which are exactly what ``supervisor/`` imports. The end-to-end
test builds a wheel from this checkout, installs it into a fresh virtual environment (pip reaches PyPI,
through its cache) and serves a one-file Starlette project with that environment's ``python -m supervisor
up``, without this repository on ``sys.path``.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, base_env, free_port, http_get, make_project, scaled, supervisor

# Loaded by SQLAlchemy for postgresql+asyncpg URLs, never imported by name.
DRIVER_BY_URL = {"asyncpg"}
# What the example needs and the supervisor must not bring: import names.
EXAMPLE_ONLY = ("alembic", "jwt", "aiosqlite", "websockets")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def distribution_name(requirement: str) -> str:
    """``"sqlalchemy[asyncio]>=2.0"`` -> ``"sqlalchemy"``, normalised as PyPI does (PEP 503)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def third_party_imports(package: Path) -> set[str]:
    """Top-level names of every module the package's code imports, inside functions too, that are
    neither the standard library nor this repository's own packages."""
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.partition(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in ("supervisor", "webapp")}


def distributions_of(imports: set[str]) -> set[str]:
    """The installed distributions that provide these import names (``jwt`` -> ``pyjwt``)."""
    providers = importlib.metadata.packages_distributions()
    missing = sorted(name for name in imports if name not in providers)
    assert not missing, f"imported but not installed here, so not mapped to a distribution: {missing}"
    return {distribution_name(dist) for name in imports for dist in providers[name]}


def test_the_required_dependencies_are_exactly_what_the_supervisor_imports() -> None:
    project = pyproject()["project"]
    required = {distribution_name(r) for r in project["dependencies"]}
    # Imported only when an app needs it (a WSGI app: supervisor/child/interface.py says which to install).
    optional = {distribution_name(r) for r in project["optional-dependencies"]["wsgi"]}
    imported = distributions_of(third_party_imports(REPO / "supervisor"))
    assert imported - required - optional == set(), "supervisor/ imports these; add them to [project] dependencies"
    assert optional <= imported, "the wsgi extra holds what supervisor/ no longer imports"
    assert required - imported == DRIVER_BY_URL, "required but not imported by supervisor/: move to an extra"


def test_the_example_extra_holds_what_the_webapp_imports_beyond_the_supervisor() -> None:
    project = pyproject()["project"]
    required = {distribution_name(r) for r in project["dependencies"]}
    example = {distribution_name(r) for r in project["optional-dependencies"]["example"]}
    imported = distributions_of(third_party_imports(REPO / "webapp"))
    assert imported - required - example == set(), "webapp/ imports these; add them to the example extra"
    # Not imported by name: the development database's driver, and uvicorn's WebSocket support.
    assert {"aiosqlite", "websockets"} <= example
    assert not example & required


# ----- a real wheel in a fresh virtual environment ---------------------------------------------------------


def run(command: list[str | Path], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(part) for part in command], cwd=cwd, env=clean_env(), capture_output=True,
                            text=True, timeout=scaled(timeout), stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{command} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def clean_env() -> dict[str, str]:
    """The tests' environment without this checkout on ``sys.path``: only what is installed counts."""
    env = base_env()
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with the wheel built from this checkout installed; its python."""
    root = tmp_path_factory.mktemp("install")
    # A copy to build from: setuptools writes build/ and *.egg-info next to the sources, and a
    # stale build/lib from an earlier layout would end up in the wheel.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".*", "build", "dist", "*.egg-info", "__pycache__", "tests", "bench", "docs"))
    assert (source / "webapp" / "app.py").exists()  # there to be left out
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "wheels", source], root, 240)
    [wheel] = (root / "wheels").glob("webapp_supervisor-*.whl")
    run([sys.executable, "-m", "venv", root / "venv"], root, 120)
    python = root / "venv" / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel], root, 240)
    yield python


def probe(python: Path, cwd: Path) -> dict[str, Any]:
    """Where the venv's python finds supervisor, and which of the example's modules it finds."""
    code = ("import importlib.util, json, sys, supervisor, sysconfig; print(json.dumps({"
            "'supervisor': supervisor.__file__, 'site': sysconfig.get_path('purelib'), "
            f"'found': [n for n in {list(EXAMPLE_ONLY + ('webapp',))!r} if importlib.util.find_spec(n)]}}))")
    result: dict[str, Any] = json.loads(run([python, "-c", code], cwd, 30).stdout)
    return result


@pytest.mark.timeout(300)
def test_the_installed_wheel_brings_no_webapp_and_none_of_the_examples_libraries(
        venv: Path, tmp_path: Path) -> None:
    found = probe(venv, tmp_path)
    site = Path(found["site"])
    assert Path(found["supervisor"]).is_relative_to(site), found  # the wheel's, not this checkout's
    stray = sorted(path.name for path in site.iterdir() if re.split(r"[-.]", path.name)[0] == "webapp")
    assert stray == [], f"a top-level webapp in site-packages: {stray}"
    assert found["found"] == [], f"installed without being asked for: {found['found']}"


@pytest.mark.timeout(300)
def test_the_installed_supervisor_serves_a_starlette_project_of_one_file(venv: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", toml=f"""
        [server]
        port = {free_port()}
        [app]
        app = "main:app"
        [status]
        enabled = false
    """, files={"main.py": """
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route


        async def hello(request):
            return PlainTextResponse("hello from main.py")

        app = Starlette(routes=[Route("/", hello)])
    """})
    with supervisor(["up"], project, clean_env(), python=venv) as up:
        url = up.wait_url(60)
        status, _, body = http_get(url + "/")
        assert (status, body) == (200, b"hello from main.py"), up.output
        assert up.stop() == 0, up.output


@pytest.mark.timeout(300)
def test_a_sqlite_url_without_aiosqlite_stops_up_with_the_package_to_install(venv: Path, tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", dotenv=f"DATABASE_URL=sqlite+aiosqlite:///{tmp_path}/app.sqlite3\n",
                           toml=f"""
        [server]
        port = {free_port()}
        [app]
        app = "main:app"
        [status]
        enabled = false
        [env.DATABASE_URL]
        type = "url"
        schemes = ["sqlite+aiosqlite"]
    """, files={"main.py": "async def app(scope, receive, send):\n    pass\n"})
    with supervisor(["up"], project, clean_env(), python=venv) as up:
        assert up.wait_exit(60) == 3, up.output  # the database's exit code, at once: not retried
    assert re.search(r"aiosqlite.*(not installed|cannot import|missing)", up.output), up.output
    assert "pip install aiosqlite" in up.output, up.output
    assert "Traceback" not in up.output and "next try" not in up.output, up.output
