"""The worker slots: each slot's lifecycle decisions carried out against real processes and timers.

:class:`Slots` feeds what happens (a worker spawned, ready, exited; a timer) to the slot's
:class:`~supervisor.slots.lifecycle.SlotMachine` and executes the actions it returns. It decides
nothing itself; the runner above it owns the loop and the messages, and the programs' group
(:class:`~supervisor.programs.group.Programs`) starts and stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from supervisor.child.accepting import RESUME_SIGNAL
from supervisor.config.toml import RestartSection
from supervisor.slots import lifecycle as L
from supervisor.spawn.process import LineSink, WorkerProcess, WorkerSpec
from supervisor.state import ExitReason, SlotState, SlotStatus

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
    """``count`` slots of the program ``name`` (``web``: the app's workers), at first: see
    :meth:`add` and :meth:`remove`. ``start(index, sink)`` starts the next process (settings may
    change); ``changed`` runs after every event; ``gave_up(name, index)`` after a crash loop or a
    failed run; ``crashed(stderr tail)`` when a process exits unasked.

    Internally a slot is its machine, not its index: a removed slot drains under its old index
    while a slot added later may take the same index."""

    def __init__(self, name: str, count: int, timing: Timing, *, start: Starter,
                 run_task: Callable[[Awaitable[object]], None], changed: Callable[[], None],
                 gave_up: Callable[[str, int], None], crashed: Callable[[Sequence[str]], None],
                 clock: Callable[[], float], wall: Callable[[], float], rand: Callable[[], float],
                 mode: L.ExitPolicy | None = None, prefix: Callable[[int], str] | None = None,
                 retry: Callable[[int], str | None] = lambda pid: None) -> None:
        self.name = name
        self._prefix = prefix or (lambda i: f"{name}.{i}")
        self.timing = timing
        self._clock, self._wall, self._rand, self._mode = clock, wall, rand, mode
        self.machines = [self._machine(i) for i in range(count)]
        self.retiring: list[L.SlotMachine] = []  # removed slots whose processes still drain
        self._start = start
        self._run_task = run_task
        self._changed = changed
        self._gave_up = gave_up
        self._crashed = crashed
        self._retry = retry  # the spawner's say on a worker that exited before it served
        self._begun = False
        self.procs: dict[int, WorkerProcess] = {}  # every worker not yet reaped, by pid
        self._timers: dict[tuple[L.SlotMachine, int], asyncio.TimerHandle] = {}
        self._outcomes: dict[L.SlotMachine, asyncio.Future[bool]] = {}

    def _machine(self, index: int) -> L.SlotMachine:
        return L.SlotMachine(index, self.timing.restart, self.timing.ready_timeout, clock=self._clock,
                             wall=self._wall, rand=self._rand, mode=self._mode)

    @property
    def statuses(self) -> Sequence[SlotStatus]:
        return [machine.status for machine in (*self.machines, *self.retiring)]

    @property
    def idle(self) -> bool:
        return all(machine.idle for machine in (*self.machines, *self.retiring))

    def broadcast(self, event: L.Event) -> None:
        if isinstance(event, L.Begin):
            self._begun = True
        for machine in (*self.machines, *self.retiring):
            self._dispatch(machine, event)

    def replace(self, index: int, reason: ExitReason) -> Awaitable[bool]:
        """Start a fresh worker in slot ``index``; resolves True once it serves."""
        return self._replacement(self.machines[index], L.Replace(reason))

    def recycle(self, index: int, event: L.Recycle) -> Awaitable[bool]:
        """Replace slot ``index``'s worker ``event.pid`` for its health; resolves True once its
        successor serves (False: refused as stale, or the successor failed)."""
        return self._replacement(self.machines[index], event)

    def _replacement(self, machine: L.SlotMachine, event: L.Replace | L.Recycle) -> Awaitable[bool]:
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if machine in self._outcomes:  # one replacement per slot at a time; Capacity serialises them
            outcome.set_result(False)
            return outcome
        self._outcomes[machine] = outcome
        self._dispatch(machine, event)
        return outcome

    def resume_accepting(self, index: int) -> None:
        """After a failed replacement: if slot ``index``'s serving worker had stopped at its request
        quota, have it take connections again, or the slot would serve no one until the next try."""
        if index >= len(self.machines):
            return
        status = self.machines[index].status
        proc = self.procs.get(status.pid) if status.pid is not None else None
        if status.state == SlotState.RUNNING and proc is not None and proc.vitals.quota_reached:
            logger.warning("%s.%d: worker pid %d stopped at its request quota; its successor failed, so it takes "
                           "connections again until it can be replaced", self.name, status.index, proc.pid)
            proc.send(RESUME_SIGNAL)

    def index_of(self, pid: int) -> int | None:
        """The slot whose current worker is ``pid``, if any."""
        return next((i for i, machine in enumerate(self.machines) if machine.status.pid == pid), None)

    def add(self) -> int:
        """One more slot, started at once unless the slots have not begun yet; returns its index."""
        machine = self._machine(len(self.machines))
        self.machines.append(machine)
        if self._begun:
            self._dispatch(machine, L.Begin())
        else:
            self._changed()
        return machine.status.index

    def remove(self) -> int:
        """Remove the last slot: its workers drain (reason ``scale down``), then it is dropped."""
        machine = self.machines.pop()
        self.retiring.append(machine)
        self._dispatch(machine, L.Shutdown(ExitReason.SCALE_DOWN))
        return machine.status.index

    def reconfigure(self, timing: Timing) -> None:
        self.timing = timing
        for machine in (*self.machines, *self.retiring):
            machine.reconfigure(timing.restart, timing.ready_timeout)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()

    def cancel_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()

    def _dispatch(self, machine: L.SlotMachine, event: L.Event) -> None:
        """Feed ``event`` to ``machine`` and carry out what it decides, until nothing follows."""
        pending: deque[L.Event] = deque([event])
        while pending:
            for action in machine.handle(pending.popleft()):
                follow = self._execute(machine, action)
                if follow is not None:
                    pending.append(follow)
        if machine in self.retiring and machine.idle:
            self.retiring.remove(machine)  # a removed slot whose last process has gone
        self._changed()

    def _execute(self, machine: L.SlotMachine, action: L.Action) -> L.Event | None:
        index = machine.status.index
        match action:
            case L.Spawn():
                return self._spawn_worker(machine)
            case L.AwaitReady(pid, timeout):
                self._run_task(self._await_ready(machine, self.procs[pid], timeout))
            case L.Sleep(delay, timer):
                self._timers[machine, timer] = asyncio.get_running_loop().call_later(delay, self._fire, machine,
                                                                                     timer)
            case L.Stop(pid, _):
                if pid in self.procs:
                    self._run_task(self.procs[pid].stop(self.timing.stop_timeout))
            case L.Kill(pid):
                if pid in self.procs:
                    self.procs[pid].kill()
            case L.Log(level, message):
                logger.log(level, "%s.%d: %s", self.name, index, message)
            case L.GaveUp(reason):
                tail = "\n".join(f"    {line}" for line in machine.status.stderr_tail) or "    (nothing)"
                logger.error("%s.%d: FATAL: %s. Last lines the worker wrote to stderr:\n%s", self.name, index,
                             reason, tail)
                self._gave_up(self.name, index)
            case L.Replaced(ok):
                outcome = self._outcomes.pop(machine, None)
                if outcome is not None and not outcome.done():
                    outcome.set_result(ok)
        return None

    def _fire(self, machine: L.SlotMachine, timer: int) -> None:
        del self._timers[machine, timer]
        self._run_task(self._dispatch_later(machine, L.TimerFired(timer)))

    async def _dispatch_later(self, machine: L.SlotMachine, event: L.Event) -> None:
        # In a task, so that a failure is seen by the runner like any other task's.
        self._dispatch(machine, event)

    def _spawn_worker(self, machine: L.SlotMachine) -> L.Event:
        index = machine.status.index
        prefix = self._prefix(index)

        def relay(pid: int, line: str) -> None:
            worker_logger.info("%s %d | %s", prefix, pid, line)

        try:
            proc = self._start(index, relay)
        except OSError as exc:  # EMFILE, EAGAIN, a vanished directory: a failed start, retried
            return L.SpawnFailed(exc.strerror or str(exc))
        self.procs[proc.pid] = proc
        self._run_task(self._watch_exit(machine, proc))
        return L.Spawned(proc.pid, proc.stderr_tail)

    async def _watch_exit(self, machine: L.SlotMachine, proc: WorkerProcess) -> None:
        code = await proc.wait()
        self.procs.pop(proc.pid, None)
        why = self._retry(proc.pid) if proc.vitals.ready_at is None else None
        if why is not None and not machine.stopping_pid(proc.pid):
            self._dispatch(machine, L.Withdrawn(proc.pid, code, why))
            return
        if not machine.stopping_pid(proc.pid):
            self._crashed(proc.stderr_tail)
        self._dispatch(machine, L.Exited(proc.pid, code))

    async def _await_ready(self, machine: L.SlotMachine, proc: WorkerProcess, timeout: float) -> None:
        try:
            ready = await asyncio.wait_for(proc.ready(), timeout)
        except TimeoutError:
            self._dispatch(machine, L.ReadyTimedOut(proc.pid))
            return
        if ready:  # else it closed the pipe without a word: its exit follows
            self._dispatch(machine, L.Ready(proc.pid))
