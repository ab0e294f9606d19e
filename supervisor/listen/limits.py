"""Running out of descriptors: a higher limit at start, and a quiet log when it happens anyway.

The usual soft limit of open files is 1,024 while the hard limit is far higher; a supervisor
holding a few hundred connections (status API clients, the fallback responder's) should not be
the first to run out, so ``up`` raises the soft limit to the hard one. Workers inherit it: an
ASGI server on asyncio (epoll) has no use for the low default either.

When descriptors run out all the same, asyncio's accept loop logs "socket.accept() out of system
resource" with a traceback for every connection waiting in the backlog, and tries again a second
later: tens of thousands of tracebacks within seconds. :class:`AcceptErrorLog` reports it once
per interval instead, with a count.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("supervisor")

ACCEPT_ERROR = "socket.accept() out of system resource"
REPORT_INTERVAL = 10.0  # seconds between two reports of the same accept error


def _nr_open(path: Path = Path("/proc/sys/fs/nr_open")) -> int:
    """The kernel's ceiling for RLIMIT_NOFILE (an unlimited hard limit cannot be a soft limit)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 1 << 20


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (before, after), or None if
    nothing changed (already there, or the kernel refused)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _nr_open() if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return None
    return soft, target


class AcceptErrorLog:
    """An event loop exception handler: accept errors once per ``interval``, the rest as asyncio would.

    The supervisor installs one for its own servers (status API, fallback responder), and each
    worker one for the app's port.

    >>> loop.set_exception_handler(AcceptErrorLog())  # doctest: +SKIP
    """

    def __init__(self, interval: float = REPORT_INTERVAL, clock: Callable[[], float] = time.monotonic,
                 log: logging.Logger = logger, prefix: str = "supervisor: ") -> None:
        self.interval = interval
        self.clock = clock
        self.log = log
        self.prefix = prefix  # who could not accept: the supervisor, or a worker (its own log format)
        self._last: float | None = None
        self._since_last = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_ERROR:
            loop.default_exception_handler(context)
            return
        self._since_last += 1
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            return
        exc = context.get("exception")
        why = getattr(exc, "strerror", None) or str(exc)
        self.log.error("%scannot accept connections: %s (%d time(s) since the last report; "
                       "reported at most every %gs); new connections wait in the backlog until "
                       "descriptors are free", self.prefix, why, self._since_last, self.interval)
        self._last = now
        self._since_last = 0
