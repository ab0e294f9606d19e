"""The worker slots: each slot's lifecycle decisions carried out against real processes and timers.

:class:`Slots` feeds what happens (a worker spawned, ready, exited; a timer) to the slot's
:class:`~supervisor.workers.lifecycle.SlotMachine` and executes the actions it returns. It decides
nothing itself; the runner above it owns the loop, the messages and shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from supervisor.config.toml import RestartSection
from supervisor.state import ExitReason, SlotStatus
from supervisor.workers import lifecycle as L
from supervisor.workers.process import LineSink, WorkerProcess, WorkerSpec

logger = logging.getLogger("supervisor")
# Workers' own lines: already filtered by the worker's log level, so never filtered again here.
worker_logger = logging.getLogger("supervisor.worker")

Spawner = Callable[[WorkerSpec, LineSink], WorkerProcess]
Starter = Callable[[int, LineSink], WorkerProcess]  # (instance, output sink) -> a started process


@dataclass(frozen=True)
class Timing:
    restart: RestartSection
    ready_timeout: float
    stop_timeout: float


class Slots:
    """``count`` slots of the program ``name`` (``web``: the app's workers). ``start(index,
    sink)`` starts the next process (settings may change); ``changed`` runs after every event;
    ``gave_up(name, index)`` after a crash loop or a failed run; ``crashed(stderr tail)`` when a
    process exits unasked."""

    def __init__(self, name: str, count: int, timing: Timing, *, start: Starter,
                 run_task: Callable[[Awaitable[object]], None], changed: Callable[[], None],
                 gave_up: Callable[[str, int], None], crashed: Callable[[Sequence[str]], None],
                 clock: Callable[[], float], wall: Callable[[], float], rand: Callable[[], float],
                 mode: L.ExitPolicy | None = None, prefix: Callable[[int], str] | None = None) -> None:
        self.name = name
        self._prefix = prefix or (lambda i: f"{name}.{i}")
        self.timing = timing
        self.machines = [L.SlotMachine(i, timing.restart, timing.ready_timeout, clock=clock, wall=wall, rand=rand,
                                       mode=mode) for i in range(count)]
        self._start = start
        self._run_task = run_task
        self._changed = changed
        self._gave_up = gave_up
        self._crashed = crashed
        self.procs: dict[int, WorkerProcess] = {}  # every worker not yet reaped, by pid
        self._timers: dict[tuple[int, int], asyncio.TimerHandle] = {}
        self._outcomes: dict[int, asyncio.Future[bool]] = {}

    @property
    def statuses(self) -> Sequence[SlotStatus]:
        return [machine.status for machine in self.machines]

    @property
    def idle(self) -> bool:
        return all(machine.idle for machine in self.machines)

    def broadcast(self, event: L.Event) -> None:
        for index in range(len(self.machines)):
            self.dispatch(index, event)

    def replace(self, index: int, reason: ExitReason) -> Awaitable[bool]:
        """Start a fresh worker in slot ``index``; resolves True once it serves."""
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._outcomes[index] = outcome
        self.dispatch(index, L.Replace(reason))
        return outcome

    def reconfigure(self, timing: Timing) -> None:
        self.timing = timing
        for machine in self.machines:
            machine.reconfigure(timing.restart, timing.ready_timeout)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()

    def cancel_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()

    def dispatch(self, index: int, event: L.Event) -> None:
        """Feed ``event`` to slot ``index`` and carry out what it decides, until nothing follows."""
        pending: deque[L.Event] = deque([event])
        while pending:
            for action in self.machines[index].handle(pending.popleft()):
                follow = self._execute(index, action)
                if follow is not None:
                    pending.append(follow)
        self._changed()

    def _execute(self, index: int, action: L.Action) -> L.Event | None:
        match action:
            case L.Spawn():
                return self._spawn_worker(index)
            case L.AwaitReady(pid, timeout):
                self._run_task(self._await_ready(index, self.procs[pid], timeout))
            case L.Sleep(delay, timer):
                self._timers[index, timer] = asyncio.get_running_loop().call_later(delay, self._fire, index, timer)
            case L.Stop(pid, _):
                if pid in self.procs:
                    self._run_task(self.procs[pid].stop(self.timing.stop_timeout))
            case L.Kill(pid):
                if pid in self.procs:
                    self.procs[pid].kill()
            case L.Log(level, message):
                logger.log(level, "%s.%d: %s", self.name, index, message)
            case L.GaveUp(reason):
                tail = "\n".join(f"    {line}" for line in self.machines[index].status.stderr_tail) or "    (nothing)"
                logger.error("%s.%d: FATAL: %s. Last lines the worker wrote to stderr:\n%s", self.name, index,
                             reason, tail)
                self._gave_up(self.name, index)
            case L.Replaced(ok):
                outcome = self._outcomes.pop(index, None)
                if outcome is not None and not outcome.done():
                    outcome.set_result(ok)
        return None

    def _fire(self, index: int, timer: int) -> None:
        del self._timers[index, timer]
        self._run_task(self._dispatch_later(index, L.TimerFired(timer)))

    async def _dispatch_later(self, index: int, event: L.Event) -> None:
        # In a task, so that a failure is seen by the runner like any other task's.
        self.dispatch(index, event)

    def _spawn_worker(self, index: int) -> L.Event:
        prefix = self._prefix(index)

        def relay(pid: int, line: str) -> None:
            worker_logger.info("%s %d | %s", prefix, pid, line)

        try:
            proc = self._start(index, relay)
        except OSError as exc:  # EMFILE, EAGAIN, a vanished directory: a failed start, retried
            return L.SpawnFailed(exc.strerror or str(exc))
        self.procs[proc.pid] = proc
        self._run_task(self._watch_exit(index, proc))
        return L.Spawned(proc.pid, proc.stderr_tail)

    async def _watch_exit(self, index: int, proc: WorkerProcess) -> None:
        code = await proc.wait()
        self.procs.pop(proc.pid, None)
        if not self.machines[index].stopping_pid(proc.pid):
            self._crashed(proc.stderr_tail)
        self.dispatch(index, L.Exited(proc.pid, code))

    async def _await_ready(self, index: int, proc: WorkerProcess, timeout: float) -> None:
        try:
            ready = await asyncio.wait_for(proc.ready(), timeout)
        except TimeoutError:
            self.dispatch(index, L.ReadyTimedOut(proc.pid))
            return
        if ready:  # else it closed the pipe without a word: its exit follows
            self.dispatch(index, L.Ready(proc.pid))
