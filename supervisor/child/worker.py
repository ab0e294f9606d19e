"""The worker process: ``python -m supervisor.child.worker``, started by the supervisor, never by hand.

It serves the ASGI app with uvicorn on the listening socket the supervisor hands it, and tells
the supervisor it is serving by writing one line to a pipe the supervisor owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import sys
import traceback
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Callable
from types import FrameType
from typing import cast

import uvicorn
from uvicorn.config import LOGGING_CONFIG, InterfaceType
from uvicorn.importer import import_from_string

from supervisor.child import interface
from supervisor.child.accept_errors import AcceptErrorLog
from supervisor.child.accepting import RESUME_SIGNAL, pause_accepting, reopen, resume_accepting, stop_accepting
from supervisor.child.args import READY_MESSAGE, WorkerArgs
from supervisor.child.gate import Gate
from supervisor.child.heartbeat import REACHED, Heartbeat, RequestQuota, StackDump
from supervisor.child.longlived import LongLived
from supervisor.child.osutil import die_with
from supervisor.child.protocol import head_limit, http_protocol
from supervisor.child.report import encode_report

# Paths of frames that are ours or the import system's, not the user's, in a load traceback.
_MACHINERY = (os.sep + "importlib" + os.sep, os.sep + "uvicorn" + os.sep,
              os.sep + "supervisor" + os.sep + "child" + os.sep + "worker.py")

CONNECTION_CLOSE = (b"connection", b"close")


class ReportingServer(uvicorn.Server):
    """A uvicorn server that reports readiness on a pipe and drains without dropping a request.

    uvicorn's own shutdown closes every idle connection at once, including ones accepted a moment
    ago whose request has not been read yet: those clients see a reset. And closing the asyncio
    server while accepted connections are still being set up leaks them (CPython gh-109564). On
    SIGTERM this server instead:

    1. stops accepting from the shared listening socket (the successor worker, already serving,
       takes everything still in the backlog), and lets connections already accepted finish
       setting up;
    2. answers every request still to come on its connections, in flight or arriving on a
       keep-alive or just-accepted connection, with ``Connection: close``, and closes each
       connection after its response; a response whose headers are out already ends as it began,
       its connection closed after the next one; idle keep-alive connections end at their
       keep-alive timeout;
    3. closes open WebSockets with code 1012 and ends event streams (``on_drain``, see
       :mod:`supervisor.child.longlived`), so their clients reconnect to the successor at once;
    4. once no connection is left (or after ``timeout_graceful_shutdown``), runs the app's
       lifespan shutdown.

    A worker that has begun its request quota does steps 1 and 2 at once (:meth:`quota_reached`)
    and keeps running until the supervisor signals it, once its replacement serves: connections
    waiting in the backlog meanwhile are the replacement's (or another worker's), none is refused.
    Should the replacement fail, :data:`~supervisor.child.accepting.RESUME_SIGNAL` has it take
    connections again (:meth:`resume`) until another replacement can be made.
    """

    def __init__(self, config: uvicorn.Config, ready_fd: int, on_drain: Callable[[], None] = lambda: None,
                 on_loop: Callable[[asyncio.AbstractEventLoop], None] = lambda loop: None,
                 report_fd: int = -1) -> None:
        super().__init__(config)
        self.ready_fd = ready_fd
        self.on_drain = on_drain
        self.on_loop = on_loop  # the heartbeat starts on the loop that serves the app
        self.report_fd = report_fd
        self._quota_stopped = False
        # uvloop: copies of the listening sockets of the servers closed to stop accepting (see
        # supervisor.child.accepting), kept for resume().
        self._copies: list[socket.socket] = []
        self._reopening: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        # Out of descriptors, asyncio logs a traceback per connection waiting in the backlog,
        # every second, until the log drowns: one line per interval instead, in uvicorn's format.
        self._loop.set_exception_handler(AcceptErrorLog(log=logging.getLogger("uvicorn.error"), prefix=""))
        self.on_loop(self._loop)
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            os.write(self.ready_fd, READY_MESSAGE)
            os.close(self.ready_fd)
            report_modules(self.report_fd)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        draining = not self.should_exit
        super().handle_exit(sig, frame)
        # Stop taking connections at once, not at uvicorn's next tick (up to 0.1 s later), and
        # before anything else (the module report below takes milliseconds): the supervisor
        # signals us once the successor serves, and from then on every new connection (a
        # browser reloading for the new version) must reach the successor.
        self._stop_accepting_now(frame)
        if draining:
            # Again when it drains: by now requests have imported what the app loads lazily.
            report_modules(self.report_fd)

    def _stop_accepting_now(self, frame: FrameType | None) -> None:
        loop = getattr(self, "_loop", None)
        if loop is None:
            return
        if not isinstance(loop, BaseSelectorEventLoop) and not _making_a_protocol(frame):
            # uvloop runs this from a callback of its own, in the same pass over the ready
            # descriptors as the listening socket, which libuv drains greedily: a callback
            # scheduled from here would still leave this pass's connections (the browser's
            # reload, right after the supervisor says the new worker serves) to this worker.
            # Closing the listener now is as safe as from any callback, except inside uvloop's
            # accept, between making the protocol and taking the connection: that one waits.
            self._stop_accepting()
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(self._stop_accepting)

    def _stop_accepting(self) -> None:
        self._copies += pause_accepting(self._loop, self.servers)

    def quota_reached(self) -> None:
        """The request that begins the quota is under way: take no new connection from now on,
        and close each connection after its current or next response (``Connection: close``,
        never a reset), so that no further request comes but on a connection already open."""
        if self.should_exit or not self.started:
            return
        self._quota_stopped = True
        self._stop_accepting()
        self._close_after_response()

    def resume(self) -> None:
        """Take connections again, and keep them open, after :meth:`quota_reached` (its
        replacement failed); a drain under way is not undone."""
        if self.should_exit or not self._quota_stopped:
            return
        self._quota_stopped = False
        state = self.server_state
        state.default_headers = [header for header in state.default_headers if header != CONNECTION_CLOSE]
        if self._copies:  # uvloop: the servers were closed; new ones on the same sockets
            copies, self._copies = self._copies, []
            self._reopening = self._loop.create_task(self._reopen(copies))
        else:
            resume_accepting(self.servers)

    async def _reopen(self, copies: list[socket.socket]) -> None:
        servers = await reopen(self._loop, copies, self._create_protocol, self.config.backlog)
        self.servers.extend(servers)
        if self.should_exit or self._quota_stopped:  # stopped again meanwhile
            self._stop_accepting()

    def _create_protocol(self) -> asyncio.Protocol:
        """A connection's protocol, as uvicorn's startup makes it (its factory is a local there)."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state)

    def _close_after_response(self) -> None:
        state = self.server_state
        if CONNECTION_CLOSE not in state.default_headers:
            state.default_headers = [*state.default_headers, CONNECTION_CLOSE]
        for connection in list(state.connections):
            cycle = getattr(connection, "cycle", None)
            # A response whose headers are out already said keep-alive: closing after it would
            # reset the client's next request (a WSGI app, whose body follows its headers from a
            # thread, leaves that window wide open). Its next response says Connection: close.
            if cycle is not None and not cycle.response_started:
                cycle.keep_alive = False
                if CONNECTION_CLOSE not in cycle.default_headers:
                    cycle.default_headers = [*cycle.default_headers, CONNECTION_CLOSE]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # After this, each accepted connection has its protocol registered in the connection set.
        self._copies += await stop_accepting(self.servers)
        self._close_after_response()
        self.on_drain()

        try:
            await asyncio.wait_for(self._drained(), timeout=self.config.timeout_graceful_shutdown)
        except TimeoutError:
            for task in self.server_state.tasks:
                task.cancel(msg="graceful shutdown deadline passed")
        for server in self.servers:
            server.close()
        for sock in self._copies:
            sock.close()
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _drained(self) -> None:
        # Polled: uvicorn offers no event for "last connection closed".
        while (self.server_state.connections or self.server_state.tasks) and not self.force_exit:
            await asyncio.sleep(0.02)


# The protocol factories uvloop calls while it accepts: uvicorn's (a local of Server.startup), ours.
_PROTOCOL_FACTORIES = frozenset({"create_protocol", "_create_protocol"})


def _making_a_protocol(frame: FrameType | None) -> bool:
    """Whether the signal came while a connection's protocol is being made (uvloop's accept)."""
    while frame is not None:
        if frame.f_code.co_name in _PROTOCOL_FACTORIES:
            return True
        frame = frame.f_back
    return False


def report_modules(fd: int) -> None:
    """Tell the supervisor which modules this worker imported (it learns what a template should
    preload from them). Never blocks serving: what the pipe cannot take at once is dropped."""
    if fd < 0:
        return
    data = encode_report()
    with contextlib.suppress(OSError):  # a supervisor that stopped reading, a full pipe
        os.set_blocking(fd, False)
        while data:
            data = data[os.write(fd, data):]


def print_user_traceback(exc: BaseException, app: str) -> None:
    """Print the traceback of an app that failed to import, without the import machinery's frames."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if not frame.filename.startswith("<frozen")
              and not any(part in frame.filename for part in _MACHINERY)]
    lines = [f"error: cannot load the app {app!r}:\n"]
    if frames:
        lines += ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    sys.stderr.write("".join(lines))
    sys.stderr.flush()


def missing_packages(args: WorkerArgs) -> str:
    """What ``[app] loop``/``http`` ask for that is not installed ("" when all is there)."""
    for key, choice, module in (("loop", args.loop, "uvloop"), ("http", args.http, "httptools")):
        if choice == module and importlib.util.find_spec(module) is None:
            return (f"[app] {key} = {choice!r}, but {module} is not installed for {sys.executable}; expected "
                    f"it installed (pip install {module}, or uvicorn[standard]), or {key} = 'auto'")
    return ""


def configure_logging(log_level: str, log_config: str) -> None:
    """uvicorn's logging set up as a worker's Config does (in a project-stage template, before it
    imports the project)."""
    uvicorn.Config("", log_level=log_level, log_config=log_config or LOGGING_CONFIG, use_colors=False)


def build_config(args: WorkerArgs, logging_done: bool = False) -> uvicorn.Config:
    """uvicorn's Config for the worker; configures logging (uvicorn's defaults, or ``--log-config``)
    unless ``logging_done`` (its template did, before importing the app)."""
    return uvicorn.Config(
        args.app,
        factory=args.factory,
        log_level=args.log_level,
        log_config=None if logging_done else args.log_config or LOGGING_CONFIG,
        use_colors=False,
        # auto: uvloop when installed, as in uvicorn; the drain works on both loops (see
        # supervisor.child.accepting) and on both protocols' connection objects.
        loop=args.loop,
        # WSGI goes through a2wsgi (see run), so uvicorn only ever sees an ASGI app.
        interface=cast(InterfaceType, "asgi3" if args.interface == "wsgi" else args.interface),
        # Annotated int, but any number works: it only reaches asyncio.wait_for.
        timeout_graceful_shutdown=args.graceful_timeout,  # type: ignore[arg-type]
        server_header=False,
        # No traceback in the log for a client's malformed body (see supervisor.child.protocol).
        http=http_protocol(args.http),
    )


def run(args: WorkerArgs) -> int:
    if not die_with(args.parent_pid):  # SIGKILLed with the supervisor: nothing keeps the port
        return 1
    # A real TCP socket object: asyncio then sets TCP_NODELAY on each connection, which
    # uvicorn's --fd (it assumes AF_UNIX) never does.
    sock = socket.socket(fileno=args.listen_fd)
    # pass_fds left both inheritable: a child the app starts without close_fds (os.system) would
    # otherwise hold the port, and the ready pipe, after this worker and the supervisor are gone.
    sock.set_inheritable(False)
    os.set_inheritable(args.ready_fd, False)
    if args.heartbeat_fd >= 0:
        os.set_inheritable(args.heartbeat_fd, False)
    stacks = StackDump(args.stacks_dir) if args.stacks_dir else None
    if stacks is not None:
        stacks.install()
    if args.report_fd >= 0:
        os.set_inheritable(args.report_fd, False)
    sys.path.insert(0, os.getcwd())
    missing = missing_packages(args)
    if missing:
        sys.stderr.write(f"error: {missing}\n")
        return 1
    # uvicorn's Config sets up logging: built before the app is imported, as uvicorn itself does,
    # so that an app configuring uvicorn's loggers at import time keeps what it set.
    # Forked from a project-stage template, the app is imported already, after the template set
    # up logging as here: doing it again would undo what the app's import did to it.
    app_imported = args.app.partition(":")[0] in sys.modules
    try:
        config = build_config(args, logging_done=app_imported)
    except Exception as exc:  # a logging config file uvicorn cannot read
        sys.stderr.write(f"error: cannot use the logging configuration {args.log_config!r}: {exc}\n")
        return 1
    try:
        app = import_from_string(args.app)
        if args.factory:
            app = app()
    except Exception as exc:  # the user's code failed to import, or the factory raised: their frames
        print_user_traceback(exc, args.app)
        return 1
    if args.interface == "wsgi" or (args.interface == "auto" and interface.detect(app) == "wsgi"):
        try:
            app = interface.as_asgi(app)
        except ImportError:
            sys.stderr.write("error: " + interface.A2WSGI_MISSING.format(app=args.app, python=sys.executable) + "\n")
            return 1
        config.interface = "asgi3"
    config.app, config.factory = app, False  # loaded above, where a failure shows the user's frames
    try:
        config.load()  # here, not in serve(): the loaded app is wrapped below
    except Exception as exc:
        print_user_traceback(exc, args.app)
        return 1
    app = config.loaded_app
    longlived = LongLived(app)
    quota = RequestQuota.draw(args.max_requests, args.max_requests_jitter)
    # The long-lived (WebSockets, event-stream requests) go to the tracking, the rest straight to the app.
    gate = Gate(app, longlived, quota, on_stage=lambda stage: quota_stage(stage), head_limit=head_limit(config))
    heartbeat = Heartbeat(args.heartbeat_fd, args.heartbeat_interval, lambda: gate.count,
                          quota=lambda: (quota.limit, gate.stage)) if args.heartbeat_fd >= 0 else None

    def quota_stage(stage: int) -> None:
        if heartbeat is not None:
            heartbeat.beat_now()  # at once: the supervisor starts the replacement as the quota nears
        if stage == REACHED:
            server.quota_reached()

    def on_loop(loop: asyncio.AbstractEventLoop) -> None:
        if heartbeat is not None:
            heartbeat.start(loop)
        # The handler only hands the work to the loop (it may run between any two bytecodes).
        signal.signal(RESUME_SIGNAL, lambda signum, frame: loop.call_soon_threadsafe(server.resume))
        if stacks is not None:
            stacks.loop = loop

    server = ReportingServer(config, args.ready_fd, on_drain=longlived.drain, on_loop=on_loop,
                             report_fd=args.report_fd)
    if args.livereload_url:
        from supervisor.child.htmlinject import LiveReloadScript

        gate.app = LiveReloadScript(app, args.livereload_url, os.getpid(), draining=lambda: server.should_exit)
    config.loaded_app = gate
    server.run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(WorkerArgs.from_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
