"""Running the user's own project (issue 21), as real processes: the app named on the command line
or found in the project, configuration in ``pyproject.toml``, and what the children inherit."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests.support import app_project, base_env, free_port, http_get, run_cli, supervisor

UP = ["up", "--no-reload"]


@pytest.mark.timeout(90)
def test_workers_and_programs_find_the_interpreters_console_scripts_without_an_activated_venv(
        tmp_path: Path) -> None:
    """A venv-installed app's workers could not run the venv's scripts unless it was activated."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.symlink_to(sys.executable)  # sys.executable in the supervisor: this link, as in a venv
    tool = bin_dir / "hello-tool"
    tool.write_text("#!/bin/sh\necho \"hello-tool: ran from $0\"\n")
    tool.chmod(0o755)
    root = app_project(tmp_path / "p", extra="""
        [programs.tool]
        command = "hello-tool"
        once = true
    """)
    env = base_env(PATH="/usr/bin:/bin", RAWAPP_PRINT_VAR="PATH")
    with supervisor(UP, root, env, python=str(python)) as run:
        run.wait_url()
        run.wait_for_output(rf"rawapp: PATH is {bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin\b")
        run.wait_for_output(rf"hello-tool: ran from {tool}")
        assert run.stop() == 0, run.output


# The app of the issue: a Starlette app in a fresh directory that holds nothing else.
MAIN = """\
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request):
    return PlainTextResponse("hello from the user's own app")


app = Starlette(routes=[Route("/", hello)])
"""
FACTORY = MAIN.replace("app = Starlette(", "def create_app():\n    return Starlette(") + \
    "\n\nmake = create_app  # a factory the source does not show as one: needs --factory\n"
GREETING = b"hello from the user's own app"


def fresh_project(root: Path, files: dict[str, str]) -> Path:
    """A directory with only ``files``: no supervisor.toml, no .env."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def serves_the_app(args: list[str], root: Path, found: str | None = None, up: tuple[str, ...] = tuple(UP)) -> str:
    """Run ``up ARGS`` in ``root``; assert it serves the user's app; return the output."""
    with supervisor([*up, "--port", str(free_port()), *args], root) as run:
        url = run.wait_url()
        status, _, body = http_get(url + "/")
        assert (status, body) == (200, GREETING), run.output
        if found is not None:
            run.wait_for_output(found)
        assert "BETTER_AUTH_SECRET" not in run.output and "webapp.app" not in run.output, run.output
        assert run.stop() == 0, run.output
        return run.output


@pytest.mark.timeout(90)
def test_up_with_no_config_serves_the_main_py_it_finds_and_says_how_to_pin_it(tmp_path: Path) -> None:
    """The issue: `up` in a directory holding only main.py served our bundled example instead."""
    root = fresh_project(tmp_path, {"main.py": MAIN})
    serves_the_app([], root, up=("up",), found=r'app main:app found in main\.py; pin it with \[app\] app = "main:app"'
                                   r".* python -m supervisor up main:app")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("app", ["main:app", "main.py"])
def test_up_serves_the_app_named_on_the_command_line(tmp_path: Path, app: str) -> None:
    root = fresh_project(tmp_path, {"main.py": MAIN, "app.py": "raise SystemExit('not this one')\n"})
    output = serves_the_app([app], root)
    assert "found in" not in output  # named, not looked for


@pytest.mark.timeout(120)
def test_up_serves_a_factory_told_from_the_source_or_by_factory(tmp_path: Path) -> None:
    root = fresh_project(tmp_path, {"pkg/__init__.py": "", "pkg/mod.py": FACTORY})
    serves_the_app(["pkg.mod:create_app"], root)
    serves_the_app(["pkg.mod:make", "--factory"], root)


@pytest.mark.timeout(60)
def test_up_with_nothing_to_find_exits_2_listing_the_candidates(tmp_path: Path) -> None:
    root = fresh_project(tmp_path, {"README.md": "no app here\n", "main.py": "print('no app')\n"})
    for command in (UP, ["check"]):
        result = run_cli([*command, "--project-dir", str(root)], tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert "Traceback" not in output and "webapp.app" not in output, output
        assert re.search(r"no app given and none found", output), output
        for candidate in ("main.py has no app, application or create_app()", "app.py", "api.py",
                          "app/main.py", "src/*/main.py"):
            assert candidate in output, (candidate, output)
        assert "python -m supervisor up main:app" in output and "[app] app" in output, output


@pytest.mark.timeout(90)
def test_settings_in_pyproject_are_read_and_their_errors_name_pyproject_and_the_line(tmp_path: Path) -> None:
    port = free_port()
    pyproject = (f'[project]\nname = "mine"\nversion = "0"\n\n[tool.webapp-supervisor.server]\nport = {port}\n\n'
                 '[tool.webapp-supervisor.app]\napp = "main:app"\n\n[tool.webapp-supervisor.status]\nenabled = false\n')
    root = fresh_project(tmp_path, {"main.py": MAIN, "pyproject.toml": pyproject})
    checked = run_cli(["check", "--project-dir", str(root)], tmp_path)
    assert checked.returncode == 0 and f"ok: {root / 'pyproject.toml'}" in checked.stdout, checked.stderr
    with supervisor(UP, root) as run:
        url = run.wait_url()
        assert url.endswith(f":{port}"), run.output
        assert http_get(url + "/")[2] == GREETING
        assert "status: API" not in run.output  # [tool.webapp-supervisor.status] enabled = false
        assert run.stop() == 0
    (root / "pyproject.toml").write_text(pyproject.replace(f"port = {port}", 'port = "eighty"'))
    for command in (UP, ["check"]):
        result = run_cli([*command, "--project-dir", str(root)], tmp_path)
        assert result.returncode == 2, result.stderr
        assert re.search(r"pyproject\.toml:6 \[tool\.webapp-supervisor\.server\] port: 'eighty' is not an integer",
                         result.stderr), result.stderr


@pytest.mark.timeout(90)
def test_up_of_a_file_in_a_src_layout_imports_it_from_its_root(tmp_path: Path) -> None:
    """src/shop/main.py in the package src/shop is shop.main, imported from src (as fastapi-cli does)."""
    root = fresh_project(tmp_path, {"src/shop/__init__.py": "", "src/shop/main.py": MAIN})
    serves_the_app(["src/shop/main.py"], root)
    serves_the_app([], root, found=r"app shop\.main:app found in src/shop/main\.py, imported from src; "
                                   r'pin it with \[app\] app = "shop\.main:app", app_dir = "src"')
