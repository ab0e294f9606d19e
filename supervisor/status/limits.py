"""Bounded connections for the status API's embedded uvicorn server.

Anyone who can reach the API may connect, and an idle connection needs no token. uvicorn bounds
neither: it starts no timer until a first response is sent, a client that trickles a header byte
every few seconds keeps its connection forever (each byte cancels the keep-alive timer), and its
``limit_concurrency`` answers requests with 503 but still accepts and keeps every connection. A
thousand idle connections used up the supervisor's descriptors, and the next worker could not be
spawned. This protocol adds what is missing:

* **a request deadline**: from the moment a connection opens, and again from the end of each
  response, the client has ``header_timeout`` seconds to complete a request's headers, whatever
  it sends meanwhile; a connection that misses it is closed. It covers idle connections, idle
  keep-alive and slow-loris headers alike;
* **a connection cap**: at ``max_connections``, a new connection closes the connection that has
  waited longest without a request in flight (an idle or slow one), so a flood of idle
  connections cannot keep a probe out; when every connection is busy with a request, the new one
  is answered ``503`` and closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from supervisor.child.protocol import CleanH11Protocol

REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
           b"connection: close\r\ncontent-length: 34\r\n\r\ntoo many connections; retry later\n")


class BoundedH11Protocol(CleanH11Protocol):
    """uvicorn's h11 protocol with a request deadline and a connection cap (set by :func:`bounded`)."""

    max_connections = 64
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        # Loop time since when no request has been in flight; None while one is.
        self.waiting_since: float | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self._make_room():
            self._refused = True
            transport.write(REFUSAL)
            transport.close()
            return
        super().connection_made(transport)
        self._start_waiting()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return  # never set up, never counted
        self._stop_waiting()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request's headers are complete: it is being served
            self._stop_waiting()

    def on_response_complete(self) -> None:
        before = self.cycle
        super().on_response_complete()
        # Unless a pipelined request has started meanwhile, the next one gets a new deadline.
        if self.cycle is before and not self.transport.is_closing():
            self._start_waiting()

    # ----- the deadline -------------------------------------------------------------------

    def _start_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self.waiting_since = self.loop.time()
        self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.waiting_since = None

    def _expire(self) -> None:
        self._deadline = None
        if self.waiting_since is not None and not self.transport.is_closing():
            self.transport.close()

    # ----- the cap ------------------------------------------------------------------------

    def _make_room(self) -> bool:
        """True when this connection may be served: under the cap, or after closing the one that
        has waited longest without a request."""
        open_ = [c for c in self.connections
                 if isinstance(c, BoundedH11Protocol) and not c.transport.is_closing()]
        if len(open_) < self.max_connections:
            return True
        waiting = [(c.waiting_since, c) for c in open_ if c.waiting_since is not None]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda pair: pair[0])[1]
        oldest.transport.close()
        return True


def bounded(max_connections: int, header_timeout: float) -> type[BoundedH11Protocol]:
    """The protocol class for one server (uvicorn's ``Config(http=...)``) with these limits."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,),
                {"max_connections": max_connections, "header_timeout": header_timeout})
