"""Reading ``.env`` with python-dotenv's parser, keeping line numbers for values and errors.

Values follow python-dotenv's rules (quotes, escapes, ``${VAR}`` and ``${VAR:-default}``
interpolation from earlier lines and the environment), with limits python-dotenv does not have:

* a malformed line, or a line without ``=``, is reported by its number, never quoted (a pasted
  bare secret would be printed);
* a value holding a NUL byte or a lone surrogate (``"\\x00"``, ``"\\ud800"``) is refused: no
  process can be started with it in its environment;
* interpolation is capped: ``B=${A}${A}``, ``C=${B}${B}``... would otherwise grow exponentially.
  A value longer than :data:`MAX_VALUE_LENGTH` or a file expanding beyond
  :data:`MAX_TOTAL_LENGTH` is refused, with its line.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv.parser import parse_stream
from dotenv.variables import parse_variables

from supervisor.errors import Problem

# Linux refuses a single environment string over 128 KiB (MAX_ARG_STRLEN), the whole environment
# well before a few MiB: what would fail at the first worker start fails here instead.
MAX_VALUE_LENGTH = 65536
MAX_TOTAL_LENGTH = 1 << 20
_EXPECTED = "expected NAME=value (a name of letters, digits and _, optionally quoted value)"


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


def unusable(text: str) -> str | None:
    """Why ``text`` cannot be part of a process environment, or None."""
    if "\x00" in text:
        return "holds a NUL byte"
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        return "holds a character that cannot be encoded (a lone surrogate such as \\ud800)"
    return None


def _name_problem(name: str) -> str | None:
    if "=" in name:
        return "has a name with '=' in it"
    if why := unusable(name):
        return f"has a name that {why}"
    return None


def parse_dotenv(text: str, path: str = ".env", environ: Mapping[str, str] | None = None) -> DotEnv:
    """Parse the text of a ``.env`` file. Malformed lines become problems with their line number.

    ``environ`` (default ``os.environ``) is what ``${VAR}`` reads for names the file has not set.
    Neither a problem nor this function's exceptions ever contain a value or a line's text.
    """
    env = os.environ if environ is None else environ
    problems: list[tuple[int, Problem]] = []
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    total = 0

    def report(line: int, message: str) -> None:
        problems.append((line, Problem(f"{path}:{line}", message)))

    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            report(line, f"cannot be parsed; {_EXPECTED}")
            continue
        if binding.key is None:
            continue  # a blank line or a comment
        if binding.value is None:
            # python-dotenv's "declared but unset" `NAME`; the text may be a pasted secret.
            report(line, "has no '='; expected NAME=value (the line is not shown: it may hold a secret)")
            continue
        if why := _name_problem(binding.key):
            report(line, f"{why}; {_EXPECTED}")
            continue
        value, too_long = _interpolate(binding.value, values, env, MAX_VALUE_LENGTH)
        if too_long:
            report(line, f"expands to more than {MAX_VALUE_LENGTH} characters (through ${{...}} "
                         f"interpolation or as written); expected at most {MAX_VALUE_LENGTH}")
            continue
        if why := unusable(value):
            report(line, f"{why}; expected a value a process environment can hold")
            continue
        total += len(value)
        if total > MAX_TOTAL_LENGTH:
            report(line, f"makes the file's values longer than {MAX_TOTAL_LENGTH} characters in all "
                         "(through ${...} interpolation?); expected a smaller environment")
            break
        values[binding.key] = value
        lines[binding.key] = line
    ordered = tuple(p for _, p in sorted(problems, key=lambda lp: lp[0]))
    return DotEnv(path=path, values=values, lines=lines, problems=ordered, exists=True)


def _interpolate(raw: str, earlier: Mapping[str, str], environ: Mapping[str, str],
                 limit: int) -> tuple[str, bool]:
    """python-dotenv's interpolation (earlier lines win over the environment), stopping at
    ``limit`` characters instead of building the whole string: (value, too long)."""
    pieces: list[str] = []
    size = 0
    for atom in parse_variables(raw):
        name = getattr(atom, "name", None)
        if name is None:
            piece = atom.resolve({})
        else:
            found = earlier.get(name, environ.get(name))
            default = getattr(atom, "default", None)
            piece = found if found is not None else (default or "")
        size += len(piece)
        if size > limit:
            return "", True
        pieces.append(piece)
    return "".join(pieces), False


def load_dotenv_file(path: Path, environ: Mapping[str, str] | None = None) -> DotEnv:
    """Read ``path`` if it exists; a missing ``.env`` is not an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DotEnv(path=str(path))
    except UnicodeDecodeError as exc:
        return DotEnv(path=str(path), problems=(Problem(str(path), f"cannot be read: byte {exc.start} "
                                                                   "is not UTF-8; expected a UTF-8 text file"),))
    except OSError as exc:
        return DotEnv(path=str(path), problems=(Problem(str(path), f"cannot be read: {exc.strerror}"),))
    return parse_dotenv(text, str(path), environ)
