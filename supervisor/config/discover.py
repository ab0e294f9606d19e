"""The app to serve, from the command line or found in the project, without importing it.

``python -m supervisor up main:app``, ``up main.py`` and ``up src/app/main.py`` name it as uvicorn
and fastapi-cli accept it; with no name and no ``[app] app``, the usual files are looked for
(:data:`CANDIDATES`) and in them an ``app`` or ``application`` (or a ``create_app`` factory).

Pure functions of the file tree: files are read and parsed with :mod:`ast`, never imported, since
importing would run the user's code (and its imports, and their side effects) in the supervisor
process. A path implies its import root and module as fastapi-cli does: from the file's
directory, walk up while the directory is a package (holds ``__init__.py``), so
``src/app/main.py`` with ``src/app/__init__.py`` is the module ``app.main`` imported from ``src``.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

# Looked for in this order, relative to the project directory (or to [app] app_dir when set).
CANDIDATES = ("main.py", "app.py", "api.py", "app/main.py", "src/*/main.py")
# Attributes that are the app, in order of preference; then the factories, called for the app.
ATTRIBUTES = ("app", "application")
FACTORIES = ("create_app",)


@dataclass(frozen=True)
class AppTarget:
    """What the workers import: ``module:attribute`` from ``app_dir``."""

    app: str  # "module:attribute"
    factory: bool  # the attribute is a function that returns the app
    app_dir: str  # the import root: relative to the project directory ("." or "src"), or absolute
    file: str = ""  # the file it is defined in, as shown to the user ("src/app/main.py"); "" if not found


@dataclass(frozen=True)
class Discovery:
    """The app found in a project, or None and what was tried (one entry per place looked at)."""

    target: AppTarget | None
    tried: tuple[str, ...]


def definitions(source: str) -> dict[str, str]:
    """The module-level names ``source`` binds, each with how: ``"def"`` (a function),
    ``"async def"``, ``"value"`` (an assignment, an import, a class). Raises SyntaxError.

    Statements under a module-level ``if``/``try``/``with`` count (``if DEBUG: app = ...``);
    function and class bodies do not.
    """
    found: dict[str, str] = {}

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef):
                found.setdefault(node.name, "def" if _no_required_args(node) else "value")
            elif isinstance(node, ast.AsyncFunctionDef):
                found.setdefault(node.name, "async def")
            elif isinstance(node, ast.ClassDef):
                found.setdefault(node.name, "value")
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for name in _bound_names(target):
                        found.setdefault(name, "value")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    found.setdefault(alias.asname or alias.name.split(".")[0], "value")
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for part in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                    visit(part)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(ast.parse(source).body)
    return found


def _bound_names(target: ast.expr) -> list[str]:
    """The names an assignment target binds: ``app``, ``app, other``; not ``module.app`` (an
    attribute of something else) or ``apps[0]``."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _bound_names(element)]
    if isinstance(target, ast.Starred):
        return _bound_names(target.value)
    return []


def _no_required_args(node: ast.FunctionDef) -> bool:
    """A factory is called with no arguments: a sync ``def`` that needs some (``def app(scope)``,
    an ASGI2 app) is the app itself."""
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    required_kw = [a for a, default in zip(args.kwonlyargs, args.kw_defaults, strict=True) if default is None]
    return len(positional) <= len(args.defaults) and not required_kw


def app_attribute(names: dict[str, str]) -> tuple[str, bool] | None:
    """The attribute that is the app, and whether it is a factory, from :func:`definitions`."""
    for name in ATTRIBUTES:
        if name in names:
            return name, names[name] == "def"
    for name in FACTORIES:
        if names.get(name) == "def":
            return name, True
    return None


def import_root(file: Path) -> tuple[Path, str]:
    """The directory ``file`` is imported from and its dotted module name, as fastapi-cli finds
    them: walk up while the directory is a package whose name can be imported."""
    root, module = file.parent, [file.stem]
    while (root / "__init__.py").is_file() and root.name.isidentifier() and root.parent != root:
        module.insert(0, root.name)
        root = root.parent
    return root, ".".join(module)


def _shown(path: Path, project_dir: Path) -> str:
    try:
        return str(path.relative_to(project_dir))
    except ValueError:
        return str(path)


def _app_dir(root: Path, project_dir: Path) -> str:
    try:
        return os.path.relpath(root, project_dir) if root.is_relative_to(project_dir) else str(root)
    except ValueError:
        return str(root)


def target_of_file(file: Path, project_dir: Path, attribute: str | None = None) -> AppTarget | str:
    """The app defined in ``file`` (its ``attribute``, or the one :func:`app_attribute` picks);
    a string says why there is none."""
    shown = _shown(file, project_dir)
    try:
        names = definitions(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return f"{shown} cannot be read ({exc})"
    except (SyntaxError, ValueError) as exc:  # ValueError: a NUL byte in the source
        line = f" line {exc.lineno}" if isinstance(exc, SyntaxError) and exc.lineno else ""
        return f"{shown} cannot be parsed (a syntax error{line})"
    if attribute is not None:
        factory = names.get(attribute) == "def"
    else:
        chosen = app_attribute(names)
        if chosen is None:
            return f"{shown} has no {', '.join(ATTRIBUTES)} or {' or '.join(FACTORIES)}()"
        attribute, factory = chosen
    root, module = import_root(file)
    if not all(part.isidentifier() for part in module.split(".")):
        return f"{shown} cannot be imported: {module!r} is not a module name"
    return AppTarget(f"{module}:{attribute}", factory, _app_dir(root, project_dir), shown)


def discover(project_dir: Path, app_dir: str = ".") -> Discovery:
    """The first of :data:`CANDIDATES` (under ``app_dir``) that defines an app."""
    base = (project_dir / app_dir).resolve() if app_dir != "." else project_dir
    tried: list[str] = []
    for pattern in CANDIDATES:
        files = sorted(base.glob(pattern)) if "*" in pattern else [base / pattern]
        files = [f for f in files if f.is_file()]
        if not files:
            tried.append(f"{_shown(base / pattern, project_dir)} (no such file)")
        for file in files:
            found = target_of_file(file, project_dir)
            if isinstance(found, AppTarget):
                return Discovery(found, tuple(tried))
            tried.append(found)
    return Discovery(None, tuple(tried))


def module_file(app_dir: Path, module: str) -> Path | None:
    """The source file of ``module`` under ``app_dir`` (``pkg/mod.py`` or ``pkg/mod/__init__.py``)."""
    path = app_dir.joinpath(*module.split("."))
    for candidate in (path.with_name(path.name + ".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def from_argument(argument: str, project_dir: Path, app_dir: str = ".") -> AppTarget | str:
    """The app named on the command line: ``module:attribute`` (from ``app_dir``), a file
    (``main.py``, ``src/app/main.py``, optionally ``:attribute``; relative to the project
    directory) or a module (``app.main``); a string says why it cannot be served.

    A factory is told from the source where it can be found: the attribute is a plain ``def``.
    """
    expected = "expected module:attribute (main:app), a file (main.py, src/app/main.py) or a module (app.main)"
    path_part, _, attribute = argument.partition(":")
    if not path_part or (":" in argument and not attribute.isidentifier()):
        return f"{argument!r} is not an app; {expected}"
    if path_part.endswith(".py") or "/" in path_part:
        file = Path(path_part) if Path(path_part).is_absolute() else project_dir / path_part
        if not file.is_file():
            return f"{argument!r}: {_shown(file, project_dir)} is not a file; {expected}"
        return target_of_file(file, project_dir, attribute or None)
    if not all(part.isidentifier() for part in path_part.split(".")):
        return f"{argument!r} is not an app; {expected}"
    source = module_file(project_dir / app_dir, path_part)
    if attribute:  # module:attribute, as uvicorn takes it; the module may be installed, not here
        found = target_of_file(source, project_dir, attribute) if source is not None else None
        factory = isinstance(found, AppTarget) and found.factory
        return AppTarget(argument, factory, app_dir, found.file if isinstance(found, AppTarget) else "")
    if source is None:
        under = _shown(project_dir / app_dir, project_dir)
        return f"{argument!r}: no {path_part.replace('.', '/')}.py under {under}; {expected}"
    found = target_of_file(source, project_dir)
    if isinstance(found, AppTarget):  # keep the module as named, from app_dir
        return AppTarget(f"{path_part}:{found.app.partition(':')[2]}", found.factory, app_dir, found.file)
    return found
