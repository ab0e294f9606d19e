"""Is the database there? A ``SELECT 1`` through SQLAlchemy's async engine, and the retry around it.

A TCP check is not enough: PostgreSQL accepts connections while it still answers "the database
system is starting up". So the probe speaks the protocol, and failures are sorted into a few
plain reasons. Some of them retrying cannot fix (wrong password, no such database); those end the
wait at once instead of at the deadline.

The retry engine is tenacity's, with the clock, the sleep and the random source injected, so the
schedule is tested by recording sleeps instead of sleeping.
"""

from __future__ import annotations

import asyncio
import random
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from supervisor.config.dburl import DatabaseURL, connect_args
from supervisor.config.runtimedir import create_private_file
from supervisor.config.toml import DatabaseSection
from supervisor.slots.policy import backoff_delay

# Plain-words reasons.
REFUSED = "connection refused"
LOST = "connection lost"  # reset or aborted by the server, typically while it shuts down
TIMED_OUT = "timed out"
AUTH_FAILED = "authentication failed"
DB_MISSING = "database missing"
STARTING_UP = "starting up"
SHUTTING_DOWN = "shutting down"
HOST_UNKNOWN = "host not found"
MALFORMED = "malformed URL"
OTHER = "error"
SQLITE_UNUSABLE = "cannot open the SQLite file"
DRIVER_MISSING = "driver missing"  # the URL's driver is not installed (aiosqlite is optional)

# SQLSTATE -> (reason, retryable). https://www.postgresql.org/docs/current/errcodes-appendix.html
_SQLSTATES = {
    "28P01": (AUTH_FAILED, False),  # invalid_password
    "28000": (AUTH_FAILED, False),  # invalid_authorization_specification (pg_hba.conf)
    "3D000": (DB_MISSING, False),  # invalid_catalog_name
    "57P03": (STARTING_UP, True),  # cannot_connect_now: starting up, shutting down, recovery
    "53300": ("too many connections", True),
}
_HINTS = {
    REFUSED: "check that the server is running and listening there",
    LOST: "the server closed the connection; check that it is running and not restarting",
    TIMED_OUT: "check the host, the port and any firewall in between",
    AUTH_FAILED: "check the user name and password in the database URL",
    DB_MISSING: "create the database (createdb) or fix its name in the database URL",
    HOST_UNKNOWN: "check the host name in the database URL",
    STARTING_UP: "the server is still starting; raise [database] deadline if it takes longer",
    SHUTTING_DOWN: "the server is shutting down; it answers again once it has been started",
    SQLITE_UNUSABLE: "check the path in the database URL and that its directory can be written",
}


class ProbeFailure(Exception):
    """One failed probe: a plain reason, the driver's message, and whether retrying can help."""

    def __init__(self, reason: str, detail: str, retryable: bool, hint: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail and detail != reason else reason)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        self._hint = hint

    @property
    def hint(self) -> str:
        if self._hint is not None:
            return self._hint
        return _HINTS.get(self.reason, "check the database URL and the server's log")


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes, at most 8: SQLAlchemy wraps the driver's error, which wraps asyncpg's."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found and len(found) < 8:
        found.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return found


def classify(exc: BaseException, mask: Callable[[str], str] = lambda s: s) -> ProbeFailure:
    """Sort an exception from a connection attempt into a :class:`ProbeFailure`."""
    chain = exception_chain(exc)
    for item in chain:
        sqlstate = getattr(item, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate in _SQLSTATES:
            reason, retryable = _SQLSTATES[sqlstate]
            detail = str(item).splitlines()[0]
            if reason == STARTING_UP and "shutting down" in detail:  # 57P03 says either
                reason = SHUTTING_DOWN
            return ProbeFailure(reason, mask(detail), retryable)
    for item in chain:
        if isinstance(item, ProbeFailure):
            return item
        if isinstance(item, ConnectionRefusedError):
            return ProbeFailure(REFUSED, "", True)
        if isinstance(item, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
            return ProbeFailure(LOST, "", True)
        if isinstance(item, (TimeoutError, asyncio.TimeoutError)):
            return ProbeFailure(TIMED_OUT, "", True)
        if isinstance(item, socket.gaierror):
            return ProbeFailure(HOST_UNKNOWN, mask(str(item)), True)
        if type(item).__name__ == "ArgumentError":  # sqlalchemy.exc.ArgumentError: a bad URL
            return ProbeFailure(MALFORMED, mask(str(item)), False)
        if type(item).__module__ == "sqlite3" and "unable to open" in str(item):
            return ProbeFailure(SQLITE_UNUSABLE, mask(str(item)), False)
    message = str(chain[-1]).splitlines()[0] if str(chain[-1]) else type(chain[-1]).__name__
    return ProbeFailure(OTHER, mask(message), True)


def prepare_sqlite_file(path: Path) -> None:
    """Create the SQLite file (and its directory) private to the user, or fail for good: a path
    that cannot be created will not become creatable by waiting for the deadline."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:  # some parent is a file
        raise ProbeFailure(SQLITE_UNUSABLE, f"{path}: a parent directory is a file", False) from None
    except OSError as exc:
        raise ProbeFailure(SQLITE_UNUSABLE, f"{path.parent}: {exc.strerror}", False) from None
    try:
        create_private_file(path)
    except OSError as exc:
        raise ProbeFailure(SQLITE_UNUSABLE, f"{path}: {exc.strerror}", False) from None


def missing_driver(db: DatabaseURL, exc: ModuleNotFoundError, python: str = sys.executable) -> ProbeFailure:
    """The URL's driver is not installed: the package to install, not a traceback. Not retryable.

    The supervisor requires asyncpg but not aiosqlite, which only ``sqlite+aiosqlite`` URLs need.
    """
    package = (exc.name or "").partition(".")[0] or "the driver's package"
    scheme = db.url.partition(":")[0]
    return ProbeFailure(DRIVER_MISSING, f"{scheme} URLs need the {package} package, which {python} "
                        "cannot import", False, hint=f"install it: pip install {package}")


Probe = Callable[[float], Awaitable[float]]  # timeout -> latency in ms; raises ProbeFailure


class EngineProbe:
    """``SELECT 1`` over a fresh connection each time (NullPool): a pooled one would hide an outage."""

    def __init__(self, db: DatabaseURL, connect_timeout: float,
                 mask: Callable[[str], str] = lambda s: s, clock: Callable[[], float] = time.perf_counter
                 ) -> None:
        self.db = db
        self.connect_timeout = connect_timeout
        self.mask = mask
        self.clock = clock
        self._engine: Any = None

    def _get_engine(self) -> Any:
        if self._engine is None:
            # Imported here: SQLAlchemy costs a noticeable fraction of a second, and only `up` needs it.
            from sqlalchemy.ext.asyncio import create_async_engine
            from sqlalchemy.pool import NullPool

            if self.db.sqlite_path is not None:
                prepare_sqlite_file(self.db.sqlite_path)
            try:
                self._engine = create_async_engine(
                    self.db.url, poolclass=NullPool,
                    connect_args=connect_args(self.db, self.connect_timeout))
            except ModuleNotFoundError as exc:  # SQLAlchemy imports the URL's driver here
                raise missing_driver(self.db, exc) from None
        return self._engine

    async def __call__(self, timeout: float) -> float:
        from sqlalchemy import text

        started = self.clock()
        try:
            engine = self._get_engine()
            async with asyncio.timeout(timeout):
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:  # every failure becomes a reason; nothing escapes unsorted
            raise classify(exc, self.mask) from None
        return (self.clock() - started) * 1000.0

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


# ----- the retry schedule ------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """What one failed attempt reports to the caller (for the log and the status record)."""

    number: int
    failure: ProbeFailure
    next_delay: float | None  # None: no more attempts


class _Backoff(wait_base):
    """Exponential backoff with proportional jitter, capped by ``max_delay`` and the time left."""

    def __init__(self, cfg: DatabaseSection, jitter: float, rand: Callable[[], float],
                 time_left: Callable[[], float]) -> None:
        self.cfg = cfg
        self.jitter = jitter
        self.rand = rand
        self.time_left = time_left

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = backoff_delay(retry_state.attempt_number, initial=self.cfg.initial_delay,
                              maximum=self.cfg.max_delay, jitter=self.jitter, rand=self.rand)
        return min(delay, max(self.time_left(), 0.0))


class _Deadline(stop_base):
    def __init__(self, time_left: Callable[[], float]) -> None:
        self.time_left = time_left

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.time_left() <= 0


async def wait_for_database(probe: Probe, cfg: DatabaseSection, *,
                            on_attempt: Callable[[Attempt], None] = lambda a: None,
                            sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                            clock: Callable[[], float] = time.monotonic,
                            rand: Callable[[], float] = random.random,
                            jitter: float = 0.2) -> tuple[int, float]:
    """Probe until the database answers; return (attempts, latency in ms).

    Raises the last :class:`ProbeFailure` when it is not retryable or ``cfg.deadline`` has
    passed. ``on_attempt`` is called after every failed attempt with the delay that follows.
    """
    started = clock()

    def time_left() -> float:
        return cfg.deadline - (clock() - started)

    def report(retry_state: RetryCallState) -> None:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        assert isinstance(failure, ProbeFailure)  # the retry predicate lets nothing else through
        on_attempt(Attempt(retry_state.attempt_number, failure, retry_state.upcoming_sleep))

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda e: isinstance(e, ProbeFailure) and e.retryable),
        wait=_Backoff(cfg, jitter, rand, time_left),
        stop=_Deadline(time_left),
        sleep=sleep,
        before_sleep=report,
        reraise=True,
    )
    attempts = 0
    try:
        async for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                # The last attempt may use the time left, but never less than a short connect.
                latency = await probe(min(cfg.connect_timeout, max(time_left(), 0.5)))
    except ProbeFailure as failure:
        on_attempt(Attempt(attempts, failure, None))
        raise
    return attempts, latency
