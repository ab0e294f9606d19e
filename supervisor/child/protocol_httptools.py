"""uvicorn's httptools protocol with the fix of :mod:`supervisor.child.protocol`, and refusing what
h11 refuses: a request line without an HTTP version, a request head larger than h11's limit.

Its own module: importing it needs httptools (``uvicorn[standard]``), which is optional.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from supervisor.child.protocol import disconnect_cycle

# h11's bound on a request's line and headers (h11.DEFAULT_MAX_INCOMPLETE_EVENT_SIZE); llhttp has none.
DEFAULT_HEAD_LIMIT = 16 * 1024


class CleanHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.Config(http=CleanHttpToolsProtocol)``: the malformed body ends the app's cycle too;
    an HTTP/0.9 request line and a head over ``h11_max_incomplete_event_size`` get a 400, as under h11.

    Refused by raising in a parser callback: the parser reports a callback error, which uvicorn
    answers as any malformed request (a 400, the connection closed).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_limit = getattr(self.config, "h11_max_incomplete_event_size", None) or DEFAULT_HEAD_LIMIT
        self._head_size = 0

    def send_400_response(self, msg: str) -> None:
        super().send_400_response(msg)
        disconnect_cycle(self)

    def on_message_begin(self) -> None:
        self._head_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        # llhttp takes a request line without a version ("GET /") as HTTP/0.9, and the app would
        # answer it; h11 refuses it.
        if self.parser.get_http_version() == "0.9":
            raise ValueError("an HTTP/0.9 request line (no HTTP version)")
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self._head_limit:
            raise ValueError(f"a request head over {self._head_limit} bytes")
