"""Starting one instance of a program: its command, environment, port, probes and stop signal.

A program runs in a session of its own (so its whole process group can be stopped), dies with
the supervisor (``PR_SET_PDEATHSIG``), and is tracked like a web worker so that whatever it starts
ends with it (:mod:`supervisor.spawn.descendants`). Its readiness is its ``ready`` probe, or
having started; a ``live`` probe that keeps failing kills it, and the restart policy takes over.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

from supervisor.child.osutil import die_with_parent
from supervisor.listen.ports import bind_listener
from supervisor.programs.probes import LogWatch, one_check, wait_ready, watch_liveness
from supervisor.programs.spec import ProgramSpec
from supervisor.spawn.descendants import new_mark, track
from supervisor.spawn.process import LineSink, WorkerProcess, child_environ, kill_group
from supervisor.systemd.environ import scrub_systemd_env

logger = logging.getLogger("supervisor")


def free_port() -> int:
    """A port nothing listens on now, for ``port = "auto"`` (the program binds it itself)."""
    with bind_listener("127.0.0.1", 0) as sock:
        return int(sock.getsockname()[1])


def program_environ(spec: ProgramSpec, environ: Mapping[str, str], project_dir: Path,
                    port: int | None, mark: str | None = None) -> dict[str, str]:
    """The project's environment (``.env`` and the schema applied), the program's ``env_file``
    and ``env`` on top, ``PORT`` when it has one; as every child's (see ``child_environ``)."""
    env = dict(scrub_systemd_env(environ))
    if spec.env_file:
        values = dotenv_values(project_dir / spec.env_file)
        env.update({k: v for k, v in values.items() if v is not None})
    env.update(dict(spec.env))
    if port is not None:
        env["PORT"] = str(port)
    # Not scrubbed again: systemd's names set in the program's own env or env_file are its choice.
    return {**env, **child_environ({}, mark)}


def spawn_program(spec: ProgramSpec, environ: Mapping[str, str], project_dir: Path, port: int | None,
                  on_line: LineSink) -> WorkerProcess:
    """Start one instance of ``spec``; its readiness is the ``ready`` probe (or having started)."""
    mark = new_mark()
    env = program_environ(spec, environ, project_dir, port, mark)
    argv = ["/bin/sh", "-c", spec.command[0]] if spec.shell else list(spec.command)
    if argv[0] == "python":  # the supervisor's own interpreter, as for [database] migrate
        argv[0] = sys.executable
    popen = subprocess.Popen(
        argv, cwd=project_dir / spec.cwd if spec.cwd else project_dir, env=env, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=die_with_parent,  # the supervisor starts programs from its loop thread
    )
    log = LogWatch(str(spec.ready.target)) if spec.ready is not None and spec.ready.kind == "log" else None

    async def readiness(proc: WorkerProcess) -> bool:
        if spec.ready is not None:
            await wait_ready(one_check(spec.ready, port, log), spec.ready.interval)
        if spec.live is not None:
            live = spec.live
            task = asyncio.ensure_future(watch_liveness(one_check(live, port, None), live.interval, live.failures))
            task.add_done_callback(lambda t: _unhealthy(t, proc))
            proc.add_exit_callback(lambda _: _cancel(task))
        return True

    try:
        descendants = track(popen.pid, mark)
        proc = WorkerProcess(popen, None, on_line, descendants=descendants,
                             stop_signal=signal.Signals[spec.stop_signal], readiness=readiness)
    except BaseException:
        kill_group(popen.pid, signal.SIGKILL)
        popen.wait()
        raise
    if log is not None:
        proc.line_listeners.append(log)
    return proc


def _cancel(task: asyncio.Future[int]) -> None:
    task.cancel()


def _unhealthy(task: asyncio.Future[int], proc: WorkerProcess) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    logger.warning("pid %d failed its liveness check %d times in a row; killing it", proc.pid, task.result())
    proc.kill()
