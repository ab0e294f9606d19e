"""State names shared by the log, the status API and the CLI, and the per-slot record they read."""

from __future__ import annotations

import signal as _signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

# Supervisor states.
STARTING = "starting"
WAITING_FOR_DATABASE = "waiting_for_database"
RUNNING = "running"
RELOADING = "reloading"
STOPPING = "stopping"
FATAL = "fatal"

# Worker slot states (STARTING, RUNNING, STOPPING and FATAL are shared with the supervisor).
BACKOFF = "backoff"
STOPPED = "stopped"

# Why a worker exited.
EXIT_CRASH = "crash"
EXIT_RELOAD = "reload"
EXIT_MANUAL = "manual"
EXIT_SHUTDOWN = "shutdown"


@dataclass
class ExitInfo:
    code: int | None  # exit status, when it exited by itself
    signal: int | None  # the signal that ended it, when one did
    reason: str  # EXIT_CRASH, EXIT_RELOAD, EXIT_MANUAL or EXIT_SHUTDOWN
    at: float = field(default_factory=time.time)

    @classmethod
    def from_returncode(cls, returncode: int, reason: str) -> ExitInfo:
        if returncode < 0:
            return cls(code=None, signal=-returncode, reason=reason)
        return cls(code=returncode, signal=None, reason=reason)

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = _signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            # uvicorn re-raises the SIGTERM it drained on, so a graceful stop ends "by" SIGTERM.
            graceful = self.signal == _signal.SIGTERM and self.reason != EXIT_CRASH
            how = f"drained and exited on {name}" if graceful else f"killed by {name}"
        else:
            how = f"exit code {self.code}"
        return f"{how} ({self.reason})"


@dataclass
class SlotStatus:
    """What is known about one worker slot; read by the status endpoint and the CLI."""

    index: int
    state: str = STOPPED
    pid: int | None = None
    restarts: int = 0
    started_at: float | None = None  # wall clock, for display
    ready_at: float | None = None
    last_exit: ExitInfo | None = None
    next_retry_at: float | None = None  # wall clock
    fatal_reason: str | None = None
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))


# Database states.
DB_OK = "ok"
DB_WAITING = "waiting"
DB_UNAVAILABLE = "unavailable"
DB_DISABLED = "disabled"
# "Is the database fine?" for readiness and systemd's READY=1: it answers, or none is configured.
DB_FINE = frozenset({DB_OK, DB_DISABLED})


@dataclass
class DatabaseStatus:
    """The latest database probe, kept up to date by the database monitor."""

    state: str = DB_DISABLED
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
