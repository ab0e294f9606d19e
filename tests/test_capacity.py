"""The web workers' capacity (supervisor/slots/capacity.py) over scripted slots: one replacement
at a time (so capacity never drops below N-1), recycling for health counted by reason, and
scaling to a wanted count within bounds, never removing a slot while it is being replaced."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable
from typing import cast

import pytest

from supervisor.contract import MAX_WORKERS, MIN_WORKERS, RecycleWorker
from supervisor.slots import lifecycle as L
from supervisor.slots.capacity import Capacity
from supervisor.slots.executor import Slots
from supervisor.state import ExitReason, HealthStatus
from tests.support import scaled


class ScriptedSlots:
    """The part of :class:`Slots` that :class:`Capacity` uses: each replacement or recycle is a
    future the test resolves; the calls are recorded in order."""

    def __init__(self, count: int) -> None:
        self.machines: list[int] = [101 + i for i in range(count)]  # a slot, by its worker's pid
        self.calls: list[tuple[object, ...]] = []
        self.outcomes: list[asyncio.Future[bool]] = []
        self._next_pid = 201

    def _outcome(self) -> asyncio.Future[bool]:
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.outcomes.append(outcome)
        return outcome

    def replace(self, index: int, reason: ExitReason) -> Awaitable[bool]:
        self.calls.append(("replace", index, reason))
        return self._outcome()

    def recycle(self, index: int, event: L.Recycle) -> Awaitable[bool]:
        self.calls.append(("recycle", index, event))
        return self._outcome()

    def resume_accepting(self, index: int) -> None:
        self.calls.append(("resume", index))

    def index_of(self, pid: int) -> int | None:
        return self.machines.index(pid) if pid in self.machines else None

    def add(self) -> int:
        self.machines.append(self._next_pid)
        self._next_pid += 1
        self.calls.append(("add",))
        return len(self.machines) - 1

    def remove(self) -> int:
        self.machines.pop()
        self.calls.append(("remove", len(self.machines)))
        return len(self.machines)


class Harness:
    def __init__(self, count: int = 2) -> None:
        self.slots = ScriptedSlots(count)
        self.health = HealthStatus()
        self.stopping = False
        self.changes = 0
        self.capacity = Capacity(cast(Slots, self.slots), count, self.health, lambda: self.stopping, self.changed)

    def changed(self) -> None:
        self.changes += 1


async def settle() -> None:
    """Let every task go as far as it can: each await here is one pass of the loop."""
    for _ in range(50):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_replacements_run_one_at_a_time_in_the_order_asked() -> None:
    h = Harness(3)
    first = asyncio.ensure_future(h.capacity.replace(0, ExitReason.RELOAD))
    second = asyncio.ensure_future(h.capacity.replace(1, ExitReason.RELOAD))
    third = asyncio.ensure_future(h.capacity.replace(2, ExitReason.MANUAL))
    await settle()
    assert h.slots.calls == [("replace", 0, ExitReason.RELOAD)]  # the others wait: capacity stays >= N-1
    h.slots.outcomes[0].set_result(True)
    await settle()
    assert h.slots.calls[1:] == [("replace", 1, ExitReason.RELOAD)] and await first is True
    h.slots.outcomes[1].set_result(False)  # a failed replacement does not stop the next one
    await settle()
    # The slot whose successor failed keeps its worker taking connections (one stopped at its quota).
    assert h.slots.calls[2:] == [("resume", 1), ("replace", 2, ExitReason.MANUAL)] and await second is False
    h.slots.outcomes[2].set_result(True)
    assert await third is True


@pytest.mark.asyncio
async def test_replacing_a_slot_removed_since_the_rollout_began_is_done_at_once() -> None:
    h = Harness(2)
    assert await asyncio.wait_for(h.capacity.replace(2, ExitReason.RELOAD), scaled(5)) is True
    assert h.slots.calls == []


@pytest.mark.asyncio
async def test_a_slot_being_replaced_is_not_removed_until_its_replacement_is_over(
        caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(2)
    replacing = asyncio.ensure_future(h.capacity.replace(1, ExitReason.RELOAD))
    await settle()
    assert h.capacity.want(1, "SIGTTOU")
    with caplog.at_level(logging.INFO, logger="supervisor"):
        applying = asyncio.ensure_future(h.capacity.apply())
        await settle()
        assert h.slots.calls == [("replace", 1, ExitReason.RELOAD)] and len(h.slots.machines) == 2
        h.slots.outcomes[0].set_result(True)
        await replacing
        await applying
    assert h.slots.calls[1:] == [("remove", 1)] and len(h.slots.machines) == 1
    assert re.search(r"web\.1: removed; its worker drains", caplog.text), caplog.text


@pytest.mark.asyncio
async def test_a_recycle_replaces_the_workers_slot_and_counts_a_success_by_reason() -> None:
    h = Harness(2)
    recycling = asyncio.ensure_future(h.capacity.recycle(RecycleWorker(102, ExitReason.HUNG, kill=True)))
    await settle()
    assert h.slots.calls == [("recycle", 1, L.Recycle(102, ExitReason.HUNG, kill_old=True))]
    assert h.health.recycled == {} and h.changes == 0  # not before the successor serves
    h.slots.outcomes[0].set_result(True)
    await recycling
    assert h.health.recycled == {ExitReason.HUNG: 1} and h.changes == 1

    again = asyncio.ensure_future(h.capacity.recycle(RecycleWorker(101, ExitReason.REQUESTS)))
    await settle()
    assert h.slots.calls[1:] == [("recycle", 0, L.Recycle(101, ExitReason.REQUESTS, kill_old=False))]
    h.slots.outcomes[1].set_result(True)
    await again
    assert h.health.recycled == {ExitReason.HUNG: 1, ExitReason.REQUESTS: 1} and h.changes == 2


@pytest.mark.asyncio
async def test_a_recycle_whose_successor_fails_is_not_counted() -> None:
    h = Harness(1)
    recycling = asyncio.ensure_future(h.capacity.recycle(RecycleWorker(101, ExitReason.RSS)))
    await settle()
    h.slots.outcomes[0].set_result(False)
    await recycling
    assert h.health.recycled == {} and h.changes == 0
    assert h.slots.calls[-1] == ("resume", 0)  # the old worker takes connections again


@pytest.mark.asyncio
async def test_a_recycle_behind_a_replacement_is_dropped_when_its_worker_was_replaced_meanwhile() -> None:
    h = Harness(1)
    replacing = asyncio.ensure_future(h.capacity.replace(0, ExitReason.RELOAD))
    recycling = asyncio.ensure_future(h.capacity.recycle(RecycleWorker(101, ExitReason.HUNG, kill=True)))
    await settle()
    assert len(h.slots.calls) == 1  # the recycle waits its turn
    h.slots.machines[0] = 201  # the reload's new worker took the slot
    h.slots.outcomes[0].set_result(True)
    await replacing
    await recycling
    assert h.slots.calls == [("replace", 0, ExitReason.RELOAD)] and h.health.recycled == {}


@pytest.mark.asyncio
async def test_no_recycle_while_the_supervisor_stops() -> None:
    h = Harness(1)
    h.stopping = True
    await asyncio.wait_for(h.capacity.recycle(RecycleWorker(101, ExitReason.HUNG)), scaled(5))
    assert h.slots.calls == [] and h.health.recycled == {}


def test_a_wanted_count_out_of_bounds_is_refused_and_logged_with_the_bounds(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness(2)
    with caplog.at_level(logging.INFO, logger="supervisor"):
        assert not h.capacity.want(MIN_WORKERS - 1, "SIGTTOU")
        assert not h.capacity.want(MAX_WORKERS + 1, "scale")
        assert h.capacity.wanted == 2
        assert re.search(rf"SIGTTOU: cannot run {MIN_WORKERS - 1} workers \({MIN_WORKERS} to {MAX_WORKERS}\); "
                         r"still 2", caplog.text), caplog.text
        assert h.capacity.want(MAX_WORKERS, "scale") and h.capacity.wanted == MAX_WORKERS
        assert h.capacity.want(MIN_WORKERS, "SIGTTOU") and h.capacity.wanted == MIN_WORKERS
        assert re.search(rf"SIGTTOU: {MAX_WORKERS} -> {MIN_WORKERS} worker\(s\)", caplog.text), caplog.text
    assert h.slots.calls == []  # asking changes nothing until apply()


@pytest.mark.asyncio
async def test_apply_adds_and_removes_slots_until_the_wanted_count() -> None:
    h = Harness(2)
    assert h.capacity.want(4, "SIGTTIN")
    await h.capacity.apply()
    assert h.slots.calls == [("add",), ("add",)] and len(h.slots.machines) == 4
    await h.capacity.apply()  # already there: nothing to do
    assert len(h.slots.calls) == 2
    assert h.capacity.want(1, "scale")
    await h.capacity.apply()
    assert h.slots.calls[2:] == [("remove", 3), ("remove", 2), ("remove", 1)] and len(h.slots.machines) == 1


@pytest.mark.asyncio
async def test_apply_stops_changing_slots_once_the_supervisor_stops() -> None:
    h = Harness(1)
    real_add = h.slots.add

    def add_then_stop() -> int:
        h.stopping = True  # a SIGTERM arrives while scaling up
        return real_add()

    h.slots.add = add_then_stop  # type: ignore[method-assign]
    assert h.capacity.want(5, "SIGTTIN")
    await h.capacity.apply()
    assert h.slots.calls == [("add",)] and len(h.slots.machines) == 2
