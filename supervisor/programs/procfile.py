"""A ``Procfile`` (the foreman and honcho format) as programs, for projects without ``[programs]``.

Each ``name: command`` line is a program whose command runs through ``/bin/sh`` (Procfile
commands use ``$PORT`` and other shell syntax). A ``web`` line that runs uvicorn is the app of
``[app]``, served on the held socket with zero-drop reloads; its ``module:attribute`` becomes
``[app] app`` unless ``supervisor.toml`` sets one. Any other ``web`` line is refused with a hint:
the app's name is taken by ``[app]``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from supervisor.errors import Problem
from supervisor.programs.spec import WEB, ProgramSpec

_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+?)\s*$")
_IMPORT = re.compile(r"^[\w.]+:[\w.]+$")


@dataclass(frozen=True)
class Procfile:
    programs: dict[str, ProgramSpec]
    app: str | None  # the import string of a uvicorn ``web`` line


def parse_procfile(text: str, path: str = "Procfile") -> tuple[Procfile, list[Problem]]:
    """The programs of a Procfile, and a problem for each line that cannot be one."""
    programs: dict[str, ProgramSpec] = {}
    problems: list[Problem] = []
    app = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        match = _LINE.match(line)
        if match is None:
            problems.append(Problem(where, "is not a process line; expected 'name: command', e.g. "
                                           "'worker: python -m worker'"))
            continue
        name, command = match.groups()
        if name in programs or (name == WEB and app is not None):
            problems.append(Problem(where, f"defines {name!r} again; expected each name once"))
            continue
        if name == WEB:
            app = uvicorn_app(command)
            if app is None:
                problems.append(Problem(where, "web does not run uvicorn; the supervisor serves the app of "
                                               "[app] itself (set [app] app = \"module:attribute\"), so name "
                                               "this line otherwise to run it as a plain program"))
            continue
        # Every process gets a PORT of its own, as foreman and honcho give it.
        programs[name] = ProgramSpec(name=name, command=(command,), shell=True, port=0, line=where)
    return Procfile(programs, app), problems


def uvicorn_app(command: str) -> str | None:
    """``module:attribute`` of a ``uvicorn module:attribute --port $PORT`` command, else None."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if not any(Path(w).name == "uvicorn" or w == "uvicorn" for w in words[:3]):
        return None
    return next((w for w in words if _IMPORT.match(w)), None)


def read_procfile(project_dir: Path) -> tuple[Procfile, list[Problem]] | None:
    path = project_dir / "Procfile"
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return Procfile({}, None), [Problem(str(path), f"cannot be read: {exc}")]
    return parse_procfile(text, str(path))
