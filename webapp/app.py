"""Application factory. ``webapp.app:app`` is what this repository's ``supervisor.toml`` serves.

Settings are read and the engine created in the lifespan, not at import: a bad variable fails the
worker's startup with one clear line, and importing the module does nothing but build routes.
The tables are not created here: the Alembic migrations make them (``[database] migrate`` in
``supervisor.toml`` runs them before the first worker). Without them the app still starts;
``/health`` says the schema is missing and notes requests answer 500.

Each concern brings its own ``routes`` list; :data:`ROUTE_GROUPS` is the one place to add one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from webapp import __version__, health, live, metrics, notes
from webapp.config import load_web_settings
from webapp.cors import SettingsCORS
from webapp.db import Database
from webapp.errors import HANDLERS
from webapp.limits import BodyLimit
from webapp.metrics import PoolMetrics
from webapp.schema import load_revisions

logger = logging.getLogger("webapp")


async def index(request: Request) -> JSONResponse:
    """What this service offers; needs no database, so it answers during an outage too."""
    endpoints = [f"{' '.join(sorted(r.methods - {'HEAD'}))} {r.path}"
                 for r in request.app.routes if isinstance(r, Route) and r.methods]
    return JSONResponse({"name": "webapp", "version": __version__, "pid": os.getpid(),
                         "endpoints": endpoints})


ROUTE_GROUPS: list[Sequence[BaseRoute]] = [
    [Route("/", index, methods=["GET"])],
    health.routes,
    metrics.routes,
    notes.routes,
    live.routes,  # an event stream and a WebSocket echo, which reloads move to the new worker
]


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
        app.state.metrics = PoolMetrics()
        app.state.db = Database(settings, app.state.metrics)
        app.state.revisions = load_revisions()
        try:
            yield
        finally:
            await app.state.db.close()

    return Starlette(
        routes=[route for group in ROUTE_GROUPS for route in group],
        # Outermost first: CORS answers preflights before the body cap looks at anything.
        middleware=[Middleware(SettingsCORS), Middleware(BodyLimit)],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )


app = create_app()
