"""Stop accepting on a listening socket shared with other processes, without losing a connection;
and take connections again."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable

# Sent by the supervisor to a worker that stopped at its request quota when its successor failed:
# take connections again rather than leave the slot serving no one (see ReportingServer).
RESUME_SIGNAL = signal.SIGUSR1


async def stop_accepting(servers: Iterable[asyncio.Server]) -> None:
    """Stop taking connections from the servers' sockets; let those accepted a moment ago set up.

    Only this process stops accepting: the socket stays open, so another process sharing it (the
    successor worker) takes everything still in the backlog. Closing the asyncio server right
    away instead would leak connections whose setup is still scheduled (CPython gh-109564), so
    the pending setup tasks get a few loop iterations first; the caller closes the servers after.
    """
    loop = asyncio.get_running_loop()
    for server in servers:
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
    for _ in range(3):
        await asyncio.sleep(0)


def resume_accepting(servers: Iterable[asyncio.Server]) -> None:
    """Take connections again on servers whose sockets' readers were removed (above, or by
    ``ReportingServer._stop_accepting``). asyncio has no public call for it: ``_start_serving``
    re-registers the accept reader of each socket once ``_serving`` is cleared."""
    for server in servers:
        server._serving = False  # type: ignore[attr-defined]
        server._start_serving()  # type: ignore[attr-defined]
