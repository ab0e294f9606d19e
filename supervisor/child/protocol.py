"""uvicorn's h11 protocol, minus a traceback that any client can put in the log.

A request whose headers are fine but whose body is malformed (a chunk size that is not hex, say)
is already in the app's hands when h11 finds the fault. uvicorn then answers ``400`` itself and
closes the connection, but leaves the request cycle believing its client is still there: the
app's own response fails inside h11 (``can't handle event type Response when role=SERVER and
state=MUST_CLOSE``) and uvicorn logs "Exception in ASGI application" with a full traceback, once
per such request. Here the cycle learns at once what a disconnect would have told it: the app's
``send`` is ignored and its ``receive`` returns ``http.disconnect``.

Used by each worker (the app's port) and, through :mod:`supervisor.status.limits`, by the status API.
"""

from __future__ import annotations

from uvicorn.protocols.http.h11_impl import H11Protocol


class CleanH11Protocol(H11Protocol):
    """``uvicorn.Config(http=CleanH11Protocol)``: uvicorn's h11 protocol with the fix above."""

    def send_400_response(self, msg: str) -> None:
        super().send_400_response(msg)
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()  # wakes an app waiting in receive() for the rest of the body
