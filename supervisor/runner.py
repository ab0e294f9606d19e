"""The supervisor's event loop: messages in, the worker slots driven, the read model kept.

Each worker slot is a pure :class:`~supervisor.slots.lifecycle.SlotMachine`, whose decisions
:class:`~supervisor.slots.executor.Slots` carries out against real processes and timers. Signals and
plugin commands arrive as messages on one queue (see :mod:`supervisor.signals`); rolling
restarts are :class:`~supervisor.reload.rollout.Rollout`'s; plugins see this class only through
:class:`~supervisor.contract.SupervisorView`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from supervisor.config.settings import Settings
from supervisor.config.toml import Config
from supervisor.contract import (
    Command,
    FilesChanged,
    Message,
    Plugin,
    ProgramCommand,
    RecycleWorker,
    Scale,
    Step,
)
from supervisor.errors import EXIT_FORCED, EXIT_OK, EXIT_RUNTIME, SupervisorError
from supervisor.listen.fallback import FallbackResponder, explain_fatal, fallback_text
from supervisor.listen.ports import Bound, display_url
from supervisor.output import banner
from supervisor.programs.group import Programs, prefix_for
from supervisor.programs.spec import WEB
from supervisor.reload.browser import browser_follows
from supervisor.reload.rollout import Rollout
from supervisor.secrets import Redactor
from supervisor.signals import queued_signals
from supervisor.slots.capacity import Capacity
from supervisor.slots.executor import Slots, Spawner, Timing
from supervisor.spawn.process import spawn_worker, worker_spec
from supervisor.state import (
    DatabaseState,
    DatabaseStatus,
    ExitReason,
    HealthStatus,
    ReloadStatus,
    SlotState,
    SlotStatus,
    SupervisorState,
    WorkerVitals,
)

logger = logging.getLogger("supervisor")
_DONE, _INTERNAL_ERROR = "done", "internal_error"


class Runner:
    """Runs the workers of one ``up``; implements :class:`~supervisor.contract.SupervisorView`."""

    def __init__(self, settings: Settings, listener: Bound, *, resolve: Callable[[], Settings] | None = None,
                 redactor: Redactor | None = None, spawn: Spawner = spawn_worker, livereload_url: str = "",
                 retry: Callable[[int], str | None] = lambda pid: None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self._settings = settings
        self.listener = listener
        self._wall = wall
        self._redactor = redactor or Redactor()
        self.started_at = wall()
        self.database = DatabaseStatus()
        self.reload_status = ReloadStatus()
        self.health = HealthStatus()
        def slots(name: str, count: int, timing: Timing, **kwargs: Any) -> Slots:
            return Slots(name, count, timing, run_task=self.run_task, changed=self.changed, gave_up=self._gave_up,
                         crashed=self._crashed, clock=clock, wall=wall, rand=rand, **kwargs)

        fd = listener.sock.fileno()
        self._slots = slots(WEB, settings.workers, web_timing(settings.config), prefix=prefix_for(settings, WEB),
                            start=lambda _, sink: spawn(worker_spec(self._settings, fd, self._livereload()), sink),
                            retry=retry)
        self._programs = Programs(self._slots, settings, slots)
        self._idle_changed = asyncio.Event()
        self._livereload_url = livereload_url
        self.exit_code = EXIT_OK
        self._observers: list[Callable[[], None]] = []
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._rollout = Rollout(self, resolve, self.reload_status)
        self._fallback = FallbackResponder(listener.sock, self._fallback_body)
        self._begun = self._served = self._stopping = self._rolling = self._failed = self._done = False
        self._capacity = Capacity(self._slots, settings.workers, self.health, self.stopping, self.changed)
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
        return self._slots.statuses

    @property
    def ready_workers(self) -> int:
        return sum(1 for slot in self.slots if slot.state == SlotState.RUNNING)

    @property
    def programs(self) -> dict[str, Sequence[SlotStatus]]:
        return self._programs.programs

    @property
    def worker_pids(self) -> set[int]:
        return set(self._programs.procs())

    @property
    def vitals(self) -> Mapping[int, WorkerVitals]:
        return {pid: proc.vitals for pid, proc in self._slots.procs.items()}

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
        if self._begun and not self._stopping:
            self._programs.gate()
        self._idle_changed.set()
        if self._stopping and self._programs.idle:
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
                self._programs.cancel_timers()
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
            self._programs.gate()

    def _handle(self, message: Message) -> None:
        if isinstance(message, FilesChanged):
            if not self._stopping:
                self._rollout.files_changed(set(message.files))
        elif isinstance(message, ProgramCommand):
            if message.program == WEB:
                self._handle(Command.RESTART)
            elif not self._stopping:
                self._programs.control(message.action, message.program)
        elif message in ("SIGTERM", "SIGINT", Command.STOP):
            self._request_stop("stop request" if message == Command.STOP else message)
        elif message in ("SIGHUP", Command.REREAD) and not self._stopping:
            self.run_task(self._rollout.reload(set(), f"{message}: re-reading configuration", reread=True))
        elif message == Command.RESTART and not self._stopping:
            self.run_task(self._rollout.rolling_restart(ExitReason.MANUAL))
        elif isinstance(message, RecycleWorker) and not self._stopping:
            self.run_task(self._capacity.recycle(message))
        elif isinstance(message, Scale) and message.program != WEB and not self._stopping:
            self._programs.scale(message.program, message.workers)
        elif isinstance(message, Scale) and not self._stopping:
            self._scale(message.workers, "scale request")
        elif message in ("SIGTTIN", "SIGTTOU") and not self._stopping:
            self._scale(self._capacity.wanted + (1 if message == "SIGTTIN" else -1), str(message))
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
        self._programs.kill_all()
        self.exit_code = EXIT_FORCED
        self.post(_DONE)

    def _begin_shutdown(self, code: int) -> None:
        if self._stopping:
            return
        self.exit_code, self._stopping = code, True
        self.changed()
        self.run_task(self._programs.shutdown(self._idle_changed))

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

    def _gave_up(self, name: str, index: int) -> None:
        if self._settings.production:
            what = "a worker slot is in a crash loop" if name == WEB else f"program {name} gave up"
            logger.error("supervisor: %s; stopping (production mode)", what)
            self.post(_INTERNAL_ERROR)
        elif name == WEB:
            logger.error("web.%d: waiting for a change (file edit, restart request) before trying again", index)

    def _scale(self, wanted: int, why: str) -> None:
        if self._capacity.want(wanted, why):
            self.run_task(self._capacity.apply())

    def _livereload(self) -> str:
        # Re-checked per worker: a SIGHUP may have switched to production mode.
        return self._livereload_url if browser_follows(self._settings) else ""

    def _crashed(self, stderr_tail: Sequence[str]) -> None:
        # The deque itself: the relay may still be appending the last lines. Shown by live reload.
        self.reload_status.last_output = stderr_tail

    def _fallback_body(self) -> str:
        text = fallback_text(self.slots, self._settings.production, self.wall()) or explain_fatal(self.slots)
        return self.redact(text)

    # ----- what a rollout needs (rollout.Slots) ----------------------------------------------

    def slot_count(self) -> int:
        return len(self._slots.machines)

    async def replace_slot(self, index: int, reason: ExitReason) -> bool:
        return await self._capacity.replace(index, reason)

    def apply_settings(self, new: Settings) -> None:
        """Adopt re-read settings: the next workers get the new app settings and environment, and
        restart policy and mode follow them. What was set up once at start (the held socket, the
        status API, the file watcher, the worker count) stays as it is."""
        self._redactor.add(new.secrets)
        self._settings = new
        self._slots.reconfigure(web_timing(new.config))

    def set_rolling(self, rolling: bool) -> None:
        self._rolling = rolling
        self.changed()

    def stopping(self) -> bool:
        return self._stopping

    def restart_programs(self, files: set[str]) -> list[str]:
        return self._programs.restart_for(files, self._settings.project_dir)


def web_timing(config: Config) -> Timing:
    return Timing(config.restart, config.app.ready_timeout, config.supervisor.stop_timeout)
