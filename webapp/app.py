"""Application factory. ``webapp.app:app`` is what the supervisor serves by default."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from webapp import __version__

logger = logging.getLogger("webapp")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({
        "status": "ok",
        "environment": request.app.state.environment,
        "version": __version__,
        "pid": os.getpid(),
    })


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log (relayed by the supervisor); the client gets JSON, and the
    # worker keeps serving.
    logger.exception("unhandled error in %s %s", request.method, request.url.path)
    return JSONResponse({"error": "internal server error"}, status_code=500)


def create_app(environ: Mapping[str, str] | None = None) -> Starlette:
    environ = os.environ if environ is None else environ
    app = Starlette(routes=[Route("/health", health)], exception_handlers={500: server_error})
    app.state.environment = environ.get("SUPERVISOR_MODE", "development")
    return app


app = create_app()
