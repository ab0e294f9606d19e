"""Reaping orphans: what PID 1 in a container (or a child subreaper) owes the kernel.

A process whose parent dies is re-parented to the nearest *subreaper* ancestor, or to PID 1. When
such an orphan exits it stays a zombie until that ancestor waits for it. The supervisor makes
itself a subreaper (``PR_SET_CHILD_SUBREAPER``), so the grandchildren a worker leaves behind come
to it rather than escaping supervision, and in a container, where it *is* PID 1, nothing else
would reap them.

It must not reap the wrong children: :mod:`supervisor.spawn.process` watches each worker through a
pidfd and reaps it itself to learn its exit code, and other code may wait for a subprocess it
started. So the sweep never calls ``waitpid(-1)``: it lists our children and waits, by pid, only
for zombies that are

* not a managed worker (their exit codes belong to the restart policy), and
* not in the supervisor's own session: children we spawn without a new session (subprocesses of
  our own) stay there, whereas workers start their own session, so everything they leave behind,
  and anything re-parented to PID 1 from elsewhere, is in another one;
* a zombie for a second already (``GRACE``): a subprocess we started in a session of its own (a
  migration) is reaped by its waiter as it exits, never by a sweep racing it for the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

import psutil

from supervisor.contract import Plugin, SupervisorView

logger = logging.getLogger("supervisor")

PR_SET_CHILD_SUBREAPER = 36
# Seconds between sweeps without a SIGCHLD: a safety net only. Every exit of a child, and every
# zombie re-parented to us, sends SIGCHLD, and the loop below loses none (coalesced signals find
# all the zombies there are); a sweep lists every process on the machine, so not at rest.
SWEEP_INTERVAL = 60.0
# Seconds an exited child outside our session stays a zombie before a sweep takes it. A process
# we started in a session of its own (a migration, say) is waited for by whoever started it
# (asyncio's child watcher, a pidfd) the moment it exits; a sweep run by the same SIGCHLD would
# otherwise race that waiter and steal the exit code ("Unknown child process pid N, will report
# returncode 255"). A true orphan has no waiter: it is reaped a second later.
GRACE = 1.0


@dataclass(frozen=True)
class Child:
    pid: int
    zombie: bool
    sid: int


def orphans_to_reap(children: Iterable[Child], managed: Collection[int], own_sid: int) -> list[int]:
    """The pids it is safe to wait for: exited, not a worker, not in our session. Pure."""
    return [c.pid for c in children if c.zombie and c.pid not in managed and c.sid != own_sid]


class ZombieAges:
    """Since when each candidate has been a zombie, to reap only those past ``grace`` seconds."""

    def __init__(self, grace: float = GRACE, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self._since: dict[int, float] = {}

    def due(self, candidates: Iterable[int]) -> list[int]:
        """The candidates that have been zombies for ``grace`` seconds (then forgotten), remembering
        the others from the first time they are seen; pids no longer candidates are forgotten."""
        now = self.clock()
        current = set(candidates)
        self._since = {pid: since for pid, since in self._since.items() if pid in current}
        for pid in current:
            self._since.setdefault(pid, now)
        due = sorted(pid for pid, since in self._since.items() if now - since >= self.grace)
        for pid in due:  # handed out to be reaped; one still there next time starts over
            del self._since[pid]
        return due

    def next_due_in(self) -> float | None:
        """Seconds until the next candidate is due, or None when none waits."""
        if not self._since:
            return None
        return max(0.0, min(self._since.values()) + self.grace - self.clock())


def become_subreaper() -> bool:
    """Ask Linux to re-parent our descendants' orphans to us; False where that is not possible."""
    if os.getpid() == 1:
        return True  # PID 1 inherits every orphan already
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def list_children(pid: int) -> list[Child]:
    """Our direct children with their state and session; ones that vanish meanwhile are skipped."""
    found = []
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return []
    for child in children:
        try:
            zombie = child.status() == psutil.STATUS_ZOMBIE
            found.append(Child(child.pid, zombie, os.getsid(child.pid)))
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return found


def reap(pids: Iterable[int]) -> list[tuple[int, int]]:
    """``waitpid(pid, WNOHANG)`` each pid: the (pid, exit code) of those reaped (negative: signal)."""
    reaped = []
    for pid in pids:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue  # someone else reaped it first
        if got == pid:
            reaped.append((pid, os.waitstatus_to_exitcode(status)))
    return reaped


def sweep(managed: Collection[int], pid: int | None = None, ages: ZombieAges | None = None) -> list[tuple[int, int]]:
    """Reap every orphan that is safe to reap now (with ``ages``: a zombie for long enough); log and
    return what was reaped."""
    me = os.getpid() if pid is None else pid
    candidates = orphans_to_reap(list_children(me), managed, os.getsid(me))
    reaped = reap(ages.due(candidates) if ages is not None else candidates)
    for child, code in reaped:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        logger.info("supervisor: reaped orphaned process pid %d (%s)", child, how)
    return reaped


async def reap_orphans(managed: Callable[[], Collection[int]], interval: float = SWEEP_INTERVAL,
                       grace: float = GRACE) -> None:
    """Sweep on every SIGCHLD and every ``interval`` seconds, until cancelled; a zombie is reaped
    once it has been one for ``grace`` seconds (see GRACE), by a sweep scheduled for then.

    The SIGCHLD handler only sets an event (it runs through the event loop's wakeup fd), and the
    sweep runs on the loop, where the set of managed workers cannot change under it.
    """
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    ages = ZombieAges(grace)
    loop.add_signal_handler(signal.SIGCHLD, wake.set)
    try:
        while True:
            wake.clear()
            sweep(managed(), ages=ages)
            pending = ages.next_due_in()
            # asyncio.timeout, not wait_for: on 3.11, wait_for swallows a cancellation that arrives
            # as the event is set (a SIGCHLD at stop time), and this loop would never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval if pending is None else min(interval, pending + 0.01)):
                    await wake.wait()
    finally:
        loop.remove_signal_handler(signal.SIGCHLD)


def reaper_plugin(sup: SupervisorView) -> Plugin:
    """Become a subreaper, then reap orphans until the supervisor stops."""

    async def service() -> None:
        if not become_subreaper():
            logger.warning("supervisor: cannot become a child subreaper; orphans of workers go to init")
        await reap_orphans(lambda: sup.worker_pids)

    return Plugin("reaper", service=service)
