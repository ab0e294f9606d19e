"""The database, as the supervisor sees it: wait for it before the first worker, then keep watching.

:class:`DatabaseWatch` plugs into the runner as a startup step (:meth:`DatabaseWatch.wait`) and a
service (:meth:`DatabaseWatch.monitor`), and keeps ``sup.database``, the one record it owns, up to
date for the status API. The retry engine and the probe live in
:mod:`supervisor.database.probe`; this module only reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from supervisor.config.dburl import DatabaseURL, DatabaseURLError, normalize_database_url
from supervisor.config.envrules import SQLITE_DEFAULT
from supervisor.config.settings import Settings
from supervisor.contract import Plugin, SupervisorView
from supervisor.database.probe import Attempt, EngineProbe, ProbeFailure, wait_for_database
from supervisor.errors import ConfigError, DatabaseUnavailable, Problem
from supervisor.state import DatabaseState

logger = logging.getLogger("supervisor")


def database_url(settings: Settings) -> DatabaseURL | None:
    """The URL the workers get, normalised; None when the supervisor does not watch a database."""
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

    def __init__(self, sup: SupervisorView, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sup = sup
        self.sleep = sleep
        self.clock = clock
        self._probe: EngineProbe | None = None

    def plugin(self) -> Plugin:
        return Plugin("database", service=self.monitor, startup=self.wait)

    def _probe_for(self, db: DatabaseURL) -> EngineProbe:
        timeout = self.sup.settings.config.database.connect_timeout
        if self._probe is None or self._probe.db != db or self._probe.connect_timeout != timeout:
            if self._probe is not None:
                self.sup.run_task(self._probe.close())
            self._probe = EngineProbe(db, timeout, mask=self.sup.redact)
        return self._probe

    def _record(self, state: DatabaseState, attempts: int, latency_ms: float | None, error: str | None) -> None:
        db = self.sup.database
        db.state, db.attempts, db.latency_ms, db.last_error = state, attempts, latency_ms, error
        db.last_check = self.sup.wall()
        self.sup.changed()

    async def wait(self) -> None:
        """Startup step: return once the database answers; raise DatabaseUnavailable (exit 3) if not."""
        sup = self.sup
        db = database_url(sup.settings)
        cfg = sup.settings.config.database
        if db is None:
            sup.database.state = DatabaseState.DISABLED
            return
        if sup.settings.env_sources.get(cfg.url_env) == SQLITE_DEFAULT:
            logger.info("database: %s is not set; development mode uses the SQLite file %s",
                        cfg.url_env, db.sqlite_path)
        elif db.changes:
            logger.info("database: %s", db.describe_changes())
        self._record(DatabaseState.WAITING, 0, None, None)
        started = self.clock()

        def on_attempt(attempt: Attempt) -> None:
            failure = attempt.failure
            if attempt.next_delay is not None:
                logger.warning("database: attempt %d: %s at %s; next try in %.2fs", attempt.number,
                               failure, db.target, attempt.next_delay)
            self._record(DatabaseState.WAITING, attempt.number, None, str(failure))

        try:
            attempts, latency = await wait_for_database(self._probe_for(db), cfg,
                                                        on_attempt=on_attempt, sleep=self.sleep,
                                                        clock=self.clock)
        except ProbeFailure as failure:
            self._record(DatabaseState.UNAVAILABLE, sup.database.attempts, None, str(failure))
            raise DatabaseUnavailable(self._give_up_line(db, failure, sup.database.attempts,
                                                         self.clock() - started, cfg.deadline)) from None
        self._record(DatabaseState.OK, 0, latency, None)
        logger.info("database: %s answers (%.1f ms, attempt %d)", db.target, latency, attempts)

    @staticmethod
    def _give_up_line(db: DatabaseURL, failure: ProbeFailure, attempts: int, elapsed: float,
                      deadline: float) -> str:
        if not failure.retryable:
            return (f"database {failure.reason} at {db.masked}: {failure.detail or failure.reason}; "
                    f"{failure.hint} (not retried: waiting cannot fix this)")
        return (f"database unreachable at {db.masked}: {failure} after {attempts} attempt(s) in "
                f"{elapsed:.1f}s ([database] deadline = {deadline:g}s); {failure.hint}")

    async def monitor(self) -> None:
        """Service: probe every ``probe_interval`` while running; log when the database goes or comes back."""
        sup = self.sup
        try:
            while True:
                await self.sleep(sup.settings.config.database.probe_interval)
                if sup.database.state in (DatabaseState.WAITING, DatabaseState.DISABLED):
                    continue  # the startup wait owns the record, or there is nothing to watch
                db = database_url(sup.settings)
                if db is not None:
                    await self._probe_once(db)
        finally:
            if self._probe is not None:
                await self._probe.close()

    async def _probe_once(self, db: DatabaseURL) -> None:
        sup = self.sup
        probe = self._probe_for(db)
        before = sup.database.state
        try:
            latency = await probe(sup.settings.config.database.connect_timeout)
        except ProbeFailure as failure:
            failures = sup.database.attempts + 1 if before == DatabaseState.UNAVAILABLE else 1
            if before != DatabaseState.UNAVAILABLE:
                logger.warning("database: unavailable: %s at %s; checking every %gs", failure, db.target,
                               sup.settings.config.database.probe_interval)
            self._record(DatabaseState.UNAVAILABLE, failures, None, str(failure))
            return
        if before == DatabaseState.UNAVAILABLE:
            logger.info("database: %s answers again (%.1f ms)", db.target, latency)
        self._record(DatabaseState.OK, 0, latency, None)
