"""Socket activation: adopt the listening socket systemd (or ``systemd-socket-activate``) passed.

With a ``.socket`` unit, systemd binds the port, even a privileged one, before the service
starts, holds it across restarts (connections wait in the backlog instead of being refused), and
passes it as fd 3 with ``LISTEN_FDS=1`` and ``LISTEN_PID=<our pid>``. The supervisor then uses that
socket where it would otherwise bind its own; workers receive it exactly as they would the bound
one. The ``LISTEN_*`` variables are scrubbed from the workers' environment (see
:mod:`supervisor.systemd.environ`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.errors import PortError
from supervisor.listen.ports import Bound

logger = logging.getLogger("supervisor")

SD_LISTEN_FDS_START = 3


@dataclass(frozen=True)
class Passed:
    """The descriptors the environment says were passed to this process."""

    fds: list[int]
    names: list[str]


def passed_fds(environ: Mapping[str, str], pid: int) -> Passed | None:
    """Read ``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES``; None unless they name ``pid``.

    >>> passed_fds({"LISTEN_PID": "9", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}, 9)
    Passed(fds=[3], names=['http'])
    >>> passed_fds({"LISTEN_PID": "8", "LISTEN_FDS": "1"}, 9) is None
    True
    """
    if environ.get("LISTEN_PID", "").strip() != str(pid):
        return None  # inherited from some other process's activation: not ours to take
    try:
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return None
    if count < 1:
        return None
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    names = environ.get("LISTEN_FDNAMES", "").split(":") if environ.get("LISTEN_FDNAMES") else []
    names += ["unknown"] * (count - len(names))
    return Passed(fds, names[:count])


def adopt_listener(fd: int, name: str) -> Bound:
    """Wrap the passed ``fd`` as the supervisor's listener; PortError unless it is a listening TCP socket."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise PortError(f"socket activation: fd {fd} ({name}) is not a socket: {exc.strerror}") from None
    problem = None
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        problem = "expected a TCP stream socket (ListenStream=PORT or ADDRESS:PORT)"
    elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        problem = "it is not listening (Accept=no is required)"
    if problem:
        sock.detach()  # not ours to close: leave the descriptor as systemd passed it
        raise PortError(f"socket activation: fd {fd} ({name}): {problem}")
    sock.set_inheritable(False)  # workers get it through pass_fds, like a socket we bound ourselves
    port = int(sock.getsockname()[1])
    logger.info("supervisor: using the socket passed by systemd (fd %d, %r), port %d", fd, name, port)
    return Bound(sock, port)


def activated_listener(environ: Mapping[str, str], pid: int) -> Bound | None:
    """The passed listening socket, or None when the process was not socket-activated.

    Only the first descriptor is used: the webapp has one port. Raises PortError (exit 4) when
    the passed descriptor is unusable, rather than quietly binding a port of our own that the
    socket unit's clients would never reach.
    """
    passed = passed_fds(environ, pid)
    if passed is None:
        return None
    return adopt_listener(passed.fds[0], passed.names[0])
