"""One worker slot's lifecycle as a pure state machine: events in, actions out.

In the manner of tenacity's engine, :class:`SlotMachine` decides and never acts: no processes, no
timers, no asyncio. The executor (:class:`~supervisor.slots.executor.Slots`) turns each returned
action into I/O (spawn a worker, arm a timer, send SIGTERM) and feeds what happens back in as
events; every event names the pid it is about, so a late report about a process the slot has moved
past is simply ignored. That makes crash, backoff, crash loop, wake-up, rolling replacement and
shutdown testable as scripted event histories with a fake clock (``tests/test_lifecycle.py``).

A slot has at most three kinds of process: the *current* worker, the *successor* a rolling
replacement is starting beside it, and old workers *draining* after being replaced. Where the slot
is in its life is one :class:`Phase`, and a replacement under way one :class:`Replacement`. The
read model (:class:`~supervisor.state.SlotStatus`) is kept here, in step with the decisions.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from supervisor.config.toml import RestartSection
from supervisor.slots.policy import GiveUp, RestartTracker
from supervisor.state import ExitInfo, ExitReason, SlotState, SlotStatus

# ----- events: what happened ----------------------------------------------------------------


@dataclass(frozen=True)
class Begin:
    """Start the slot: its startup steps or dependencies are satisfied."""


@dataclass(frozen=True)
class Spawned:
    pid: int
    stderr_tail: deque[str]


@dataclass(frozen=True)
class SpawnFailed:
    error: str  # an OSError's words: EMFILE, EAGAIN, a vanished directory


@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class ReadyTimedOut:
    pid: int


@dataclass(frozen=True)
class Exited:
    pid: int
    returncode: int


@dataclass(frozen=True)
class Withdrawn:
    """``pid`` exited before it served, and the spawner takes the blame (a worker forked from the
    project-stage template whose fresh import failed): start another at once in its place, as
    if ``pid`` had never been; no failed start is counted."""

    pid: int
    returncode: int
    why: str


@dataclass(frozen=True)
class TimerFired:
    timer: int


@dataclass(frozen=True)
class Replace:
    """Start a fresh worker: beside a serving one (a rolling replacement), or at once in a slot
    with none (in backoff or given up: a change wakes it)."""

    reason: ExitReason


@dataclass(frozen=True)
class Recycle:
    """Replace the serving worker ``pid`` for its health (see :mod:`supervisor.health.judge`), the
    way :class:`Replace` does: its successor starts beside it and the old worker goes only once the
    successor serves. With ``kill_old`` (a hung worker: its event loop cannot drain anything) the
    old worker's group is SIGKILLed rather than drained, and it is killed even if the successor
    fails, since it serves no one. About a pid the slot has moved past, or a worker not serving
    yet, it is stale and refused."""

    pid: int
    reason: ExitReason
    kill_old: bool = False


@dataclass(frozen=True)
class Shutdown:
    """Stop the slot's workers for good: the supervisor stops, or the slot is removed (scale down)."""

    reason: ExitReason = ExitReason.SHUTDOWN


@dataclass(frozen=True)
class Halt:
    """The user stops this instance (``stop NAME``): stop its process, do not restart it; with
    ``resume``, start it again once it is gone (``restart NAME``: stop, then start)."""

    resume: bool = False


@dataclass(frozen=True)
class Resume:
    """The user starts a halted (or ended) instance again (``start NAME``)."""


@dataclass(frozen=True)
class DependencyLost:
    reason: str


Event = Begin | Spawned | SpawnFailed | Ready | ReadyTimedOut | Exited | Withdrawn | TimerFired | Replace | \
    Recycle | Shutdown | DependencyLost | Halt | Resume

# ----- actions: what the executor must do ---------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    """Start a worker now and report :class:`Spawned` or :class:`SpawnFailed`."""


@dataclass(frozen=True)
class AwaitReady:
    """Report :class:`Ready` when ``pid`` says it serves, or :class:`ReadyTimedOut` after ``timeout``."""

    pid: int
    timeout: float


@dataclass(frozen=True)
class Sleep:
    """Report ``TimerFired(timer)`` after ``delay`` seconds."""

    delay: float
    timer: int


@dataclass(frozen=True)
class Stop:
    """SIGTERM ``pid``, SIGKILL its group at the stop deadline; its exit comes as :class:`Exited`."""

    pid: int
    reason: ExitReason


@dataclass(frozen=True)
class Kill:
    pid: int


@dataclass(frozen=True)
class Log:
    level: int
    message: str


@dataclass(frozen=True)
class GaveUp:
    """The slot is in a crash loop and waits for a :class:`Replace` (development) or the end."""

    reason: str


@dataclass(frozen=True)
class Replaced:
    """The outcome of a :class:`Replace` or :class:`Recycle`: True once the fresh worker serves."""

    ok: bool


Action = Spawn | AwaitReady | Sleep | Stop | Kill | Log | GaveUp | Replaced


@dataclass(frozen=True)
class ExitPolicy:
    """What an exit the supervisor did not ask for means, besides the restart policy's backoff.

    ``restart``: ``always`` (web workers, services), ``on-failure`` (an exit with a success code
    ends the program) or ``never`` (any exit ends it; a failure gives up). ``once``: a one-shot
    job, whose success is ``completed``.
    """

    restart: str = "always"
    once: bool = False
    success_codes: tuple[int, ...] = (0,)
    noun: str = "worker"  # what the log calls one instance: a web worker, or a program's process


class Phase(StrEnum):
    """Where a slot is in its life. Which state its current worker is in (starting, serving, backing
    off, given up) is the read model's :class:`~supervisor.state.SlotState`; the phase says which
    events the slot still takes."""

    WAITING = "waiting"  # not begun: startup steps or dependencies come first
    STARTED = "started"  # begun: workers are started, replaced and restarted by the policy
    HALTING = "halting"  # the user's ``stop NAME``: its process stops and is not restarted
    RESTARTING = "restarting"  # the user's ``restart NAME``: as halting, then started again
    STOPPING = "stopping"  # for good: the supervisor stops, or the slot was removed


@dataclass(frozen=True)
class Replacement:
    """A :class:`Replace` or :class:`Recycle` under way; a :class:`Replaced` outcome is owed."""

    reason: ExitReason  # why the replaced worker will be stopped
    beside: bool  # the fresh worker starts beside a current one (its successor), not in an empty slot
    kill_old: bool = False  # the replaced worker is hung: SIGKILL it, do not drain it


@dataclass
class _Proc:
    pid: int
    spawned_at: float  # the machine's clock
    ready_at: float | None = None
    timed_out: bool = False  # killed for not reporting ready in time
    killed_for: ExitReason | None = None  # killed while current: hung, and no successor took over

    def exit_reason(self) -> ExitReason:
        if self.killed_for is not None:
            return self.killed_for
        return ExitReason.START_TIMEOUT if self.timed_out else ExitReason.CRASH


class SlotMachine:
    """The lifecycle of worker slot ``index``. Call :meth:`handle` with each event."""

    def __init__(self, index: int, restart: RestartSection, ready_timeout: float, *,
                 clock: Callable[[], float], wall: Callable[[], float], rand: Callable[[], float],
                 mode: ExitPolicy | None = None) -> None:
        self.status = SlotStatus(index)
        self.mode = mode or ExitPolicy()
        self.ready_timeout = ready_timeout
        self.clock = clock
        self.wall = wall
        self.tracker = RestartTracker(restart, rand)
        self.current: _Proc | None = None
        self.successor: _Proc | None = None
        self.draining: dict[int, ExitReason] = {}
        self.timer = 0  # the live Sleep's number; a TimerFired with another is stale
        self.phase = Phase.WAITING
        self.stop_reason = ExitReason.SHUTDOWN  # once STOPPING: why its workers are stopped
        self.replacement: Replacement | None = None

    @property
    def idle(self) -> bool:
        """No process of this slot is alive: after a shutdown, the slot is done."""
        return self.current is None and self.successor is None and not self.draining

    def stopping_pid(self, pid: int) -> bool:
        """True when ``pid`` was asked to stop (drained or shut down): its exit is no crash."""
        return pid in self.draining or self.phase == Phase.STOPPING

    def reconfigure(self, restart: RestartSection, ready_timeout: float) -> None:
        self.tracker.cfg = restart
        self.ready_timeout = ready_timeout

    def handle(self, event: Event) -> list[Action]:
        match event:
            case Begin():
                return self._begin()
            case Spawned(pid, tail):
                return self._spawned(pid, tail)
            case SpawnFailed(error):
                return self._spawn_failed(error)
            case Ready(pid):
                return self._ready(pid)
            case ReadyTimedOut(pid):
                return self._timed_out(pid)
            case Exited(pid, code):
                return self._exited(pid, code)
            case Withdrawn(pid, code, why):
                return self._withdrawn(pid, code, why)
            case TimerFired(timer):
                return self._spawn_current() if timer == self.timer and self._backing_off() else []
            case Replace(reason):
                return self._replace(reason)
            case Recycle(pid, reason, kill_old):
                return self._recycle(pid, reason, kill_old)
            case Shutdown(reason):
                return self._shutdown(reason)
            case Halt(resume):
                return self._halt(resume)
            case Resume():
                return self._resume()
            case DependencyLost(reason):
                if self.phase == Phase.WAITING:
                    self.status.waiting_for = reason  # shown while waiting, cleared on start
                return []
        raise TypeError(f"not a lifecycle event: {event!r}")

    # ----- starting ----------------------------------------------------------------------

    def _begin(self) -> list[Action]:
        if self.phase != Phase.WAITING:
            return []
        self.phase = Phase.STARTED
        self.status.waiting_for = None
        return self._spawn_current()

    def _backing_off(self) -> bool:
        return self.current is None and self.phase == Phase.STARTED and self.status.state == SlotState.BACKOFF

    def _spawning_successor(self) -> bool:
        """Whom the Spawned or SpawnFailed that follows a Spawn is about: it follows at once, so the
        replacement under way tells."""
        return self.replacement is not None and self.replacement.beside and self.successor is None

    def _spawn_current(self) -> list[Action]:
        self.timer += 1  # whatever timer was armed is void now
        self._set(SlotState.STARTING, pid=None)
        return [Spawn()]

    def _spawned(self, pid: int, tail: deque[str]) -> list[Action]:
        proc = _Proc(pid, self.clock())
        if self.phase == Phase.STOPPING:  # cannot happen with a synchronous spawner; never leave one behind
            self.draining[pid] = self.stop_reason
            return [Stop(pid, self.stop_reason)]
        if self._spawning_successor():
            self.successor = proc
        else:
            if self.status.started_at is not None:
                self.status.restarts += 1
            self.current = proc
            self._set(SlotState.STARTING, pid=pid)
            self.status.started_at = self.wall()
            self.status.ready_at = None
            self.status.fatal_reason = None
            self.status.stderr_tail = tail
        return [Log(logging.INFO, f"started {self.mode.noun} pid {pid}"), AwaitReady(pid, self.ready_timeout)]

    def _spawn_failed(self, error: str) -> list[Action]:
        if self._spawning_successor():
            return [Log(logging.ERROR, f"cannot start a new worker: {error}"), *self._successor_failed()]
        return self._failed(f"could not be started: {error}", served_for=None)

    def _ready(self, pid: int) -> list[Action]:
        if self.phase == Phase.STOPPING:
            return []
        if self.successor is not None and self.successor.pid == pid:
            return self._promote()
        if self.current is None or self.current.pid != pid:
            return []
        self.current.ready_at = self.clock()
        self._set(SlotState.RUNNING, pid=pid)
        self.status.ready_at = self.wall()
        return [Log(logging.INFO, f"{self.mode.noun} pid {pid} is serving"), *self._replaced(True)]

    def _promote(self) -> list[Action]:
        """The successor serves: it becomes current, the old worker drains."""
        assert self.successor is not None
        new, old = self.successor, self.current
        new.ready_at = self.clock()
        self.successor = None
        self.current = new
        self.status.restarts += 1
        self._set(SlotState.RUNNING, pid=new.pid)
        self.status.started_at = self.wall()  # approximately: the successor spawned moments ago
        self.status.ready_at = self.wall()
        actions: list[Action] = [Log(logging.INFO, f"{self.mode.noun} pid {new.pid} is serving")]
        # A successor is only ever a replacement's; the default is for a machine driven out of order.
        replacement = self.replacement or Replacement(ExitReason.RELOAD, beside=True)
        if old is not None:
            self.draining[old.pid] = replacement.reason
            actions.append(Kill(old.pid) if replacement.kill_old else Stop(old.pid, replacement.reason))
        return actions + self._replaced(True)

    def _timed_out(self, pid: int) -> list[Action]:
        for proc in (self.current, self.successor):
            if proc is not None and proc.pid == pid and proc.ready_at is None:
                proc.timed_out = True
                return [Log(logging.ERROR, f"{self.mode.noun} pid {pid} did not report ready within "
                                           f"{self.ready_timeout:g}s; killing it"), Kill(pid)]
        return []

    # ----- exits -------------------------------------------------------------------------

    def _exited(self, pid: int, code: int) -> list[Action]:
        if pid in self.draining:
            reason = self.draining.pop(pid)
            return self._record_exit(pid, code, reason, level=logging.INFO, verb="stopped")
        if self.successor is not None and self.successor.pid == pid:
            info = ExitInfo.from_returncode(code, self.successor.exit_reason(), self.wall())
            self.successor = None
            old = f"; still serving the previous version with pid {self.current.pid}" if self.current else ""
            return [Log(logging.ERROR, f"new {self.mode.noun} pid {pid} failed to start ({info.describe()}){old}"),
                    *self._successor_failed(), *self._settle_stop()]
        if self.current is None or self.current.pid != pid:
            return []
        proc, self.current = self.current, None
        self.status.pid = None
        if self.phase == Phase.STOPPING:
            actions = self._record_exit(pid, code, self.stop_reason, level=logging.INFO, verb="stopped")
            return actions + self._settle_stop()
        if self.phase in (Phase.HALTING, Phase.RESTARTING):
            resume, self.phase = self.phase == Phase.RESTARTING, Phase.STARTED
            actions = self._record_exit(pid, code, ExitReason.MANUAL, level=logging.INFO, verb="stopped")
            self._set(SlotState.STOPPED, pid=None)
            return actions + (self._resume() if resume else [])
        served_for = None if proc.ready_at is None else self.clock() - proc.ready_at
        info = ExitInfo.from_returncode(code, proc.exit_reason(), self.wall())
        self.status.last_exit = info
        ended = self._ended(pid, code, info)
        if ended is not None:
            return ended
        if self.successor is not None:
            # Crashed while its replacement starts: the replacement takes over the slot, and is
            # owed its outcome once it serves; there is no old worker left to stop or kill.
            self.current, self.successor = self.successor, None
            if self.replacement is not None:
                self.replacement = dataclasses.replace(self.replacement, beside=False, kill_old=False)
            self._set(SlotState.STARTING, pid=self.current.pid)
            self.status.started_at, self.status.ready_at = self.wall(), None
            return [Log(logging.WARNING, f"{self.mode.noun} pid {pid} {info.describe()}; its replacement, pid "
                                         f"{self.current.pid}, is starting")]
        uptime = self.clock() - proc.spawned_at
        return self._failed(f"{info.describe()} after {uptime:.1f}s", served_for=served_for, pid=pid)

    def _withdrawn(self, pid: int, code: int, why: str) -> list[Action]:
        if self.phase != Phase.STARTED:  # stopping, halting: its exit is an exit
            return self._exited(pid, code)
        noun = self.mode.noun
        if self.successor is not None and self.successor.pid == pid and self.successor.ready_at is None:
            self.successor = None  # the replacement under way is still beside: the next one is its successor
            return [Log(logging.INFO, f"new {noun} pid {pid} {why}"), Spawn()]
        if self.current is not None and self.current.pid == pid and self.current.ready_at is None:
            self.current = None
            # The next start stands in for this one: the restart it counted is not counted twice.
            if self.status.restarts > 0:
                self.status.restarts -= 1
            else:
                self.status.started_at = None
            return [Log(logging.INFO, f"{noun} pid {pid} {why}"), *self._spawn_current()]
        return self._exited(pid, code)

    def _ended(self, pid: int, code: int, info: ExitInfo) -> list[Action] | None:
        """Apply the exit policy: a list of actions when this exit ends the program, else None."""
        success = code in self.mode.success_codes
        if success and (self.mode.once or self.mode.restart != "always"):
            info = self.status.last_exit = ExitInfo.from_returncode(code, ExitReason.EXITED, info.at)
        if self.mode.once and success:
            self._set(SlotState.COMPLETED, pid=None)
            return [Log(logging.INFO, f"{self.mode.noun} pid {pid} completed ({info.describe()})"),
                    *self._replaced(True)]
        if self.mode.restart == "always" or (self.mode.restart == "on-failure" and not success) or \
                self.successor is not None:
            return None
        if success:
            self._set(SlotState.STOPPED, pid=None)
            return [Log(logging.INFO, f"{self.mode.noun} pid {pid} {info.describe()}; restart = "
                                      f"{self.mode.restart}: not restarted"), *self._replaced(False)]
        reason = f"{info.describe()} (restart = {self.mode.restart})"
        self._set(SlotState.FATAL, pid=None)
        self.status.fatal_reason = reason
        self.timer += 1
        return [Log(logging.WARNING, f"{self.mode.noun} pid {pid} {info.describe()}; not restarted"),
                *self._replaced(False),
                GaveUp(reason)]

    def _failed(self, what: str, served_for: float | None, pid: int | None = None) -> list[Action]:
        """The current worker is gone (or never came): restart, back off or give up."""
        actions: list[Action] = self._replaced(False)
        decision = self.tracker.on_exit(self.clock(), served_for)
        who = f"{self.mode.noun} pid {pid}" if pid is not None else self.mode.noun
        if isinstance(decision, GiveUp):
            self._set(SlotState.FATAL, pid=None)
            self.status.fatal_reason = decision.reason
            self.status.next_retry_at = None
            self.timer += 1
            actions.append(Log(logging.WARNING, f"{who} {what}"))
            return [*actions, GaveUp(decision.reason)]
        if decision.delay <= 0:
            actions.append(Log(logging.WARNING, f"{who} {what}; restarting now (it had been serving)"))
            return actions + self._spawn_current()
        self._set(SlotState.BACKOFF, pid=None)
        self.status.next_retry_at = self.wall() + decision.delay
        self.timer += 1
        actions.append(Log(logging.WARNING, f"{who} {what}; restarting in {decision.delay:.2f}s "
                                            f"(attempt {decision.attempt})"))
        return [*actions, Sleep(decision.delay, self.timer)]

    def _record_exit(self, pid: int, code: int, reason: ExitReason, level: int, verb: str) -> list[Action]:
        info = ExitInfo.from_returncode(code, reason, self.wall())
        self.status.last_exit = info
        actions: list[Action] = [Log(level, f"{self.mode.noun} pid {pid} {verb}: {info.describe()}")]
        return actions + self._settle_stop()

    # ----- replacement and shutdown ------------------------------------------------------

    def _replace(self, reason: ExitReason) -> list[Action]:
        if self.phase != Phase.STARTED or self.replacement is not None or self.successor is not None:
            return [Replaced(False)]
        self.replacement = Replacement(reason, beside=self.current is not None)
        if self.current is None:
            # In backoff or given up: the user changed something, so start over now.
            self.tracker.reset()
            return self._spawn_current()
        return [Spawn()]

    def _halt(self, resume: bool) -> list[Action]:
        if self.phase != Phase.STARTED:
            return []
        self.timer += 1  # no restart from a backoff either
        actions: list[Action] = self._replaced(False)
        if self.successor is not None:
            self.draining[self.successor.pid] = ExitReason.MANUAL
            actions.append(Stop(self.successor.pid, ExitReason.MANUAL))
            self.successor = None
        if self.current is None:
            self._set(SlotState.STOPPED, pid=None)
            return actions + (self._resume() if resume else [])
        self.phase = Phase.RESTARTING if resume else Phase.HALTING
        self._set(SlotState.STOPPING, pid=self.current.pid)
        return [*actions, Stop(self.current.pid, ExitReason.MANUAL)]

    def _resume(self) -> list[Action]:
        if self.phase != Phase.STARTED or self.current is not None:
            return []
        self.tracker.reset()
        return self._spawn_current()

    def _recycle(self, pid: int, reason: ExitReason, kill_old: bool) -> list[Action]:
        current = self.current
        if (self.phase != Phase.STARTED or self.replacement is not None or self.successor is not None
                or current is None or current.pid != pid or current.ready_at is None):
            return [Replaced(False)]
        self.replacement = Replacement(reason, beside=True, kill_old=kill_old)
        then = "killed" if kill_old else "drained"
        return [Log(logging.WARNING, f"replacing {self.mode.noun} pid {pid} ({reason}): its successor starts first, "
                                     f"then it is {then}"), Spawn()]

    def _successor_failed(self) -> list[Action]:
        """The successor died or never came: the replacement failed. When the worker it was to
        replace is hung, kill that one anyway (it serves no one); its exit then goes through the
        restart policy like any other."""
        replacement = self.replacement
        actions = self._replaced(False)
        if replacement is None or not replacement.kill_old or self.current is None:
            return actions
        self.current.killed_for = replacement.reason
        pid = self.current.pid
        return [*actions, Log(logging.WARNING, f"killing {self.mode.noun} pid {pid} anyway: it is "
                                               f"{replacement.reason} and serves no one"), Kill(pid)]

    def _replaced(self, ok: bool) -> list[Action]:
        if self.replacement is None:
            return []
        self.replacement = None
        return [Replaced(ok)]

    def _shutdown(self, reason: ExitReason) -> list[Action]:
        if self.phase == Phase.STOPPING:
            return []
        self.phase, self.stop_reason = Phase.STOPPING, reason
        self.timer += 1
        actions: list[Action] = self._replaced(False)
        for proc in (self.current, self.successor):
            if proc is not None:
                actions.append(Stop(proc.pid, reason))
        if self.current is not None:
            self._set(SlotState.STOPPING, pid=self.current.pid)
        return actions + self._settle_stop()

    def _settle_stop(self) -> list[Action]:
        if self.phase == Phase.STOPPING and self.current is None and self.successor is None:
            self._set(SlotState.STOPPED, pid=None)
        return []

    def _set(self, state: SlotState, pid: int | None) -> None:
        self.status.state = state
        self.status.pid = pid
        if state != SlotState.BACKOFF:
            self.status.next_retry_at = None
