"""uvicorn's HTTP protocols, minus a traceback that any client can put in the log; and the choice
between them.

A request whose headers are fine but whose body is malformed (a chunk size that is not hex, say)
is already in the app's hands when the parser finds the fault. uvicorn then answers ``400`` itself
and closes the connection, but leaves the request cycle believing its client is still there. Under
h11 the app's own response then fails inside h11 (``can't handle event type Response when
role=SERVER and state=MUST_CLOSE``) and uvicorn logs "Exception in ASGI application" with a full
traceback, once per such request; under httptools the response goes nowhere but is logged as
served. Here the cycle learns at once what a disconnect would have told it: the app's ``send`` is
ignored and its ``receive`` returns ``http.disconnect``.

Used by each worker (the app's port) and, through :mod:`supervisor.status.limits`, by the status API.
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any, Literal

from uvicorn.protocols.http.h11_impl import H11Protocol

HttpChoice = Literal["auto", "h11", "httptools"]
# h11's bound on a request's line and headers (h11.DEFAULT_MAX_INCOMPLETE_EVENT_SIZE); llhttp has none.
DEFAULT_HEAD_LIMIT = 16 * 1024
INVALID = "Invalid HTTP request received."  # uvicorn's own words for a request its parser refuses


def head_limit(config: Any) -> int:
    """The bound on a request head: uvicorn's ``h11_max_incomplete_event_size``, or h11's default."""
    return getattr(config, "h11_max_incomplete_event_size", None) or DEFAULT_HEAD_LIMIT


def disconnect_cycle(protocol: Any) -> None:
    cycle = getattr(protocol, "cycle", None)
    if cycle is not None and not cycle.response_complete:
        cycle.disconnected = True
        cycle.message_event.set()  # wakes an app waiting in receive() for the rest of the body


class CleanH11Protocol(H11Protocol):
    """``uvicorn.Config(http=CleanH11Protocol)``: uvicorn's h11 protocol with the fix above."""

    def send_400_response(self, msg: str) -> None:
        super().send_400_response(msg)
        disconnect_cycle(self)


def httptools_installed() -> bool:
    return importlib.util.find_spec("httptools") is not None


def http_protocol(choice: str) -> type[asyncio.Protocol]:
    """The protocol class for ``[app] http``: ``auto`` is httptools when installed, as in uvicorn.

    Imported here, not at the top: uvicorn's httptools module needs httptools, an optional package.
    """
    if choice == "h11" or (choice == "auto" and not httptools_installed()):
        return CleanH11Protocol
    from supervisor.child.protocol_httptools import CleanHttpToolsProtocol

    return CleanHttpToolsProtocol
