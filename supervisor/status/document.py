"""The ``/status`` document: what the supervisor is doing and why, as plain JSON-ready data.

Pure functions of the supervisor's state objects, a clock reading and a process sampler, so the
same document feeds ``GET /status``, the dashboard and ``python -m supervisor status --json``,
and tests can build it from a scripted state. Secret values never enter it: environment values
appear only for variables declared non-secret in ``[env]``, URL passwords are masked, and the
whole text still passes the supervisor's redactor before it leaves the process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from supervisor import __version__
from supervisor.health.judge import Limits
from supervisor.secrets import mask_url_value
from supervisor.state import (
    DB_FINE,
    DatabaseStatus,
    ExitInfo,
    HealthStatus,
    ReloadStatus,
    SlotState,
    SlotStatus,
    SupervisorState,
    WorkerVitals,
)

if TYPE_CHECKING:
    from supervisor.config.settings import Settings
    from supervisor.contract import SupervisorView

# Supervisor states in which the webapp is meant to be serving (old workers serve during a reload).
_SERVING_STATES = (SupervisorState.RUNNING, SupervisorState.RELOADING)


@dataclass(frozen=True)
class ProcStats:
    memory_rss: int  # bytes
    cpu_percent: float  # since the previous sample of the same pid; 0.0 on the first
    cpu_seconds: float  # user + system since the process started


Sampler = Callable[[int], "ProcStats | None"]


class ProcessSampler:
    """psutil readings per pid. Keeps each ``psutil.Process`` so ``cpu_percent`` has a baseline."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def __call__(self, pid: int) -> ProcStats | None:
        try:
            proc = self._procs.get(pid) or psutil.Process(pid)
            self._procs[pid] = proc
            with proc.oneshot():
                times = proc.cpu_times()
                return ProcStats(memory_rss=proc.memory_info().rss,
                                 cpu_percent=proc.cpu_percent(interval=None),
                                 cpu_seconds=round(times.user + times.system, 3))
        except psutil.Error:
            self._procs.pop(pid, None)
            return None

    def forget_except(self, pids: set[int]) -> None:
        """Drop cached processes that are no longer workers, so the cache cannot grow."""
        for pid in set(self._procs) - pids:
            del self._procs[pid]


def readiness(sup: SupervisorView) -> tuple[bool, str]:
    """Ready: the supervisor is serving, at least one worker is ready and the database is fine."""
    if sup.state not in _SERVING_STATES:
        return False, f"supervisor is {sup.state}"
    if sup.ready_workers == 0:
        return False, "no worker is serving"
    if sup.database.state not in DB_FINE:
        return False, f"database is {sup.database.state}"
    return True, "ok"


def _exit(info: ExitInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {"code": info.code, "signal": info.signal, "reason": info.reason, "at": info.at,
            "description": info.describe()}


def _worker(slot: SlotStatus, now: float, sample: Sampler, health: HealthStatus,
            vitals: WorkerVitals | None) -> dict[str, Any]:
    stats = sample(slot.pid) if slot.pid is not None else None
    lag = health.loop_lag.get(slot.pid) if slot.pid is not None else None
    retry_at = slot.next_retry_at if slot.state == SlotState.BACKOFF else None
    return {
        "slot": slot.index,
        "pid": slot.pid,
        "state": slot.state,
        "restarts": slot.restarts,
        "started_at": slot.started_at,
        "ready_at": slot.ready_at,
        "uptime": round(now - slot.started_at, 3) if slot.pid is not None and slot.started_at else None,
        "last_exit": _exit(slot.last_exit),
        "next_retry_at": retry_at,
        "retry_in": round(max(0.0, retry_at - now), 3) if retry_at is not None else None,
        "fatal_reason": slot.fatal_reason,
        "waiting_for": slot.waiting_for,
        "stderr_tail": list(slot.stderr_tail) if slot.state in (SlotState.FATAL, SlotState.BACKOFF) else [],
        "memory_rss": stats.memory_rss if stats else None,
        "cpu_percent": stats.cpu_percent if stats else None,
        "cpu_seconds": stats.cpu_seconds if stats else None,
        "loop_lag": round(lag, 3) if lag is not None else None,  # seconds; grows while the worker hangs
        "requests": vitals.requests if vitals is not None else None,
    }


def _database(db: DatabaseStatus) -> dict[str, Any]:
    return {"state": db.state, "last_check": db.last_check, "latency_ms": db.latency_ms,
            "attempts": db.attempts, "last_error": db.last_error}


def _reload(status: ReloadStatus) -> dict[str, Any]:
    return {"count": status.count, "last_files": list(status.last_files), "last_error": status.last_error,
            "last_at": status.last_at, "last_duration": status.last_duration,
            "template": {"stage": status.template, "why": status.template_why}}


def _health(health: HealthStatus, hang_timeout: float | None) -> dict[str, Any]:
    hang = health.last_hang
    last = None if hang is None else {"slot": hang.slot, "pid": hang.pid, "at": hang.at,
                                      "silent_for": round(hang.silent_for, 3), "stacks": hang.stacks,
                                      "file": hang.file}
    return {"hang_timeout": hang_timeout, "last_hang": last, "recycled": dict(health.recycled)}


def env_entries(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each loaded variable's origin; its value only when ``[env]`` declares it non-secret."""
    entries: dict[str, dict[str, Any]] = {}
    for name in sorted(settings.env_sources):
        where = settings.env_sources[name]
        spec = settings.config.env.get(name)
        entry: dict[str, Any] = {
            "source": _source_kind(where, settings.dotenv.path),
            "where": _relative(where, settings.project_dir),
            "declared": spec is not None,
        }
        if spec is not None and not spec.is_secret and name in settings.environ:
            entry["value"] = mask_url_value(settings.environ[name])
        entries[name] = entry
    return entries


def _source_kind(where: str, dotenv_path: str) -> str:
    """``environment``, ``.env`` or ``default`` (a schema default or the development SQLite URL)."""
    if where == "environment":
        return "environment"
    if where == dotenv_path or where.startswith(dotenv_path + ":"):
        return ".env"
    return "default"


def _relative(where: str, root: Path) -> str:
    """``/proj/.env:3`` -> ``.env:3`` for display; anything else unchanged."""
    try:
        return str(Path(where).relative_to(root))
    except ValueError:
        return where


def status_document(sup: SupervisorView, now: float, sample: Sampler, pid: int,
                    status_url: str | None = None) -> dict[str, Any]:
    """The whole ``/status`` document for ``sup`` at wall-clock time ``now``."""
    ready, why = readiness(sup)
    vitals = sup.vitals

    def worker(slot: SlotStatus) -> dict[str, Any]:
        return _worker(slot, now, sample, sup.health, vitals.get(slot.pid) if slot.pid is not None else None)

    return {
        "supervisor": {
            "pid": pid,
            "version": __version__,
            "mode": sup.settings.mode,
            "state": sup.state,
            "started_at": sup.started_at,
            "uptime": round(now - sup.started_at, 3),
            "ready": ready,
            "ready_reason": why,
            "status_url": status_url,
        },
        "port": sup.port,
        "url": sup.url,
        "workers": [worker(slot) for slot in sup.slots],
        "programs": {name: [worker(slot) for slot in instances] for name, instances in sup.programs.items()},
        "database": _database(sup.database),
        "reload": _reload(sup.reload_status),
        "health": _health(sup.health, Limits.of(sup.settings.config.app, sup.settings.production).hang_timeout),
        "env": env_entries(sup.settings),
    }
