"""One worker process: spawn it, relay its output, learn when it is ready, stop it with a deadline.

Exit is observed through a pidfd (no SIGCHLD handler, no waiter thread), so the worker stays a
zombie until we reap it: its leftover process group can be killed first without any risk of
hitting a recycled pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from supervisor.child.args import READY_MESSAGE, WorkerArgs, WorkerOptions
from supervisor.child.heartbeat import NEARING, REACHED, BeatReader
from supervisor.config.settings import Settings
from supervisor.spawn.descendants import MARK_VAR, Descendants, new_mark, track
from supervisor.state import WorkerVitals
from supervisor.systemd.environ import scrub_systemd_env

logger = logging.getLogger("supervisor")
LineSink = Callable[[int, str], None]  # (pid, line)
# Seconds to keep relaying a worker's output after it exited (its pipes normally end at once).
RELAY_GRACE = 1.0


@dataclass(frozen=True, kw_only=True)
class WorkerSpec(WorkerOptions):
    """What a worker is started with: its options (the app, its log level...: the worker's
    arguments, see :class:`~supervisor.child.args.WorkerOptions`), and where and how it starts.
    The same spec can start many workers."""

    listen_fd: int
    cwd: Path
    environ: Mapping[str, str]
    python: str = field(default_factory=lambda: sys.executable)


def worker_args(spec: WorkerSpec, *, ready_fd: int, heartbeat_fd: int = -1, report_fd: int = -1) -> WorkerArgs:
    """The arguments of one worker of ``spec``, with its own pipes: the one place they are made,
    for a spawned worker, the first one forked at start and one forked from the template."""
    return WorkerArgs.of(spec, parent_pid=os.getpid(), listen_fd=spec.listen_fd, ready_fd=ready_fd,
                         heartbeat_fd=heartbeat_fd, report_fd=report_fd)


def child_environ(environ: Mapping[str, str], mark: str | None = None) -> dict[str, str]:
    """The environment of a process we start: ``environ`` without the variables only the supervisor
    may act on (systemd's), unbuffered output (its lines reach us as they are written), and
    ``mark``, which whatever it starts inherits (see supervisor.spawn.descendants), when given."""
    env = scrub_systemd_env(environ)
    env["PYTHONUNBUFFERED"] = "1"
    if mark is not None:
        env[MARK_VAR] = mark
    return env


def stacks_dir(runtime_dir: Path) -> Path:
    """The directory of the workers' stack dumps: ``<runtime_dir>/stacks/<pid>.txt``."""
    return runtime_dir / "stacks"


class Child(Protocol):
    """The child process a :class:`WorkerProcess` watches: a :class:`subprocess.Popen`, or a worker
    forked from a template (:class:`supervisor.warm.template.ForkedChild`)."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> Any: ...
    @property
    def stdout(self) -> IO[bytes] | None: ...
    @property
    def stderr(self) -> IO[bytes] | None: ...
    def wait(self) -> int: ...


class WorkerProcess:
    """A started worker. Await :meth:`ready` and :meth:`wait`; call :meth:`stop` to end it."""

    def __init__(self, popen: Child, ready_fd: int | None, on_line: LineSink,
                 tail: int = 20, descendants: Descendants | None = None, stop_signal: int = signal.SIGTERM,
                 readiness: Callable[[WorkerProcess], Coroutine[Any, Any, bool]] | None = None,
                 heartbeat_fd: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """``ready_fd``: the worker's readiness pipe; without one (a program), ``readiness`` decides
        (a probe), or the process counts as ready once started. ``heartbeat_fd``: the pipe a web
        worker's event loop stamps (see supervisor.child.heartbeat)."""
        self.popen = popen
        self.pid = popen.pid
        self.descendants = descendants
        self.stop_signal = stop_signal
        self._clock = clock
        # What the worker's heartbeat says (supervisor.health.judge judges it).
        self.vitals = WorkerVitals(spawned_at=clock())
        self.stderr_tail: deque[str] = deque(maxlen=tail)
        self.line_listeners: list[Callable[[str], None]] = []  # a log-line readiness probe
        # Told when the worker says it nears or has reached its request quota (each once).
        self.quota_listeners: list[Callable[[WorkerProcess], None]] = []
        self._exit_callbacks: list[Callable[[WorkerProcess], None]] = []
        self._loop = asyncio.get_running_loop()
        # First: it can fail (EMFILE; ESRCH for a forked worker reaped already), and must then
        # leave no task behind reading pipes its caller closes.
        self._pidfd = os.pidfd_open(self.pid)
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._probing = ready_fd is None
        if ready_fd is not None:
            self._ready = asyncio.ensure_future(self._read_ready(ready_fd))
        else:
            self._ready = asyncio.ensure_future(readiness(self) if readiness is not None else _started())
        self._relays = [asyncio.ensure_future(self._relay(popen.stdout, on_line, False)),
                        asyncio.ensure_future(self._relay(popen.stderr, on_line, True))]
        self._heartbeat_fd: int | None = None
        self._beats = BeatReader()
        self._loop.add_reader(self._pidfd, self._on_exit)
        if heartbeat_fd is not None:  # last: nothing after this can fail and leave it registered
            os.set_blocking(heartbeat_fd, False)
            self._loop.add_reader(heartbeat_fd, self._on_beat)
            self._heartbeat_fd = heartbeat_fd

    def _on_beat(self) -> None:
        assert self._heartbeat_fd is not None
        try:
            data = os.read(self._heartbeat_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the worker closed it: it is exiting
            self._close_heartbeat()
            return
        beats = self._beats.feed(data)
        if beats:
            vitals = self.vitals
            vitals.last_beat_at = self._clock()
            vitals.beats += len(beats)
            last = beats[-1]
            vitals.loop_lag, vitals.requests, vitals.quota = last.loop_lag, last.requests, last.quota
            before = (vitals.nearing_quota, vitals.quota_reached)
            vitals.nearing_quota |= last.stage >= NEARING
            vitals.quota_reached |= last.stage >= REACHED
            if (vitals.nearing_quota, vitals.quota_reached) != before:
                for listener in self.quota_listeners:
                    listener(self)

    def _close_heartbeat(self) -> None:
        if self._heartbeat_fd is not None:
            self._loop.remove_reader(self._heartbeat_fd)
            os.close(self._heartbeat_fd)
            self._heartbeat_fd = None

    def _on_exit(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._close_heartbeat()
        # The worker is a zombie now, holding its pid: kill what it left in its process group
        # (a leftover grandchild would keep the port or a file open), and what it started in
        # sessions of its own (see supervisor.spawn.descendants), then reap it.
        kill_group(self.pid, signal.SIGKILL)
        if self.descendants is not None:
            leftovers = self.descendants.kill_leftovers()
            if leftovers:
                logger.info("supervisor: killed %d process(es) worker pid %d left behind: %s", len(leftovers),
                            self.pid, ", ".join(map(str, leftovers)))
        code = self.popen.wait()
        self.vitals.exited = True  # before anything else runs: signals to this pid must stop now
        if self.descendants is not None:
            self.descendants.release(self._loop.call_later)
        if not self._exited.done():
            self._exited.set_result(code)
        if self._probing:
            self._ready.cancel()  # a probe still waiting: the exit decides now
        for callback in self._exit_callbacks:
            callback(self)

    def add_exit_callback(self, callback: Callable[[WorkerProcess], None]) -> None:
        self._exit_callbacks.append(callback)

    async def _read_ready(self, fd: int) -> bool:
        reader = asyncio.StreamReader()
        pipe = os.fdopen(fd, "rb", buffering=0)
        transport, _ = await self._loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            ready = await reader.readline() == READY_MESSAGE
            if ready:
                self.vitals.ready_at = self._clock()
            return ready
        finally:
            transport.close()

    async def _relay(self, stream: object, on_line: LineSink, is_stderr: bool) -> None:
        reader = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await self._loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), stream)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    raw = await reader.read(1 << 20)
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if is_stderr:
                    self.stderr_tail.append(line)
                on_line(self.pid, line)
                for listener in self.line_listeners:
                    listener(line)
        finally:
            transport.close()

    async def ready(self) -> bool:
        """True once the worker reports it is serving; False if it closed the pipe without that."""
        return await asyncio.shield(self._ready)

    async def wait(self) -> int:
        """The return code, once the process has exited and its output has been relayed.

        Output is awaited for at most ``RELAY_GRACE`` seconds after the exit: a daemon the worker
        started in a session of its own can hold the pipes open for as long as it lives, and the
        slot must not wait for it to notice the crash.
        """
        code = await asyncio.shield(self._exited)
        # asyncio.wait, not gather: a caller's timeout must not cancel the relays themselves.
        _, pending = await asyncio.wait(self._relays, timeout=RELAY_GRACE)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        return code

    def send(self, sig: int) -> None:
        if self.popen.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    async def stop(self, timeout: float) -> int:
        """The stop signal (SIGTERM), wait up to ``timeout``, then SIGKILL the whole process group;
        return the code."""
        self.send(self.stop_signal)
        try:
            return await asyncio.wait_for(self.wait(), timeout)
        except TimeoutError:
            self.kill()
            return await self.wait()

    def kill(self) -> None:
        """SIGKILL the worker's process group now. Does not mark the stop as requested: a worker
        killed for not starting in time is a failed start, and the restart policy counts it."""
        if self.popen.returncode is None:
            kill_group(self.pid, signal.SIGKILL)


async def _started() -> bool:
    return True


def worker_spec(settings: Settings, listen_fd: int, livereload_url: str = "") -> WorkerSpec:
    """The spec of the next web worker, from the current settings."""
    cfg = settings.config
    return WorkerSpec(
        app=cfg.app.app, factory=cfg.app.factory, listen_fd=listen_fd,
        cwd=settings.app_dir(),
        environ=scrub_systemd_env(settings.environ),
        log_level=cfg.supervisor.log_level,
        graceful_timeout=worker_drain_timeout(cfg.supervisor.stop_timeout),
        livereload_url=livereload_url,
        heartbeat_interval=cfg.app.heartbeat_interval,
        stacks_dir=str(stacks_dir(settings.runtime_dir)),
        max_requests=cfg.app.max_requests, max_requests_jitter=cfg.app.max_requests_jitter,
        loop=cfg.app.loop, http=cfg.app.http, interface=cfg.app.interface, log_config=settings.log_config,
    )


def worker_drain_timeout(stop_timeout: float) -> float:
    """The worker's own drain limit: a little under the supervisor's SIGKILL deadline, so the
    app's lifespan shutdown still runs after a drain that used up its time."""
    return max(0.05, stop_timeout - min(1.0, stop_timeout * 0.2))


def kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def spawn_worker(spec: WorkerSpec, on_line: LineSink, report_fd: int = -1) -> WorkerProcess:
    """Start a worker in its own session, handing it the listening socket and a readiness pipe
    (and ``report_fd``, the write end of a pipe for its module reports, when not -1; the caller
    closes its own copy).

    Must run on the main thread: the worker's parent-death signal is tied to the forking thread.
    """
    ready_r, ready_w = os.pipe()
    try:
        beat_r, beat_w = os.pipe()
    except BaseException:
        os.close(ready_r)
        os.close(ready_w)
        raise
    mark = new_mark()
    args = worker_args(spec, ready_fd=ready_w, heartbeat_fd=beat_w, report_fd=report_fd)
    try:
        popen = subprocess.Popen(
            [spec.python, "-m", "supervisor.child.worker", *args.to_argv()],
            cwd=spec.cwd, env=child_environ(spec.environ, mark), start_new_session=True,
            pass_fds=tuple(args.descriptors().values()),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
    except BaseException:
        os.close(ready_r)
        os.close(beat_r)
        raise
    finally:
        os.close(ready_w)
        os.close(beat_w)
    try:
        # At once: the worker runs none of the app's code before this (interpreter start-up).
        descendants = track(popen.pid, mark)
        return WorkerProcess(popen, ready_r, on_line, descendants=descendants, heartbeat_fd=beat_r)
    except BaseException:
        # Unwatched, it would hold the port with nobody to stop it (pidfd_open can fail: EMFILE).
        kill_group(popen.pid, signal.SIGKILL)
        popen.wait()
        for fd in (ready_r, beat_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
