"""The development-mode answer while the app cannot start: a 503 that says why.

When every worker slot has given up (a crash loop, typically a syntax error saved a moment ago),
nothing accepts on the held socket and a browser would spin until it times out. In development
mode the supervisor then answers on that socket itself, with the reason and the worker's last
lines, until the next change starts a worker again. Production never does this: there, a crash
loop ends ``up`` with exit code 1 and the service manager takes over.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable

from supervisor.state import FATAL, SlotStatus

RESPONSE_HEAD = (b"HTTP/1.1 503 Service Unavailable\r\n"
                 b"Content-Type: text/plain; charset=utf-8\r\n"
                 b"Retry-After: 1\r\n"
                 b"Connection: close\r\n")


def explain_fatal(slots: Iterable[SlotStatus]) -> str:
    """The 503's text: why each slot gave up and the last lines its worker wrote to stderr."""
    lines = ["The app cannot start, so the supervisor is answering instead (development mode).", ""]
    for slot in slots:
        if slot.state == FATAL:
            lines.append(f"web.{slot.index}: {slot.fatal_reason}. Last lines on stderr:")
            lines.extend(f"    {line}" for line in slot.stderr_tail)
            lines.append("")
    lines.append("Save a fix and the app is started again.")
    return "\n".join(lines) + "\n"


def render(body: str) -> bytes:
    data = body.encode("utf-8", "replace")
    return RESPONSE_HEAD + f"Content-Length: {len(data)}\r\n\r\n".encode() + data


class _Answer(asyncio.Protocol):
    """Answers the first bytes of a request with the 503 and closes the connection."""

    def __init__(self, body: Callable[[], str]) -> None:
        self.body = body
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(render(self.body()))
            self.transport.close()


class FallbackResponder:
    """Serves the 503 on a duplicate of the held socket between :meth:`start` and :meth:`stop`.

    A duplicate, so that closing this server never closes the socket the workers are handed.
    """

    def __init__(self, listener: socket.socket, body: Callable[[], str]) -> None:
        self.listener = listener
        self.body = body
        self._server: asyncio.Server | None = None

    @property
    def active(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        dup = self.listener.dup()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Answer(self.body), sock=dup)

    async def stop(self) -> None:
        """Stop accepting, so the next worker gets every connection still in the backlog."""
        server, self._server = self._server, None
        if server is None:
            return
        loop = asyncio.get_running_loop()
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())
        # Let connections accepted a moment ago finish setting up before the server is closed
        # (closing first would leak them: CPython gh-109564); they still get their answer.
        for _ in range(3):
            await asyncio.sleep(0)
        server.close()
