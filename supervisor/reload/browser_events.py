"""Live reload, the I/O part: the ``GET /livereload`` event stream of the status API.

:class:`LiveReloadHub` subscribes to the supervisor's state changes (``subscribe``), turns them
into events with :class:`~supervisor.reload.browser.EventTracker` and fans them out to every open
stream. The stream needs no token (an ``EventSource`` cannot send one), so it is served only by a
status API on loopback, under a loopback ``Host`` header (the API's own guard), and only to pages
of the app: a request whose ``Origin`` is another site is refused, and CORS allows just the app's
origins. What it carries is what the page's developer sees in the terminal anyway, redacted.

It sees the supervisor through :class:`~supervisor.contract.SupervisorView`: the read model and
``subscribe``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from supervisor.config.settings import Settings
from supervisor.contract import SupervisorView
from supervisor.reload.browser import Event, EventTracker, app_origins, browser_follows, snapshot
from supervisor.state import SupervisorState

if TYPE_CHECKING:
    from supervisor.status.api import StatusAPI

logger = logging.getLogger("supervisor")

PATH = "/livereload"
MAX_STREAMS = 64  # one per open tab; a runaway page must not exhaust the supervisor's sockets
HEARTBEAT = 15.0  # seconds: a comment line, so a closed tab is noticed and proxies keep it open
RETRY_MS = 1000


class LiveReloadHub:
    def __init__(self, sup: SupervisorView, heartbeat: float = HEARTBEAT) -> None:
        self.sup = sup
        self.heartbeat = heartbeat
        self.tracker = EventTracker(snapshot(sup, sup.redact))
        self.streams: set[asyncio.Queue[Event | None]] = set()

    def on_change(self) -> None:
        sup = self.sup
        events = self.tracker.observe(snapshot(sup, sup.redact))
        for event in events:
            logger.debug("live reload: %s event to %d page(s)", event.name, len(self.streams))
        for queue in self.streams:
            for event in events:
                queue.put_nowait(event)
            if sup.state == SupervisorState.STOPPING:
                queue.put_nowait(None)  # end the streams: the status API is about to stop

    async def stream(self, request: Request) -> Response:
        origin = request.headers.get("origin")
        allowed = app_origins(self.sup.url)
        if origin is not None and origin not in allowed:
            return JSONResponse({"error": f"origin {origin} is not a page of the app"}, status_code=403)
        if len(self.streams) >= MAX_STREAMS:
            return JSONResponse({"error": f"too many live-reload streams (limit {MAX_STREAMS})"},
                                status_code=503)
        try:
            pid: int | None = int(request.query_params.get("pid", ""))
        except ValueError:
            pid = None
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.streams.add(queue)
        hello = self.tracker.hello(pid)

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b"retry: %d\n\n" % RETRY_MS + hello.encode()
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), self.heartbeat)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if event is None:
                        return
                    yield event.encode()
            finally:
                self.streams.discard(queue)

        headers = {"Cache-Control": "no-store", "Vary": "Origin"}
        if origin is not None:
            headers["Access-Control-Allow-Origin"] = origin
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def livereload_url(settings: Settings, status_url: str | None) -> str:
    """The stream's URL for development workers' pages, or "" (saying why once) when pages cannot
    follow reloads."""
    if settings.production or not settings.reload or not settings.config.reload.browser:
        return ""
    if status_url is None:
        logger.info("live reload: off, the status API is disabled ([status] enabled = false) and serves "
                    "the browser's event stream; pages will not follow reloads")
        return ""
    if not browser_follows(settings):
        logger.info("live reload: off, the status API listens beyond loopback (%s), where its event "
                    "stream would need the token; pages will not follow reloads", settings.config.status.host)
        return ""
    return status_url + PATH


def install_livereload(sup: SupervisorView, api: StatusAPI, url: str) -> LiveReloadHub:
    """Serve the stream on ``api`` at ``url`` and feed it the supervisor's changes."""
    hub = LiveReloadHub(sup)
    api.add_route(PATH, hub.stream)
    sup.subscribe(hub.on_change)
    logger.info("live reload: pages of the app follow reloads (events on %s; [reload] browser = false "
                "to turn off)", url)
    return hub
