"""The zygote's own side: a forked worker-to-be that imports uvicorn, waits for its orders, becomes the worker.

The supervisor forks it (:mod:`supervisor.warm.zygote`) before importing its own modules; this
module runs in the child, from the fork to ``worker.run``, and :func:`become_worker` is also how a
first worker forked from the supervisor itself turns into a worker (:mod:`supervisor.warm.early`).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import io
import json
import logging
import os
import resource
import signal
import socket
import sys
import traceback
from typing import IO, NoReturn

from supervisor.child.args import Fd, WorkerArgs

# The descriptors an order carries: the worker's (WorkerArgs.to_message) and its stdio pipes.
ORDER_FDS = frozenset({Fd.LISTEN, Fd.READY, Fd.STDOUT, Fd.STDERR})
# One order: the worker's arguments and environment (an environment of a few hundred kB fits).
MAX_ORDER = 1 << 20
# What every worker imports before the app (uvicorn's protocols load as its Config does).
WORKER_MODULES = ("supervisor.child.worker", "uvicorn.protocols.http.auto",
                  "uvicorn.protocols.websockets.auto", "uvicorn.lifespan.on")


def wait_for_orders(sock: socket.socket) -> NoReturn:
    """Import what every worker needs, then wait for the order that makes this process the first
    worker; exit quietly if the supervisor goes first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        for name in WORKER_MODULES:
            importlib.import_module(name)
        message, fds, _, _ = socket.recv_fds(sock, MAX_ORDER, len(Fd), socket.MSG_CMSG_CLOEXEC)
        if not message:
            os._exit(0)
        order = json.loads(message)
        args, pipes = WorkerArgs.from_message(order, fds)
        if ORDER_FDS - set(args.descriptors()) - set(pipes):
            os._exit(0)
        sock.close()
    except BaseException:  # the supervisor sees us gone and forks the worker itself
        os._exit(0)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in any interpreter
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with contextlib.suppress(ValueError, OSError):  # the supervisor raised its limit after forking us
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(order["nofile"], hard), hard))
    become_worker(args, pipes[Fd.STDOUT], pipes[Fd.STDERR], order["environ"], order["cwd"], closing=[])


# ----- becoming the worker (here, or in a process the supervisor forked from itself) ---------------

def become_worker(args: WorkerArgs, out_fd: int, err_fd: int, environ: dict[str, str], cwd: str,
                  closing: list[int]) -> NoReturn:
    """Run the worker in this forked process: never returns into the supervisor's code."""
    code = 1
    try:
        os.setsid()  # a session and process group of its own, as every worker
        for fd in closing:
            os.close(fd)
        _own_stdio(out_fd, err_fd)
        _forget_supervisor_logging()
        os.environ.clear()
        os.environ.update(environ)
        os.chdir(cwd)
        # As in a spawned worker (python -m puts its directory first), not the supervisor's.
        sys.path[0] = cwd
        from supervisor.child import worker

        sys.argv[:] = [worker.__file__ or "worker", *args.to_argv()]
        code = worker.run(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a worker's error is shown on its stderr, like a spawned one's
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()  # as an interpreter's end would: the app's handlers too
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _own_stdio(out_fd: int, err_fd: int) -> None:
    """Its own pipes on 0-2, unbuffered (as PYTHONUNBUFFERED=1 makes a spawned worker's)."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd, target in ((out_fd, 1), (err_fd, 2)):
        os.dup2(fd, target)
        os.close(fd)
    streams: list[IO[str]] = []
    for fd in (1, 2):
        raw = io.FileIO(fd, "w", closefd=False)
        streams.append(io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", write_through=True))
    sys.stdout, sys.stderr = streams
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")


def _forget_supervisor_logging() -> None:
    """The supervisor's handlers (redacting, to its own stderr) are not the app's."""
    logging.captureWarnings(False)
    for name in (None, "supervisor", "supervisor.worker"):
        log = logging.getLogger(name)
        log.handlers.clear()
        log.setLevel(logging.WARNING if name is None else logging.NOTSET)
        log.propagate = True
