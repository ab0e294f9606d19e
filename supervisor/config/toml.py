"""``supervisor.toml``: parsed once with :mod:`tomllib` into frozen, typed settings.

Every section is a frozen dataclass whose fields carry their own constraints, so one generic
reader can check types and ranges and report *every* problem with the key, the bad value, the
expected form and the line it is on. Environment variables that override a setting (``PORT``,
``SUPERVISOR_MODE``, ...) are applied later, in :mod:`supervisor.config.settings`, so that this module
stays a pure function of the file's text.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import shlex
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from supervisor.config.envschema import VarSpec, parse_var_spec
from supervisor.config.locator import Locator
from supervisor.errors import ConfigError, Problem
from supervisor.programs.spec import CONDITIONS, ProgramSpec, check_dependencies, parse_program
from supervisor.secrets import is_secret_name


def _opt(default: Any = MISSING, *, lo: float | None = None, hi: float | None = None,
         choices: tuple[str, ...] | None = None, doc: str = "", command: bool = False) -> Any:
    """A dataclass field with its validation bounds kept in metadata.

    ``command``: a list of strings that may also be written as one string, split like a shell
    would (:func:`shlex.split`), e.g. ``migrate = "alembic upgrade head"``.
    """
    meta = {"lo": lo, "hi": hi, "choices": choices, "doc": doc, "command": command}
    if isinstance(default, list):
        return field(default_factory=functools.partial(list, default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SupervisorSection:
    mode: str = _opt("development", choices=("development", "production"))
    env_file: str = _opt(".env")
    runtime_dir: str = _opt(".supervisor")
    # A symlinked runtime directory is refused unless this says it is meant (a cloned repository
    # could point .supervisor at a directory others can write).
    allow_runtime_dir_symlink: bool = _opt(False)
    stop_timeout: float = _opt(10.0, lo=0.1, hi=3600)
    log_level: str = _opt("info", choices=("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class ServerSection:
    host: str = _opt("127.0.0.1")
    port: int = _opt(8000, lo=0, hi=65535)
    port_range: int = _opt(20, lo=0, hi=1000)
    strict_port: bool = _opt(False)
    backlog: int = _opt(2048, lo=1, hi=65535)


@dataclass(frozen=True)
class AppSection:
    # "": the app named on the command line, a Procfile's web line, or the one found in the
    # project (supervisor.config.discover); this repository's supervisor.toml names its example.
    app: str = _opt("")
    factory: bool = _opt(False)
    workers: int = _opt(1, lo=1, hi=64)
    app_dir: str = _opt(".")
    ready_timeout: float = _opt(60.0, lo=1, hi=3600)
    # Programs the app starts after, with a condition each ({ migrate = "completed" }); read by
    # _read_app, since the generic reader takes no tables.
    depends_on: tuple[tuple[str, str], ...] = ()
    # Seconds a serving worker's event loop may go without a heartbeat before the worker counts as
    # hung (start-up is ready_timeout's). None: 30 in production, off in development; 0: off.
    hang_timeout: float | None = _opt(None, lo=0, hi=86400)
    heartbeat_interval: float = _opt(1.0, lo=0.05, hi=10)
    # Recycling limits (0: off): a worker past one is replaced blue/green, one slot at a time.
    max_requests: int = _opt(0, lo=0, hi=100_000_000)
    max_requests_jitter: int = _opt(0, lo=0, hi=100_000_000)
    max_rss: float = _opt(0.0, lo=0, hi=1_048_576)  # MiB of the worker's resident memory
    max_age: float = _opt(0.0, lo=0, hi=31_536_000)  # seconds since the worker started
    max_age_jitter: float = _opt(0.0, lo=0, hi=31_536_000)
    # uvicorn's event loop and HTTP protocol; auto: uvloop and httptools when installed, as uvicorn.
    loop: str = _opt("auto", choices=("auto", "asyncio", "uvloop"))
    http: str = _opt("auto", choices=("auto", "h11", "httptools"))
    # auto: ASGI 3 or 2 as uvicorn tells them apart, WSGI for an (environ, start_response) callable.
    interface: str = _opt("auto", choices=("auto", "asgi3", "asgi2", "wsgi"))
    # A logging config file for the workers' uvicorn (relative to the project); "": uvicorn's own.
    log_config: str = _opt("")


# The logging config files uvicorn reads: JSON, YAML (needs PyYAML), else logging.config.fileConfig.
LOG_CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".ini", ".conf", ".cfg")


def log_config_problem(value: str) -> str:
    """What is wrong with an ``[app] log_config`` / ``--log-config`` value's form ("" when nothing)."""
    if value and not value.lower().endswith(LOG_CONFIG_SUFFIXES):
        return (f"{value!r} is not a logging config file uvicorn reads; expected a path ending in "
                f"{', '.join(LOG_CONFIG_SUFFIXES)}")
    return ""


@dataclass(frozen=True)
class RestartSection:
    initial_delay: float = _opt(0.5, lo=0, hi=3600)
    max_delay: float = _opt(30.0, lo=0, hi=86400)
    multiplier: float = _opt(2.0, lo=1, hi=100)
    jitter: float = _opt(0.2, lo=0, hi=1)
    min_uptime: float = _opt(1.0, lo=0, hi=86400)
    crash_loop_failures: int = _opt(5, lo=1, hi=1000)
    crash_loop_window: float = _opt(60.0, lo=1, hi=86400)


@dataclass(frozen=True)
class DatabaseSection:
    url_env: str = _opt("DATABASE_URL")
    wait: bool = _opt(True)
    connect_timeout: float = _opt(5.0, lo=0.1, hi=600)
    initial_delay: float = _opt(0.25, lo=0, hi=600)
    max_delay: float = _opt(5.0, lo=0, hi=3600)
    deadline: float = _opt(60.0, lo=0, hi=86400)
    probe_interval: float = _opt(10.0, lo=0.1, hi=86400)
    # Run once, after the database answers and before the first worker (schema migrations);
    # empty: nothing. Runs in [app] app_dir with the workers' environment.
    migrate: list[str] = _opt([], command=True)
    migrate_timeout: float = _opt(300.0, lo=1, hi=86400)


@dataclass(frozen=True)
class ReloadSection:
    # None: on in development mode, off in production mode.
    enabled: bool | None = _opt(None)
    paths: list[str] = _opt(["."])
    include: list[str] = _opt(["*.py", ".env", "supervisor.toml"])
    exclude: list[str] = _opt([])
    debounce: float = _opt(0.05, lo=0, hi=60)
    # None: poll where the mount table says file events do not arrive (WSL drives, network and
    # FUSE file systems, host bind mounts in a container); true: always; false: never.
    poll: bool | None = _opt(None)
    poll_interval: float = _opt(0.3, lo=0.05, hi=60)
    # Development mode: HTML pages reload once the new workers serve (needs the status API).
    browser: bool = _opt(True)
    # Fork workers from a template process that has the app's libraries imported already.
    # None: when reload is on; false: always fresh interpreters; true: also without reload.
    template: bool | None = _opt(None)
    # With a template and reload on: a project-stage template keeps the project's unchanged
    # modules imported too (supervisor.warm.stage); false: every fork imports the whole project.
    project_stage: bool = _opt(True)


@dataclass(frozen=True)
class StatusSection:
    enabled: bool = _opt(True)
    host: str = _opt("127.0.0.1")
    port: int = _opt(8787, lo=0, hi=65535)
    token: str = _opt("")
    # Anyone who can connect may hold connections open: cap them and bound how long a connection
    # may take to send a request (from its start or the previous response), so idle and
    # slow-loris connections cannot exhaust the supervisor's descriptors.
    max_connections: int = _opt(64, lo=2, hi=10000)
    header_timeout: float = _opt(10.0, lo=0.1, hi=300)


@dataclass(frozen=True)
class Config:
    """The whole of ``supervisor.toml``, validated."""

    supervisor: SupervisorSection = field(default_factory=SupervisorSection)
    server: ServerSection = field(default_factory=ServerSection)
    app: AppSection = field(default_factory=AppSection)
    restart: RestartSection = field(default_factory=RestartSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    reload: ReloadSection = field(default_factory=ReloadSection)
    status: StatusSection = field(default_factory=StatusSection)
    env: dict[str, VarSpec] = field(default_factory=dict)
    programs: dict[str, ProgramSpec] = field(default_factory=dict)
    procfile: bool = False  # the programs come from the project's Procfile
    path: str = "supervisor.toml"
    # Where each key is in the file read, for messages made after parsing (see Config.where).
    locator: Locator = field(default_factory=lambda: Locator(""), compare=False, repr=False)

    def where(self, table: str, key: str | None = None) -> str:
        """The place of ``[table] key`` in the file this came from, for a message:
        ``pyproject.toml:31 [tool.webapp-supervisor.app] app_dir``."""
        return self.locator.where(table, key, self.path)


_SECTIONS: dict[str, type] = {
    "supervisor": SupervisorSection,
    "server": ServerSection,
    "app": AppSection,
    "restart": RestartSection,
    "database": DatabaseSection,
    "reload": ReloadSection,
    "status": StatusSection,
}


def _where(path: str, locator: Locator, table: str, key: str | None = None) -> str:
    return locator.where(table, key, path)


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if typing.get_origin(tp) is list:
        return "a list of strings"
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type_name(inner[0])
    return names.get(tp, str(tp))


def _coerce(tp: Any, value: Any) -> tuple[bool, Any]:
    """Return (ok, value) for a TOML value against a field type; ints are accepted for floats."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(inner[0], value)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if typing.get_origin(tp) is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return ok, list(value) if ok else value
    return False, value


def _command(raw: Any) -> list[str] | str:
    """argv from a string (shell-split) or a list of strings; a str result is the problem."""
    expected = 'expected a command line such as "python -m alembic upgrade head" or a list of strings'
    if isinstance(raw, str):
        try:
            return shlex.split(raw)
        except ValueError as exc:  # "No closing quotation"
            return f"{raw!r} is not a valid command line ({exc}); {expected}"
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        return f"{raw!r} is not a command; {expected}"
    if raw and not raw[0].strip():
        return f"{raw!r} starts with an empty program name; {expected}"
    return list(raw)


def field_bounds(section: type, key: str) -> tuple[int, int]:
    """The ``lo``/``hi`` a section's field declares: ``field_bounds(AppSection, "workers")``, so
    that command-line options check the same range as the file."""
    meta = next(f.metadata for f in fields(section) if f.name == key)
    return int(meta["lo"]), int(meta["hi"])


def _kind(value: Any) -> str:
    """The TOML type of ``value`` in words, for messages that must not quote it."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "a table"}
    return next((name for tp, name in names.items() if type(value) is tp), "a date or time")


def _value_problem(key: str, value: Any, lo: float | None, hi: float | None) -> str | None:
    """What makes an already type-checked value unusable whatever its range: non-finite numbers
    (``nan`` passes every comparison), NUL bytes (no path, argument or environment can hold one),
    an unusable token."""
    if isinstance(value, float) and not math.isfinite(value):
        bounds = f" from {lo:g} to {hi:g}" if lo is not None and hi is not None else ""
        return f"{value!r} is not a finite number; expected a number{bounds}"
    texts = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    if any("\x00" in t for t in texts):
        return "the value holds a NUL byte (\\u0000); expected text without one"
    if key == "token" and value and not TOKEN_FORM.fullmatch(value):
        return ("the value is not usable as a token; expected 16 to 256 visible ASCII characters "
                "without spaces, or \"\" for a new random token at each start")
    return None


def _bound(value: float | None) -> str:
    """A range bound as written in the file: ``0.05``, ``100000000`` (not ``1e+08``)."""
    if value is not None and float(value).is_integer():
        return str(int(value))
    return f"{value:g}" if value is not None else "?"


# A bearer token travels in an HTTP header and sits alone on the token file's one line.
TOKEN_FORM = re.compile(r"[\x21-\x7e]{16,256}")


def _read_section(cls: type, data: Any, table: str, path: str, locator: Locator,
                  problems: list[Problem]) -> Any:
    if not isinstance(data, dict):
        problems.append(Problem(_where(path, locator, table), f"expected a table, got {_kind(data)}"))
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            problems.append(Problem(
                _where(path, locator, table, key),
                f"unknown key {key!r}; expected one of {', '.join(sorted(known))}{suggestion}",
            ))
            continue
        f = known[key]
        if f.metadata.get("command"):
            command = _command(raw)
            if isinstance(command, str):
                problems.append(Problem(_where(path, locator, table, key), command))
            else:
                values[key] = command
            continue
        ok, value = _coerce(hints[key], raw)
        if not ok:
            shown = "the value" if is_secret_name(key) else repr(raw)  # [status] token
            problems.append(Problem(_where(path, locator, table, key),
                                    f"{shown} is not {_type_name(hints[key])}"))
            continue
        meta = f.metadata
        problem = _value_problem(key, value, meta.get("lo"), meta.get("hi"))
        if problem:
            problems.append(Problem(_where(path, locator, table, key), problem))
            continue
        if meta.get("choices") and value not in meta["choices"]:
            expected = " or ".join(repr(c) for c in meta["choices"])
            problems.append(Problem(_where(path, locator, table, key),
                                    f"{value!r} is not allowed; expected {expected}"))
            continue
        lo, hi = meta.get("lo"), meta.get("hi")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                problems.append(Problem(_where(path, locator, table, key),
                                        f"{value!r} is out of range; expected {_bound(lo)} to {_bound(hi)}"))
                continue
        values[key] = value
    return cls(**values)


def _cross_checks(cfg: Config, path: str, locator: Locator, problems: list[Problem]) -> None:
    r = cfg.restart
    if r.max_delay < r.initial_delay:
        problems.append(Problem(
            _where(path, locator, "restart", "max_delay"),
            f"{r.max_delay:g} is smaller than initial_delay ({r.initial_delay:g}); "
            "expected max_delay >= initial_delay"))
    if cfg.app.app and ":" not in cfg.app.app:
        problems.append(Problem(
            _where(path, locator, "app", "app"),
            f"{cfg.app.app!r} is not an import string; expected 'module:attribute', "
            "e.g. 'webapp.app:app'"))
    app = cfg.app
    if app.hang_timeout and app.hang_timeout < 2 * app.heartbeat_interval:
        problems.append(Problem(
            _where(path, locator, "app", "hang_timeout"),
            f"{app.hang_timeout:g} is shorter than two heartbeats (heartbeat_interval = "
            f"{app.heartbeat_interval:g}); expected at least {2 * app.heartbeat_interval:g}, or 0 to turn "
            "hang detection off"))
    if log_config_problem(app.log_config):
        problems.append(Problem(_where(path, locator, "app", "log_config"), log_config_problem(app.log_config)))
    d = cfg.database
    if d.max_delay < d.initial_delay:
        problems.append(Problem(
            _where(path, locator, "database", "max_delay"),
            f"{d.max_delay:g} is smaller than initial_delay ({d.initial_delay:g}); "
            "expected max_delay >= initial_delay"))


def parse_config(text: str, path: str = "supervisor.toml", table: str = "") -> Config:
    """Parse and validate the text of a ``supervisor.toml``; raise :class:`ConfigError` with all problems.

    ``table``: the dotted table of the document that holds the settings, for ``pyproject.toml``
    (``tool.webapp-supervisor``, :data:`PYPROJECT_TABLE`); its sections are the same, under it.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(path, f"not valid TOML: {exc}")]) from None
    locator = Locator(text, path, table)
    data: Any = document
    for part in filter(None, table.split(".")):
        data = data.get(part, {}) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise ConfigError([Problem(locator.where(""), f"expected a table, got {_kind(data)}")])
    problems: list[Problem] = []
    sections: dict[str, Any] = {}
    env_specs: dict[str, VarSpec] = {}
    programs: dict[str, ProgramSpec] = {}
    app_deps: tuple[tuple[str, str], ...] = ()

    def program_where(name: str) -> Any:
        return lambda key: _where(path, locator, f"programs.{name}", key)

    for table, raw in data.items():
        if table == "app" and isinstance(raw, dict) and "depends_on" in raw:
            raw = dict(raw)
            deps = raw.pop("depends_on")
            if isinstance(deps, dict) and all(c in CONDITIONS for c in deps.values()):
                app_deps = tuple(deps.items())
            else:
                problems.append(Problem(_where(path, locator, "app", "depends_on"),
                                        f"{deps!r} is not a table of program = condition; expected conditions "
                                        f"{', '.join(map(repr, CONDITIONS))}, e.g. {{ migrate = \"completed\" }}"))
        if table in _SECTIONS:
            sections[table] = _read_section(_SECTIONS[table], raw, table, path, locator, problems)
        elif table == "programs":
            if not isinstance(raw, dict):
                problems.append(Problem(_where(path, locator, "programs"), "expected [programs.NAME] tables"))
                continue
            for name, spec in raw.items():
                program = parse_program(name, spec, program_where(name), problems)
                if program is not None:
                    programs[name] = program
        elif table == "env":
            if not isinstance(raw, dict):
                problems.append(Problem(_where(path, locator, "env"), "expected a table of variables"))
                continue
            for name, spec in raw.items():
                where = _where(path, locator, f"env.{name}") if isinstance(spec, dict) else \
                    _where(path, locator, "env", name)
                parsed = parse_var_spec(name, spec, where, problems)
                if parsed is not None:
                    env_specs[name] = parsed
        elif not isinstance(raw, dict):
            problems.append(Problem(path, f"top-level key {table!r} belongs in a section; expected it under "
                                          f"a table such as [{locator.name('server')}] or [{locator.name('app')}]"))
        else:
            expected = ", ".join(sorted([*_SECTIONS, "env", "programs"]))
            hint = difflib.get_close_matches(table, [*_SECTIONS, "env", "programs"], n=1)
            suggestion = f"; did you mean [{locator.name(hint[0])}]?" if hint else ""
            problems.append(Problem(_where(path, locator, table),
                                    f"unknown section [{locator.name(table)}]; expected one of {expected}{suggestion}"))
    if app_deps:
        sections["app"] = dataclasses.replace(sections.get("app", AppSection()), depends_on=app_deps)
    check_dependencies(programs, app_deps, lambda name: _where(path, locator, "app" if name == "web" else
                                                                f"programs.{name}", "depends_on"), problems)
    cfg = Config(**sections, env=env_specs, programs=programs, path=path, locator=locator)
    _cross_checks(cfg, path, locator, problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(path: Path, required: bool = False) -> Config:
    """Read ``path``; a missing file means all defaults (the embedded default needs no file),
    unless ``required``: a file named with ``--config`` must exist. A ``pyproject.toml`` is read
    for its ``[tool.webapp-supervisor]`` table."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError([missing_config(path)]) from None
        return Config(path=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), f"cannot be read: {exc}")]) from None
    if path.name == PYPROJECT:
        if not has_tool_table(text):
            raise ConfigError([Problem(str(path), f"has no [{PYPROJECT_TABLE}] table; expected the "
                                                  "settings there, or a supervisor.toml")])
        return parse_config(text, str(path), PYPROJECT_TABLE)
    return parse_config(text, str(path))


PYPROJECT = "pyproject.toml"
PYPROJECT_TABLE = "tool.webapp-supervisor"
_TOOL_HEADER = re.compile(r'^\s*\[\s*tool\s*\.\s*"?webapp-supervisor"?\s*[.\]]', re.M)


def has_tool_table(text: str) -> bool:
    """Whether a ``pyproject.toml``'s text has a ``[tool.webapp-supervisor...]`` header (read
    without parsing: another tool's broken table is not ours to report)."""
    return bool(_TOOL_HEADER.search(text))


def config_file(project_dir: Path, explicit: Path | None = None) -> Path:
    """The file the settings are read from: ``explicit`` (``--config``), else the project's
    ``supervisor.toml`` when it exists, else its ``pyproject.toml`` when that has a
    ``[tool.webapp-supervisor]`` table, else ``supervisor.toml`` (missing: the defaults)."""
    if explicit is not None:
        return explicit
    own = project_dir / "supervisor.toml"
    if own.exists():
        return own
    return project_dir / PYPROJECT if pyproject_has_table(project_dir) else own


def pyproject_has_table(project_dir: Path) -> bool:
    try:
        return has_tool_table((project_dir / PYPROJECT).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return False


def missing_config(path: Path) -> Problem:
    return Problem("--config", f"{str(path)!r} does not exist; expected the path of a supervisor.toml "
                               "(without --config, the project's own is used)")
