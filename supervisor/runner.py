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
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from supervisor.config.settings import Settings
from supervisor.config.toml import Config
from supervisor.contract import (
    Command,
    FilesChanged,
    InternalError,
    Message,
    Plugin,
    ProgramCommand,
    RecycleWorker,
    Scale,
    Signalled,
    Step,
    Stopped,
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
from supervisor.spawn.process import LineSink, WorkerProcess, spawn_worker, worker_spec
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
# What still counts once stopping: a second stop request (it forces the stop), a failure, the end.
WHILE_STOPPING: frozenset[Message] = frozenset({
    Command.STOP, Signalled(signal.SIGTERM), Signalled(signal.SIGINT), InternalError(), Stopped()})


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
            return Slots(name, count, timing, run_task=self.run_task, changed=self._slot_changed,
                         gave_up=self._gave_up, crashed=self._crashed, clock=clock, wall=wall, rand=rand, **kwargs)

        self._spawn, self._fd = spawn, listener.sock.fileno()
        self._slots = slots(WEB, settings.workers, web_timing(settings.config), prefix=prefix_for(settings, WEB),
                            start=self._start_web_worker, retry=retry)
        self._programs = Programs(self._slots, settings, slots)
        self._livereload_url = livereload_url
        self.exit_code = EXIT_OK
        self._observers: list[Callable[[], None]] = []
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._fallback = FallbackResponder(listener.sock, self._fallback_body)
        self._begun = self._served = self._stopping = self._rolling = self._failed = self._done = False
        self._capacity = Capacity(self._slots, settings.workers, self.health, self.stopping, self.changed)
        self._rollout = Rollout(self, self._capacity, resolve, self.reload_status)
        self._shown_state = SupervisorState.STARTING

    def _quota_told(self, proc: WorkerProcess) -> WorkerProcess:
        # A worker nearing its request quota is a change: the health watch starts its replacement
        # at once, not at its next round (a fast worker would be far past its quota by then).
        proc.quota_listeners.append(lambda _: self.changed())
        return proc

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
        """A record of the read model changed (a plugin's, a reload's, a slot's): log a new
        supervisor state and tell the observers."""
        self._show_state()
        self._tell_observers()

    # ----- after a change ----------------------------------------------------------------------

    def _slot_changed(self) -> None:
        """A slot of any program handled an event (its executor calls this after each one)."""
        self._announce_first_worker()
        self._place_fallback()
        self.changed()
        self._programs.slot_changed()

    def _announce_first_worker(self) -> None:
        if not self._served and self.ready_workers:
            self._served = True
            logger.info("%s", banner(self.url))

    def _show_state(self) -> None:
        state = self.state
        if state != self._shown_state:
            logger.info("supervisor: %s -> %s", self._shown_state, state)
            self._shown_state = state

    def _place_fallback(self) -> None:
        """Answer for the app while no worker can (see :mod:`supervisor.listen.fallback`); depends on
        the web slots, the mode and whether we stop."""
        text = fallback_text(self.slots, self._settings.production, self.wall())
        self._fallback.want(text is not None and not self._stopping)

    def _tell_observers(self) -> None:
        for observer in list(self._observers):
            try:
                observer()
            except Exception:  # an observer's bug must not take down supervision
                logger.exception("supervisor: a state-change observer failed")

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
            self.post(Stopped())
            return
        if not self._stopping:
            self._begun = True
            self._programs.begin()

    def _handle(self, message: Message) -> None:
        if self._stopping and message not in WHILE_STOPPING:
            return  # a stopping supervisor starts, reloads and scales nothing more
        match message:
            case Command.STOP:
                self._request_stop("stop request")
            case Signalled(signal.SIGTERM | signal.SIGINT):
                self._request_stop(message.sig.name)
            case Command.REREAD:
                self._reread("reread")
            case Signalled(signal.SIGHUP):
                self._reread("SIGHUP")
            case Command.RESTART:
                self.run_task(self._rollout.rolling_restart(ExitReason.MANUAL))
            case ProgramCommand(_, program) if program == WEB:
                self.run_task(self._rollout.rolling_restart(ExitReason.MANUAL))  # ``restart web``
            case ProgramCommand(action, program):
                self._programs.control(action, program)
            case FilesChanged(files):
                self._rollout.files_changed(set(files))
            case RecycleWorker():
                self.run_task(self._capacity.recycle(message))
            case Scale(workers, program) if program == WEB:
                self._scale(workers, "scale request")
            case Scale(instances, program):
                self._programs.scale(program, instances)
            case Signalled(signal.SIGTTIN):
                self._scale(self._capacity.wanted + 1, "SIGTTIN")
            case Signalled(signal.SIGTTOU):
                self._scale(self._capacity.wanted - 1, "SIGTTOU")
            case InternalError():
                self._begin_shutdown(EXIT_RUNTIME)
            case Stopped():
                self._done = True
                logger.info("supervisor: stopped")

    def _reread(self, why: str) -> None:
        self.run_task(self._rollout.reload(set(), f"{why}: re-reading configuration", reread=True))

    def _request_stop(self, why: str) -> None:
        if not self._stopping:
            logger.info("supervisor: %s received: stopping gracefully (again to force)", why)
            self._begin_shutdown(EXIT_OK)
            return
        logger.warning("supervisor: %s again: stopping at once", why)
        self._programs.kill_all()
        self.exit_code = EXIT_FORCED
        self.post(Stopped())

    def _begin_shutdown(self, code: int) -> None:
        if self._stopping:
            return
        self.exit_code, self._stopping = code, True
        self._programs.stop_starting()
        self._place_fallback()
        self.changed()
        self.run_task(self._shut_down())

    async def _shut_down(self) -> None:
        await self._programs.shutdown()
        self.post(Stopped())

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        """A bug or an OS failure in a task must end ``up``, not leave it running unseen."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("supervisor: internal error; stopping", exc_info=task.exception())
            self.post(InternalError())

    @staticmethod
    def _service_done(task: asyncio.Future[None]) -> None:
        # A failed service (status API, file watcher) is reported; supervision goes on without it.
        if not task.cancelled() and task.exception() is not None:
            logger.error("supervisor: a background service failed", exc_info=task.exception())

    def _gave_up(self, name: str, index: int) -> None:
        if self._settings.production:
            what = "a worker slot is in a crash loop" if name == WEB else f"program {name} gave up"
            logger.error("supervisor: %s; stopping (production mode)", what)
            self.post(InternalError())
        elif name == WEB:
            logger.error("web.%d: waiting for a change (file edit, restart request) before trying again", index)

    def _scale(self, wanted: int, why: str) -> None:
        if self._capacity.want(wanted, why):
            self.run_task(self._capacity.apply())

    def _start_web_worker(self, index: int, sink: LineSink) -> WorkerProcess:
        # The settings and live reload are looked up per worker: a reload or SIGHUP may change them.
        livereload = self._livereload_url if browser_follows(self._settings) else ""
        return self._quota_told(self._spawn(worker_spec(self._settings, self._fd, livereload), sink))

    def _crashed(self, stderr_tail: Sequence[str]) -> None:
        # The deque itself: the relay may still be appending the last lines. Shown by live reload.
        self.reload_status.last_output = stderr_tail

    def _fallback_body(self) -> str:
        text = fallback_text(self.slots, self._settings.production, self.wall()) or explain_fatal(self.slots)
        return self.redact(text)

    # ----- what a rollout needs (rollout.RolloutHost) -----------------------------------------

    def apply_settings(self, new: Settings) -> None:
        """Adopt re-read settings: the next workers get the new app settings and environment, and
        restart policy and mode follow them. What was set up once at start (the held socket, the
        status API, the file watcher, the worker count) stays as it is."""
        self._redactor.add(new.secrets)
        self._settings = new
        self._slots.reconfigure(web_timing(new.config))
        self._place_fallback()  # production mode answers no 503 for a given-up app

    def set_rolling(self, rolling: bool) -> None:
        self._rolling = rolling
        self.changed()

    def stopping(self) -> bool:
        return self._stopping

    def restart_programs(self, files: set[str]) -> list[str]:
        return self._programs.restart_for(files, self._settings.project_dir)


def web_timing(config: Config) -> Timing:
    return Timing(config.restart, config.app.ready_timeout, config.supervisor.stop_timeout)
