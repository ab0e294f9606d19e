"""A cap on request bodies (``MAX_BODY_BYTES``, 1 MiB by default), answered with 413 JSON.

Checked twice, because a client need not say how much it sends: a ``Content-Length`` over the
cap is refused before a byte of the body is read, and a body without one (chunked) is counted
while the app reads it and refused as soon as it passes the cap, so the worker never buffers
more than the cap plus one chunk. The 413 says ``Connection: close``: the rest of an oversized
body is not worth reading.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    pass


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, or None when absent or unreadable (the server's parser
    refuses a malformed one before the app sees it)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def too_large_body(limit: int) -> bytes:
    return json.dumps({"error": "request body too large", "max_bytes": limit}).encode()


class BodyLimit:
    """ASGI middleware; the limit comes from ``scope["app"].state.settings.max_body_bytes``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int = scope["app"].state.settings.max_body_bytes
        length = declared_length(scope)
        if length is not None and length > limit:
            await self._refuse(send, limit)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:  # a streaming route answered before reading everything: nothing to fix
                raise
            await self._refuse(send, limit)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        body = too_large_body(limit)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
