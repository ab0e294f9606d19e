"""The database, as the supervisor sees it: wait for it before the first worker, then keep watching.

:class:`DatabaseWatch` plugs into the :class:`~supervisor.runner.Supervisor` as a startup step
(:meth:`DatabaseWatch.wait`) and a service (:meth:`DatabaseWatch.monitor`), and keeps
``sup.database`` up to date for the status API. The retry engine and the probe live in
:mod:`supervisor.dbprobe`; this module only reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from supervisor import state as S
from supervisor.dbprobe import Attempt, EngineProbe, ProbeFailure, wait_for_database
from supervisor.dburl import DatabaseURL, DatabaseURLError, normalize_database_url
from supervisor.envrules import SQLITE_DEFAULT
from supervisor.errors import ConfigError, DatabaseUnavailable, Problem
from supervisor.migrate import run_migrations
from supervisor.secrets import mask_url

if TYPE_CHECKING:
    from supervisor.runner import Supervisor

logger = logging.getLogger("supervisor")


def database_url(sup: Supervisor) -> DatabaseURL | None:
    """The URL the workers get, normalised; None when the supervisor does not watch a database."""
    settings = sup.settings
    cfg = settings.config.database
    raw = settings.environ.get(cfg.url_env)
    if not cfg.wait or not raw:
        return None
    try:
        return normalize_database_url(raw)
    except DatabaseURLError as exc:  # normally caught by resolve_settings already
        raise ConfigError([Problem(f"{settings.env_sources.get(cfg.url_env, 'environment')} "
                                   f"{cfg.url_env}", str(exc))]) from None


class DatabaseWatch:
    """Keeps ``sup.database`` current: ``state`` ok / waiting / unavailable / disabled;
    ``attempts`` is the attempt number while waiting, the count of consecutive failed probes
    while running, 0 when the database answers; ``last_error`` is a plain reason, never a password.
    """

    def __init__(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
                 ) -> None:
        self.sleep = sleep
        self.clock = clock
        self.wall = wall
        self._probe: EngineProbe | None = None

    def _probe_for(self, sup: Supervisor, db: DatabaseURL) -> EngineProbe:
        timeout = sup.settings.config.database.connect_timeout
        if self._probe is None or self._probe.db != db or self._probe.connect_timeout != timeout:
            if self._probe is not None:
                sup.spawn_task(self._probe.close())
            self._probe = EngineProbe(db, timeout, mask=sup.redactor or mask_url)
        return self._probe

    def _record(self, sup: Supervisor, state: str, attempts: int, latency_ms: float | None,
                error: str | None) -> None:
        db = sup.database
        db.state, db.attempts, db.latency_ms, db.last_error = state, attempts, latency_ms, error
        db.last_check = self.wall()
        sup.changed()

    async def wait(self, sup: Supervisor) -> None:
        """Startup step: return once the database answers and ``[database] migrate`` has run;
        raise DatabaseUnavailable or MigrationFailed (exit 3) if not."""
        await self._wait_for_database(sup)
        await run_migrations(sup.settings, sup.settings.environ)

    async def _wait_for_database(self, sup: Supervisor) -> None:
        db = database_url(sup)
        cfg = sup.settings.config.database
        if db is None:
            sup.database.state = S.DB_DISABLED
            return
        if sup.settings.env_sources.get(cfg.url_env) == SQLITE_DEFAULT:
            logger.info("database: %s is not set; development mode uses the SQLite file %s",
                        cfg.url_env, db.sqlite_path)
        elif db.changes:
            logger.info("database: %s", db.describe_changes())
        sup.database.state = S.DB_WAITING
        sup.set_state(S.WAITING_FOR_DATABASE)
        started = self.clock()

        def on_attempt(attempt: Attempt) -> None:
            failure = attempt.failure
            if attempt.next_delay is not None:
                logger.warning("database: attempt %d: %s at %s; next try in %.2fs", attempt.number,
                               failure, db.target, attempt.next_delay)
            self._record(sup, S.DB_WAITING, attempt.number, None, str(failure))

        try:
            attempts, latency = await wait_for_database(self._probe_for(sup, db), cfg,
                                                        on_attempt=on_attempt, sleep=self.sleep,
                                                        clock=self.clock)
        except ProbeFailure as failure:
            self._record(sup, S.DB_UNAVAILABLE, sup.database.attempts, None, str(failure))
            raise DatabaseUnavailable(self._give_up_line(db, failure, sup.database.attempts,
                                                         self.clock() - started, cfg.deadline)) from None
        self._record(sup, S.DB_OK, 0, latency, None)
        logger.info("database: %s answers (%.1f ms, attempt %d)", db.target, latency, attempts)
        sup.set_state(S.STARTING)

    @staticmethod
    def _give_up_line(db: DatabaseURL, failure: ProbeFailure, attempts: int, elapsed: float,
                      deadline: float) -> str:
        if not failure.retryable:
            return (f"database {failure.reason} at {db.masked}: {failure.detail or failure.reason}; "
                    f"{failure.hint} (not retried: waiting cannot fix this)")
        return (f"database unreachable at {db.masked}: {failure} after {attempts} attempt(s) in "
                f"{elapsed:.1f}s ([database] deadline = {deadline:g}s); {failure.hint}")

    async def monitor(self, sup: Supervisor) -> None:
        """Service: probe every ``probe_interval`` while running; log when the database goes or comes back."""
        try:
            while True:
                await self.sleep(sup.settings.config.database.probe_interval)
                if sup.database.state in (S.DB_WAITING, S.DB_DISABLED):
                    continue  # the startup wait owns the record, or there is nothing to watch
                db = database_url(sup)
                if db is not None:
                    await self._probe_once(sup, db)
        finally:
            if self._probe is not None:
                await self._probe.close()

    async def _probe_once(self, sup: Supervisor, db: DatabaseURL) -> None:
        probe = self._probe_for(sup, db)
        before = sup.database.state
        try:
            latency = await probe(sup.settings.config.database.connect_timeout)
        except ProbeFailure as failure:
            failures = sup.database.attempts + 1 if before == S.DB_UNAVAILABLE else 1
            if before != S.DB_UNAVAILABLE:
                logger.warning("database: unavailable: %s at %s; checking every %gs", failure, db.target,
                               sup.settings.config.database.probe_interval)
            self._record(sup, S.DB_UNAVAILABLE, failures, None, str(failure))
            return
        if before == S.DB_UNAVAILABLE:
            logger.info("database: %s answers again (%.1f ms)", db.target, latency)
        self._record(sup, S.DB_OK, 0, latency, None)


def install_database_watch(sup: Supervisor, watch: DatabaseWatch | None = None) -> DatabaseWatch:
    """Wire the wait (before the first worker) and the monitor into ``sup``."""
    watch = watch or DatabaseWatch()
    sup.startup_steps.append(watch.wait)
    sup.services.append(watch.monitor)
    return watch
