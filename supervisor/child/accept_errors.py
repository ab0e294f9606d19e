"""Accept errors logged once per interval, not once per waiting connection.

When descriptors run out, asyncio's accept loop logs "socket.accept() out of system resource"
with a traceback for every connection waiting in the backlog, and tries again a second later: tens
of thousands of tracebacks within seconds. :class:`AcceptErrorLog` reports it once per interval
instead, with a count. Both the supervisor (its status API and fallback responder) and each worker
(the app's port) install one, so it lives here, importing only the standard library.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("supervisor")

ACCEPT_ERROR = "socket.accept() out of system resource"
REPORT_INTERVAL = 10.0  # seconds between two reports of the same accept error


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
