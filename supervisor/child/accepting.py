"""Stop accepting on a listening socket shared with other processes, without losing a connection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


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
