"""The retry schedule (fake clock, recorded sleeps), failure reasons (real PostgreSQL) and the
status record the database watch keeps for the status API."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from supervisor.config.dburl import normalize_database_url
from supervisor.config.settings import resolve_settings
from supervisor.config.toml import DatabaseSection
from supervisor.database.probe import (
    AUTH_FAILED,
    DB_MISSING,
    DRIVER_MISSING,
    REFUSED,
    SHUTTING_DOWN,
    STARTING_UP,
    TIMED_OUT,
    Attempt,
    EngineProbe,
    ProbeFailure,
    classify,
    wait_for_database,
)
from supervisor.database.watch import DatabaseWatch
from supervisor.errors import DatabaseUnavailable
from supervisor.slots.policy import backoff_delay
from supervisor.state import DatabaseState
from tests.pgserver import APP_PASSWORD, PgServer
from tests.scripted import ScriptedSupervisor
from tests.support import Clock, free_port

CFG = DatabaseSection(initial_delay=0.25, max_delay=5.0, deadline=30.0, connect_timeout=2.0)


def scripted_probe(failures: list[ProbeFailure], fake: Clock, cost: float = 0.0) -> Any:
    """A probe that fails with each of ``failures`` in turn, then answers in 1.5 ms."""
    remaining = list(failures)

    async def probe(timeout: float) -> float:
        fake.now += cost
        if remaining:
            raise remaining.pop(0)
        return 1.5

    return probe


def refused() -> ProbeFailure:
    return ProbeFailure(REFUSED, "", True)


@pytest.mark.asyncio
async def test_delays_double_from_initial_and_stop_at_max_delay_without_jitter() -> None:
    fake = Clock(0.0)
    attempts: list[Attempt] = []
    result = await wait_for_database(scripted_probe([refused()] * 7, fake), CFG,
                                           on_attempt=attempts.append, sleep=fake.sleep,
                                           clock=fake, rand=lambda: 0.5)
    assert result == (8, 1.5)
    assert fake.sleeps == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert [a.number for a in attempts] == [1, 2, 3, 4, 5, 6, 7]
    assert [a.next_delay for a in attempts] == fake.sleeps


@pytest.mark.parametrize("rand, expected", [(0.0, [0.2, 0.4, 0.8, 1.6, 3.2, 4.0]),
                                            (1.0, [0.3, 0.6, 1.2, 2.4, 4.8, 5.0])])
def test_jitter_spreads_each_delay_by_the_fraction_but_never_past_max_delay(
        rand: float, expected: list[float]) -> None:
    delays = [backoff_delay(n, initial=CFG.initial_delay, maximum=CFG.max_delay, jitter=0.2, rand=lambda: rand)
              for n in range(1, 7)]
    assert delays == pytest.approx(expected)


@pytest.mark.asyncio
async def test_past_the_deadline_the_last_failure_is_raised_and_no_sleep_overshoots() -> None:
    fake = Clock(0.0)
    cfg = DatabaseSection(initial_delay=0.25, max_delay=2.0, deadline=6.0)
    attempts: list[Attempt] = []
    with pytest.raises(ProbeFailure) as info:
        await wait_for_database(scripted_probe([refused()] * 100, fake, cost=0.1), cfg,
                                      on_attempt=attempts.append, sleep=fake.sleep, clock=fake,
                                      rand=lambda: 0.5)
    assert info.value.reason == REFUSED
    assert fake.now == pytest.approx(6.1)  # the deadline, plus the last attempt's own time
    assert fake.sleeps[-1] < 2.0  # the last sleep was cut to the time left
    assert attempts[-1].next_delay is None and attempts[-1].number == len(fake.sleeps) + 1


@pytest.mark.parametrize("reason", [AUTH_FAILED, DB_MISSING])
@pytest.mark.asyncio
async def test_failures_retrying_cannot_fix_end_the_wait_at_once(reason: str) -> None:
    fake = Clock(0.0)
    with pytest.raises(ProbeFailure) as info:
        await wait_for_database(scripted_probe([refused(), ProbeFailure(reason, "x", False)], fake),
                                      CFG, sleep=fake.sleep, clock=fake, rand=lambda: 0.5)
    assert info.value.reason == reason
    assert fake.sleeps == [0.25]


def test_starting_up_is_recognised_by_its_sqlstate_and_retried() -> None:
    failure = classify(asyncpg.exceptions.CannotConnectNowError("the database system is starting up"))
    assert failure.reason == STARTING_UP and failure.retryable
    assert "the database system is starting up" in str(failure)


def test_a_connection_reset_by_a_server_going_down_is_a_lost_connection_and_retried() -> None:
    failure = classify(ConnectionResetError(104, "Connection reset by peer"))
    assert failure.reason == "connection lost" and failure.retryable


def test_a_server_shutting_down_is_not_called_starting_up() -> None:
    failure = classify(asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"))
    assert failure.reason == SHUTTING_DOWN and failure.retryable
    assert "starting" not in failure.hint


@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_real_failures_are_sorted_into_plain_reasons_without_the_password(pg: PgServer) -> None:
    cases = [(pg.url(password="wrong-pw-77aa"), AUTH_FAILED, False),
             (pg.url(database="no_such_db"), DB_MISSING, False),
             (pg.url(port=free_port()), REFUSED, True)]
    for url, reason, retryable in cases:
        probe = EngineProbe(normalize_database_url(url), 2.0)
        with pytest.raises(ProbeFailure) as info:
            await probe(2.0)
        assert (info.value.reason, info.value.retryable) == (reason, retryable), str(info.value)
        assert "wrong-pw-77aa" not in str(info.value) and APP_PASSWORD not in str(info.value)
    latency = await EngineProbe(normalize_database_url(pg.url()), 2.0)(2.0)
    assert 0 < latency < 2000


@pytest.mark.timeout(30)
@pytest.mark.asyncio
async def test_a_server_that_accepts_but_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes handshakes; nobody ever answers
        url = f"postgresql://app:pw@127.0.0.1:{silent.getsockname()[1]}/app"
        with pytest.raises(ProbeFailure) as info:
            await EngineProbe(normalize_database_url(url), 5.0)(0.3)
    assert info.value.reason == TIMED_OUT and info.value.retryable


@pytest.mark.timeout(30)
@pytest.mark.asyncio
async def test_a_sqlite_url_without_aiosqlite_fails_at_once_naming_the_package_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules: importing aiosqlite raises ModuleNotFoundError, as where it is not installed.
    monkeypatch.setitem(sys.modules, "aiosqlite", None)
    fake = Clock()
    probe = EngineProbe(normalize_database_url(f"sqlite+aiosqlite:///{tmp_path / 'app.sqlite3'}"), 2.0)
    with pytest.raises(ProbeFailure) as info:
        await wait_for_database(probe, CFG, sleep=fake.sleep, clock=fake)
    failure = info.value
    assert (failure.reason, failure.retryable) == (DRIVER_MISSING, False)
    assert "sqlite+aiosqlite" in str(failure) and "aiosqlite package" in str(failure)
    assert failure.hint == "install it: pip install aiosqlite"
    assert fake.sleeps == []  # not retried: waiting cannot install it


# ----- the watch: state and the status record --------------------------------------------------


def scripted(tmp_path: Path, url: str, **database: Any) -> ScriptedSupervisor:
    toml = "[database]\n" + "".join(f"{k} = {v!r}\n" for k, v in database.items())
    (tmp_path / "supervisor.toml").write_text(toml)
    return ScriptedSupervisor(resolve_settings(tmp_path, {"DATABASE_URL": url}))


@pytest.fixture
def stopped(pg: PgServer) -> Iterator[PgServer]:
    pg.stop()
    yield pg


@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_wait_reports_waiting_then_ok_when_the_server_comes_up(tmp_path: Path, stopped: PgServer) -> None:
    sup = scripted(tmp_path, stopped.url(), initial_delay=0.1, max_delay=0.2, deadline=60.0)
    seen: list[tuple[str, int, str | None]] = []

    async def sleep(seconds: float) -> None:
        seen.append((sup.database.state, sup.database.attempts, sup.database.last_error))
        if len(seen) == 2:
            stopped.start()  # the server arrives while the supervisor waits

    watch = DatabaseWatch(sup, sleep=sleep)
    await watch.wait()
    assert seen == [(DatabaseState.WAITING, 1, REFUSED), (DatabaseState.WAITING, 2, REFUSED)]
    assert sup.changes >= 4  # waiting, two failed attempts, ok: each one reported
    db = sup.database
    assert (db.state, db.attempts, db.last_error) == (DatabaseState.OK, 0, None)
    assert db.latency_ms is not None and db.latency_ms > 0 and db.last_check is not None


@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_wait_gives_up_with_exit_3_and_records_unavailable(tmp_path: Path) -> None:
    sup = scripted(tmp_path, f"postgresql://app:{APP_PASSWORD}@127.0.0.1:{free_port()}/app",
                          initial_delay=0.01, max_delay=0.05, deadline=0.3)
    with pytest.raises(DatabaseUnavailable) as info:
        await DatabaseWatch(sup).wait()
    message = str(info.value)
    assert info.value.exit_code == 3
    assert message.startswith("database unreachable at postgresql+asyncpg://app:***@127.0.0.1:")
    assert "connection refused after" in message and "[database] deadline = 0.3s" in message
    assert APP_PASSWORD not in message
    assert sup.database.state == DatabaseState.UNAVAILABLE and sup.database.attempts >= 2


@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_monitor_probe_records_an_outage_and_the_recovery(tmp_path: Path, pg: PgServer) -> None:
    sup = scripted(tmp_path, pg.url())
    sup.database.state = DatabaseState.OK
    watch = DatabaseWatch(sup)
    db = normalize_database_url(pg.url())

    async def scenario() -> list[tuple[DatabaseState, int, str | None]]:
        records = []
        for action in (pg.stop, lambda: None, pg.start):
            action()
            await watch._probe_once(db)
            records.append((sup.database.state, sup.database.attempts, sup.database.last_error))
        assert watch._probe is not None
        await watch._probe.close()
        return records

    assert await scenario() == [(DatabaseState.UNAVAILABLE, 1, REFUSED), (DatabaseState.UNAVAILABLE, 2, REFUSED),
                                       (DatabaseState.OK, 0, None)]
