"""A scripted read model for unit tests of plugins (status API, metrics, sd_notify, database watch).

It implements :class:`~supervisor.contract.SupervisorView` with plain fields the test sets by
hand to any state the runner can produce, and records what the plugin posts. No processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from supervisor.config.settings import Settings
from supervisor.contract import Message
from supervisor.listen.ports import display_url
from supervisor.secrets import Redactor
from supervisor.state import (
    DatabaseStatus,
    HealthStatus,
    ReloadStatus,
    SlotState,
    SlotStatus,
    SupervisorState,
    WorkerVitals,
)


@dataclass
class ScriptedSupervisor:
    settings: Settings
    port: int = 8123
    state: SupervisorState = SupervisorState.STARTING
    clock: Callable[[], float] = time.time
    redactor: Redactor = field(default_factory=Redactor)
    started_at: float = 0.0
    slots: list[SlotStatus] = field(default_factory=list)
    programs: dict[str, list[SlotStatus]] = field(default_factory=dict)
    database: DatabaseStatus = field(default_factory=DatabaseStatus)
    reload_status: ReloadStatus = field(default_factory=ReloadStatus)
    health: HealthStatus = field(default_factory=HealthStatus)
    vitals: dict[int, WorkerVitals] = field(default_factory=dict)
    posted: list[Message] = field(default_factory=list)
    observers: list[Callable[[], None]] = field(default_factory=list)
    tasks: list[asyncio.Future[Any]] = field(default_factory=list)
    changes: int = 0

    def __post_init__(self) -> None:
        if not self.slots:
            self.slots = [SlotStatus(i) for i in range(self.settings.workers)]
        if not self.started_at:
            self.started_at = self.clock()

    @property
    def url(self) -> str:
        return display_url(self.settings.host, self.port)

    @property
    def ready_workers(self) -> int:
        return sum(1 for slot in self.slots if slot.state == SlotState.RUNNING)

    @property
    def worker_pids(self) -> set[int]:
        return {slot.pid for slot in self.slots if slot.pid is not None} | set(self.vitals)

    def wall(self) -> float:
        return self.clock()

    def redact(self, text: str) -> str:
        return self.redactor(text)

    def post(self, message: Message) -> None:
        self.posted.append(message)

    def run_task(self, coro: Awaitable[object]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    def subscribe(self, observer: Callable[[], None]) -> None:
        self.observers.append(observer)

    def changed(self) -> None:
        self.changes += 1
        for observer in self.observers:
            observer()
