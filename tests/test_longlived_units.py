"""Pure units of the drain of long-lived connections: scripted ASGI apps, no server."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message

from supervisor.child.htmlinject import LiveReloadScript
from supervisor.child.longlived import LongLived

SSE_START: Message = {"type": "http.response.start", "status": 200,
                      "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]}


def drained_stream(chunks: list[bytes], grace: float = 0.05) -> tuple[list[Message], str]:
    """Run an app that streams ``chunks`` then waits forever; drain; return what was sent and how
    the app ended."""
    sent: list[Message] = []
    ended: list[str] = []

    async def app(scope: object, receive: object, send: object) -> None:
        await send(SSE_START)  # type: ignore[operator]
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})  # type: ignore[operator]
        try:
            await asyncio.Event().wait()  # an app that ignores the end of its stream
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    async def main() -> None:
        middleware = LongLived(app, retry_ms=250, grace=grace)
        task = asyncio.ensure_future(middleware({"type": "http", "method": "GET"}, receive, send))
        while middleware.open_count == 0:
            await asyncio.sleep(0)
        middleware.drain()
        await asyncio.wait_for(task, 5)  # returns normally: the cancellation was ours
        assert middleware.open_count == 0

    asyncio.run(main())
    return sent, ",".join(ended)


def test_a_stream_between_events_ends_with_a_short_retry_and_a_lingering_app_is_cancelled() -> None:
    sent, ended = drained_stream([b"event: a\ndata: 1\n\n"])
    assert sent[-1] == {"type": "http.response.body", "body": b"retry: 250\n\n", "more_body": False}
    assert ended == "cancelled"


def test_a_stream_mid_event_or_with_its_own_retry_just_ends() -> None:
    sent, _ = drained_stream([b"data: half an ev"])
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    sent, _ = drained_stream([b"retry: 5000\n\n", b"data: 1\n\n"])
    assert sent[-1]["body"] == b""


@pytest.mark.asyncio
async def test_a_websocket_is_closed_with_1012_and_later_sends_fail_like_a_gone_client() -> None:
    sent: list[Message] = []
    outcome: list[str] = []

    async def main() -> None:
        gone = asyncio.Event()

        async def app(scope: object, receive: object, send: object) -> None:
            await send({"type": "websocket.accept"})  # type: ignore[operator]
            await gone.wait()
            try:
                await send({"type": "websocket.send", "text": "late"})  # type: ignore[operator]
            except OSError:
                outcome.append("OSError")

        async def receive() -> Message:
            return {"type": "websocket.connect"}

        async def send(message: Message) -> None:
            sent.append(message)
            if message["type"] == "websocket.close":
                gone.set()

        middleware = LongLived(app)
        task = asyncio.ensure_future(middleware({"type": "websocket"}, receive, send))
        while middleware.open_count == 0:
            await asyncio.sleep(0)
        middleware.drain()
        await asyncio.wait_for(task, 5)

    await main()
    assert sent == [{"type": "websocket.accept"},
                    {"type": "websocket.close", "code": 1012, "reason": "service restart"}]
    assert outcome == ["OSError"]


@pytest.mark.asyncio
async def test_a_draining_development_worker_sends_navigations_to_the_same_url_again() -> None:
    sent: list[Message] = []

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("the old version must not answer a navigation while draining")

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    middleware = LiveReloadScript(app, "http://127.0.0.1:8787/livereload", 1, draining=lambda: True)
    scope = {"type": "http", "method": "GET", "path": "/notes", "raw_path": b"/notes", "query_string": b"page=2",
             "headers": [(b"sec-fetch-mode", b"navigate")]}
    await middleware(scope, receive, send)
    assert sent[0]["status"] == 307 and (b"location", b"/notes?page=2") in sent[0]["headers"]
