"""The first worker, forked from the supervisor itself at start, serving while the supervisor sets up.

A cold start used to be two starts one after the other: the supervisor importing and setting up
everything (status API, database watch, file watches), then a fresh interpreter importing uvicorn
and the app. Now, as soon as the settings are valid and the ports are bound, the first worker
starts: the worker-to-be forked when ``up`` began, which has imported uvicorn meanwhile
(:mod:`supervisor.warm.zygote`), or else a fork of the supervisor, which has no thread or
event loop yet. It imports the app and serves while the supervisor goes on setting up. When the
first slot starts its worker, the spawner *claims* the child: from then on it is watched,
restarted and reloaded like any worker.

Only where it is safe and it helps: workers fork from templates (``[reload] template``), nothing
must come before the first worker (a database wait, a migration), the supervisor still runs a
single thread, and the status API's port could be bound here when pages follow reloads (the
child's pages need the live-reload stream's URL). The child serves before the file watches are in
place, so an edit made meanwhile would be missed: the spawner checks the files the child loaded
once it is claimed (the watches are in place by then) and reloads if one changed after the start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

from supervisor.child.osutil import kill_and_reap, parent_of, thread_count
from supervisor.child.zygote import become_worker
from supervisor.config.settings import Settings
from supervisor.listen.ports import Bound, bind_listener, bind_port, display_url
from supervisor.reload.browser import browser_follows
from supervisor.spawn.descendants import Descendants, new_mark, track
from supervisor.spawn.process import LineSink, WorkerProcess, WorkerSpec, child_environ, worker_args, worker_spec
from supervisor.systemd.activation import activated_listener
from supervisor.warm.template import ForkedChild, roomy_pipe
from supervisor.warm.zygote import Zygote

logger = logging.getLogger("supervisor")
# The live-reload stream's path on the status API (supervisor.reload.browser_events.PATH, which
# imports Starlette: too heavy for here; tests/test_early.py checks they agree).
LIVERELOAD_PATH = "/livereload"
# Files changed this long before the fork may have been read by the child after the change anyway:
# modification times come from a clock that may lag by a tick.
STALE_MARGIN = 0.01


@dataclass
class EarlyWorker:
    """A first worker forked at start, until a slot claims it (the supervisor's side)."""

    pid: int
    spec: WorkerSpec
    ready_r: int
    out_r: int
    err_r: int
    report_r: int
    beat_r: int  # its heartbeat pipe (see supervisor.child.heartbeat)
    mark: str
    since: float  # when it was forked (wall clock): files changed later it may have read before the change
    descendants: Descendants
    # The supervisor's own modules, which the child has without the app importing them.
    inherited: frozenset[str] = frozenset()
    done: bool = False

    def claim(self, spec: WorkerSpec, on_line: LineSink) -> tuple[WorkerProcess, int] | None:
        """The worker for ``spec``, watched from now on, and its report pipe; None (and the child
        is ended) when it does not fit ``spec`` after all, or is gone already."""
        if self.done:
            return None
        if spec != self.spec:
            self.close()
            return None
        out = os.fdopen(self.out_r, "rb", buffering=0)
        err = os.fdopen(self.err_r, "rb", buffering=0)
        try:
            proc = WorkerProcess(ForkedChild(self.pid, out, err), self.ready_r, on_line,
                                 descendants=self.descendants, heartbeat_fd=self.beat_r)
        except OSError as exc:  # gone and reaped already (pidfd_open: ESRCH), or out of descriptors
            logger.debug("supervisor: the worker forked at start cannot be watched: %s", exc)
            for stream in (out, err):  # what it said before it went: an import error, say
                os.set_blocking(stream.fileno(), False)
                with contextlib.suppress(OSError, TypeError):
                    for line in (stream.read(1 << 16) or b"").decode("utf-8", "replace").splitlines():
                        on_line(self.pid, line)
                stream.close()
            self.out_r = self.err_r = -1
            self.close()
            return None
        self.done = True
        return proc, self.report_r

    def close(self) -> None:
        """End it unclaimed (the supervisor stops before its first worker starts)."""
        if self.done:
            return
        self.done = True
        for fd in (self.ready_r, self.out_r, self.err_r, self.report_r, self.beat_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        # Still ours, not reaped by the orphan reaper and its pid taken by another process:
        # then it is ours to kill and reap.
        if parent_of(self.pid) == os.getpid():
            kill_and_reap(self.pid)
        self.descendants.kill_leftovers()
        self.descendants.release(lambda delay, retry: None)  # what is left, release_base() removes


@dataclass(frozen=True)
class Early:
    """What ``up`` prepared before the rest of the supervisor was imported: the app's bound port,
    the status API's socket when it was bound here, and the first worker where it could start."""

    bound: Bound
    status_sock: socket.socket | None = None
    worker: EarlyWorker | None = None


def listen(settings: Settings) -> Bound:
    """The app's listening socket: passed in by systemd (a .socket unit, fd 3), or bound here.
    Raises PortError (exit 4)."""
    server = settings.config.server
    return activated_listener(settings.environ, os.getpid()) or \
        bind_port(settings.host, settings.port, server.port_range, server.strict_port, server.backlog)


def may_fork_early(settings: Settings, use_template: bool) -> bool:
    """Forking the first worker at start is allowed here (see the module's docstring)."""
    database = settings.config.database
    waits = database.wait and bool(settings.environ.get(database.url_env))
    single = threading.active_count() == 1 and thread_count() == 1
    return use_template and not waits and not database.migrate and single and hasattr(os, "fork")


def start_early(settings: Settings, use_template: bool, zygote: Zygote | None = None) -> Early:
    """Bind the port and, where it may, the status API's, and start the first worker: the
    ``zygote`` made into it (see :mod:`supervisor.warm.zygote`), or a fork of this process."""
    bound = listen(settings)
    if not may_fork_early(settings, use_template):
        if zygote is not None:
            zygote.discard()
        return Early(bound)
    livereload = ""
    status_sock = None
    if settings.config.status.enabled:
        status = settings.config.status
        try:  # as the status API would; a taken port is left for it to handle (and say)
            status_sock = bind_listener(status.host, status.port, backlog=64)
        except OSError:
            if zygote is not None:
                zygote.discard()
            return Early(bound)
        if browser_follows(settings):
            livereload = display_url(status.host, int(status_sock.getsockname()[1])) + LIVERELOAD_PATH
    # The same spec the runner makes for its first worker, so that it claims this one.
    spec = worker_spec(settings, bound.sock.fileno(), livereload)
    try:
        first = fork_first_worker(spec, closing=[status_sock.fileno()] if status_sock is not None else [],
                                  zygote=zygote)
    except OSError as exc:  # EAGAIN, EMFILE: the first worker is started the usual way
        logger.debug("supervisor: could not fork the first worker at start: %s", exc)
        return Early(bound, status_sock)
    return Early(bound, status_sock, first)


def fork_first_worker(spec: WorkerSpec, closing: list[int], zygote: Zygote | None = None) -> EarlyWorker:
    """Start the first worker: the ``zygote`` if it is there to take it, else a fork of this
    process. ``closing``: descriptors of the supervisor's a forked child must not hold."""
    ready_r, ready_w = os.pipe()
    out_r, out_w = roomy_pipe()  # nobody reads its output until a slot claims it
    err_r, err_w = roomy_pipe()
    report_r, report_w = roomy_pipe()
    beat_r, beat_w = os.pipe()
    mark = new_mark()
    environ = child_environ(spec.environ, mark)
    args = worker_args(spec, ready_fd=ready_w, heartbeat_fd=beat_w, report_fd=report_w)
    since = time.time()  # the child reads the app's files after this
    if zygote is not None and zygote.hand(args, environ, str(spec.cwd), out_w, err_w):
        pid, inherited = zygote.pid, zygote.inherited
        logger.debug("supervisor: the first worker (pid %d) is the process forked when up started", pid)
    else:
        inherited = frozenset(sys.modules)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            become_worker(args, out_w, err_w, environ, str(spec.cwd),
                          closing=[*closing, ready_r, out_r, err_r, report_r, beat_r])
    for fd in (ready_w, out_w, err_w, report_w, beat_w):
        os.close(fd)
    # At once, as for a spawned worker: the child is still setting up, long before the app's code.
    descendants = track(pid, mark)
    return EarlyWorker(pid, spec, ready_r, out_r, err_r, report_r, beat_r, mark, since, descendants, inherited)


def changed_since(files: list[str], since: float) -> list[str]:
    """Those of ``files`` modified after ``since`` (minus the margin): maybe read before the change."""
    found = []
    for file in files:
        with contextlib.suppress(OSError):
            if os.stat(file).st_mtime > since - STALE_MARGIN:
                found.append(file)
    return found

