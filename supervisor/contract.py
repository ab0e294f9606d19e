"""What everything that plugs into the runner may see and do.

The status API, metrics, sd_notify, the database watch, the orphan reaper, the health watch and
the file watcher depend on :class:`SupervisorView`, never on the runner class: a typed read model
(the records in :mod:`supervisor.state`; a plugin writes only its own, as the database watch its
:class:`~supervisor.state.DatabaseStatus`, and says so with ``changed()``) plus four commands: post a
message to the runner's loop, run a background task, subscribe to changes, announce a change. A
plugin is handed to the runner as a :class:`Plugin`: a long-running service, a startup step, or both.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from supervisor.config.settings import Settings
from supervisor.config.toml import AppSection, field_bounds
from supervisor.state import (
    DatabaseStatus,
    ExitReason,
    HealthStatus,
    ReloadStatus,
    SlotStatus,
    SupervisorState,
    WorkerVitals,
)


class Command(StrEnum):
    """Messages a plugin may post (the status API's ``/restart`` and ``/stop``); their values are
    the words the API answers with. Signals travel the same queue as :class:`Signalled`."""

    RESTART = "restart"  # a graceful rolling restart
    STOP = "stop"  # a graceful stop; ``up`` exits 0
    REREAD = "reread"  # re-read the configuration and roll (what SIGHUP does)


@dataclass(frozen=True)
class FilesChanged:
    """The file watcher saw these files change (absolute paths); the runner decides what follows."""

    files: frozenset[str]


@dataclass(frozen=True)
class ProgramCommand:
    """``restart``, ``stop`` or ``start`` one program (``restart web``: a rolling restart)."""

    action: str
    program: str


PROGRAM_ACTIONS = ("restart", "stop", "start")


@dataclass(frozen=True)
class RecycleWorker:
    """Replace worker ``pid`` for its health (the health watch's verdict): its successor first, one
    slot at a time; with ``kill``, the old worker is SIGKILLed once the successor serves (hung)."""

    pid: int
    reason: ExitReason
    kill: bool = False


@dataclass(frozen=True)
class Scale:
    """Run ``workers`` web worker slots: new slots start at once, removed ones drain. SIGTTIN and
    SIGTTOU ask for one more or one fewer."""

    workers: int
    program: str = "web"  # or a [programs] name: run that many instances of it


@dataclass(frozen=True)
class Signalled:
    """A signal arrived (its handler only queues this, see :mod:`supervisor.signals`): SIGTERM and
    SIGINT stop, SIGHUP re-reads the configuration, SIGTTIN and SIGTTOU add and remove a web worker."""

    sig: signal.Signals


@dataclass(frozen=True)
class InternalError:
    """The runner's own: a task failed, or a slot gave up in production mode; stop and exit 1."""


@dataclass(frozen=True)
class Stopped:
    """The runner's own: every process is gone (or was killed at once); the loop ends."""


MIN_WORKERS, MAX_WORKERS = field_bounds(AppSection, "workers")  # as for [app] workers and --workers
Message = Command | Signalled | FilesChanged | ProgramCommand | RecycleWorker | Scale | InternalError | Stopped


class SupervisorView(Protocol):
    """The read model and the commands, as every plugin sees the supervisor."""

    @property
    def settings(self) -> Settings: ...
    @property
    def state(self) -> SupervisorState: ...
    @property
    def started_at(self) -> float: ...  # wall clock
    @property
    def port(self) -> int: ...
    @property
    def url(self) -> str: ...
    @property
    def slots(self) -> Sequence[SlotStatus]: ...
    @property
    def database(self) -> DatabaseStatus: ...  # written by the database watch only
    @property
    def reload_status(self) -> ReloadStatus: ...
    @property
    def programs(self) -> Mapping[str, Sequence[SlotStatus]]: ...  # [programs.NAME] -> its instances
    @property
    def ready_workers(self) -> int: ...
    @property
    def worker_pids(self) -> set[int]: ...  # every worker not yet reaped, draining ones too
    @property
    def vitals(self) -> Mapping[int, WorkerVitals]: ...  # by pid, for every worker not yet reaped
    @property
    def health(self) -> HealthStatus: ...  # written by the health watch (and the runner: recycled)

    def wall(self) -> float: ...
    def redact(self, text: str) -> str: ...
    def post(self, message: Message) -> None: ...
    def run_task(self, coro: Awaitable[object]) -> None: ...
    def subscribe(self, observer: Callable[[], None]) -> None: ...
    def changed(self) -> None: ...


Step = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Plugin:
    """``service`` runs from start to end (cancelled at the end); ``startup`` runs, in order with
    the other plugins' steps, before the first worker starts, and may raise
    :class:`~supervisor.errors.SupervisorError` to end ``up`` with its exit code."""

    name: str
    service: Step | None = None
    startup: Step | None = None
