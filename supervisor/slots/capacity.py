"""The web workers' capacity: one replacement at a time, recycling, and scaling to a wanted count.

Every replacement of a web worker (a reload, a restart request, a recycle for its health) and
every removal of a slot goes through one lock, so capacity never drops below N-1 and a slot is
never removed while it is being replaced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from supervisor.contract import MAX_WORKERS, MIN_WORKERS, RecycleWorker
from supervisor.slots import lifecycle as L
from supervisor.slots.executor import Slots
from supervisor.state import ExitReason, HealthStatus

logger = logging.getLogger("supervisor")


class Capacity:
    def __init__(self, slots: Slots, workers: int, health: HealthStatus, stopping: Callable[[], bool],
                 changed: Callable[[], None]) -> None:
        self.slots = slots
        self.wanted = workers
        self.health = health
        self._stopping = stopping
        self._changed = changed
        self._one_at_a_time = asyncio.Lock()

    def count(self) -> int:
        return len(self.slots.machines)

    async def replace(self, index: int, reason: ExitReason) -> bool:
        """Start a fresh worker in slot ``index``, once no other replacement or removal runs; True
        once it serves."""
        async with self._one_at_a_time:
            if index >= len(self.slots.machines):
                return True  # removed since the rollout began: nothing left to replace
            ok = await self.slots.replace(index, reason)
            if not ok:
                self.slots.resume_accepting(index)
            return ok

    async def recycle(self, message: RecycleWorker) -> None:
        async with self._one_at_a_time:
            index = self.slots.index_of(message.pid)
            if index is None or self._stopping():
                return  # replaced or removed meanwhile
            event = L.Recycle(message.pid, message.reason, kill_old=message.kill)
            if await self.slots.recycle(index, event):
                recycled = self.health.recycled
                recycled[message.reason] = recycled.get(message.reason, 0) + 1
                self._changed()
            else:
                self.slots.resume_accepting(index)

    def want(self, wanted: int, why: str) -> bool:
        """Ask for ``wanted`` workers; False (logged) when out of range. :meth:`apply` does it."""
        before = self.wanted
        if not MIN_WORKERS <= wanted <= MAX_WORKERS:
            logger.warning("supervisor: %s: cannot run %d workers (%d to %d); still %d", why, wanted, MIN_WORKERS,
                           MAX_WORKERS, before)
            return False
        self.wanted = wanted
        logger.info("supervisor: %s: %d -> %d worker(s)", why, before, wanted)
        return True

    async def apply(self) -> None:
        """Add or remove slots until there are as many as wanted; removed slots drain."""
        async with self._one_at_a_time:
            while not self._stopping() and len(self.slots.machines) < self.wanted:
                self.slots.add()
            while not self._stopping() and len(self.slots.machines) > self.wanted:
                index = self.slots.remove()
                logger.info("web.%d: removed; its worker drains", index)
