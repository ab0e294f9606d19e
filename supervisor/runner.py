"""The supervisor's event loop: a thin executor of the slots' lifecycle decisions.

Each worker slot is a pure :class:`~supervisor.lifecycle.SlotMachine`. Whatever happens (a
worker spawned, ready, exited; a timer; a replacement request; shutdown) is fed to its machine
as an event, and the actions it returns are carried out here against real processes and timers.
Signals and plugin commands arrive as messages on one queue (see :mod:`supervisor.signals`);
plugins see this class only through :class:`~supervisor.contract.SupervisorView`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from supervisor import lifecycle as L
from supervisor.contract import Command, FilesChanged, Message, Plugin, Step
from supervisor.errors import EXIT_FORCED, EXIT_OK, EXIT_RUNTIME, SupervisorError
from supervisor.fallback import FallbackResponder, explain_fatal, fallback_text
from supervisor.output import banner
from supervisor.ports import Bound, display_url
from supervisor.process import LineSink, WorkerProcess, WorkerSpec, spawn_worker, worker_drain_timeout
from supervisor.rollout import Rollout
from supervisor.secrets import Redactor
from supervisor.settings import Settings
from supervisor.signals import queued_signals
from supervisor.state import (
    DatabaseState,
    DatabaseStatus,
    ExitReason,
    ReloadStatus,
    SlotState,
    SlotStatus,
    SupervisorState,
)
from supervisor.systemdenv import scrub_systemd_env

logger = logging.getLogger("supervisor")
# Workers' own lines: already filtered by the worker's log level, so never filtered again here.
worker_logger = logging.getLogger("supervisor.worker")

Spawner = Callable[[WorkerSpec, LineSink], WorkerProcess]
_DONE, _INTERNAL_ERROR = "done", "internal_error"


class Runner:
    """Runs the workers of one ``up``; implements :class:`~supervisor.contract.SupervisorView`."""

    def __init__(self, settings: Settings, listener: Bound, *, resolve: Callable[[], Settings] | None = None,
                 redactor: Redactor | None = None, spawn: Spawner = spawn_worker,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self._settings = settings
        self.listener = listener
        self._spawn = spawn
        self._wall = wall
        self._redactor = redactor or Redactor()
        self.started_at = wall()
        self.database = DatabaseStatus()
        self.reload_status = ReloadStatus()
        app = settings.config.app
        self.machines = [L.SlotMachine(i, settings.config.restart, app.ready_timeout, clock=clock, wall=wall,
                                       rand=rand) for i in range(settings.workers)]
        self.exit_code = EXIT_OK
        self._procs: dict[int, WorkerProcess] = {}
        self._observers: list[Callable[[], None]] = []
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._timers: dict[tuple[int, int], asyncio.TimerHandle] = {}
        self._outcomes: dict[int, asyncio.Future[bool]] = {}
        self._rollout = Rollout(self, resolve, self.reload_status)
        self._fallback = FallbackResponder(listener.sock, self._fallback_body)
        self._begun = self._served = self._stopping = self._rolling = self._failed = self._done = False
        self._shown_state = SupervisorState.STARTING

    # ----- the read model (SupervisorView) -------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def state(self) -> SupervisorState:
        if self._stopping:
            return SupervisorState.STOPPING
        if self._failed:
            return SupervisorState.FATAL
        if not self._begun:
            waiting = self.database.state == DatabaseState.WAITING
            return SupervisorState.WAITING_FOR_DATABASE if waiting else SupervisorState.STARTING
        if self._rolling:
            return SupervisorState.RELOADING
        if all(slot.state == SlotState.FATAL for slot in self.slots):
            return SupervisorState.FATAL
        return SupervisorState.RUNNING if self._served else SupervisorState.STARTING

    @property
    def port(self) -> int:
        return self.listener.port

    @property
    def url(self) -> str:
        return display_url(self._settings.host, self.listener.port)

    @property
    def slots(self) -> Sequence[SlotStatus]:
        return [machine.status for machine in self.machines]

    @property
    def ready_workers(self) -> int:
        return sum(1 for slot in self.slots if slot.state == SlotState.RUNNING)

    @property
    def worker_pids(self) -> set[int]:
        return set(self._procs)

    def wall(self) -> float:
        return self._wall()

    def redact(self, text: str) -> str:
        return self._redactor(text)

    # ----- commands (SupervisorView) -------------------------------------------------------

    def post(self, message: Message) -> None:
        self._queue.put_nowait(message)

    def run_task(self, coro: Awaitable[object]) -> None:
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def subscribe(self, observer: Callable[[], None]) -> None:
        self._observers.append(observer)

    def changed(self) -> None:
        """After every change: log a new state, announce the first worker, place the fallback,
        tell the observers, and end a shutdown whose workers are all gone."""
        if not self._served and self.ready_workers:
            self._served = True
            logger.info("%s", banner(self.url))
        state = self.state
        if state != self._shown_state:
            logger.info("supervisor: %s -> %s", self._shown_state, state)
            self._shown_state = state
        text = fallback_text(self.slots, self._settings.production, self.wall())
        self._fallback.want(text is not None and not self._stopping)
        for observer in list(self._observers):
            try:
                observer()
            except Exception:  # an observer's bug must not take down supervision
                logger.exception("supervisor: a state-change observer failed")
        if self._stopping and all(machine.idle for machine in self.machines):
            self.post(_DONE)

    # ----- the loop --------------------------------------------------------------------------

    async def run(self, plugins: Sequence[Plugin] = ()) -> int:
        """Run until stopped; return the exit code for ``up``."""
        services: list[asyncio.Future[None]] = [asyncio.ensure_future(p.service()) for p in plugins
                                                if p.service is not None]
        services.append(asyncio.ensure_future(self._rollout.watch_changes()))
        for service in services:
            service.add_done_callback(self._service_done)
        # The handlers stay installed until the services are cleaned up too: a signal during that
        # cleanup is queued and ignored instead of killing us with state files left behind.
        with queued_signals(self.post):
            try:
                self.run_task(self._start([p.startup for p in plugins if p.startup is not None]))
                while not self._done:
                    self._handle(await self._queue.get())
            finally:
                for timer in self._timers.values():
                    timer.cancel()
                for task in (*services, *self._tasks):
                    task.cancel()
                await asyncio.gather(*services, *self._tasks, return_exceptions=True)
                await self._fallback.close()
                self.listener.sock.close()
        return self.exit_code

    async def _start(self, steps: list[Step]) -> None:
        try:
            for step in steps:
                await step()
        except SupervisorError as exc:
            logger.error("supervisor: %s", exc)
            self.exit_code, self._failed = exc.exit_code, True
            self.changed()
            self.post(_DONE)
            return
        if not self._stopping:
            self._begun = True
            for index in range(len(self.machines)):
                self._dispatch(index, L.Begin())

    def _handle(self, message: Message) -> None:
        if isinstance(message, FilesChanged):
            if not self._stopping:
                self._rollout.files_changed(set(message.files))
        elif message in ("SIGTERM", "SIGINT", Command.STOP):
            self._request_stop("stop request" if message == Command.STOP else message)
        elif message in ("SIGHUP", Command.REREAD) and not self._stopping:
            self.run_task(self._rollout.reload(set(), f"{message}: re-reading configuration", reread=True))
        elif message == Command.RESTART and not self._stopping:
            self.run_task(self._rollout.rolling_restart(ExitReason.MANUAL))
        elif message == _INTERNAL_ERROR:
            self._begin_shutdown(EXIT_RUNTIME)
        elif message == _DONE:
            self._done = True
            logger.info("supervisor: stopped")

    def _request_stop(self, why: str) -> None:
        if not self._stopping:
            logger.info("supervisor: %s received: stopping gracefully (again to force)", why)
            self._begin_shutdown(EXIT_OK)
            return
        logger.warning("supervisor: %s again: stopping at once", why)
        for proc in self._procs.values():
            proc.kill()
        self.exit_code = EXIT_FORCED
        self.post(_DONE)

    def _begin_shutdown(self, code: int) -> None:
        if self._stopping:
            return
        self.exit_code, self._stopping = code, True
        for index in range(len(self.machines)):
            self._dispatch(index, L.Shutdown())

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        """A bug or an OS failure in a task must end ``up``, not leave it running unseen."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("supervisor: internal error; stopping", exc_info=task.exception())
            self.post(_INTERNAL_ERROR)

    @staticmethod
    def _service_done(task: asyncio.Future[None]) -> None:
        # A failed service (status API, file watcher) is reported; supervision goes on without it.
        if not task.cancelled() and task.exception() is not None:
            logger.error("supervisor: a background service failed", exc_info=task.exception())

    # ----- executing lifecycle decisions -----------------------------------------------------

    def _dispatch(self, index: int, event: L.Event) -> None:
        """Feed ``event`` to slot ``index`` and carry out what it decides, until nothing follows."""
        pending: deque[L.Event] = deque([event])
        try:
            while pending:
                for action in self.machines[index].handle(pending.popleft()):
                    follow = self._execute(index, action)
                    if follow is not None:
                        pending.append(follow)
        except Exception:  # a bug here must end ``up`` visibly, not leave a slot half-handled
            logger.exception("supervisor: internal error; stopping")
            self.post(_INTERNAL_ERROR)
        self.changed()

    def _fire(self, index: int, timer: int) -> None:
        del self._timers[index, timer]
        self._dispatch(index, L.TimerFired(timer))

    def _execute(self, index: int, action: L.Action) -> L.Event | None:
        match action:
            case L.Spawn():
                return self._spawn_worker(index)
            case L.AwaitReady(pid, timeout):
                self.run_task(self._await_ready(index, self._procs[pid], timeout))
            case L.Sleep(delay, timer):
                self._timers[index, timer] = asyncio.get_running_loop().call_later(delay, self._fire, index, timer)
            case L.Stop(pid, _):
                if pid in self._procs:
                    self.run_task(self._procs[pid].stop(self._settings.config.supervisor.stop_timeout))
            case L.Kill(pid):
                if pid in self._procs:
                    self._procs[pid].kill()
            case L.Log(level, message):
                logger.log(level, "web.%d: %s", index, message)
            case L.GaveUp(reason):
                self._gave_up(index, reason)
            case L.Replaced(ok):
                outcome = self._outcomes.pop(index, None)
                if outcome is not None and not outcome.done():
                    outcome.set_result(ok)
        return None

    def _spawn_worker(self, index: int) -> L.Event:
        def relay(pid: int, line: str) -> None:
            worker_logger.info("web.%d %d | %s", index, pid, line)

        try:
            proc = self._spawn(self.worker_spec(), relay)
        except OSError as exc:  # EMFILE, EAGAIN, a vanished directory: a failed start, retried
            return L.SpawnFailed(exc.strerror or str(exc))
        self._procs[proc.pid] = proc
        self.run_task(self._watch_exit(index, proc))
        return L.Spawned(proc.pid, proc.stderr_tail)

    async def _watch_exit(self, index: int, proc: WorkerProcess) -> None:
        code = await proc.wait()
        self._procs.pop(proc.pid, None)
        self._dispatch(index, L.Exited(proc.pid, code))

    async def _await_ready(self, index: int, proc: WorkerProcess, timeout: float) -> None:
        try:
            ready = await asyncio.wait_for(proc.ready(), timeout)
        except TimeoutError:
            self._dispatch(index, L.ReadyTimedOut(proc.pid))
            return
        if ready:  # else it closed the pipe without a word: its exit follows
            self._dispatch(index, L.Ready(proc.pid))

    def _gave_up(self, index: int, reason: str) -> None:
        tail = "\n".join(f"    {line}" for line in self.machines[index].status.stderr_tail) or "    (nothing)"
        logger.error("web.%d: FATAL: %s. Last lines the worker wrote to stderr:\n%s", index, reason, tail)
        if self._settings.production:
            logger.error("supervisor: a worker slot is in a crash loop; stopping (production mode)")
            self.post(_INTERNAL_ERROR)
        else:
            logger.error("web.%d: waiting for a change (file edit, restart request) before trying again", index)

    def _fallback_body(self) -> str:
        text = fallback_text(self.slots, self._settings.production, self.wall()) or explain_fatal(self.slots)
        return self.redact(text)

    def worker_spec(self) -> WorkerSpec:
        cfg = self._settings.config
        return WorkerSpec(
            app=cfg.app.app, factory=cfg.app.factory, listen_fd=self.listener.sock.fileno(),
            cwd=(self._settings.project_dir / cfg.app.app_dir).resolve(),
            environ=scrub_systemd_env(self._settings.environ),
            log_level=cfg.supervisor.log_level,
            graceful_timeout=worker_drain_timeout(cfg.supervisor.stop_timeout),
        )

    # ----- what a rollout needs (rollout.Slots) ----------------------------------------------

    def slot_count(self) -> int:
        return len(self.machines)

    def replace_slot(self, index: int, reason: ExitReason) -> Awaitable[bool]:
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._outcomes[index] = outcome
        self._dispatch(index, L.Replace(reason))
        return outcome

    def apply_settings(self, new: Settings) -> None:
        """Adopt re-read settings: the next workers get the new app settings and environment, and
        restart policy and mode follow them. What was set up once at start (the held socket, the
        status API, the file watcher, the worker count) stays as it is."""
        self._redactor.add(new.secrets)
        self._settings = new
        for machine in self.machines:
            machine.reconfigure(new.config.restart, new.config.app.ready_timeout)

    def set_rolling(self, rolling: bool) -> None:
        self._rolling = rolling
        self.changed()

    def stopping(self) -> bool:
        return self._stopping
