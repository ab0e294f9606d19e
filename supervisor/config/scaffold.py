"""``python -m supervisor init``: a commented ``supervisor.toml`` for the project as it is.

It names the app (APP, a Procfile's uvicorn ``web`` line, or the one found as ``up`` finds it:
:mod:`supervisor.config.discover`), declares in ``[env]`` the variables of ``.env.example`` and
``.env`` with a type guessed from their values, and turns the Procfile's other lines into
``[programs]``. Values are never copied into the file: ``.env`` is for values, ``supervisor.toml``
for their form. What it writes passes ``check`` against the ``.env`` and environment it was
written with: a variable whose value there does not fit the guess is declared a plain string.

Inference and rendering are pure (:func:`guess_env`, :func:`render`); :func:`cmd_init` reads the
project and writes the file, never over an existing one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from supervisor.config.discover import AppTarget, discover, from_argument
from supervisor.config.dotenv import DotEnv, load_dotenv_file
from supervisor.config.envschema import FALSE_WORDS, TRUE_WORDS, parse_var_spec, validate_environ
from supervisor.config.toml import PYPROJECT, PYPROJECT_TABLE, parse_config, pyproject_has_table
from supervisor.errors import EXIT_CONFIG, EXIT_OK, Problem
from supervisor.options import add_project_options
from supervisor.programs.procfile import read_procfile
from supervisor.programs.spec import ProgramSpec
from supervisor.secrets import is_secret_name

# Read by the supervisor itself, and checked whatever [env] says (supervisor.config.settings).
_BUILTIN = re.compile(r"^(PORT|SUPERVISOR_\w*)$")
_FLAG_NAME = re.compile(r"(^|_)(DEBUG|ENABLED?|DISABLED?|USE|ALLOW|VERBOSE)(_|$)", re.IGNORECASE)
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class EnvGuess:
    """One ``[env.NAME]`` table to write, and where the name was seen (``.env.example:3``)."""

    name: str
    type: str
    schemes: tuple[str, ...] = ()
    required: bool = False
    seen: str = ""
    note: str = ""


def guess_type(name: str, value: str) -> tuple[str, tuple[str, ...]]:
    """The ``[env]`` type that ``value`` of variable ``name`` has, and a URL's scheme.

    >>> guess_type("REDIS_URL", "redis://localhost:6379/0")
    ('url', ('redis',))
    >>> guess_type("DEBUG", "1"), guess_type("WORKERS", "1"), guess_type("API_PORT", "8001")
    (('boolean', ()), ('integer', ()), ('port', ()))
    """
    if is_secret_name(name):
        return "secret", ()
    text = value.strip()
    if text.lower() in TRUE_WORDS | FALSE_WORDS and (not text.isdigit() or _FLAG_NAME.search(name)):
        return "boolean", ()
    if re.fullmatch(r"[+-]?\d+", text):
        port_like = name == "PORT" or name.upper().endswith("_PORT")
        return ("port", ()) if port_like and 1 <= int(text) <= 65535 else ("integer", ())
    if "://" in text:
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            return "string", ()
        if parts.scheme and (parts.netloc or parts.path):
            return "url", (parts.scheme,)
    return "string", ()


def guess_env(example: DotEnv, actual: DotEnv) -> list[EnvGuess]:
    """An :class:`EnvGuess` per variable of ``example`` (``.env.example``) and ``actual`` (``.env``).

    The type fits every non-empty value seen; values that disagree make it a string. A variable
    is required when ``.env`` sets it, since ``check`` reads ``.env``, not the example.
    """
    guesses = []
    for name in dict.fromkeys([*example.values, *actual.values]):
        if _BUILTIN.match(name):
            continue
        values = [v for v in (example.values.get(name), actual.values.get(name)) if v]
        kinds = {guess_type(name, v) for v in values}
        types = {kind for kind, _ in kinds}
        seen = example.where(name) if name in example.values else actual.where(name)
        note = ""
        if len(types) == 1:
            kind = types.pop()
            schemes = tuple(sorted({s for _, found in kinds for s in found}))
        else:
            kind, schemes = ("secret" if is_secret_name(name) else "string"), ()
            if values:
                note = "its values do not agree on a type"
        if actual.values.get(name) == "" and kind != "string":
            kind, schemes, note = "string", (), "empty in .env"
        guesses.append(EnvGuess(name, kind, schemes, required=name in actual.values, seen=seen, note=note))
    return guesses


def fit_environment(guesses: list[EnvGuess], environ: Mapping[str, str]) -> list[EnvGuess]:
    """``guesses`` with each one the current ``.env`` and environment would fail made a string,
    so that the file written passes ``check`` as things are."""
    fitted = []
    for guess in guesses:
        problems: list[Problem] = []
        spec = parse_var_spec(guess.name, _spec_table(guess), guess.name, problems)
        if spec is not None and not problems and validate_environ({guess.name: spec}, environ)[1]:
            guess = replace(guess, type="secret" if is_secret_name(guess.name) else "string", schemes=(),
                            note="its current value is not the type its example suggests")
            if guess.type == "secret" and environ.get(guess.name) == "":
                guess = replace(guess, type="string")
        fitted.append(guess)
    return fitted


def _spec_table(guess: EnvGuess) -> dict[str, object]:
    table: dict[str, object] = {"type": guess.type}
    if guess.schemes:
        table["schemes"] = list(guess.schemes)
    if not guess.required:
        table["required"] = False
    if guess.type == "string" and is_secret_name(guess.name):
        table["secret"] = True
    return table


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (JSON's escapes are TOML's, but for DEL)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else toml_string(name)


def render(app: AppTarget, app_from: str, env: list[EnvGuess], programs: list[ProgramSpec],
           procfile_note: list[str], database_env: str = "DATABASE_URL") -> str:
    """The text of ``supervisor.toml``: the app, ``[env]`` and ``[programs]``, each commented."""
    lines = [
        "# Configuration of `python -m supervisor up`, written by `python -m supervisor init`.",
        "# Every key is optional; `python -m supervisor check` validates this file with .env and the environment.",
        "",
        "[supervisor]",
        '# mode = "development"     # or "production"; SUPERVISOR_MODE and --mode override',
        '# env_file = ".env"',
        "",
        "[server]",
        "# port = 8000              # PORT and --port override; taken: the next free port",
        "",
        f"[app]                       # {app_from}",
        f"app = {toml_string(app.app)}",
    ]
    if app.factory:
        lines.append("factory = true              # the attribute is a function that returns the app")
    if app.app_dir != ".":
        lines.append(f"app_dir = {toml_string(app.app_dir)}  # the workers import the app from here")
    lines.append("# workers = 1")
    if env:
        lines += ["", "# The variables the app reads (names from .env.example and .env; values stay there).",
                  "# Types: string, integer, boolean, port, url, secret (masked in every line printed)."]
    for guess in env:
        comment = f"# {guess.seen}" + (f"; {guess.note}" if guess.note else "")
        lines += ["", f"[env.{_key(guess.name)}]  {comment}", f"type = {toml_string(guess.type)}"]
        if guess.schemes:
            lines.append(f"schemes = [{', '.join(map(toml_string, guess.schemes))}]")
        if guess.type == "string" and is_secret_name(guess.name):
            lines.append("secret = true")
        if not guess.required:
            lines.append("required = false            # not set in .env")
        if guess.name == database_env:
            lines += ["# Unset in development mode, the workers get a SQLite file URL (sqlite+aiosqlite) in the",
                      "# runtime directory; [database] wait probes it before the first worker when it is set."]
    if programs or procfile_note:
        lines += ["", "# The Procfile's programs: while [programs] is here, the Procfile itself is not read."]
        lines += [f"# {note}" for note in procfile_note]
    for spec in programs:
        lines += ["", f"[programs.{_key(spec.name)}]  # {spec.line}", f"command = {toml_string(spec.command[0])}",
                  "shell = true                # run through /bin/sh, as the Procfile line was",
                  'port = "auto"               # a PORT of its own, as foreman and honcho give it']
    return "\n".join(lines) + "\n"


def _app(project_dir: Path, argument: str | None, procfile_app: str | None) -> tuple[AppTarget, str] | Problem:
    if argument is not None:
        target = from_argument(argument, project_dir)
        return (target, f"the app named to init: {argument}") if isinstance(target, AppTarget) \
            else Problem("APP", target)
    if procfile_app is not None:
        target = from_argument(procfile_app, project_dir)
        return (target if isinstance(target, AppTarget) else AppTarget(procfile_app, False, ".")), \
            "the Procfile's web line"
    found = discover(project_dir)
    if found.target is None:
        return Problem("APP", "none found; tried " + "; ".join(found.tried) +
                       ". Expected python -m supervisor init main:app (or main.py)")
    return found.target, f"found in {found.target.file}"


def cmd_init(args: argparse.Namespace) -> int:
    project_dir = Path(args.project_dir).resolve()
    target = Path(args.config) if args.config else project_dir / "supervisor.toml"
    if target.exists():
        return _refuse(f"{target} exists; init writes a new file only (move it away to start again, or "
                       "edit it: python -m supervisor check validates it)")
    if args.config is None and pyproject_has_table(project_dir):
        return _refuse(f"{project_dir / PYPROJECT} has a [{PYPROJECT_TABLE}] table already; a "
                       "supervisor.toml would take its place")
    procfile = read_procfile(project_dir)
    notes = [f"{problem}: left out" for problem in (procfile[1] if procfile else [])]
    chosen = _app(project_dir, args.app, procfile[0].app if procfile else None)
    if isinstance(chosen, Problem):
        return _refuse(str(chosen))
    app, app_from = chosen
    # Named relative to the project in the file's comments (".env.example:3", "Procfile:2").
    example = replace(load_dotenv_file(project_dir / ".env.example", {}), path=".env.example")
    actual = replace(load_dotenv_file(project_dir / ".env", os.environ), path=".env")
    env = fit_environment(guess_env(example, actual), {**actual.values, **os.environ})
    programs = [replace(spec, line=os.path.relpath(spec.line, project_dir))
                for spec in (procfile[0].programs.values() if procfile else [])]
    notes = [os.path.relpath(note, project_dir) if note.startswith(str(project_dir)) else note for note in notes]
    text = render(app, app_from, env, programs, notes)
    parse_config(text, str(target))  # what init writes must be valid: a ConfigError here is our bug
    try:
        with open(target, "x", encoding="utf-8") as file:  # "x": never over a file made meanwhile
            file.write(text)
    except FileExistsError:
        return _refuse(f"{target} exists; init writes a new file only")
    print(f"wrote {target}: app {app.app} ({app_from}), {len(env)} variable(s) declared, "
          f"{len(programs)} program(s) from the Procfile; python -m supervisor check validates it")
    return EXIT_OK


def _refuse(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_CONFIG


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``init`` to the CLI (called by :func:`supervisor.cli.build_parser`)."""
    p = sub.add_parser("init", help="write a commented supervisor.toml for this project (never over one)")
    p.add_argument("app", nargs="?", metavar="APP", help="the app, as for up (default: the one up would find)")
    add_project_options(p, "the project (main.py, .env.example, Procfile)")
    p.set_defaults(func=cmd_init)
