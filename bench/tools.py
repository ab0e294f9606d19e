"""The tools under benchmark, each as the command (and config file) that serves an app on a port.

Peers come from the ``bench`` extra (``pip install -e '.[bench]'``): uvicorn, the watchfiles CLI,
hupper (with watchdog, its fastest file monitor), circus. supervisord's import name is
``supervisor``, the same as this project's, so it cannot share an environment with it: give it one
of its own and name its ``supervisord`` in ``BENCH_SUPERVISORD`` (or put it at
``.bench/supervisord/bin/supervisord``)::

    python -m venv .bench/supervisord && .bench/supervisord/bin/pip install supervisor

A tool that is not installed is reported as such, never silently left out.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.apps import BenchApp
from bench.procs import REPO, bench_env

PY = sys.executable
QUIET = ["--log-level", "warning"]  # no access log anywhere: it would measure the log, not the server


def script(name: str) -> str | None:
    """A console script installed beside this interpreter, else on PATH."""
    here = Path(PY).parent / name
    return str(here) if here.exists() else shutil.which(name)


def supervisord_path() -> str | None:
    for candidate in (os.environ.get("BENCH_SUPERVISORD"), str(REPO / ".bench/supervisord/bin/supervisord"),
                      script("supervisord")):
        if candidate and Path(candidate).exists():
            try:
                out = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=30)
            except OSError:
                continue
            if out.returncode == 0 and out.stdout.strip()[:1].isdigit():
                return candidate
    return None


@dataclass(frozen=True)
class Tool:
    """``command(app, port, workdir)`` writes any config file into ``workdir`` and returns the argv."""

    name: str
    command: Callable[[BenchApp, int, Path], list[str]]
    missing: Callable[[], str | None] = lambda: None  # why it cannot run here, or None
    # supervisord imports a package named `supervisor` too: this repository on its path hides it.
    repo_on_path: bool = True

    @property
    def ours(self) -> bool:
        return self.name.startswith("supervisor")


def _ours(reload: bool, workers: int = 1, app_keys: str = "") -> Callable[[BenchApp, int, Path], list[str]]:
    """``app_keys``: more [app] lines, such as uvicorn's loop and HTTP parser."""
    def command(app: BenchApp, port: int, workdir: Path) -> list[str]:
        database = "" if app.name == "webapp" else "[database]\nwait = false\n"
        (workdir / "supervisor.toml").write_text(textwrap.dedent(f"""\
            [supervisor]
            log_level = "warning"
            [server]
            port = {port}
            strict_port = true
            [app]
            app = "{app.target}"
            workers = {workers}
            """) + (app_keys + "\n" if app_keys else "") + "[status]\nport = 0\n" + database)
        return [PY, "-m", "supervisor", "up", "--reload" if reload else "--no-reload"]
    return command


def _uvicorn(*extra: str) -> Callable[[BenchApp, int, Path], list[str]]:
    def command(app: BenchApp, port: int, workdir: Path) -> list[str]:
        return [PY, "-m", "uvicorn", app.target, "--host", "127.0.0.1", "--port", str(port), *QUIET, *extra]
    return command


def _watchfiles(app: BenchApp, port: int, workdir: Path) -> list[str]:
    serve = f"{PY} -m uvicorn {app.target} --host 127.0.0.1 --port {port} --log-level warning"
    return [PY, "-m", "watchfiles", serve, "."]


def _hupper(app: BenchApp, port: int, workdir: Path) -> list[str]:
    return [script("hupper") or "hupper", "-m", "uvicorn", app.target, "--host", "127.0.0.1", "--port", str(port),
            *QUIET]


def _circus(app: BenchApp, port: int, workdir: Path) -> list[str]:
    (workdir / "circus.ini").write_text(textwrap.dedent(f"""\
        [circus]
        check_delay = 5
        endpoint = ipc://{workdir}/circus.sock
        pubsub_endpoint = ipc://{workdir}/circus-pubsub.sock
        statsd = false

        [watcher:web]
        cmd = {PY} -m uvicorn {app.target} --host 127.0.0.1 --port {port} --log-level warning
        working_dir = {workdir}
        numprocesses = 1
        copy_env = true
        """))
    return [script("circusd") or "circusd", str(workdir / "circus.ini")]


def _supervisord(app: BenchApp, port: int, workdir: Path) -> list[str]:
    env = ",".join(f'{k}="{v}"' for k, v in app.env.items())
    (workdir / "supervisord.conf").write_text(textwrap.dedent(f"""\
        [supervisord]
        nodaemon = true
        logfile = {workdir}/supervisord.log
        pidfile = {workdir}/supervisord.pid
        childlogdir = {workdir}

        [program:web]
        command = {PY} -m uvicorn {app.target} --host 127.0.0.1 --port {port} --log-level warning
        directory = {workdir}
        autorestart = true
        startsecs = 0
        stopasgroup = true
        killasgroup = true
        """) + (f"environment = {env}\n" if env else ""))
    return [supervisord_path() or "supervisord", "-n", "-c", str(workdir / "supervisord.conf")]


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in modules)


def _needs(name: str) -> Callable[[], str | None]:
    return lambda: None if script(name) else f"`{name}` is not installed (pip install -e '.[bench]')"


SUPERVISOR = Tool("supervisor", _ours(reload=True))
# The serving pairs name uvicorn's stack: with uvicorn[standard] installed, "auto" is uvloop and
# httptools for both tools, and the h11 figures would silently become the fast ones.
H11 = ("--loop", "asyncio", "--http", "h11")
FAST = ("--loop", "uvloop", "--http", "httptools")
SUPERVISOR_NO_RELOAD = Tool("supervisor --no-reload", _ours(reload=False, app_keys='loop = "asyncio"\nhttp = "h11"'))
SUPERVISOR_2 = Tool("supervisor workers=2", _ours(reload=False, workers=2, app_keys='loop = "asyncio"\nhttp = "h11"'))
SUPERVISOR_FAST = Tool("supervisor uvloop+httptools",
                       _ours(reload=False, app_keys='loop = "uvloop"\nhttp = "httptools"'),
                       lambda: None if _installed("uvloop", "httptools") else "uvloop or httptools is not installed")
UVICORN = Tool("uvicorn", _uvicorn(*H11))
UVICORN_2 = Tool("uvicorn --workers 2", _uvicorn("--workers", "2", *H11))
UVICORN_FAST = Tool("uvicorn --loop uvloop --http httptools", _uvicorn(*FAST),
                    lambda: None if _installed("uvloop", "httptools") else "uvloop or httptools is not installed")
UVICORN_RELOAD = Tool("uvicorn --reload", _uvicorn("--reload"))
WATCHFILES = Tool("watchfiles", _watchfiles)
HUPPER = Tool("hupper", _hupper, _needs("hupper"))
CIRCUS = Tool("circus", _circus, _needs("circusd"))
SUPERVISORD = Tool("supervisord", _supervisord,
                   lambda: None if supervisord_path() else "supervisord is not installed (see bench/tools.py)",
                   repo_on_path=False)

RELOADERS = [SUPERVISOR, UVICORN_RELOAD, WATCHFILES, HUPPER]


def tool_env(tool: Tool, app: BenchApp) -> dict[str, str]:
    env = bench_env(app.env)
    if not tool.repo_on_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in env["PYTHONPATH"].split(os.pathsep) if p != str(REPO))
    return env
