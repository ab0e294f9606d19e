"""The ``Slots`` executor (supervisor/slots/executor.py) driven with fake processes, a fake
spawner and a fake clock: it decides nothing itself, so these tests check that it carries out
what the lifecycle machine decides (spawn, await readiness, arm a timer, stop, kill, report) and
feeds what happens back in, on the real event loop but with no real process.

The machine's own decisions are tested in tests/test_lifecycle.py; the real processes in
tests/test_up.py and tests/test_reload.py.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import pytest

from supervisor.config.toml import RestartSection
from supervisor.slots import lifecycle as L
from supervisor.slots.executor import Slots, Timing
from supervisor.spawn.process import LineSink, WorkerProcess
from supervisor.state import ExitReason, SlotState, WorkerVitals
from tests.support import Clock, scaled

WALL = 1_700_000_000.0
SIGTERM, SIGKILL = -15, -9


class FakeProc:
    """A worker process as the executor sees it: readiness, exit and the stop/kill it is sent are
    all in the test's hands (``serve``, ``exit``); a stop or a kill ends it at once."""

    def __init__(self, pid: int, index: int, sink: LineSink) -> None:
        self.pid, self.index, self.sink = pid, index, sink
        self.stderr_tail: deque[str] = deque(maxlen=20)
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[bool] = loop.create_future()
        self._exit: asyncio.Future[int] = loop.create_future()
        self.stops: list[float] = []  # the stop timeout of each stop asked for
        self.kills = 0
        self.vitals = WorkerVitals(spawned_at=0.0)  # what the executor reads: ready_at once it serves

    def serve(self, ready: bool = True) -> None:
        if ready:
            self.vitals.ready_at = 0.0
        self._ready.set_result(ready)

    def exit(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)

    @property
    def exited(self) -> bool:
        return self._exit.done()

    async def ready(self) -> bool:
        return await self._ready

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    async def stop(self, timeout: float) -> int:
        self.stops.append(timeout)
        self.exit(SIGTERM)
        return await self.wait()

    def kill(self) -> None:
        self.kills += 1
        self.exit(SIGKILL)


class Harness:
    """``Slots`` with a fake spawner (pids from 101), recorded callbacks and tasks, a fake clock."""

    def __init__(self, count: int = 1, *, ready_timeout: float = 5.0, prefix: Callable[[int], str] | None = None,
                 **restart: Any) -> None:
        self.clock = Clock(100.0, wall_offset=WALL)
        self.procs: list[FakeProc] = []
        self.fail_next: list[OSError] = []  # raised by the next starts, in turn
        self.tasks: list[asyncio.Future[Any]] = []
        self.changes = 0
        self.gave_up: list[tuple[str, int]] = []
        self.crashes: list[list[str]] = []
        cfg = RestartSection(**{"initial_delay": 0.05, "max_delay": 0.05, "multiplier": 2.0, "jitter": 0.0,
                                "min_uptime": 1.0, "crash_loop_failures": 5, "crash_loop_window": 60.0, **restart})
        self.slots = Slots("web", count, Timing(cfg, ready_timeout=ready_timeout, stop_timeout=3.0),
                           start=self.start, run_task=self.run_task, changed=self.changed, gave_up=self.record_gave_up,
                           crashed=self.crashed, clock=self.clock, wall=self.clock.wall, rand=lambda: 0.5,
                           prefix=prefix)

    def start(self, index: int, sink: LineSink) -> WorkerProcess:
        if self.fail_next:
            raise self.fail_next.pop(0)
        proc = FakeProc(101 + len(self.procs), index, sink)
        self.procs.append(proc)
        return cast(WorkerProcess, proc)

    def run_task(self, coro: Awaitable[object]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    def changed(self) -> None:
        self.changes += 1

    def record_gave_up(self, name: str, index: int) -> None:
        self.gave_up.append((name, index))

    def crashed(self, tail: Sequence[str]) -> None:
        self.crashes.append(list(tail))

    def state(self, index: int = 0) -> tuple[SlotState, int | None]:
        status = self.slots.statuses[index]
        return status.state, status.pid

    async def until(self, check: Callable[[], object], what: str, timeout: float = 5.0) -> None:
        """Let the loop run until ``check()`` holds: the executor's tasks react to the fakes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + scaled(timeout)
        while not check():
            for task in self.tasks:
                if task.done() and task.exception() is not None:
                    raise AssertionError(f"an executor task failed while waiting for {what}") from task.exception()
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; slots: {self.slots.statuses}")
            await asyncio.sleep(0.001)

    async def serving(self) -> list[FakeProc]:
        """Begin, and let every slot's first worker serve."""
        self.slots.broadcast(L.Begin())
        first = list(self.procs)
        for proc in first:
            proc.serve()
        await self.until(lambda: all(s.state == SlotState.RUNNING for s in self.slots.statuses), "workers serving")
        return first

    async def settle(self) -> None:
        """Run the loop until every pending task has gone as far as it can (each step is one
        callback; a hundred is far more than any chain here)."""
        for _ in range(100):
            await asyncio.sleep(0)

    def close(self) -> None:
        self.slots.cancel_timers()
        for task in self.tasks:
            task.cancel()


@pytest.mark.asyncio
async def test_begin_starts_each_slots_worker_and_a_ready_worker_serves() -> None:
    h = Harness(2)
    assert [s.state for s in h.slots.statuses] == [SlotState.WAITING, SlotState.WAITING]
    h.slots.broadcast(L.Begin())
    assert [(p.pid, p.index) for p in h.procs] == [(101, 0), (102, 1)]  # started at once, synchronously
    assert [h.state(0), h.state(1)] == [(SlotState.STARTING, 101), (SlotState.STARTING, 102)]
    assert h.slots.statuses[0].started_at == WALL + 100.0 and h.slots.procs.keys() == {101, 102}
    before = h.changes
    h.procs[1].serve()
    await h.until(lambda: h.state(1) == (SlotState.RUNNING, 102), "slot 1 serving")
    assert h.state(0) == (SlotState.STARTING, 101) and h.changes > before  # each event is announced
    assert h.slots.index_of(102) == 1 and h.slots.index_of(101) == 0 and h.slots.index_of(999) is None
    assert not h.slots.idle
    h.close()


@pytest.mark.asyncio
async def test_a_workers_output_is_relayed_under_its_slots_prefix(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(1, prefix=lambda i: f"api.{i}")
    h.slots.broadcast(L.Begin())
    with caplog.at_level(logging.INFO, logger="supervisor.worker"):
        h.procs[0].sink(101, "GET /health 200")
    relayed = [r.getMessage() for r in caplog.records if r.name == "supervisor.worker"]
    assert relayed == ["api.0 101 | GET /health 200"]
    h.close()


@pytest.mark.asyncio
async def test_a_start_that_fails_with_an_os_error_backs_off_and_is_retried_after_the_delay(
        caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(1)
    h.fail_next = [OSError(errno.EMFILE, "Too many open files")]
    loop = asyncio.get_running_loop()
    with caplog.at_level(logging.WARNING, logger="supervisor"):
        h.slots.broadcast(L.Begin())
        armed = loop.time()
    assert h.procs == [] and h.state() == (SlotState.BACKOFF, None)
    assert h.slots.statuses[0].next_retry_at == WALL + 100.0 + 0.05
    assert re.search(r"web\.0: worker could not be started: Too many open files; restarting in 0\.05s",
                     caplog.text), caplog.text
    await h.until(lambda: h.procs, "the start retried")  # the timer the machine asked for
    assert loop.time() - armed >= 0.05 * 0.9  # not before its delay (the loop's timer resolution aside)
    assert h.state() == (SlotState.STARTING, 101)
    h.close()


@pytest.mark.asyncio
async def test_a_worker_that_exits_unasked_is_reported_as_a_crash_and_replaced() -> None:
    h = Harness(1)
    (first,) = await h.serving()
    first.stderr_tail.extend(["Traceback (most recent call last):", "MemoryError"])
    h.clock.advance(10)  # it served past min_uptime: restarted at once, no backoff
    first.exit(1)
    await h.until(lambda: len(h.procs) == 2, "a new worker")
    assert h.crashes == [["Traceback (most recent call last):", "MemoryError"]]
    assert 101 not in h.slots.procs and 102 in h.slots.procs  # the exited one is forgotten
    status = h.slots.statuses[0]
    assert (status.state, status.pid, status.restarts) == (SlotState.STARTING, 102, 1)
    assert status.last_exit is not None and (status.last_exit.code, status.last_exit.reason) == (1, ExitReason.CRASH)
    h.close()


@pytest.mark.asyncio
async def test_a_shutdown_stops_every_worker_with_the_stop_timeout_and_no_exit_counts_as_a_crash() -> None:
    h = Harness(2)
    first, second = await h.serving()
    h.slots.broadcast(L.Shutdown())
    assert [h.state(0)[0], h.state(1)[0]] == [SlotState.STOPPING, SlotState.STOPPING]
    await h.until(lambda: h.slots.idle, "every slot idle")
    assert first.stops == [3.0] and second.stops == [3.0] and first.kills == second.kills == 0
    assert h.crashes == [] and h.slots.procs == {}
    assert [h.state(0), h.state(1)] == [(SlotState.STOPPED, None), (SlotState.STOPPED, None)]
    assert len(h.procs) == 2  # nothing restarted
    h.close()


@pytest.mark.asyncio
async def test_a_worker_that_does_not_report_ready_in_time_is_killed_and_its_exit_is_a_start_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(1, ready_timeout=0.05)
    with caplog.at_level(logging.INFO, logger="supervisor"):
        h.slots.broadcast(L.Begin())
        await h.until(lambda: h.procs[0].kills, "the silent worker killed")
        await h.until(lambda: h.slots.statuses[0].last_exit is not None, "its exit recorded")
    status = h.slots.statuses[0]
    assert status.last_exit is not None and status.last_exit.reason == ExitReason.START_TIMEOUT
    assert status.last_exit.signal == 9 and status.state == SlotState.BACKOFF
    assert re.search(r"web\.0: worker pid 101 did not report ready within 0\.05s", caplog.text), caplog.text
    h.close()


@pytest.mark.asyncio
async def test_a_worker_that_closes_its_ready_pipe_without_a_word_is_not_serving_and_its_exit_follows() -> None:
    h = Harness(1)
    h.slots.broadcast(L.Begin())
    proc = h.procs[0]
    proc.serve(ready=False)
    await h.settle()
    assert h.state() == (SlotState.STARTING, 101) and proc.kills == 0  # neither ready nor timed out
    proc.exit(3)
    await h.until(lambda: h.state()[0] == SlotState.BACKOFF, "the slot backing off")
    assert h.crashes == [[]]
    h.close()


@pytest.mark.asyncio
async def test_a_replacement_resolves_true_once_the_successor_serves_and_the_old_worker_drains() -> None:
    h = Harness(1)
    (old,) = await h.serving()
    done = h.slots.replace(0, ExitReason.RELOAD)
    again = h.slots.replace(0, ExitReason.RELOAD)  # one replacement per slot at a time
    assert isinstance(again, asyncio.Future) and again.done() and again.result() is False
    (new,) = h.procs[1:]
    assert new.index == 0 and h.state() == (SlotState.RUNNING, 101)  # the old one serves meanwhile
    new.serve()
    assert await asyncio.wait_for(done, scaled(5)) is True
    assert h.state() == (SlotState.RUNNING, 102)
    await h.until(lambda: old.exited, "the old worker stopped")
    assert old.stops == [3.0] and old.kills == 0 and h.crashes == []  # drained, so not a crash
    await h.until(lambda: h.slots.procs.keys() == {102}, "the old worker reaped")
    last = h.slots.statuses[0].last_exit
    assert last is not None and last.reason == ExitReason.RELOAD
    h.close()


@pytest.mark.asyncio
async def test_a_replacement_whose_successor_fails_resolves_false_and_the_old_worker_keeps_serving() -> None:
    h = Harness(1)
    (old,) = await h.serving()
    done = h.slots.replace(0, ExitReason.RELOAD)
    h.procs[1].exit(1)  # a syntax error in the new version, say
    assert await asyncio.wait_for(done, scaled(5)) is False
    assert h.state() == (SlotState.RUNNING, 101) and old.stops == [] and not old.exited
    assert h.slots.replace(0, ExitReason.RELOAD) is not done  # the slot takes the next one
    h.close()


@pytest.mark.asyncio
async def test_a_recycle_with_kill_old_kills_the_hung_worker_once_its_successor_serves() -> None:
    h = Harness(1)
    (hung,) = await h.serving()
    stale = h.slots.recycle(0, L.Recycle(999, ExitReason.HUNG, kill_old=True))
    assert await asyncio.wait_for(stale, scaled(5)) is False and len(h.procs) == 1  # not this slot's worker
    done = h.slots.recycle(0, L.Recycle(101, ExitReason.HUNG, kill_old=True))
    h.procs[1].serve()
    assert await asyncio.wait_for(done, scaled(5)) is True
    await h.until(lambda: hung.exited, "the hung worker gone")
    assert hung.kills == 1 and hung.stops == []  # its event loop cannot drain anything
    assert h.state() == (SlotState.RUNNING, 102) and h.crashes == []
    h.close()


@pytest.mark.asyncio
async def test_a_crash_loop_gives_up_and_logs_the_last_stderr_lines(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(1, crash_loop_failures=1)
    h.slots.broadcast(L.Begin())
    h.procs[0].stderr_tail.extend(["ModuleNotFoundError: No module named 'app'"])
    with caplog.at_level(logging.ERROR, logger="supervisor"):
        h.procs[0].exit(1)
        await h.until(lambda: h.gave_up, "the slot giving up")
    assert h.gave_up == [("web", 0)] and h.state() == (SlotState.FATAL, None)
    assert re.search(r"web\.0: FATAL: crashed 1 times.*Last lines the worker wrote to stderr:\n"
                     r"    ModuleNotFoundError: No module named 'app'", caplog.text, re.S), caplog.text
    assert len(h.procs) == 1  # not restarted
    h.close()


@pytest.mark.asyncio
async def test_a_slot_added_before_begin_waits_for_it_and_one_added_after_starts_at_once() -> None:
    h = Harness(1)
    changes = h.changes
    assert h.slots.add() == 1
    assert h.procs == [] and h.changes == changes + 1 and h.state(1) == (SlotState.WAITING, None)
    await h.serving()
    assert [p.index for p in h.procs] == [0, 1]
    assert h.slots.add() == 2
    assert [p.index for p in h.procs] == [0, 1, 2] and h.state(2) == (SlotState.STARTING, 103)
    h.close()


@pytest.mark.asyncio
async def test_a_removed_slot_drains_under_its_index_and_is_dropped_once_its_worker_is_gone() -> None:
    h = Harness(2)
    _, last = await h.serving()
    assert h.slots.remove() == 1
    assert len(h.slots.machines) == 1 and [s.index for s in h.slots.statuses] == [0, 1]  # still shown
    assert h.slots.add() == 1  # a new slot may take the index while the old one drains
    assert [s.index for s in h.slots.statuses] == [0, 1, 1]
    await h.until(lambda: last.exited and len(h.slots.statuses) == 2, "the removed slot dropped")
    assert last.stops == [3.0] and h.crashes == []
    assert h.slots.retiring == [] and [p.index for p in h.procs] == [0, 1, 1]
    h.close()


@pytest.mark.asyncio
async def test_kill_all_kills_every_worker_not_yet_reaped_and_cancelled_timers_never_fire() -> None:
    h = Harness(2)
    first, second = await h.serving()
    h.slots.kill_all()
    assert first.kills == second.kills == 1
    # Both exits were unasked: the slots back off (they were not serving for min_uptime).
    await h.until(lambda: [s.state for s in h.slots.statuses] == [SlotState.BACKOFF] * 2, "both backing off")
    h.slots.cancel_timers()
    # asyncio runs timers in the order they are due: once a later one has fired, the cancelled
    # retries (due after 0.05 s) would have fired too.
    later = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, later.set)
    await asyncio.wait_for(later.wait(), scaled(5))
    await h.settle()
    assert len(h.procs) == 2 and [s.state for s in h.slots.statuses] == [SlotState.BACKOFF] * 2
    h.close()


@pytest.mark.asyncio
async def test_reconfigure_applies_the_new_ready_and_stop_timeouts_to_the_next_workers() -> None:
    h = Harness(1)
    (first,) = await h.serving()
    h.slots.reconfigure(Timing(RestartSection(initial_delay=0.05, max_delay=0.05, jitter=0.0),
                               ready_timeout=0.05, stop_timeout=7.0))
    h.clock.advance(10)
    first.exit(1)
    await h.until(lambda: len(h.procs) == 2, "a new worker")
    await h.until(lambda: h.procs[1].kills, "the new worker killed at the new ready timeout (not 5 s)")
    await h.until(lambda: len(h.procs) == 3, "the next worker, after the backoff")
    h.procs[2].serve()
    await h.until(lambda: h.state() == (SlotState.RUNNING, 103), "it serving")
    h.slots.broadcast(L.Shutdown())
    await h.until(lambda: h.slots.idle, "the slot idle")
    assert h.procs[2].stops == [7.0]
    h.close()
