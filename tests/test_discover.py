"""Finding the app without importing it: pure tests of :mod:`supervisor.config.discover` on
temporary file trees."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from supervisor.config.discover import AppTarget, definitions, discover, from_argument, import_root


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_main_py_with_an_app_is_found_first(tmp_path: Path) -> None:
    tree(tmp_path, {"main.py": "from starlette.applications import Starlette\napp = Starlette()\n",
                    "app.py": "application = object()\n"})
    found = discover(tmp_path)
    assert found.target == AppTarget("main:app", False, ".", "main.py")


@pytest.mark.parametrize("files, expected", [
    ({"app.py": "application = make()\n"}, AppTarget("app:application", False, ".", "app.py")),
    ({"api.py": "def create_app():\n    return object()\n"}, AppTarget("api:create_app", True, ".", "api.py")),
    ({"app/__init__.py": "", "app/main.py": "app: object = object()\n"},
     AppTarget("app.main:app", False, ".", "app/main.py")),
    ({"app/main.py": "from .web import app\n"}, AppTarget("main:app", False, "app", "app/main.py")),
    ({"src/shop/__init__.py": "", "src/shop/main.py": "if True:\n    app = object()\n"},
     AppTarget("shop.main:app", False, "src", "src/shop/main.py")),
])
def test_each_candidate_and_form_of_definition(tmp_path: Path, files: dict[str, str], expected: AppTarget) -> None:
    assert discover(tree(tmp_path, files)).target == expected


def test_nothing_found_lists_every_place_tried_and_why(tmp_path: Path) -> None:
    tree(tmp_path, {"main.py": "print('no app here')\n", "app.py": "def broken(:\n"})
    found = discover(tmp_path)
    assert found.target is None
    tried = "; ".join(found.tried)
    assert "main.py has no app, application or create_app()" in tried
    assert "app.py cannot be parsed (a syntax error line 1)" in tried
    for place in ("api.py (no such file)", "app/main.py (no such file)", "src/*/main.py (no such file)"):
        assert place in tried


def test_the_file_is_parsed_never_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    tree(tmp_path, {"main.py": f"open({str(marker)!r}, 'w').close()\napp = object()\n"})
    assert discover(tmp_path).target is not None
    assert from_argument("main.py", tmp_path) == AppTarget("main:app", False, ".", "main.py")
    assert not marker.exists()


def test_a_def_needing_arguments_is_the_app_not_a_factory() -> None:
    names = definitions("def app(scope):\n    ...\nasync def other(scope, receive, send):\n    ...\n"
                        "def create_app(debug=False):\n    ...\n")
    assert names == {"app": "value", "other": "async def", "create_app": "def"}


def test_import_root_walks_up_while_the_directory_is_a_package(tmp_path: Path) -> None:
    tree(tmp_path, {"src/a/__init__.py": "", "src/a/b/__init__.py": "", "src/a/b/main.py": "app = 1\n"})
    assert import_root(tmp_path / "src" / "a" / "b" / "main.py") == (tmp_path / "src", "a.b.main")


@pytest.mark.parametrize("argument, expected", [
    ("main:app", AppTarget("main:app", False, ".", "main.py")),
    ("main.py", AppTarget("main:app", False, ".", "main.py")),
    ("main.py:other", AppTarget("main:other", True, ".", "main.py")),
    ("pkg.mod:create_app", AppTarget("pkg.mod:create_app", True, ".", "pkg/mod.py")),
    ("pkg.mod", AppTarget("pkg.mod:create_app", True, ".", "pkg/mod.py")),
    ("src/svc/main.py", AppTarget("svc.main:application", False, "src", "src/svc/main.py")),
    ("installed.module:app", AppTarget("installed.module:app", False, ".", "")),  # not here: taken as is
])
def test_app_from_the_command_line(tmp_path: Path, argument: str, expected: AppTarget) -> None:
    tree(tmp_path, {"main.py": "app = 1\ndef other():\n    return app\n",
                    "pkg/__init__.py": "", "pkg/mod.py": "def create_app():\n    ...\n",
                    "src/svc/__init__.py": "", "src/svc/main.py": "application = 2\n"})
    assert from_argument(argument, tmp_path) == expected


@pytest.mark.parametrize("argument, fragment", [
    ("missing.py", "missing.py is not a file"),
    ("main:", "is not an app; expected module:attribute"),
    ("my-app:app", "is not an app"),
    ("nothere", "no nothere.py under ."),
])
def test_an_unusable_app_argument_says_what_was_expected(tmp_path: Path, argument: str, fragment: str) -> None:
    tree(tmp_path, {"main.py": "app = 1\n"})
    problem = from_argument(argument, tmp_path)
    assert isinstance(problem, str) and fragment in problem, problem
    assert "main.py, src/app/main.py" in problem


def test_only_names_the_module_binds_count() -> None:
    names = definitions("import config\nconfig.app = 1\nregistry['app'] = 2\napp_name, (application, *rest) = f()\n")
    assert "app" not in names and names["application"] == "value" and names["config"] == "value"
