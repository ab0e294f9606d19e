"""Binding the webapp's listening socket in the supervisor, before any worker exists.

Binding here (not checking and letting the worker bind) removes the check-then-bind race, and
because the supervisor keeps the socket open, the port never changes across worker restarts.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from supervisor.errors import PortError


@dataclass(frozen=True)
class Bound:
    sock: socket.socket
    port: int
    # Why the port differs from the preferred one, for the log; empty when it does not.
    note: str = ""


def port_holder(port: int) -> str | None:
    """Describe the process listening on ``port`` (``"python (pid 123)"``), if psutil can tell."""
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                try:
                    proc = psutil.Process(conn.pid)
                    return f"{proc.name()} (pid {conn.pid})"
                except psutil.Error:
                    return f"pid {conn.pid}"
    except (psutil.Error, OSError):
        return None
    return None


def describe_holder(port: int, holder: Callable[[int], str | None] = port_holder,
                    unknown: str = "in use") -> str:
    """``"held by python (pid 123)"`` for an error message; ``unknown`` when psutil cannot tell
    (another user's process, or a port refused for another reason)."""
    who = holder(port)
    return f"held by {who}" if who else unknown


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def display_url(host: str, port: int) -> str:
    """The URL to print for a listener on ``host``: wildcards show as the loopback address.

    >>> display_url("0.0.0.0", 8000), display_url("::", 8000), display_url("[::1]", 8000)
    ('http://127.0.0.1:8000', 'http://[::1]:8000', 'http://[::1]:8000')
    """
    shown = host.strip("[]")
    if shown in ("", "0.0.0.0"):
        shown = "127.0.0.1"
    elif shown == "::":
        shown = "::1"
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def bind_listener(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """Bind and listen on ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose protocol says TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # SO_REUSEADDR only lets us rebind past TIME_WAIT; deliberately not SO_REUSEPORT, which
        # would let another process bind the same port and silently take half the traffic.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    # Not inheritable: workers get it through Popen's pass_fds, and nothing else should.
    return sock


def bind_port(host: str, preferred: int, search: int, strict: bool, backlog: int = 2048,
              holder: Callable[[int], str | None] = port_holder) -> Bound:
    """Bind ``preferred`` or, unless ``strict``, the next free port among the following ``search``.

    Raises :class:`PortError` with what holds the port when nothing could be bound.
    """
    if preferred == 0:
        sock = _bind_or_raise(host, 0, backlog)
        return Bound(sock, sock.getsockname()[1])
    last = preferred if strict else min(preferred + search, 65535)
    first_error: OSError | None = None
    for port in range(preferred, last + 1):
        try:
            sock = bind_listener(host, port, backlog)
        except OSError as exc:
            if exc.errno == errno.EACCES:
                # Not "in use": the next ports are as privileged, and nobody holds this one.
                raise PortError(permission_denied(host, port, "PORT or [server] port")) from None
            if exc.errno != errno.EADDRINUSE:
                raise PortError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            first_error = first_error or exc
            continue
        if port == preferred:
            return Bound(sock, port)
        held = describe_holder(preferred, holder)
        return Bound(sock, port, f"port {preferred} is {held}; using {port} instead")
    held = describe_holder(preferred, holder)
    reason = first_error.strerror if first_error else "unavailable"
    if strict:
        raise PortError(f"port {preferred} on {host} is {held} ({reason}) and strict_port is set; "
                        f"free the port or choose another with PORT or [server] port")
    raise PortError(f"no free port on {host} from {preferred} to {last}: port {preferred} is {held}; "
                    f"free a port or raise [server] port_range")


def _bind_or_raise(host: str, port: int, backlog: int) -> socket.socket:
    try:
        return bind_listener(host, port, backlog)
    except OSError as exc:
        raise PortError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def permission_denied(host: str, port: int, setting: str) -> str:
    """The message for EACCES on bind: what it means and how to fix it."""
    why = (f"ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port from 1024 up with {setting}"
           if port < 1024 else f"check the security policy that refuses it, or choose another port with {setting}")
    return f"cannot listen on {host}:{port}: permission denied ({why})"
