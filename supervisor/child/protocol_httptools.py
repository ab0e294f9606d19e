"""uvicorn's httptools protocol with the fix of :mod:`supervisor.child.protocol`.

Its own module: importing it needs httptools (``uvicorn[standard]``), which is optional.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from supervisor.child.protocol import disconnect_cycle


class CleanHttpToolsProtocol(HttpToolsProtocol):
    """``uvicorn.Config(http=CleanHttpToolsProtocol)``: the malformed body ends the app's cycle too."""

    def send_400_response(self, msg: str) -> None:
        super().send_400_response(msg)
        disconnect_cycle(self)
