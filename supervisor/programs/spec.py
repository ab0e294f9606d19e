"""``[programs.NAME]`` tables: the project's other programs, validated like the rest of the file.

A program is a command the supervisor runs beside the web app (a background worker, a scheduler,
a frontend build watcher) or once before it (migrations, seeders), with dependencies, readiness
and liveness probes. ``web`` names the app of ``[app]``: other programs may depend on it, and
``[app] depends_on`` may name them.
"""

from __future__ import annotations

import difflib
import math
import re
import shlex
import signal
from dataclasses import dataclass, field
from typing import Any

from supervisor.errors import Problem

WEB = "web"
CONDITIONS = ("started", "ready", "completed")
RESTARTS = ("always", "on-failure", "never")
PROBE_KINDS = ("http", "tcp", "log", "exec")


@dataclass(frozen=True)
class Probe:
    """A readiness or liveness check: ``http`` (a path on the program's port), ``tcp`` (a port),
    ``log`` (a regex over the program's output) or ``exec`` (a command that exits 0)."""

    kind: str
    target: str | int | tuple[str, ...]
    interval: float = 0.5
    timeout: float = 30.0  # readiness: the whole wait; liveness: one check
    failures: int = 3  # liveness: consecutive failed checks before a restart


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    command: tuple[str, ...]
    shell: bool = False  # command[0] is a shell command line
    cwd: str = ""
    env: tuple[tuple[str, str], ...] = ()
    env_file: str = ""
    instances: int = 1
    restart: str = "always"
    success_exit_codes: tuple[int, ...] = (0,)
    once: bool = False
    depends_on: tuple[tuple[str, str], ...] = ()
    ready: Probe | None = None
    live: Probe | None = None
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0
    watch: tuple[str, ...] = ()
    reload: bool = True
    port: int | None = None  # 0: a free port chosen at start ("auto"), passed as PORT
    line: str = field(default="", compare=False)  # where it is defined, for messages


_KEYS = ("command", "shell", "cwd", "env", "env_file", "instances", "restart", "success_exit_codes", "once",
         "depends_on", "ready", "live", "stop_signal", "stop_timeout", "watch", "reload", "port")


class _Reader:
    """Collects every problem in one program's table, each naming file:line, key and expected form."""

    def __init__(self, name: str, where: Any, problems: list[Problem]) -> None:
        self.name = name
        self.where = where  # (key or None) -> "supervisor.toml:12 [programs.worker] key"
        self.problems = problems

    def fail(self, key: str | None, message: str) -> None:
        self.problems.append(Problem(self.where(key), message))

    def number(self, key: str, raw: Any, lo: float, hi: float, integer: bool = False) -> Any:
        ok = isinstance(raw, int) if integer else isinstance(raw, (int, float))
        if not ok or isinstance(raw, bool) or (isinstance(raw, float) and not math.isfinite(raw)):
            self.fail(key, f"{raw!r} is not {'an integer' if integer else 'a finite number'}")
            return None
        if not lo <= raw <= hi:
            self.fail(key, f"{raw!r} is out of range; expected {lo:g} to {hi:g}")
            return None
        return raw

    def text(self, key: str, raw: Any) -> str | None:
        if not isinstance(raw, str) or "\x00" in raw:
            self.fail(key, f"{raw!r} is not a string (without NUL bytes)")
            return None
        return raw

    def strings(self, key: str, raw: Any) -> tuple[str, ...] | None:
        if not isinstance(raw, list) or not all(isinstance(v, str) and "\x00" not in v for v in raw):
            self.fail(key, f"{raw!r} is not a list of strings")
            return None
        return tuple(raw)

    def flag(self, key: str, raw: Any) -> bool | None:
        if not isinstance(raw, bool):
            self.fail(key, f"{raw!r} is not true or false")
            return None
        return raw

    def command(self, raw: Any, shell: bool) -> tuple[str, ...] | None:
        expected = 'expected a command line such as "python -m worker --queue default" or a list of strings'
        if isinstance(raw, str) and raw.strip() and "\x00" not in raw:
            if shell:
                return (raw,)
            try:
                return tuple(shlex.split(raw))
            except ValueError as exc:
                self.fail("command", f"{raw!r} is not a valid command line ({exc}); {expected}")
                return None
        if isinstance(raw, list) and raw and all(isinstance(v, str) and "\x00" not in v for v in raw) \
                and raw[0].strip():
            return (shlex.join(raw),) if shell else tuple(raw)
        self.fail("command", f"{raw!r} is not a command; {expected}")
        return None

    def probe(self, key: str, raw: Any) -> Probe | None:
        expected = ('expected a table with one of http = "/path", tcp = PORT, log = "regex", '
                    'exec = ["cmd", "arg"], and optionally interval, timeout, failures')
        if not isinstance(raw, dict):
            self.fail(key, f"{raw!r} is not a table; {expected}")
            return None
        kinds = [k for k in PROBE_KINDS if k in raw]
        unknown = [k for k in raw if k not in (*PROBE_KINDS, "interval", "timeout", "failures")]
        if len(kinds) != 1 or unknown:
            what = f"unknown key {unknown[0]!r}" if unknown else "needs exactly one kind of check"
            self.fail(key, f"{what}; {expected}")
            return None
        kind = kinds[0]
        target: Any = raw[kind]
        if kind == "tcp":
            target = self.number(key, target, 1, 65535, integer=True)
        elif kind == "exec":
            target = self.command(target, shell=False)
        elif kind == "http":
            target = self.text(key, target)
            if target is not None and not target.startswith("/"):
                self.fail(key, f"{target!r} is not a path; expected one starting with '/', e.g. \"/health\"")
                target = None
        else:
            target = self.text(key, target)
            if target is not None:
                try:
                    re.compile(target)
                except re.error as exc:
                    self.fail(key, f"{target!r} is not a regular expression ({exc})")
                    target = None
        interval = self.number(key, raw.get("interval", 0.5), 0.01, 3600)
        timeout = self.number(key, raw.get("timeout", 30.0), 0.01, 86400)
        failures = self.number(key, raw.get("failures", 3), 1, 1000, integer=True)
        if None in (target, interval, timeout, failures):
            return None
        return Probe(kind, target, interval, timeout, failures)


def parse_program(name: str, data: Any, where: Any, problems: list[Problem]) -> ProgramSpec | None:
    """One ``[programs.NAME]`` table; None (with problems added) when it is unusable."""
    r = _Reader(name, where, problems)
    if not isinstance(data, dict):
        r.fail(None, "expected a table with at least command = ...")
        return None
    if name == WEB:
        r.fail(None, "'web' is the app of [app]; name this program otherwise, or configure the app in [app]")
        return None
    values: dict[str, Any] = {}
    for key in data:
        if key not in _KEYS:
            hint = difflib.get_close_matches(key, _KEYS, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            r.fail(key, f"unknown key {key!r}; expected one of {', '.join(sorted(_KEYS))}{suggestion}")
    if "shell" in data:
        values["shell"] = r.flag("shell", data["shell"])
    shell = bool(values.get("shell"))
    if "command" not in data:
        r.fail(None, "has no command; expected command = \"...\" (a command line or a list of strings)")
    else:
        values["command"] = r.command(data["command"], shell)
    for key in ("once", "reload"):
        if key in data:
            values[key] = r.flag(key, data[key])
    for key in ("cwd", "env_file"):
        if key in data:
            values[key] = r.text(key, data[key])
    if "watch" in data:
        values["watch"] = r.strings("watch", data["watch"])
    if "instances" in data:
        values["instances"] = r.number("instances", data["instances"], 0, 64, integer=True)
    if "stop_timeout" in data:
        values["stop_timeout"] = r.number("stop_timeout", data["stop_timeout"], 0.1, 3600)
    once = bool(values.get("once"))
    restart = data.get("restart", "never" if once else "always")
    if restart not in RESTARTS:
        r.fail("restart", f"{restart!r} is not allowed; expected {' or '.join(map(repr, RESTARTS))}")
    values["restart"] = restart
    if "success_exit_codes" in data:
        codes = data["success_exit_codes"]
        if not isinstance(codes, list) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                  and 0 <= c <= 255 for c in codes):
            r.fail("success_exit_codes", f"{codes!r} is not a list of exit codes; expected e.g. [0, 3]")
        else:
            values["success_exit_codes"] = tuple(codes)
    if "stop_signal" in data:
        sig = data["stop_signal"]
        if not isinstance(sig, str) or sig.upper().removeprefix("SIG") not in \
                {s.name.removeprefix("SIG") for s in signal.Signals}:
            r.fail("stop_signal", f"{sig!r} is not a signal name; expected e.g. \"SIGTERM\" or \"SIGINT\"")
        else:
            values["stop_signal"] = "SIG" + sig.upper().removeprefix("SIG")
    if "env" in data:
        env = data["env"]
        if not isinstance(env, dict) or not all(isinstance(v, (str, int, float, bool)) for v in env.values()):
            r.fail("env", "expected a table of NAME = \"value\"")
        else:
            values["env"] = tuple((k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in env.items())
    if "depends_on" in data:
        deps = data["depends_on"]
        if not isinstance(deps, dict) or not all(c in CONDITIONS for c in deps.values()):
            r.fail("depends_on", f"{deps!r} is not a table of program = condition; expected conditions "
                                 f"{', '.join(map(repr, CONDITIONS))}, e.g. {{ migrate = \"completed\" }}")
        else:
            values["depends_on"] = tuple(deps.items())
    for key in ("ready", "live"):
        if key in data:
            values[key] = r.probe(key, data[key])
    if "port" in data:
        port = data["port"]
        if port == "auto":
            values["port"] = 0
        else:
            values["port"] = r.number("port", port, 1, 65535, integer=True)
    if "command" not in values or any(v is None for v in values.values()):
        return None
    return ProgramSpec(name=name, line=where(None), **values)


def check_dependencies(specs: dict[str, ProgramSpec], app_deps: tuple[tuple[str, str], ...],
                       where: Any, problems: list[Problem]) -> None:
    """Unknown names (with "did you mean"), cycles and waits for a completion that cannot come,
    which are configuration errors."""
    known = [*specs, WEB]
    graph = {name: [dep for dep, _ in spec.depends_on] for name, spec in specs.items()}
    graph[WEB] = [dep for dep, _ in app_deps]
    for name, deps in graph.items():
        for dep in deps:
            if dep not in known:
                hint = difflib.get_close_matches(dep, known, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                problems.append(Problem(where(name), f"depends on {dep!r}, which is not a program; "
                                                     f"expected one of {', '.join(sorted(known))}{suggestion}"))
    cycle = find_cycle({n: [d for d in deps if d in graph] for n, deps in graph.items()})
    if cycle:
        problems.append(Problem(where(cycle[0]), "depends_on makes a cycle: " + " -> ".join(cycle)
                                + "; expected each program to start after the ones it depends on"))
    # Waiting for a program that never completes would wait for ever: the app's own dependencies
    # and a wait for the app itself included.
    for name, waits in [*((n, spec.depends_on) for n, spec in specs.items()), (WEB, app_deps)]:
        for dep, condition in waits:
            if condition != "completed" or dep == name:  # waiting for itself: the cycle says it
                continue
            if dep == WEB:
                problems.append(Problem(where(name), "waits for 'web' to complete, but web is the app, which serves "
                                                     "until the supervisor stops; expected \"started\" or \"ready\""))
            elif dep in specs and not specs[dep].once:
                problems.append(Problem(where(name), f"waits for {dep!r} to complete, but {dep!r} is not a "
                                                     "one-shot job; expected once = true there, or \"ready\""))


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep] if dep in path else [node, dep, node]
            if dep not in state:
                found = visit(dep, [*path, dep])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None
