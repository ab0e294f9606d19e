"""The batching decision on a scripted clock and scripted arrivals; then the stream, fed by this
kernel's inotify and by watchfiles' poller, with an ignored file rewritten every 10 ms beside."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.reload.batching import Batcher, Closed, IgnoredLog, cap_for
from supervisor.reload.filters import ChangeFilter
from supervisor.reload.inotify import inotify_changes
from supervisor.reload.stream import Intake, watch_batches
from tests.support import scaled

ROOT = Path("/project")
APP, LOG, DB = "/project/app.py", "/project/logs/app.log", "/project/data.sqlite3"
# The scripted clock counts whole milliseconds, so that no float rounding moves a deadline.
QUIET, CAP = 50, 1600


def batcher() -> Batcher:
    return Batcher(ChangeFilter(root=ROOT).matches, quiet=QUIET, cap=CAP)


def ticks(until: int, every: int = 10) -> Iterator[int]:
    """The scripted clock: 0, 10, 20... ms."""
    return iter(range(0, until + 1, every))


def run(script: dict[int, list[str]], until: int) -> list[Closed]:
    """Feed each tick's arrivals, then close what is due at that tick: the watcher's loop, scripted."""
    b, closed = batcher(), []
    for now in ticks(until):
        b.add(script.get(now, []), now)
        if (batch := b.take(now)) is not None:
            closed.append(batch)
    return closed


def test_an_ignored_file_rewritten_every_10_ms_does_not_hold_the_batch_open() -> None:
    # app.py saved at 0; the app's log (and its database) rewritten every 10 ms throughout.
    script = {now: [LOG, DB] for now in ticks(3000)}
    script[0] = [APP, LOG]
    closed = run(script, 3000)
    assert [(c.paths, c.reason, c.closed) for c in closed] == [(frozenset({APP}), "quiet", QUIET)]


def test_changes_that_count_extend_the_batch_until_quiet_then_a_new_one_opens() -> None:
    script = {0: [APP], 30: ["/project/pkg/models.py"], 70: [APP, LOG], 100: [LOG], 300: ["/project/.env"]}
    closed = run(script, 1000)
    assert [(sorted(c.paths), c.reason, c.opened, c.closed) for c in closed] == [
        (["/project/app.py", "/project/pkg/models.py"], "quiet", 0, 120),
        (["/project/.env"], "quiet", 300, 350),
    ]


def test_a_steady_stream_of_changes_that_count_closes_at_the_cap() -> None:
    script = {now: [f"/project/gen/m{now}.py"] for now in ticks(3000)}
    first = run(script, 3000)[0]
    assert first.reason == "cap" and first.opened == 0 and first.closed == CAP
    assert len(first.paths) == 161  # 0 to 1600 ms inclusive


def test_only_ignored_paths_open_nothing_and_are_returned() -> None:
    b = batcher()
    assert b.add([LOG, "/project/.git/index", "/project/README.md"], 0) == {
        LOG, "/project/.git/index", "/project/README.md"}
    assert b.due() is None and b.take(10_000) is None


def test_a_late_take_closes_on_quiet_when_the_quiet_period_ended_first() -> None:
    # The event loop was busy past both deadlines: the batch had gone quiet, it did not hit the cap.
    b = batcher()
    b.add([APP], 0)
    assert b.take(49) is None
    batch = b.take(5000)
    assert batch is not None and batch.reason == "quiet" and batch.paths == {APP}


def test_the_cap_is_at_least_watchfiles_default_and_four_quiet_periods() -> None:
    assert cap_for(0.05) == 1.6 and cap_for(1.0) == 4.0


def test_ignored_paths_are_logged_once_while_they_keep_changing() -> None:
    log = IgnoredLog(rest=5000)
    assert log.fresh([LOG, DB], 0) == sorted([LOG, DB])
    # The log line about LOG, written into LOG itself, comes back at once: not logged again.
    assert log.fresh([LOG], 1) == []
    assert all(log.fresh([LOG], t) == [] for t in ticks(20_000, 500))  # rewritten all along
    assert log.fresh([DB], 20_000) == [DB]  # DB rested more than 5 s
    assert log.fresh(["/project/notes.txt"], 20_000) == ["/project/notes.txt"]


def test_ignored_names_that_rested_are_forgotten() -> None:
    log = IgnoredLog(rest=1, limit=10)
    for index in range(50):  # unique names, e.g. temporary files
        log.fresh([f"/project/tmp{index}"], index)
    assert len(log._seen) <= 12


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
@pytest.mark.timeout(30)
@pytest.mark.asyncio
async def test_on_inotify_a_log_rewritten_every_10_ms_leaves_the_batch_to_close_on_quiet(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    app, log = tmp_path / "app.py", tmp_path / "logs" / "app.log"
    app.write_text("A = 1\n")
    loop = asyncio.get_running_loop()
    change_filter = ChangeFilter(root=tmp_path)
    intake = Intake(Batcher(change_filter.matches, quiet=0.05, cap=1.6), change_filter, loop.time)
    writes = 0

    async def noisy() -> None:
        nonlocal writes
        while True:
            with log.open("a") as out:
                out.write(f"line {writes}\n")
            writes += 1
            await asyncio.sleep(0.01)  # the app's pace, not synchronisation

    with inotify_changes([str(tmp_path)], skip=change_filter.ignores_directory, deliver=intake.deliver):
        writer = asyncio.ensure_future(noisy())
        try:
            batches = intake.batches()
            app.write_text("A = 2\n")
            closed = await asyncio.wait_for(anext(batches), scaled(10))
            assert writes > 0
            assert closed.paths == {str(app)} and closed.reason == "quiet", closed
        finally:
            writer.cancel()


@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_through_watchfiles_new_ignored_names_every_10_ms_leave_the_batch_to_close_on_quiet(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Each new name is a new change for watchfiles, which would extend its own batch to the cap;
    # here it hands over what it saw every step, and the Batcher decides.
    (tmp_path / "tmp").mkdir()
    watching = asyncio.Event()
    stream = watch_batches([tmp_path], ChangeFilter(root=tmp_path), debounce=0.05, poll=True, poll_interval=0.05,
                           ready=watching.set)
    first = asyncio.ensure_future(anext(stream))
    created = 0

    async def noisy() -> None:
        nonlocal created
        while True:
            created += 1
            (tmp_path / "tmp" / f"upload{created}.tmp").write_text("x")
            await asyncio.sleep(0.01)  # the app's pace, not synchronisation

    caplog.set_level(logging.DEBUG, logger="supervisor")
    await asyncio.wait_for(watching.wait(), scaled(10))
    writer = asyncio.ensure_future(noisy())
    try:
        (tmp_path / "views.py").write_text("V = 1\n")  # a new module: seen by the poller at once
        assert await asyncio.wait_for(first, scaled(20)) == {str(tmp_path / "views.py")}
        # The writer is the clock: a batch held to watchfiles' 1.6 s cap would come after some 160
        # new names; handed over every step and closed on quiet, it comes after a few dozen at most.
        assert 0 < created < 100, created
        closed = [r.getMessage() for r in caplog.records if "changed file(s) closed" in r.getMessage()]
        assert len(closed) == 1 and re.search(r"\(quiet for ", closed[0]), closed
    finally:
        writer.cancel()
        await stream.aclose()
