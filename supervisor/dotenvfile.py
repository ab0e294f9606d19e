"""Reading ``.env`` with python-dotenv, keeping line numbers for values and errors."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from supervisor.errors import Problem


@dataclass(frozen=True)
class DotEnv:
    path: str
    # repr=False: a Settings or DotEnv in a log line or traceback must not show secret values.
    values: dict[str, str] = field(default_factory=dict, repr=False)
    lines: dict[str, int] = field(default_factory=dict)  # name -> line it was (last) set on
    problems: tuple[Problem, ...] = ()
    exists: bool = False

    def where(self, name: str) -> str:
        return f"{self.path}:{self.lines[name]}" if name in self.lines else self.path


def parse_dotenv(text: str, path: str = ".env") -> DotEnv:
    """Parse the text of a ``.env`` file. Malformed lines become problems with their line number.

    Values are taken from python-dotenv (quotes, escapes, ``${VAR}`` interpolation); a malformed
    line is reported, never quoted, since it may hold a secret.
    """
    problems: list[tuple[int, Problem]] = []
    lines: dict[str, int] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            problems.append((line, Problem(
                f"{path}:{line}",
                "cannot be parsed; expected NAME=value (a name of letters, digits and _, "
                "optionally quoted value)")))
        elif binding.key is not None:
            lines[binding.key] = line
    # python-dotenv logs each malformed line itself (quoting nothing, but unasked); we report them.
    dotenv_logger = logging.getLogger("dotenv.main")
    was_disabled, dotenv_logger.disabled = dotenv_logger.disabled, True
    try:
        raw = dotenv_values(stream=io.StringIO(text), interpolate=True)
    finally:
        dotenv_logger.disabled = was_disabled
    values = {k: v for k, v in raw.items() if v is not None}
    # `NAME` with no `=` parses to None: python-dotenv's "declared but unset"; report it.
    for name, value in raw.items():
        if value is None:
            line = lines.get(name, 0)
            problems.append((line, Problem(f"{path}:{line} {name}", "has no value; expected NAME=value")))
    ordered = tuple(p for _, p in sorted(problems, key=lambda lp: lp[0]))
    return DotEnv(path=path, values=values, lines=lines, problems=ordered, exists=True)


def load_dotenv_file(path: Path) -> DotEnv:
    """Read ``path`` if it exists; a missing ``.env`` is not an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DotEnv(path=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        return DotEnv(path=str(path), problems=(Problem(str(path), f"cannot be read: {exc}"),))
    return parse_dotenv(text, str(path))
