"""The read model: states and records shared by the log, the status API, metrics and the CLI.

Each record has one writer: a slot's status its lifecycle machine, the database status the
database watch, the health status the health watch (and the web slots' capacity, what it
recycled), the reload status the rollout (and the runner, a crashed worker's last lines).
Everything else (status API, metrics, sd_notify, the CLI) only reads them. States are
``StrEnum`` members, so they serialise to JSON as the plain strings the status document and the
CLI show (``"running"``, ``"backoff"``).
"""

from __future__ import annotations

import signal as _signal
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class SupervisorState(StrEnum):
    STARTING = "starting"
    WAITING_FOR_DATABASE = "waiting_for_database"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    FATAL = "fatal"


class SlotState(StrEnum):
    WAITING = "waiting"  # not started yet: startup steps or a dependency come first
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    FATAL = "fatal"
    STOPPING = "stopping"
    STOPPED = "stopped"
    COMPLETED = "completed"  # a one-shot job that succeeded


class ExitReason(StrEnum):
    """Why a worker exited."""

    CRASH = "crash"
    RELOAD = "reload"
    MANUAL = "manual"
    SHUTDOWN = "shutdown"
    START_TIMEOUT = "start timeout"
    EXITED = "exited"  # by itself, with a success code, where that ends the program
    # Replaced while alive (see supervisor.health.judge): no heartbeat from its event loop for
    # hang_timeout (SIGKILLed once its successor served), or past a limit (drained).
    HUNG = "hung"
    REQUESTS = "requests"
    RSS = "rss"
    AGE = "age"
    SCALE_DOWN = "scale down"  # its slot was removed (SIGTTOU, ``scale``)


# The reasons counted by supervisor_worker_recycled_total: a live worker replaced for its health.
RECYCLE_REASONS = (ExitReason.HUNG, ExitReason.REQUESTS, ExitReason.RSS, ExitReason.AGE)


class DatabaseState(StrEnum):
    OK = "ok"
    WAITING = "waiting"
    UNAVAILABLE = "unavailable"
    DISABLED = "disabled"


# "Is the database fine?" for readiness and systemd's READY=1: it answers, or none is configured.
DB_FINE = frozenset({DatabaseState.OK, DatabaseState.DISABLED})


@dataclass
class ExitInfo:
    code: int | None  # exit status, when it exited by itself
    signal: int | None  # the signal that ended it, when one did
    reason: ExitReason
    at: float  # wall clock

    @classmethod
    def from_returncode(cls, returncode: int, reason: ExitReason, at: float) -> ExitInfo:
        if returncode < 0:
            return cls(code=None, signal=-returncode, reason=reason, at=at)
        return cls(code=returncode, signal=None, reason=reason, at=at)

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            # uvicorn re-raises the SIGTERM it drained on, so a graceful stop ends "by" SIGTERM.
            graceful = self.signal == _signal.SIGTERM and self.reason != ExitReason.CRASH
            how = f"drained and exited on {name}" if graceful else f"killed by {name}"
        else:
            how = f"exit code {self.code}"
        return f"{how} ({self.reason})"


@dataclass
class SlotStatus:
    """What is known about one worker slot; kept by its lifecycle machine."""

    index: int
    state: SlotState = SlotState.WAITING
    pid: int | None = None
    restarts: int = 0  # workers that became the slot's current worker after the first
    started_at: float | None = None  # wall clock, for display
    ready_at: float | None = None
    last_exit: ExitInfo | None = None
    next_retry_at: float | None = None  # wall clock
    fatal_reason: str | None = None
    waiting_for: str | None = None  # before its start: the dependency it waits for, in words
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))


@dataclass
class WorkerVitals:
    """What a worker's heartbeat says about it (see :mod:`supervisor.child.heartbeat`), kept by its
    process handle. Times are the supervisor's monotonic clock."""

    spawned_at: float
    ready_at: float | None = None
    last_beat_at: float | None = None  # when the last heartbeat arrived
    beats: int = 0
    loop_lag: float = 0.0  # seconds the last heartbeat ran late on the worker's event loop
    requests: int = 0  # HTTP requests and WebSocket sessions the worker has begun
    # The request quota the worker keeps itself (0: none): nearing it (its replacement is due),
    # reached (it takes no more requests).
    quota: int = 0
    nearing_quota: bool = False
    quota_reached: bool = False
    exited: bool = False  # reaped: its pid may belong to another process from now on


@dataclass
class HangIncident:
    """The last worker found hung: where it was stuck, as captured before it was killed."""

    slot: int
    pid: int
    at: float  # wall clock
    silent_for: float  # seconds without a heartbeat when it was judged hung
    stacks: str  # its threads' and asyncio tasks' stacks, redacted
    file: str | None = None  # the copy in the runtime directory


@dataclass
class HealthStatus:
    """Workers' health: ``loop_lag`` and ``last_hang`` are kept by the health watch, ``recycled`` by
    the runner (workers replaced for being hung or past a limit, by reason)."""

    loop_lag: dict[int, float] = field(default_factory=dict)  # pid -> seconds behind; grows while hung
    last_hang: HangIncident | None = None
    recycled: dict[str, int] = field(default_factory=dict)


@dataclass
class DatabaseStatus:
    """The latest database probe, kept up to date by the database watch."""

    state: DatabaseState = DatabaseState.DISABLED
    last_check: float | None = None  # wall clock
    latency_ms: float | None = None
    attempts: int = 0
    last_error: str | None = None  # plain words, never a password


@dataclass
class ReloadStatus:
    """What the file watcher and rolling restarts have done."""

    count: int = 0
    last_files: list[str] = field(default_factory=list)
    last_error: str | None = None
    last_at: float | None = None  # wall clock
    last_duration: float | None = None  # seconds from trigger to the new workers serving
    failures: int = 0  # reloads that kept the previous version (invalid settings, a worker that failed)
    # The last lines a worker that failed to start wrote to stderr (its traceback); redact to show.
    last_output: Sequence[str] = field(default_factory=list)
    stylesheets: int = 0  # CSS-only changes, swapped in the browser without new workers
    last_stylesheets: list[str] = field(default_factory=list)
    # What the latest worker started from: "project" (the project-stage template), "third-party"
    # or "fresh" (a new interpreter), and why (a fallback says what failed); see supervisor.warm.stage.
    template: str | None = None
    template_why: str | None = None
