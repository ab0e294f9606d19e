"""The data layer: one async engine per worker, sessions, and what a failure means to the client.

The engine is created in the app's lifespan and disposed at shutdown; the tables come from the
Alembic migrations (``webapp/migrations``), never from the app. :meth:`Database.session` turns a
failure into :class:`DatabaseFailure` of a kind (see :mod:`webapp.dberrors`): when the database
goes away that is "unavailable", answered 503, and nothing is cached about the outage, so the
first request after the database returns simply works (``pool_pre_ping`` throws away
connections that died with it).
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

from supervisor.config.dburl import POSTGRESQL, connect_args
from supervisor.config.runtimedir import create_private_file
from supervisor.database.probe import classify
from supervisor.secrets import Redactor, mask_url, url_passwords
from webapp.config import WebSettings
from webapp.dberrors import STATUS, UNAVAILABLE, classify_db_error, is_unavailable
from webapp.metrics import PoolMetrics, TimedPool
from webapp.schema import database_revision

__all__ = ["Database", "DatabaseFailure", "HealthResult", "build_engine", "is_unavailable", "settings_mask"]

logger = logging.getLogger("webapp")


class DatabaseFailure(Exception):
    """A failed database operation: ``kind`` from :mod:`webapp.dberrors`, ``status`` the HTTP code,
    ``reason`` in plain words (no password). The driver's exception is the ``__cause__``."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason

    @property
    def status(self) -> int:
        return STATUS[self.kind]


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
    revision: str | None = None  # the migrations' revision; None: not migrated (or no answer)


def build_engine(settings: WebSettings, metrics: PoolMetrics | None = None) -> AsyncEngine:
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
    engine = create_async_engine(
        db.url, poolclass=TimedPool, pool_pre_ping=True, pool_size=settings.pool_size,
        max_overflow=settings.max_overflow, pool_timeout=settings.pool_timeout,
        pool_recycle=settings.pool_recycle, connect_args=args)
    pool = engine.sync_engine.pool
    if metrics is not None and isinstance(pool, TimedPool):
        pool.metrics = metrics
        metrics.pool = pool
    return engine


class Database:
    def __init__(self, settings: WebSettings, metrics: PoolMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or PoolMetrics()
        self.engine = build_engine(settings, self.metrics)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._down_since: float | None = None
        self.mask = settings_mask(settings)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session for one request; any database error becomes :class:`DatabaseFailure`."""
        try:
            async with self.sessions() as session:
                yield session
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise self.failure(exc) from exc
        self._up()

    def failure(self, exc: BaseException) -> DatabaseFailure:
        """Classify ``exc``, count it, and note an outage's start."""
        kind = classify_db_error(exc)
        self.metrics.errors.labels(kind).inc()
        if kind == UNAVAILABLE:
            return self._down(exc)
        return DatabaseFailure(kind, str(classify(exc, self.mask)))

    async def check(self) -> HealthResult:
        """``SELECT 1`` through the pool, bounded by the health timeout, then the schema revision."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.health_timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                    latency = round((time.perf_counter() - started) * 1000.0, 2)
                    revision = await database_revision(conn)
        except (sa_exc.SQLAlchemyError, OSError) as exc:  # TimeoutError is an OSError
            failure = self.failure(exc)
            return HealthResult(False, None, failure.reason)
        self._up()
        return HealthResult(True, latency, None, revision)

    def _down(self, exc: BaseException) -> DatabaseFailure:
        reason = str(classify(exc, self.mask))
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning("database unavailable: %s; database routes answer 503 until it is back",
                           reason)
        return DatabaseFailure(UNAVAILABLE, reason)

    def _up(self) -> None:
        if self._down_since is not None:
            logger.warning("database available again after %.1fs", time.monotonic() - self._down_since)
            self._down_since = None

    async def close(self) -> None:
        await self.engine.dispose()
