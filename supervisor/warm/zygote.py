"""A worker-to-be, forked the moment ``up`` starts, importing uvicorn while the supervisor reads its settings.

A cold start is the supervisor's own start (its settings, the ``.env`` file, the ports) and then
the first worker's (uvicorn, the app). Both are mostly imports, and the machine has more than one
core: so ``python -m supervisor up`` forks first thing, before importing the supervisor's own
modules. The child imports what every worker needs (uvicorn and our worker module, never the
app) and waits. Once the settings are valid and the port bound, the supervisor hands it the
worker's arguments, environment and descriptors over a socket pair (``SCM_RIGHTS``), and it
becomes the first worker (:mod:`supervisor.warm.early`). When no first worker may start early
(a database to wait for, a migration, no template), or the settings are wrong, it is discarded.

It holds nothing of the supervisor's but the interpreter, and needs no parent-death signal
while it waits: the supervisor's end of the pair is its only reader, so if the supervisor goes,
the wait ends (end of file) and so does the child. Only the standard library is imported here; the
child's side, waiting for its orders and becoming the worker, is :mod:`supervisor.child.zygote`.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from supervisor.child.args import Fd, WorkerArgs
from supervisor.child.zygote import wait_for_orders


def wanted(argv: Sequence[str]) -> bool:
    """A worker-to-be is worth forking for this command line: ``up``, not its help."""
    return list(argv[:1]) == ["up"] and not any(arg in ("-h", "--help") for arg in argv)


@dataclass
class Zygote:
    """The supervisor's side: the child's pid, our end of the pair, the modules it inherited."""

    pid: int
    sock: socket.socket | None
    inherited: frozenset[str]

    def hand(self, args: WorkerArgs, environ: dict[str, str], cwd: str, out_fd: int, err_fd: int) -> bool:
        """Make it the worker ``args`` describe, writing to ``out_fd`` and ``err_fd``; False (and it
        is discarded) if it is gone."""
        if self.sock is None:
            return False
        message, fds = args.to_message({Fd.STDOUT: out_fd, Fd.STDERR: err_fd})
        order = {**message, "environ": environ, "cwd": cwd, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
        try:
            socket.send_fds(self.sock, [json.dumps(order).encode()], fds)
        except OSError:  # it died (an import failed, or it was killed): the caller forks itself
            self.discard()
            return False
        self.sock.close()
        self.sock = None
        return True

    def discard(self) -> None:
        """End it unused, and reap it: nothing of it must outlive this call."""
        if self.sock is None:
            return
        self.sock.close()
        self.sock = None
        # Here, not at the top: it loads ctypes, which nothing before the fork needs.
        from supervisor.child.osutil import kill_and_reap

        kill_and_reap(self.pid)


def start_zygote() -> Zygote | None:
    """Fork the worker-to-be; None where fork or descriptor passing is not available."""
    if not hasattr(os, "fork") or not hasattr(socket, "send_fds"):
        return None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    inherited = frozenset(sys.modules)
    parent = os.getpid()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    # Ctrl-C in the terminal reaches the whole foreground group; ending the start is the
    # supervisor's business (it discards the child), and a traceback from the child would only
    # confuse. Blocked across the fork, so that none arrives before the child ignores it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    finally:
        if os.getpid() == parent:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if pid == 0:
        ours.close()
        wait_for_orders(theirs)
    theirs.close()
    return Zygote(pid, ours, inherited)
