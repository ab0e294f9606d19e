"""Signal handlers that only enqueue: the event loop reads the queue and acts."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from supervisor.contract import Signalled

# SIGTTIN and SIGTTOU add and remove a worker, as in gunicorn and uvicorn.
DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)


@contextlib.contextmanager
def queued_signals(post: Callable[[Signalled], object], signals: Iterable[signal.Signals] = DEFAULT_SIGNALS
                   ) -> Iterator[None]:
    """Post each received signal (``Signalled(SIGTERM)``) to the loop's queue; restore the old
    handlers after."""
    loop = asyncio.get_running_loop()
    installed: list[tuple[signal.Signals, Any]] = []
    try:
        for sig in signals:
            previous = signal.getsignal(sig)
            loop.add_signal_handler(sig, post, Signalled(sig))
            installed.append((sig, previous))
        yield
    finally:
        for sig, previous in installed:
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous)
