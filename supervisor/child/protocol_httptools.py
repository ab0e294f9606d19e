"""uvicorn's httptools protocol with the fix of :mod:`supervisor.child.protocol`, and a bound on a
request head that is still arriving.

h11 refuses a head larger than its bound; llhttp has none, and uvicorn gathers the URL and the
headers for as long as a client sends them. A head that has arrived whole, and an HTTP/0.9
request line, are refused in front of the app by :mod:`supervisor.child.gate`, for no more than
a comparison per request. The one thing only the protocol sees is a head that has not arrived
whole yet: it is counted here, chunk by chunk, and refused with a 400 once it is past the bound.
Nothing else is overridden: a parser callback done in Python costs a frame per header.

Its own module: importing it needs httptools (``uvicorn[standard]``), which is optional.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from supervisor.child.protocol import INVALID, disconnect_cycle, head_limit


class CleanHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.Config(http=CleanHttpToolsProtocol)``: the malformed body ends the app's cycle too;
    a request head still arriving past ``h11_max_incomplete_event_size`` bytes gets a 400, as under h11."""

    # Class attributes, no __init__ of our own: a fresh connection then costs what uvicorn's does.
    _arriving: object = None  # the scope of the head being counted
    _arrived = 0

    def send_400_response(self, msg: str) -> None:
        super().send_400_response(msg)
        disconnect_cycle(self)

    def data_received(self, data: bytes) -> None:
        HttpToolsProtocol.data_received(self, data)
        scope = self.scope
        # uvicorn makes a request's scope when its head begins and names its method once the
        # head is whole: a scope without one is a head still arriving.
        if scope is not None and "method" not in scope:
            self._count_head(scope, len(data))

    def _count_head(self, scope: object, received: int) -> None:
        if scope is not self._arriving:
            # It began in this chunk: what the parser handed over so far (a header it is still
            # reading is in the chunks to come, or in this one, which is at most one read).
            self._arriving = scope
            self._arrived = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        else:
            self._arrived += received
        if self._arrived > head_limit(self.config) and not self.transport.is_closing():
            self.logger.warning(INVALID)
            self.send_400_response(INVALID)
