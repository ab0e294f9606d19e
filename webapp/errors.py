"""The app's exception handlers: every error is a JSON body with an ``error`` key.

* :class:`~webapp.db.DatabaseFailure`: 503 with ``Retry-After`` when the database cannot be
  reached (the only failure that retrying fixes), 409 for a constraint violation, 500 for the rest
  (a missing table, a locked SQLite file); all but the 503 are logged with their traceback.
* :class:`Invalid`: 422 naming every bad field.
* anything else: 500, traceback to the log (relayed by the supervisor), and the worker keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from webapp.db import DatabaseFailure
from webapp.dberrors import POOL_EXHAUSTED

logger = logging.getLogger("webapp")
RETRY_AFTER_SECONDS = "5"


class Invalid(Exception):
    """Input with field errors; answered with 422 ``{"error": ..., "fields": {name: message}}``."""

    def __init__(self, fields: Mapping[str, str]) -> None:
        super().__init__("invalid input")
        self.fields = dict(fields)


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error in %s %s", request.method, request.url.path)
    return JSONResponse({"error": "internal server error"}, status_code=500)


async def database_failure(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DatabaseFailure)
    if exc.kind == POOL_EXHAUSTED:  # overload, not an outage: the database itself answers
        return JSONResponse({"error": "database busy",
                             "reason": "every pooled connection stayed in use past DATABASE_POOL_TIMEOUT"},
                            status_code=503, headers={"Retry-After": RETRY_AFTER_SECONDS})
    if exc.status == 503:  # an outage: logged once when it starts (webapp.db), not per request
        return JSONResponse({"error": "database unavailable", "reason": exc.reason}, status_code=503,
                            headers={"Retry-After": RETRY_AFTER_SECONDS})
    # The driver's text stays in the log: it can name tables, constraints and values.
    logger.error("database error (%s) in %s %s", exc.kind, request.method, request.url.path,
                 exc_info=exc)
    if exc.status == 409:
        return JSONResponse({"error": "conflict", "reason": "the change breaks a database constraint"},
                            status_code=409)
    return JSONResponse({"error": "internal server error"}, status_code=500)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Invalid)
    return JSONResponse({"error": "invalid input", "fields": exc.fields}, status_code=422)


HANDLERS = {500: server_error, HTTPException: http_error, DatabaseFailure: database_failure,
            Invalid: invalid_input}
