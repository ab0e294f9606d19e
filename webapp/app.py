"""Application factory. ``webapp.app:app`` is what the supervisor serves by default.

Settings are read and the engine created in the lifespan, not at import: a bad variable fails the
worker's startup with one clear line, and importing the module does nothing but build routes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from supervisor.dbprobe import classify
from webapp import __version__
from webapp.config import load_web_settings
from webapp.db import Database, DatabaseDown
from webapp.live import routes as live_routes
from webapp.notes import Invalid
from webapp.notes import routes as note_routes

logger = logging.getLogger("webapp")
RETRY_AFTER_SECONDS = "5"


async def health(request: Request) -> JSONResponse:
    """200 when the database answers, 503 when it does not; the app itself is up either way."""
    result = await request.app.state.db.check()
    return JSONResponse({
        "status": "ok" if result.ok else "degraded",
        "database": {"status": "ok" if result.ok else "unavailable", "latency_ms": result.latency_ms,
                     "error": result.error, "backend": request.app.state.settings.database.backend},
        "environment": request.app.state.settings.mode,
        "version": __version__,
        "pid": os.getpid(),
    }, status_code=200 if result.ok else 503)


async def index(request: Request) -> JSONResponse:
    """What this service offers; needs no database, so it answers during an outage too."""
    return JSONResponse({"name": "webapp", "version": __version__, "pid": os.getpid(),
                         "endpoints": ["GET /health", "POST /notes", "GET /notes", "GET /notes/{id}",
                                       "DELETE /notes/{id}"]})


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log (relayed by the supervisor); the client gets JSON, and the
    # worker keeps serving.
    logger.exception("unhandled error in %s %s", request.method, request.url.path)
    return JSONResponse({"error": "internal server error"}, status_code=500)


async def database_down(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DatabaseDown)
    return JSONResponse({"error": "database unavailable", "reason": exc.reason}, status_code=503,
                        headers={"Retry-After": RETRY_AFTER_SECONDS})


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Invalid)
    return JSONResponse({"error": "invalid input", "fields": exc.fields}, status_code=422)


def create_app(environ: Mapping[str, str] | None = None) -> Starlette:
    """The app; ``environ`` defaults to ``os.environ`` as it is when the app starts."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A WebConfigError here fails the worker's startup; its message names the variable.
        settings = load_web_settings(os.environ if environ is None else environ)
        if settings.database_defaulted:
            logger.warning("webapp: no database URL is set; using the SQLite file %s",
                           settings.database.sqlite_path)
        app.state.settings = settings
        app.state.db = Database(settings)
        try:
            await app.state.db.ensure_schema()
        except Exception as exc:  # the database may be down now; the first request tries again
            logger.warning("webapp: tables not checked at startup (%s); retrying on first use",
                           classify(exc, app.state.db.mask))
        try:
            yield
        finally:
            await app.state.db.close()

    return Starlette(
        routes=[Route("/", index), Route("/health", health), *note_routes, *live_routes],
        exception_handlers={500: server_error, HTTPException: http_error, DatabaseDown: database_down,
                            Invalid: invalid_input},
        lifespan=lifespan,
    )


app = create_app()
