"""Long-lived connections on a draining worker: WebSockets closed with 1012, event streams ended.

A draining worker answers every request still to come with ``Connection: close``; that is enough
for ordinary requests, but a WebSocket or a ``text/event-stream`` response never finishes by
itself, so it would pin the old worker until the drain deadline cuts it without a word. This
ASGI middleware keeps track of both and, when :meth:`LongLived.drain` is called at the start of
the drain:

* closes each accepted WebSocket with code 1012 ("service restart"), which tells a client to
  reconnect (to the new worker, which already serves);
* ends each event stream cleanly, at an event boundary, with a ``retry:`` field (unless the app
  sets its own) so that ``EventSource`` reconnects within a fraction of a second instead of the
  browser's default few seconds.

The app sees what it would see if the client had gone: a ``websocket.disconnect`` or
``http.disconnect`` from ``receive``, and an ``OSError`` from a WebSocket ``send`` (Starlette turns
both into ``WebSocketDisconnect``); event-stream chunks it still sends are dropped. An app that
ignores all of that is cancelled after ``grace`` seconds, its own ``finally`` blocks still running.

Watching each message costs a few microseconds a request, so a worker hands this middleware only
what may be long-lived: WebSockets and requests that ask for an event stream (see
:mod:`supervisor.child.gate`).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SERVICE_RESTART = 1012  # RFC 6455 registry: "the server is restarting, reconnect"
EVENT_STREAM = b"text/event-stream"
EVENT_BOUNDARIES = (b"\n\n", b"\r\n\r\n", b"\r\r")


def content_type(message: Message) -> bytes:
    """The media type of a response start, lower case, without its parameters; b"" when none."""
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-type":
            return bytes(value).split(b";", 1)[0].strip().lower()
    return b""


class _Open:
    """One tracked connection: ended once by :meth:`end`, then cancelled if the app lingers."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.task = asyncio.current_task()
        self.ended = False
        self.cancelled_by_us = False

    async def end(self, grace: float) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            await self._final_message()
        except Exception:  # the client may be gone already; nothing to tell it
            pass
        asyncio.get_running_loop().call_later(grace, self._cancel)

    async def _final_message(self) -> None:
        raise NotImplementedError

    def _cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.cancelled_by_us = True
            self.task.cancel(msg="the connection was ended for a worker restart")


class _Stream(_Open):
    def __init__(self, send: Send, retry_ms: int) -> None:
        super().__init__(send)
        self.retry_ms = retry_ms
        self.at_boundary = True  # between events: a field added now cannot join the app's event
        self.app_sets_retry = False

    def sent(self, body: bytes) -> None:
        if body:
            self.at_boundary = body.endswith(EVENT_BOUNDARIES)
            self.app_sets_retry = self.app_sets_retry or body.startswith(b"retry:") or b"\nretry:" in body

    async def _final_message(self) -> None:
        tail = b""
        if self.at_boundary and not self.app_sets_retry:
            tail = b"retry: %d\n\n" % self.retry_ms
        await self.send({"type": "http.response.body", "body": tail, "more_body": False})


class _Socket(_Open):
    async def _final_message(self) -> None:
        await self.send({"type": "websocket.close", "code": SERVICE_RESTART, "reason": "service restart"})


class LongLived:
    """ASGI middleware tracking WebSockets and event streams; :meth:`drain` ends them all."""

    def __init__(self, app: ASGIApp, retry_ms: int = 250, grace: float = 0.5) -> None:
        self.app = app
        self.retry_ms = retry_ms
        self.grace = grace
        self.draining = False
        self._open: set[_Open] = set()

    @property
    def open_count(self) -> int:
        return len(self._open)

    def drain(self) -> None:
        """End every tracked connection now, and any that opens from now on."""
        self.draining = True
        for conn in list(self._open):
            asyncio.ensure_future(conn.end(self.grace))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One coroutine frame per request, not two: this runs on every request of every worker.
        kind = scope["type"]
        if kind == "http":
            wrap = self._http_send
        elif kind == "websocket":
            wrap = self._websocket_send
        else:
            await self.app(scope, receive, send)
            return
        holder: list[_Open] = []
        try:
            await self.app(scope, receive, wrap(send, holder))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if holder and holder[0].cancelled_by_us and task is not None and task.uncancel() == 0:
                return  # our own cancellation after the grace period: the connection is over
            raise
        finally:
            if holder:
                self._open.discard(holder[0])

    def _track(self, conn: _Open, holder: list[_Open]) -> None:
        holder.append(conn)
        self._open.add(conn)
        if self.draining:
            asyncio.ensure_future(conn.end(self.grace))

    def _http_send(self, send: Send, holder: list[_Open]) -> Send:
        async def wrapped(message: Message) -> None:
            stream = holder[0] if holder else None
            if stream is None:
                await send(message)
                if message["type"] == "http.response.start" and content_type(message) == EVENT_STREAM:
                    self._track(_Stream(send, self.retry_ms), holder)
                return
            assert isinstance(stream, _Stream)
            if stream.ended:
                return  # ended for the restart: what the app still streams has nowhere to go
            if message["type"] == "http.response.body":
                stream.sent(message.get("body", b""))
                if not message.get("more_body", False):
                    stream.ended = True
                    self._open.discard(stream)
            await send(message)

        return wrapped

    def _websocket_send(self, send: Send, holder: list[_Open]) -> Send:
        async def wrapped(message: Message) -> None:
            sock = holder[0] if holder else None
            if sock is not None and sock.ended:
                raise OSError("the WebSocket was closed: the worker is restarting")
            await send(message)
            if message["type"] == "websocket.accept" and sock is None:
                self._track(_Socket(send), holder)
            elif message["type"] == "websocket.close" and sock is not None:
                sock.ended = True
                self._open.discard(sock)

        return wrapped
