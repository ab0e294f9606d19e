"""What a database error means for the client: an outage (503), a conflict (409) or a bug (500).

Only failures to reach the database count as "unavailable": they are the ones that go away by
themselves, so only they get a 503 with ``Retry-After``. A missing table, a locked SQLite file
past its timeout, a syntax error or a constraint violation are answered at once and logged with
their traceback; calling them an outage would send clients into retries and hide the bug.

Pure: :func:`classify_db_error` looks at the exception chain (SQLAlchemy wraps the driver's
error, which may wrap asyncpg's or sqlite3's) and returns one of the kinds below.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa_exc

from supervisor.database.probe import exception_chain

UNAVAILABLE = "unavailable"  # cannot reach the server, or the server refuses new work: 503
POOL_EXHAUSTED = "pool_exhausted"  # every pooled connection is busy past the pool timeout: 503
CONSTRAINT = "constraint"  # the data breaks a constraint: 409
SCHEMA = "schema"  # a table or column is missing: migrations were not run: 500
LOCKED = "locked"  # SQLite: another writer held the file past the timeout: 500
OTHER = "other"  # any other statement error: 500

STATUS = {UNAVAILABLE: 503, POOL_EXHAUSTED: 503, CONSTRAINT: 409, SCHEMA: 500, LOCKED: 500, OTHER: 500}
KINDS = tuple(STATUS)

# SQLSTATEs about the connection, not the statement: connection exceptions (08), operator
# intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now), too many
# connections (53300).
_UNAVAILABLE_SQLSTATE = ("08", "57P", "53300")
_SCHEMA_SQLSTATE = ("42P01", "42703", "3F000")  # undefined table, undefined column, no schema
_SQLITE_SCHEMA = ("no such table", "no such column", "has no column named")
_SQLITE_UNAVAILABLE = ("unable to open database file",)


def classify_db_error(exc: BaseException) -> str:
    """The kind of failure ``exc`` is; see the module docstring."""
    chain = exception_chain(exc)
    for item in chain:
        if isinstance(item, sa_exc.TimeoutError):  # QueuePool: no connection free in time
            return POOL_EXHAUSTED
        if isinstance(item, sa_exc.DBAPIError) and item.connection_invalidated:
            return UNAVAILABLE
        if isinstance(item, (OSError, TimeoutError)):  # refused, reset, DNS, connect timeout
            return UNAVAILABLE
        sqlstate = getattr(item, "sqlstate", None)
        if isinstance(sqlstate, str):
            if sqlstate.startswith(_UNAVAILABLE_SQLSTATE):
                return UNAVAILABLE
            if sqlstate.startswith("23"):
                return CONSTRAINT
            if sqlstate in _SCHEMA_SQLSTATE:
                return SCHEMA
        if isinstance(item, sqlite3.OperationalError):
            message = str(item).lower()
            if any(text in message for text in _SQLITE_SCHEMA):
                return SCHEMA
            if "database is locked" in message or "database table is locked" in message:
                return LOCKED
            if any(text in message for text in _SQLITE_UNAVAILABLE):
                return UNAVAILABLE
    if any(isinstance(item, (sa_exc.IntegrityError, sqlite3.IntegrityError)) for item in chain):
        return CONSTRAINT
    return OTHER


def is_unavailable(exc: BaseException) -> bool:
    """True for failures about reaching the database, not about the statement (answered 503)."""
    return STATUS[classify_db_error(exc)] == 503
