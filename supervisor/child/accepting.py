"""Stop accepting on a listening socket shared with other processes, without losing a connection;
and take connections again."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Callable, Iterable

# Sent by the supervisor to a worker that stopped at its request quota when its successor failed:
# take connections again rather than leave the slot serving no one (see ReportingServer).
RESUME_SIGNAL = signal.SIGUSR1


def pause_accepting(loop: asyncio.AbstractEventLoop, servers: Iterable[asyncio.Server]) -> list[socket.socket]:
    """Take no more connections from the servers' sockets, at once; the sockets stay shared.

    asyncio's own loop accepts when the listening socket is readable: removing the reader stops
    it and leaves this process's descriptor open (:func:`resume_accepting` adds it back). uvloop
    listens through libuv, which no reader reaches: there the server is closed, which stops libuv
    listening and closes this process's descriptor only (the supervisor and the successor hold
    their own), while the connections it already accepted go on. Returns, for uvloop, a copy of
    each socket it closed, from which :func:`reopen` makes new servers; for asyncio, nothing.
    """
    copies: list[socket.socket] = []
    for server in servers:
        if isinstance(loop, BaseSelectorEventLoop):
            for sock in server.sockets:
                loop.remove_reader(sock.fileno())
        else:
            copies += [socket.socket(fileno=os.dup(sock.fileno())) for sock in server.sockets]
            server.close()
    return copies


async def stop_accepting(servers: Iterable[asyncio.Server]) -> list[socket.socket]:
    """Stop taking connections from the servers' sockets; let those accepted a moment ago set up.

    Only this process stops accepting: another process sharing the socket (the successor
    worker) takes everything still in the backlog. Closing the asyncio server right away instead
    would leak connections whose setup is still scheduled (CPython gh-109564), so the pending
    setup tasks get a few loop iterations first; the caller closes the servers after. Returns
    what :func:`pause_accepting` does.
    """
    copies = pause_accepting(asyncio.get_running_loop(), list(servers))
    for _ in range(3):
        await asyncio.sleep(0)
    return copies


def resume_accepting(servers: Iterable[asyncio.Server]) -> None:
    """Take connections again on servers whose sockets' readers were removed (above, or by
    ``ReportingServer._stop_accepting``). asyncio has no public call for it: ``_start_serving``
    re-registers the accept reader of each socket once ``_serving`` is cleared."""
    for server in servers:
        server._serving = False  # type: ignore[attr-defined]
        server._start_serving()  # type: ignore[attr-defined]


async def reopen(loop: asyncio.AbstractEventLoop, copies: Iterable[socket.socket],
                 protocol_factory: Callable[[], asyncio.BaseProtocol], backlog: int) -> list[asyncio.Server]:
    """uvloop: new servers accepting on the sockets :func:`pause_accepting` copied."""
    return [await loop.create_server(protocol_factory, sock=sock, backlog=backlog) for sock in copies]
