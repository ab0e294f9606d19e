"""The data layer: one async engine per worker, sessions, the schema, and what "unavailable" means.

The engine is created in the app's lifespan and disposed at shutdown. When the database goes
away, :meth:`Database.session` turns connection-level failures into :class:`DatabaseDown`, which
the app answers with 503; nothing is cached about the outage, so the first request after the
database returns simply works (``pool_pre_ping`` throws away connections that died with it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable

from supervisor.dbprobe import classify, exception_chain
from supervisor.dburl import POSTGRESQL, connect_args
from supervisor.runtimedir import create_private_file
from supervisor.secrets import Redactor, mask_url, url_passwords
from webapp.config import WebSettings
from webapp.models import Base

logger = logging.getLogger("webapp")

# SQLSTATE classes that mean "the server or the connection", not "your query": connection
# exceptions, operator intervention (shutdown, starting up), insufficient resources.
_UNAVAILABLE_SQLSTATE = ("08", "57P", "53")


class DatabaseDown(Exception):
    """The database cannot be reached now; ``reason`` is in plain words (no password)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_unavailable(exc: BaseException) -> bool:
    """True for failures that are about reaching the database, not about the statement."""
    for current in exception_chain(exc):
        if isinstance(current, (OSError, TimeoutError, sa_exc.TimeoutError, sa_exc.InterfaceError,
                                sa_exc.OperationalError)):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATE):
            return True
    return False


def settings_mask(settings: WebSettings) -> Callable[[str], str]:
    """Masks the database password and the auth secret in a driver's message before it is logged
    or put in a response (GET /health shows the reason to anyone)."""
    redact = Redactor([*url_passwords(settings.database.url), settings.auth_secret])
    return lambda text: redact(mask_url(text))


@dataclass
class HealthResult:
    ok: bool
    latency_ms: float | None
    error: str | None


def build_engine(settings: WebSettings) -> AsyncEngine:
    db = settings.database
    if db.backend == POSTGRESQL:
        args = connect_args(db, settings.connect_timeout,
                            {"statement_timeout": str(settings.statement_timeout_ms)})
    else:
        args = {"timeout": settings.connect_timeout}  # SQLite: how long to wait for a locked file
        if db.sqlite_path is not None:
            # Every user's notes: readable by the owner only (SQLite would create it 0644, and
            # its journal files take the database file's mode).
            db.sqlite_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            create_private_file(db.sqlite_path)
    return create_async_engine(
        db.url, pool_pre_ping=True, pool_size=settings.pool_size, max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout, pool_recycle=settings.pool_recycle, connect_args=args)


class Database:
    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.engine = build_engine(settings)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._schema_ready = False
        self._schema_lock = asyncio.Lock()
        self._down_since: float | None = None
        self.mask = settings_mask(settings)

    async def ensure_schema(self) -> None:
        """Create missing tables, once per worker; retried on the next request if the database was down."""
        if self._schema_ready:
            return
        async with self._schema_lock:
            if self._schema_ready:
                return
            async with self.engine.begin() as conn:
                if self.settings.database.backend == POSTGRESQL:
                    # Two workers starting together must not both create the same table.
                    await conn.execute(text("SELECT pg_advisory_xact_lock(743201)"))
                for table in Base.metadata.sorted_tables:
                    await conn.execute(CreateTable(table, if_not_exists=True))
                    for index in table.indexes:
                        await conn.execute(CreateIndex(index, if_not_exists=True))
            self._schema_ready = True

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for one request; connection failures become :class:`DatabaseDown`."""
        try:
            await self.ensure_schema()
            async with self.sessions() as session:
                yield session
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            raise self._down(exc) from exc
        self._up()

    async def check(self) -> HealthResult:
        """``SELECT 1`` through the pool, bounded by the health timeout."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.health_timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:
            if not is_unavailable(exc) and not isinstance(exc, sa_exc.SQLAlchemyError):
                raise
            return HealthResult(False, None, self._down(exc).reason)
        self._up()
        return HealthResult(True, round((time.perf_counter() - started) * 1000.0, 2), None)

    def _down(self, exc: BaseException) -> DatabaseDown:
        reason = str(classify(exc, self.mask))
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning("database unavailable: %s; database routes answer 503 until it is back",
                           reason)
        return DatabaseDown(reason)

    def _up(self) -> None:
        if self._down_since is not None:
            logger.warning("database available again after %.1fs", time.monotonic() - self._down_since)
            self._down_since = None

    async def close(self) -> None:
        await self.engine.dispose()
