"""One template process, as the supervisor sees it: start it, learn what it preloaded, fork workers.

The template (:mod:`supervisor.child.forkserver`) is our child, in the supervisor's session but a
process group of its own (Ctrl-C in the terminal is the supervisor's to handle), and dies with us
(``PR_SET_PDEATHSIG``). Its output is relayed and its exit watched as a worker's are: it runs
under a :class:`~supervisor.spawn.process.WorkerProcess`, whose ready pipe says "built".

A forked worker comes back as a :class:`~supervisor.spawn.process.WorkerProcess` too, over a
:class:`ForkedChild`: the double fork in the template made it our own child (the supervisor is a
child subreaper), so its exit is watched through a pidfd and its exit code read with
``waitpid``, exactly as for a spawned worker. It waits for our ``go`` until we watch it: the
orphan reaper (:mod:`supervisor.systemd.reaper`) leaves alone only the pids the slots know.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from supervisor.child import forkserver
from supervisor.child.args import Fd
from supervisor.child.importgraph import Signature, signature
from supervisor.child.osutil import kill_and_reap, parent_of
from supervisor.config.settings import Settings
from supervisor.spawn.descendants import new_mark, track
from supervisor.spawn.process import LineSink, WorkerProcess, WorkerSpec, child_environ, worker_args
from supervisor.warm.stage import ProjectGraph

logger = logging.getLogger("supervisor")

# Seconds a fork request may take before the template counts as broken (a fork takes milliseconds).
FORK_TIMEOUT = 5.0
# Files whose change means other packages (read in the project and app directories).
DEPENDENCY_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "poetry.lock", "uv.lock", "pdm.lock",
                    "Pipfile", "Pipfile.lock", "requirements*.txt", "requirements/*.txt", "constraints*.txt")
# A whole module report fits, so the worker's write never waits; and a first worker forked at
# start can log a while before anyone reads its output (supervisor.warm.early).
ROOMY_PIPE_SIZE = 1 << 20


class TemplateBroken(Exception):
    """A fork request failed: this template is not to be used again."""


class NotOurChild(Exception):
    """The forked worker was not re-parented to the supervisor (it is no child subreaper)."""


@dataclass(frozen=True)
class Plan:
    """What a template preloads, and what it must never import."""

    preload: tuple[str, ...]
    project_names: frozenset[str]
    roots: tuple[str, ...]
    project: tuple[str, ...] = ()  # a project-stage template imports these too (supervisor.warm.stage)
    blocked: tuple[str, ...] = ()  # ... and refuses these (kept out of the template as unsafe)


@dataclass(frozen=True)
class Built:
    loaded: frozenset[str]
    own: frozenset[str]  # what the interpreter and the template's code loaded, not the plan
    failed: Mapping[str, str]
    path_listings: Mapping[str, str]  # import directory -> forkserver.listing_digest
    seconds: float
    project: ProjectGraph | None = None  # a project-stage template's


@dataclass(frozen=True)
class Unsafe:
    module: str
    reason: str


@dataclass(frozen=True)
class Failed:
    reason: str


Outcome = Built | Unsafe | Failed


def template_choice(settings: Settings) -> tuple[bool, str]:
    """Whether workers fork from a template, and the line that says why (logged once at start)."""
    setting = settings.config.reload.template
    if setting is False:
        return False, "workers start as fresh interpreters ([reload] template = false)"
    if setting is None and not settings.reload:
        return False, "workers start as fresh interpreters (reload is off; [reload] template = true forks them)"
    needs = (("os.fork", hasattr(os, "fork")), ("os.pidfd_open", hasattr(os, "pidfd_open")),
             ("Linux", sys.platform.startswith("linux")))
    lacking = [what for what, present in needs if not present]
    if lacking:
        return False, f"workers start as fresh interpreters: forking them from a template needs {', '.join(lacking)}"
    return True, ("workers fork from a template process that preloads the app's libraries "
                  "([reload] template = false: fresh interpreters)")


TemplateKey = tuple[str, str, frozenset[tuple[str, str]], str, str, Signature]


def template_key(spec: WorkerSpec) -> TemplateKey:
    """What a template shares with every worker it forks: interpreter, directory, environment and
    uvicorn's logging. Libraries may read the environment at import, so a template is used only for
    its own; the project stage sets logging up before the project's import, and its forks keep that
    (the log config file's version too: an edit to it must reach the next worker, as it would a
    fresh one)."""
    return (spec.python, str(spec.cwd), frozenset(spec.environ.items()), spec.log_level, spec.log_config,
            signature(spec.log_config) if spec.log_config else None)


def dependency_files(dirs: Iterable[Path]) -> dict[str, int]:
    """The dependency files in ``dirs`` (not below them), each with its modification time."""
    found: dict[str, int] = {}
    for directory in dirs:
        for pattern in DEPENDENCY_FILES:
            for path in directory.glob(pattern):
                with contextlib.suppress(OSError):
                    found[str(path)] = path.stat().st_mtime_ns
    return found


def roomy_pipe() -> tuple[int, int]:
    """A pipe with room for :data:`ROOMY_PIPE_SIZE` bytes (the system's default is 64 KiB)."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # F_SETPIPE_SZ: Linux only
        fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, ROOMY_PIPE_SIZE)
    return read_end, write_end


@dataclass
class ForkedChild:
    """A worker forked by the template, shaped like the :class:`subprocess.Popen` a
    :class:`~supervisor.spawn.process.WorkerProcess` watches. It is our child: ``waitpid`` works."""

    pid: int
    stdout: IO[bytes] | None
    stderr: IO[bytes] | None
    returncode: int | None = field(default=None)

    def wait(self) -> int:
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:  # reaped by someone else: its code is lost
                self.returncode = 255
        return self.returncode


class TemplateProcess:
    """A started template. Await :meth:`built`, then :meth:`fork` workers; :meth:`close` ends it."""

    def __init__(self, proc: WorkerProcess, control: socket.socket, key: object, files: Mapping[str, int]) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.control = control
        self.key = key
        self.files = dict(files)  # dependency files as they were when it started importing
        self.built_info: Built | None = None
        self.closed = False

    @classmethod
    def start(cls, spec: WorkerSpec, plan: Plan, on_line: LineSink, dirs: Iterable[Path]) -> TemplateProcess:
        """Start a template for workers of ``spec``, preloading ``plan``. Must run on the main thread
        (its parent-death signal is tied to the forking thread)."""
        files = dependency_files(dirs)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ready_r, ready_w = os.pipe()
        env = child_environ(spec.environ)
        argv = [spec.python, "-m", "supervisor.child.forkserver", "--control-fd", str(theirs.fileno()),
                "--ready-fd", str(ready_w), "--parent-pid", str(os.getpid())]
        try:
            popen = subprocess.Popen(argv, cwd=spec.cwd, env=env, pass_fds=(theirs.fileno(), ready_w),
                                     process_group=0, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        except BaseException:
            ours.close()
            os.close(ready_r)
            raise
        finally:
            theirs.close()
            os.close(ready_w)
        try:
            proc = WorkerProcess(popen, ready_r, on_line)
            forkserver.send(ours, {"plan": {"preload": list(plan.preload), "project_names": sorted(plan.project_names),
                                            "roots": list(plan.roots), "project": list(plan.project),
                                            "blocked": list(plan.blocked),
                                            "logging": {"log_level": spec.log_level, "log_config": spec.log_config}}})
        except BaseException:
            popen.kill()
            popen.wait()
            ours.close()
            raise
        return cls(proc, ours, template_key(spec), files)

    async def built(self, timeout: float) -> Outcome:
        """Wait until it has preloaded its plan (or failed to)."""
        # asyncio.timeout, not wait_for: on 3.11, wait_for swallows a cancellation that arrives as
        # the template becomes ready (a stop during a build), and the build would go on forever.
        try:
            async with asyncio.timeout(timeout):
                ok = await self.proc.ready()
            if not ok:  # it is exiting: what it sent before is buffered, then the socket ends
                async with asyncio.timeout(FORK_TIMEOUT):
                    await self.proc.wait()
        except TimeoutError:
            return Failed(f"not built within {timeout:g}s" if self.proc.popen.returncode is None
                          else "it closed its ready pipe and did not exit")
        # Sent before it wrote "ready", or before it exited: never a wait on the event loop.
        self.control.settimeout(0.5)
        try:
            message = forkserver.receive(self.control)
        except (OSError, ValueError) as exc:
            message = None
            logger.debug("template: pid %d: no report: %s", self.pid, exc)
        if ok and isinstance(message, dict) and "built" in message:
            info = message["built"]
            self.built_info = Built(frozenset(info["loaded"]), frozenset(info["own"]), dict(info["failed"]),
                                    dict(info["path_listings"]), float(info["seconds"]),
                                    ProjectGraph.from_report(info["project"]) if "project" in info else None)
            return self.built_info
        if isinstance(message, dict) and "unsafe" in message:
            info = message["unsafe"]
            return Unsafe(str(info["module"]), str(info["reason"]))
        code = await self.proc.wait()
        tail = " / ".join(list(self.proc.stderr_tail)[-3:])
        return Failed(f"it exited with code {code} while importing" + (f": {tail}" if tail else ""))

    def dependencies_changed(self, dirs: Iterable[Path]) -> str | None:
        """What changed in the packages since it was built, in words; None if nothing did."""
        files = dependency_files(dirs)
        if files != self.files:
            changed = sorted(set(files.items()) ^ set(self.files.items()))
            return f"{Path(changed[0][0]).name} changed"
        if self.built_info is not None:
            for path, digest in self.built_info.path_listings.items():
                if forkserver.listing_digest(path) != digest:
                    return f"packages were installed or removed in {path}"
        return None

    def fork(self, spec: WorkerSpec, on_line: LineSink,
             drop: Collection[str] | None = None) -> tuple[WorkerProcess, int]:
        """Fork a worker for ``spec``; return it and the read end of its report pipe. ``drop``: the
        project modules a project-stage template's fork must import fresh.

        Raises :class:`TemplateBroken` when the template does not answer as it should, and
        :class:`NotOurChild` when the worker is not the supervisor's child.
        """
        started = time.monotonic()
        ready_r, ready_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        go_r, go_w = os.pipe()
        report_r, report_w = roomy_pipe()
        beat_r, beat_w = os.pipe()
        ours = [ready_r, out_r, err_r, go_w, report_r, beat_r]
        mark = new_mark()
        args = worker_args(spec, ready_fd=ready_w, heartbeat_fd=beat_w, report_fd=report_w)
        message, fds = args.to_message({Fd.STDOUT: out_w, Fd.STDERR: err_w, Fd.GO: go_r})
        request = {**message, "environ": child_environ(spec.environ, mark)}
        if drop is not None:
            request["drop"] = sorted(drop)
        payload = forkserver.LAST + json.dumps({"fork": request}, separators=(",", ":")).encode()
        reply: Any = None
        try:
            self.control.settimeout(FORK_TIMEOUT)
            socket.send_fds(self.control, [payload], fds)
            reply = forkserver.receive(self.control)
        except (OSError, ValueError) as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in (ready_w, out_w, err_w, go_r, report_w, beat_w):
                os.close(fd)
        if not isinstance(reply, dict) or not isinstance(reply.get("pid"), int):
            _close(ours)
            raise TemplateBroken(reply.get("error") if isinstance(reply, dict) else "it closed the connection")
        pid = reply["pid"]
        out: IO[bytes] | None = None
        err: IO[bytes] | None = None
        try:
            if parent_of(pid) != os.getpid():
                raise NotOurChild(f"forked worker pid {pid} is not the supervisor's child")
            out, err = os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0)
            proc = WorkerProcess(ForkedChild(pid, out, err), ready_r, on_line, descendants=track(pid, mark),
                                 heartbeat_fd=beat_r)
        except BaseException:
            # Unwatched, it must not serve: closing the go pipe ends it, SIGKILL in case it got further.
            kill_and_reap(pid)
            for stream in (out, err):
                if stream is not None:
                    stream.close()
            _close(fd for fd in ours if (fd != out_r or out is None) and (fd != err_r or err is None))
            raise
        os.write(go_w, forkserver.GO)
        os.close(go_w)
        logger.debug("template: forked worker pid %d from template pid %d in %.1f ms", pid, self.pid,
                     (time.monotonic() - started) * 1000)
        return proc, report_r

    async def close(self, timeout: float = 3.0) -> None:
        """End the template (closing its socket ends it; SIGTERM, then SIGKILL, if not)."""
        if not self.closed:
            self.closed = True
            self.control.close()
        try:
            async with asyncio.timeout(timeout / 2):
                await self.proc.wait()
            return
        except TimeoutError:
            await self.proc.stop(timeout / 2)


class Started:
    """The template processes one builder started: each is closed by :meth:`end` (a stop in the
    middle of a build included), and one replaced or failed is closed in the background."""

    def __init__(self) -> None:
        self._alive: set[TemplateProcess] = set()  # started, and not exited yet
        self._closing: set[asyncio.Future[None]] = set()

    def track(self, template: TemplateProcess) -> None:
        self._alive.add(template)
        template.proc.add_exit_callback(lambda _: self._alive.discard(template))

    def close_later(self, template: TemplateProcess) -> None:
        closing = asyncio.ensure_future(template.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def end(self) -> None:
        ending = [template.close() for template in self._alive]
        await asyncio.gather(*ending, *self._closing, return_exceptions=True)


def _close(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)

