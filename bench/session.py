"""One tool serving one app, in a fresh directory on a free port, for the length of a block."""

from __future__ import annotations

import contextlib
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.apps import BenchApp
from bench.clients import wait_for
from bench.procs import Started, started
from bench.tools import Tool, tool_env


class ToolFailed(RuntimeError):
    """A tool did not serve at all (its log says why); the scenario reports it and goes on."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    tool: Tool
    app: BenchApp
    run: Started
    port: int
    workdir: Path
    launched_at: float  # monotonic, just before the process started
    answered_at: float  # monotonic, its first 200 on GET /


@contextlib.contextmanager
def serving(tool: Tool, app: BenchApp, base: Path, *, ready_timeout: float = 60.0,
            prepare: Callable[[Path], None] | None = None) -> Iterator[Served]:
    """``tool`` serving a fresh copy of ``app``; ``prepare`` adds files before the start."""
    why = tool.missing()
    if why:
        raise ToolFailed(why)
    workdir = Path(tempfile.mkdtemp(dir=base, prefix=f"{app.name}-{tool.name.split()[0]}-"))
    app.prepare(workdir)
    if prepare is not None:
        prepare(workdir)
    port = free_port()
    argv = tool.command(app, port, workdir)
    launched = time.monotonic()
    with started(argv, workdir, workdir.with_suffix(".log"), tool_env(tool, app)) as run:
        answered = wait_for(port, lambda answer: True, ready_timeout)
        if answered is None:
            raise ToolFailed(f"{tool.name} did not answer on port {port} within {ready_timeout:g}s:\n"
                             f"{run.output()[-1500:]}")
        yield Served(tool, app, run, port, workdir, launched, answered)
