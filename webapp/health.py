"""``GET /health``: what a monitor needs and nothing more.

The database (answers or not, the latency of ``SELECT 1``, the plain reason when it does not,
and whether its schema is at the revision this code expects), the auth configuration's state
(a secret of the required length is set, which claims are checked; never the secret), the
version, and the worker's pid (which worker answered). 200 when everything is usable; 503 when
the database does not answer or its schema is missing or behind, since notes requests then fail.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from webapp import __version__
from webapp.config import MIN_SECRET_LENGTH, WebSettings
from webapp.schema import AHEAD, CURRENT, schema_status
from webapp.tokens import ALGORITHM

_USABLE_SCHEMA = (CURRENT, AHEAD)  # ahead: newer code migrated it; this code's columns are still there


def auth_state(settings: WebSettings) -> dict[str, Any]:
    # The app refuses to start with a short secret, so a running app always reports it ok; the
    # field is there so a monitor need not know that.
    long_enough = len(settings.auth_secret) >= MIN_SECRET_LENGTH
    return {"status": "ok" if long_enough else "misconfigured", "algorithm": ALGORITHM,
            "secret": {"present": bool(settings.auth_secret), "min_length": MIN_SECRET_LENGTH,
                       "long_enough": long_enough},
            "audience_checked": settings.auth_audience is not None,
            "issuer_checked": settings.auth_issuer is not None}


async def health(request: Request) -> JSONResponse:
    state = request.app.state
    settings: WebSettings = state.settings
    result = await state.db.check()
    schema = schema_status(result.revision, state.revisions) if result.ok else "unknown"
    ok = result.ok and schema in _USABLE_SCHEMA
    return JSONResponse({
        "status": "ok" if ok else "degraded",
        "database": {"status": "ok" if result.ok else "unavailable", "latency_ms": result.latency_ms,
                     "error": result.error, "backend": settings.database.backend,
                     "schema": {"status": schema, "revision": result.revision,
                                "expected": state.revisions.head}},
        "auth": auth_state(settings),
        "environment": settings.mode,
        "version": __version__,
        "pid": os.getpid(),
    }, status_code=200 if ok else 503)


routes = [Route("/health", health, methods=["GET"])]
