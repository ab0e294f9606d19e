"""The worker process: ``python -m supervisor.worker``, started by the supervisor, never by hand.

It serves the ASGI app with uvicorn on the listening socket the supervisor hands it, and tells
the supervisor it is serving by writing one line to a pipe the supervisor owns.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys
from dataclasses import dataclass

import uvicorn

PR_SET_PDEATHSIG = 1
READY_MESSAGE = b"ready\n"


@dataclass(frozen=True)
class WorkerArgs:
    app: str
    factory: bool
    listen_fd: int
    ready_fd: int
    parent_pid: int
    log_level: str
    graceful_timeout: float

    def to_argv(self) -> list[str]:
        argv = ["--app", self.app, "--listen-fd", str(self.listen_fd), "--ready-fd", str(self.ready_fd),
                "--parent-pid", str(self.parent_pid), "--log-level", self.log_level,
                "--graceful-timeout", repr(self.graceful_timeout)]
        return argv + (["--factory"] if self.factory else [])


def parse_args(argv: list[str]) -> WorkerArgs:
    p = argparse.ArgumentParser(prog="python -m supervisor.worker")
    p.add_argument("--app", required=True)
    p.add_argument("--factory", action="store_true")
    p.add_argument("--listen-fd", type=int, required=True)
    p.add_argument("--ready-fd", type=int, required=True)
    p.add_argument("--parent-pid", type=int, required=True)
    p.add_argument("--log-level", default="info")
    p.add_argument("--graceful-timeout", type=float, default=10.0)
    ns = p.parse_args(argv)
    return WorkerArgs(ns.app, ns.factory, ns.listen_fd, ns.ready_fd, ns.parent_pid, ns.log_level,
                      ns.graceful_timeout)


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel to SIGKILL us when the supervisor dies; False if it already has.

    SIGKILL rather than SIGTERM: a supervisor that was SIGKILLed cannot drain anyone, and the
    point is that nothing keeps holding the port. The check after prctl closes the window where
    the parent died before the request was made.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the supervisor's own stop path still applies
    return os.getppid() == parent_pid


class ReportingServer(uvicorn.Server):
    """A uvicorn server that reports readiness on a pipe once it is accepting connections."""

    def __init__(self, config: uvicorn.Config, ready_fd: int) -> None:
        super().__init__(config)
        self.ready_fd = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            os.write(self.ready_fd, READY_MESSAGE)
            os.close(self.ready_fd)


def run(args: WorkerArgs) -> int:
    if not die_with_parent(args.parent_pid):
        return 1
    # A real TCP socket object: asyncio then sets TCP_NODELAY on each connection, which
    # uvicorn's --fd (it assumes AF_UNIX) never does.
    sock = socket.socket(fileno=args.listen_fd)
    sys.path.insert(0, os.getcwd())
    config = uvicorn.Config(
        args.app,
        factory=args.factory,
        log_level=args.log_level,
        use_colors=False,
        timeout_graceful_shutdown=args.graceful_timeout,
        server_header=False,
    )
    ReportingServer(config, args.ready_fd).run(sockets=[sock])
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
