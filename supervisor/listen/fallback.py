"""The supervisor's own answer on the app's port while no worker can take requests: a 503 that says why.

When no worker is alive and none will be soon (every slot gave up in development mode, typically
a syntax error saved a moment ago, or a restart waits out a backoff), nothing accepts on the
held socket and clients would queue with no answer until they time out. The supervisor then
answers on that socket itself, with ``Retry-After`` and the reason, until a worker starts again.
In production a crash loop ends ``up`` with exit code 1 instead, and the service manager takes
over; a backoff there still gets the 503, which load balancers understand.

:func:`fallback_text` is the pure decision; :class:`FallbackResponder` serves it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterable, Sequence

from supervisor.child.accepting import stop_accepting
from supervisor.state import SlotState, SlotStatus

# A restart sooner than this is not worth answering for: the backlog waits for the worker.
MIN_DELAY = 0.25
_ALIVE = (SlotState.STARTING, SlotState.RUNNING, SlotState.STOPPING)

RESPONSE_HEAD = (b"HTTP/1.1 503 Service Unavailable\r\n"
                 b"Content-Type: text/plain; charset=utf-8\r\n"
                 b"Retry-After: 1\r\n"
                 b"Connection: close\r\n")


def fallback_text(slots: Sequence[SlotStatus], production: bool, now: float) -> str | None:
    """The 503's text while the supervisor should answer for the app (wall-clock ``now``), else None.

    >>> fallback_text([SlotStatus(0, SlotState.BACKOFF, next_retry_at=12.0)], True, 10.0)[:38]
    'The app is restarting (next try in 2.0'
    """
    if not slots or any(slot.state in _ALIVE for slot in slots):
        return None
    if all(slot.state == SlotState.FATAL for slot in slots):
        return None if production else explain_fatal(slots)
    waits = [slot.next_retry_at - now for slot in slots
             if slot.state == SlotState.BACKOFF and slot.next_retry_at is not None]
    if not waits or min(waits) <= MIN_DELAY:
        return None
    lines = [f"The app is restarting (next try in {min(waits):.1f}s), so the supervisor is answering "
             "instead.", ""]
    for slot in slots:
        if slot.last_exit is not None:
            lines.append(f"web.{slot.index}: the worker {slot.last_exit.describe()}.")
    return "\n".join(lines) + "\n"


def explain_fatal(slots: Iterable[SlotStatus]) -> str:
    """The 503's text: why each slot gave up and the last lines its worker wrote to stderr."""
    lines = ["The app cannot start, so the supervisor is answering instead (development mode).", ""]
    for slot in slots:
        if slot.state == SlotState.FATAL:
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
        self._wanted = False
        self._task: asyncio.Task[None] | None = None

    def want(self, on: bool) -> None:
        """Answer (or stop answering) as soon as possible; callable from synchronous code.

        Starting and stopping both await, so one task applies the latest wish until the server
        matches it: a stop requested while a start is under way is never lost.
        """
        self._wanted = on
        if (self._server is not None) != on and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._reconcile())

    async def _reconcile(self) -> None:
        while (self._server is not None) != self._wanted:
            await (self._start() if self._wanted else self._stop())

    async def close(self) -> None:
        self._wanted = False
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._stop()

    async def _start(self) -> None:
        dup = self.listener.dup()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Answer(self.body), sock=dup)

    async def _stop(self) -> None:
        """Stop accepting, so the next worker gets every connection still in the backlog."""
        server, self._server = self._server, None
        if server is None:
            return
        await stop_accepting([server])  # they still get their answer
        server.close()
