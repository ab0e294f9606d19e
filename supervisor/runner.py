"""The supervisor's event loop: worker slots, restarts, rolling replacement and shutdown.

One asyncio task per worker slot watches that slot's current process and asks the pure
:class:`~supervisor.policy.RestartTracker` what to do when it exits. Signals arrive as names on a
queue (see :mod:`supervisor.signals`) and are dispatched to ``handle_<name>`` methods.

Other concerns plug in without touching this file:

* ``services``: long-running coroutines (status API, database monitor, watchdog, file watcher)
  started first and cancelled at the end;
* ``startup_steps``: coroutines run in order before the first worker starts (waiting for the
  database); raising :class:`~supervisor.errors.SupervisorError` aborts ``up`` with its exit code;
* ``on_change``: callbacks run after every state change (sd_notify, metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from supervisor import state as S
from supervisor.errors import EXIT_FORCED, EXIT_OK, EXIT_RUNTIME, SupervisorError
from supervisor.fallback import FallbackResponder, explain_fatal
from supervisor.output import banner
from supervisor.policy import GiveUp, RestartTracker
from supervisor.ports import Bound, display_url
from supervisor.process import LineSink, WorkerProcess, WorkerSpec, spawn_worker, worker_drain_timeout
from supervisor.reload import reload
from supervisor.secrets import Redactor
from supervisor.settings import Settings, needs_restart
from supervisor.signals import queued_signals
from supervisor.state import DatabaseStatus, ExitInfo, ReloadStatus, SlotStatus
from supervisor.systemdenv import scrub_systemd_env

logger = logging.getLogger("supervisor")
# Workers' own lines: already filtered by the worker's log level, so never filtered again here.
worker_logger = logging.getLogger("supervisor.worker")

Spawner = Callable[[WorkerSpec, LineSink], WorkerProcess]
Hook = Callable[["Supervisor"], Coroutine[Any, Any, None]]


class Supervisor:
    def __init__(self, settings: Settings, listener: Bound, *, spawn: Spawner = spawn_worker,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.settings = settings
        self.listener = listener
        self.spawn = spawn
        self.clock = clock
        self.wall = wall
        self.state = S.STARTING
        self.started_at = wall()
        self.slots = [SlotStatus(i) for i in range(settings.workers)]
        self.database = DatabaseStatus()
        self.reload_status = ReloadStatus()
        self.services: list[Hook] = []
        self.startup_steps: list[Hook] = []
        self.on_change: list[Callable[[Supervisor], None]] = []
        # Re-reads supervisor.toml, .env and the environment (for reloads and SIGHUP); None: cannot.
        self.resolve: Callable[[], Settings] | None = None
        self.redactor: Redactor | None = None
        self.exit_code = EXIT_OK
        self._trackers = [RestartTracker(settings.config.restart, rand) for _ in self.slots]
        self._procs: list[WorkerProcess | None] = [None for _ in self.slots]
        self._live: set[WorkerProcess] = set()
        self._background: set[asyncio.Task[object]] = set()
        self._announced = False

    # ----- facts for the status API and the CLI -------------------------------------------

    @property
    def url(self) -> str:
        return display_url(self.settings.host, self.listener.port)

    @property
    def ready_workers(self) -> int:
        return sum(1 for s in self.slots if s.state == S.RUNNING)

    @property
    def worker_pids(self) -> set[int]:
        """Every worker not yet reaped, draining ones included: the orphan reaper leaves these alone."""
        return {proc.pid for proc in self._live}

    def process(self, index: int) -> WorkerProcess | None:
        return self._procs[index]

    def set_state(self, new: str) -> None:
        if new != self.state:
            logger.info("supervisor: %s -> %s", self.state, new)
            self.state = new
        self.changed()

    def changed(self) -> None:
        for callback in list(self.on_change):
            try:
                callback(self)
            except Exception:  # an observer's bug must not take down supervision
                logger.exception("supervisor: a state-change observer failed")

    # ----- the main loop -------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; return the exit code for ``up``."""
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._rolling = asyncio.Lock()
        self._wake = [asyncio.Event() for _ in self.slots]
        self._fallback = FallbackResponder(self.listener.sock, self._fallback_body)
        # Set by a rolling restart that woke an idle slot: resolved with that start's readiness.
        self._start_outcome: list[asyncio.Future[bool] | None] = [None for _ in self.slots]
        self._slot_tasks: list[asyncio.Task[None]] = []
        self._done = False
        service_tasks = [asyncio.create_task(service(self)) for service in self.services]
        for task in service_tasks:
            task.add_done_callback(self._on_service_done)
        # The handlers stay installed until the services are cleaned up too: a signal during that
        # cleanup is queued and ignored instead of killing us with state files left behind.
        with queued_signals(self._queue):
            try:
                starter = asyncio.create_task(self._start())
                starter.add_done_callback(self._on_task_done)
                while not self._done:
                    message = await self._queue.get()
                    handler = getattr(self, "handle_" + message.lower(), None)
                    if handler is None:
                        logger.warning("supervisor: ignoring unknown message %r", message)
                        continue
                    await handler()
                starter.cancel()
                await asyncio.gather(starter, return_exceptions=True)
            finally:
                for task in service_tasks:
                    task.cancel()
                await asyncio.gather(*service_tasks, return_exceptions=True)
                self.listener.sock.close()
        return self.exit_code

    async def _start(self) -> None:
        try:
            for step in self.startup_steps:
                await step(self)
        except SupervisorError as exc:
            logger.error("supervisor: %s", exc)
            self.exit_code = exc.exit_code
            self.set_state(S.FATAL)
            self._queue.put_nowait("done")
            return
        if self._stopping.is_set():
            return
        self._slot_tasks = [asyncio.create_task(self._run_slot(i)) for i in range(len(self.slots))]
        for task in self._slot_tasks:
            task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """A bug or an OS failure (fork: EAGAIN) in startup or a slot must end ``up``, not leave it
        running with nothing behind it and the error unseen."""
        if task.cancelled() or task.exception() is None:
            return
        logger.error("supervisor: internal error; stopping", exc_info=task.exception())
        self.post("internal_error")

    def _on_service_done(self, task: asyncio.Task[None]) -> None:
        # A failed service (status API, file watcher) is reported; supervision goes on without it.
        if not task.cancelled() and task.exception() is not None:
            logger.error("supervisor: a background service failed", exc_info=task.exception())

    def post(self, message: str) -> None:
        """Enqueue a message for the loop (``"restart"``, ``"stop"``); safe from any coroutine."""
        self._queue.put_nowait(message)

    # ----- message handlers ----------------------------------------------------------------

    async def handle_sigterm(self) -> None:
        await self._request_stop("SIGTERM")

    async def handle_sigint(self) -> None:
        await self._request_stop("SIGINT")

    async def handle_stop(self) -> None:
        await self._request_stop("stop request")

    async def handle_sighup(self) -> None:
        if not self._stopping.is_set():
            self.spawn_task(reload(self, set(), trigger="SIGHUP: re-reading configuration", reread=True))

    async def handle_restart(self) -> None:
        if not self._stopping.is_set():
            self.spawn_task(self.rolling_restart(S.EXIT_MANUAL))

    def spawn_task(self, coro: Awaitable[object]) -> asyncio.Task[object]:
        """Run ``coro`` in the background, keeping a reference so it is not garbage-collected."""
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(self._log_failure)
        return task

    @staticmethod
    def _log_failure(task: asyncio.Task[object]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("supervisor: a background task failed", exc_info=task.exception())

    async def handle_fatal(self) -> None:
        if self.settings.production:
            logger.error("supervisor: a worker slot is in a crash loop; stopping (production mode)")
            await self._begin_shutdown(EXIT_RUNTIME)
        elif all(s.state == S.FATAL for s in self.slots):
            self.set_state(S.FATAL)

    def _fallback_body(self) -> str:
        text = explain_fatal(self.slots)
        return self.redactor(text) if self.redactor is not None else text

    async def handle_done(self) -> None:
        self._done = True

    async def handle_internal_error(self) -> None:
        await self._begin_shutdown(EXIT_RUNTIME)

    async def _request_stop(self, why: str) -> None:
        if self._stopping.is_set():
            logger.warning("supervisor: %s again: stopping at once", why)
            self._force_stop()
            return
        logger.info("supervisor: %s received: stopping gracefully (again to force)", why)
        await self._begin_shutdown(EXIT_OK)

    async def _begin_shutdown(self, code: int) -> None:
        if self._stopping.is_set():
            return
        self.exit_code = code
        self._stopping.set()
        self.set_state(S.STOPPING)
        self.spawn_task(self._shutdown())

    async def _shutdown(self) -> None:
        await self._fallback.stop()
        timeout = self.settings.config.supervisor.stop_timeout
        for slot in self.slots:
            if slot.pid is not None:
                slot.state = S.STOPPING
        self.changed()
        try:
            # Every live process, including a successor a rolling restart has not swapped in yet.
            await asyncio.gather(*(self._stop_process(p.slot, p, timeout, S.EXIT_SHUTDOWN)
                                   for p in list(self._live)))
            for task in self._slot_tasks:
                task.cancel()
            await asyncio.gather(*self._slot_tasks, return_exceptions=True)
            logger.info("supervisor: stopped")
        finally:
            self._queue.put_nowait("done")

    def _force_stop(self) -> None:
        for proc in self._live:
            proc.stop_requested = True
            proc.kill()
        self.exit_code = EXIT_FORCED
        self._queue.put_nowait("done")

    # ----- worker slots --------------------------------------------------------------------

    def worker_spec(self) -> WorkerSpec:
        cfg = self.settings.config
        return WorkerSpec(
            app=cfg.app.app, factory=cfg.app.factory, listen_fd=self.listener.sock.fileno(),
            cwd=(self.settings.project_dir / cfg.app.app_dir).resolve(),
            environ=scrub_systemd_env(self.settings.environ),
            log_level=cfg.supervisor.log_level,
            graceful_timeout=worker_drain_timeout(cfg.supervisor.stop_timeout),
        )

    def _spawn(self, index: int) -> WorkerProcess:
        def relay(pid: int, line: str) -> None:
            worker_logger.info("web.%d %d | %s", index, pid, line)

        proc = self.spawn(self.worker_spec(), relay)
        proc.slot = index
        self._live.add(proc)
        proc.spawned_clock, proc.spawned_wall = self.clock(), self.wall()
        proc.add_exit_callback(self._live.discard)
        logger.info("web.%d: started worker pid %d", index, proc.pid)
        return proc

    def _install(self, index: int, proc: WorkerProcess) -> None:
        """Make ``proc`` the slot's current worker, as far as the status is concerned."""
        slot = self.slots[index]
        self._procs[index] = proc
        slot.pid = proc.pid
        slot.started_at = proc.spawned_wall
        slot.ready_at = None
        slot.next_retry_at = None
        slot.fatal_reason = None
        slot.stderr_tail = proc.stderr_tail

    async def _await_ready(self, index: int, proc: WorkerProcess) -> bool:
        """Wait for the worker's readiness report; False if it exits or times out first."""
        timeout = self.settings.config.app.ready_timeout
        try:
            ready = await asyncio.wait_for(proc.ready(), timeout)
        except TimeoutError:
            logger.error("web.%d: worker pid %d did not report ready within %gs; killing it",
                         index, proc.pid, timeout)
            proc.kill()
            return False
        if ready:
            logger.info("web.%d: worker pid %d is serving", index, proc.pid)
        return ready

    def _mark_serving(self, index: int) -> None:
        slot = self.slots[index]
        slot.ready_at = self.wall()
        slot.state = S.RUNNING
        if not self._announced:
            self._announced = True
            logger.info("%s", banner(self.url))
        if self.state in (S.STARTING, S.WAITING_FOR_DATABASE, S.FATAL):
            self.set_state(S.RUNNING)
        else:
            self.changed()

    async def _run_slot(self, index: int) -> None:
        slot = self.slots[index]
        tracker = self._trackers[index]
        while not self._stopping.is_set():
            proc = self._procs[index]
            if proc is None:
                proc = self._spawn(index)
                self._install(index, proc)
                slot.state = S.STARTING
                self.changed()
                ready = await self._await_ready(index, proc)
                if ready:
                    self._mark_serving(index)
                outcome = self._start_outcome[index]
                if outcome is not None and not outcome.done():
                    outcome.set_result(ready)
            code = await proc.wait()
            if self._procs[index] is not proc:
                continue  # replaced by a reload or restart: watch the successor
            if proc.stop_requested:
                # Only a shutdown stops a slot's current worker (reloads replace it first);
                # _stop_process records the exit.
                return
            self._procs[index] = None
            slot.pid = None
            slot.last_exit = ExitInfo.from_returncode(code, S.EXIT_CRASH)
            uptime = self.clock() - proc.spawned_clock
            decision = tracker.on_crash(self.clock(), uptime)
            if isinstance(decision, GiveUp):
                await self._give_up(index, decision.reason)
                continue
            slot.state = S.BACKOFF
            slot.next_retry_at = self.wall() + decision.delay
            logger.warning("web.%d: worker pid %d %s after %.1fs; restarting in %.2fs (attempt %d)",
                           index, proc.pid, slot.last_exit.describe(), uptime, decision.delay,
                           decision.attempt)
            self.changed()
            await self._wait_for_wake(index, decision.delay)
            if self._procs[index] is None:
                slot.restarts += 1  # else a reload installed a worker meanwhile, and counted it

    async def _give_up(self, index: int, reason: str) -> None:
        slot = self.slots[index]
        slot.state = S.FATAL
        slot.fatal_reason = reason
        tail = "\n".join(f"    {line}" for line in slot.stderr_tail) or "    (nothing)"
        logger.error("web.%d: FATAL: %s. Last lines the worker wrote to stderr:\n%s", index, reason, tail)
        if not self.settings.production:
            logger.error("web.%d: waiting for a change (file edit, restart request) before trying again",
                         index)
        self.changed()
        self._queue.put_nowait("fatal")
        # Started and stopped here, in the slot's own sequence, so it can never answer while a
        # worker this slot starts is serving.
        if not self.settings.production and all(s.state == S.FATAL for s in self.slots):
            await self._fallback.start()
            logger.error("supervisor: no worker can start; requests to %s get a 503 saying why until "
                         "the next change", self.url)
        await self._wait_for_wake(index, None)
        # Before a worker is started again, hand the socket back to the workers.
        await self._fallback.stop()
        self._trackers[index].reset()

    async def _wait_for_wake(self, index: int, delay: float | None) -> None:
        """Sleep ``delay`` (None: forever) unless woken by a reload or restart; return at once if
        one has already installed a worker in this slot, which the loop must now watch."""
        self._wake[index].clear()
        if self._procs[index] is not None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake[index].wait(), delay)

    async def _stop_process(self, index: int, proc: WorkerProcess, timeout: float, reason: str) -> None:
        code = await proc.stop(timeout)
        slot = self.slots[index]
        slot.last_exit = ExitInfo.from_returncode(code, reason)
        logger.info("web.%d: worker pid %d stopped: %s", index, proc.pid, slot.last_exit.describe())
        if self._procs[index] is proc:
            self._procs[index] = None
        if slot.pid == proc.pid:
            slot.pid = None
            slot.state = S.STOPPED
        self.changed()

    # ----- rolling replacement (reload, restart) -------------------------------------------

    def apply_settings(self, new: Settings) -> None:
        """Adopt re-read settings: the next workers get the new app settings and environment, and
        restart policy, mode and database checks follow them. What was set up once at start (the
        held socket, the status API, the file watcher, the worker count) stays as it is."""
        kept = needs_restart(self.settings, new)
        if kept:
            logger.warning("reload: changed %s take effect only when the supervisor restarts",
                           ", ".join(kept))
        if self.redactor is not None:
            self.redactor.add(new.secrets)
        self.settings = new
        for tracker in self._trackers:
            tracker.cfg = new.config.restart

    async def rolling_restart(self, reason: str) -> bool:
        """Replace every worker, one slot at a time, each only after its successor is serving.

        Returns False, keeping the old workers, when a new worker fails to start. The old workers
        drain in the background: a long-lived response delays only their exit (bounded by the
        stop deadline), never the next reload.
        """
        async with self._rolling:
            previous = self.state
            self.set_state(S.RELOADING)
            try:
                for index in range(len(self.slots)):
                    if self._stopping.is_set() or not await self._replace(index, reason):
                        return False
                return True
            except OSError as exc:  # the worker could not even be spawned (a vanished directory)
                logger.error("web: cannot start a new worker: %s; still serving the previous version", exc)
                return False
            finally:
                if not self._stopping.is_set():
                    self.set_state(S.RUNNING if self.ready_workers else
                                   (previous if previous != S.RELOADING else S.STARTING))

    async def _replace(self, index: int, reason: str) -> bool:
        old = self._procs[index]
        slot = self.slots[index]
        if old is None:
            # Nothing serving in this slot (backoff or fatal): let its loop start one now, and
            # report whether that one came up.
            outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._start_outcome[index] = outcome
            self._trackers[index].reset()
            self._wake[index].set()
            try:
                return await asyncio.wait_for(outcome, self.settings.config.app.ready_timeout + 5)
            except TimeoutError:
                return False
            finally:
                self._start_outcome[index] = None
        new = self._spawn(index)
        if not await self._await_ready(index, new):
            code = await new.wait()
            logger.error("web.%d: new worker pid %d failed to start (%s); still serving the previous "
                         "version with pid %d", index, new.pid,
                         ExitInfo.from_returncode(code, S.EXIT_CRASH).describe(), old.pid)
            self.changed()
            return False
        self._install(index, new)
        self._wake[index].set()  # a slot loop parked in backoff or fatal must watch the new worker
        self._mark_serving(index)
        slot.restarts += 1
        self.spawn_task(self._stop_process(index, old, self.settings.config.supervisor.stop_timeout, reason))
        return True
