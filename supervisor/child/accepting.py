"""Stop accepting on a listening socket shared with other processes, without losing a connection."""

from __future__ import annotations

import asyncio
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Iterable


def pause_accepting(loop: asyncio.AbstractEventLoop, servers: Iterable[asyncio.Server]) -> None:
    """Take no more connections from the servers' sockets, at once; the sockets stay shared.

    asyncio's own loop accepts when the listening socket is readable: removing the reader stops
    it and leaves this process's descriptor open. uvloop listens through libuv, which no reader
    reaches: there closing the server stops libuv listening and closes this process's descriptor
    only (the supervisor and the successor hold their own), while the connections it already
    accepted go on.
    """
    for server in servers:
        if isinstance(loop, BaseSelectorEventLoop):
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
        else:
            server.close()


async def stop_accepting(servers: Iterable[asyncio.Server]) -> None:
    """Stop taking connections from the servers' sockets; let those accepted a moment ago set up.

    Only this process stops accepting: another process sharing the socket (the successor
    worker) takes everything still in the backlog. Closing the asyncio server right away instead
    would leak connections whose setup is still scheduled (CPython gh-109564), so the pending
    setup tasks get a few loop iterations first; the caller closes the servers after.
    """
    servers = list(servers)
    pause_accepting(asyncio.get_running_loop(), servers)
    for _ in range(3):
        await asyncio.sleep(0)
