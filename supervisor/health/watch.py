"""The health watch: reads the workers' heartbeats and memory, and acts on the judge's verdicts.

A plugin (see :mod:`supervisor.contract`): every ``heartbeat_interval`` it samples each serving
worker (its heartbeat from ``sup.vitals``, its resident memory from psutil when ``max_rss`` is
set), keeps the loop-lag figures of ``sup.health`` for the status API and metrics, and posts a
:class:`~supervisor.contract.RecycleWorker` for each verdict of :class:`~supervisor.health.judge.Judge`.
The runner replaces the worker blue/green, one slot at a time. A worker that keeps its own
request quota says when it nears it; that is a change (see ``Runner``), and on it the watch has
the replacement started at once rather than at its next round.

Before a hung worker is replaced, the watch captures where it is stuck: it sends the worker
:data:`~supervisor.child.heartbeat.STACKS_SIGNAL`, reads the dump the worker writes to
``<runtime_dir>/stacks/<pid>.txt``, and logs it redacted, keeps it as the status document's
``last_hang`` and in ``<runtime_dir>/last-hang.txt``. A stopped process (SIGSTOP, a debugger)
runs no handler, so that is said instead of a stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil

from supervisor.child.heartbeat import END_MARK, STACKS_SIGNAL
from supervisor.contract import Plugin, RecycleWorker, SupervisorView
from supervisor.health.judge import Judge, Limits, Sample, Verdict
from supervisor.spawn.process import stacks_dir
from supervisor.state import ExitReason, HangIncident, SlotState
from supervisor.status.statefile import write_atomic

logger = logging.getLogger("supervisor")

CAPTURE_TIMEOUT = 2.0  # seconds a hung worker gets to write its stacks
MAX_DUMP = 256 * 1024  # bytes of a dump that are read
LAST_HANG = "last-hang.txt"


def resident_memory(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


def is_stopped(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP))
    except psutil.Error:
        return False


class HealthWatch:
    """The service; the outside world (clock, sleep, random, memory, signals) is injectable."""

    def __init__(self, sup: SupervisorView, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, rand: Callable[[], float] = random.random,
                 rss: Callable[[int], int | None] = resident_memory, stopped: Callable[[int], bool] = is_stopped,
                 send: Callable[[int, int], None] = os.kill) -> None:
        self.sup = sup
        self.clock = clock
        self.sleep = sleep
        self.rss = rss
        self.stopped = stopped
        self.send = send
        self.judge = Judge(self._limits(), rand)
        self._swept_for: set[int] | None = None  # the workers at the last sweep of the dumps
        self._told_reached: set[int] = set()  # workers whose reached quota was logged

    def plugin(self) -> Plugin:
        return Plugin("health", service=self.serve, startup=self.prepare)

    def _limits(self) -> Limits:
        settings = self.sup.settings
        return Limits.of(settings.config.app, settings.production)

    @property
    def directory(self) -> Path:
        return stacks_dir(self.sup.settings.runtime_dir)

    async def prepare(self) -> None:
        """Startup step: an empty directory for the workers' stack dumps (before any worker starts)."""
        self.sup.subscribe(self.quotas)
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            self._sweep(set())
        except OSError as exc:
            logger.warning("supervisor: cannot prepare %s (%s); a hung worker will be reported without its "
                           "stacks", self.directory, exc.strerror)

    async def serve(self) -> None:
        """Check every heartbeat interval until cancelled."""
        try:
            while True:
                await self.sleep(self.judge.limits.heartbeat_interval)
                self.check()
        finally:
            self._sweep(self.sup.worker_pids)

    def check(self) -> None:
        """One round: sample the serving workers, update the loop lag, act on the verdicts."""
        sup = self.sup
        self.judge.reconfigure(self._limits())  # settings may have been re-read
        now = self.clock()
        vitals = sup.vitals
        watch_rss = self.judge.limits.max_rss is not None
        samples = [Sample(slot.index, slot.pid, vitals[slot.pid], self.rss(slot.pid) if watch_rss else None)
                   for slot in sup.slots
                   if slot.state == SlotState.RUNNING and slot.pid is not None and slot.pid in vitals]
        lags = {pid: self.judge.lag(v, now) for pid, v in vitals.items()}
        sup.health.loop_lag = {pid: lag for pid, lag in lags.items() if lag is not None}
        self._act(self.judge.judge(samples, now))
        workers = sup.worker_pids
        if workers != self._swept_for:  # dumps are left only by workers that are gone since
            self._sweep(workers)

    def quotas(self) -> None:
        """On a change: act at once on serving workers that say they near or have reached their own
        request quota (one verdict per quota, see :meth:`Judge.nearing_quota`)."""
        sup = self.sup
        vitals = sup.vitals
        samples = [Sample(slot.index, slot.pid, vitals[slot.pid], None) for slot in sup.slots
                   if slot.state == SlotState.RUNNING and slot.pid is not None and slot.pid in vitals
                   and vitals[slot.pid].nearing_quota]
        self._told_reached &= set(vitals)
        if not samples:
            return
        self._act(self.judge.nearing_quota(samples, self.clock()))
        for sample in samples:
            if sample.vitals.quota_reached and sample.pid not in self._told_reached:
                self._told_reached.add(sample.pid)
                logger.warning("web.%d: worker pid %d %s; it takes no more requests, recycling it (%s)", sample.slot,
                               sample.pid, self.judge.quota_reached(sample), ExitReason.REQUESTS)

    def _act(self, verdicts: list[Verdict]) -> None:
        for verdict in verdicts:
            if verdict.hung:
                self.sup.run_task(self.hung(verdict))
            else:
                logger.warning("web.%d: worker pid %d %s; recycling it (%s)", verdict.slot, verdict.pid,
                               verdict.detail, verdict.reason)
                self.sup.post(RecycleWorker(verdict.pid, verdict.reason))

    async def hung(self, verdict: Verdict) -> None:
        """Capture, log and keep where the hung worker is stuck; then have it replaced and killed."""
        sup = self.sup
        stacks = sup.redact(await self.capture(verdict.pid))
        logger.error("web.%d: worker pid %d is hung: %s. Where it is stuck:\n%s\nweb.%d: starting a replacement, "
                     "then killing pid %d", verdict.slot, verdict.pid, verdict.detail,
                     textwrap.indent(stacks, "    "), verdict.slot, verdict.pid)
        kept = sup.settings.runtime_dir / LAST_HANG
        try:
            write_atomic(kept, f"web.{verdict.slot} worker pid {verdict.pid}: {verdict.detail}\n\n{stacks}\n")
        except OSError as exc:
            logger.warning("supervisor: cannot write %s: %s", kept, exc.strerror)
            file = None
        else:
            file = str(kept)
        sup.health.last_hang = HangIncident(verdict.slot, verdict.pid, sup.wall(), verdict.silent_for or 0.0,
                                            stacks, file)
        sup.changed()
        sup.post(RecycleWorker(verdict.pid, ExitReason.HUNG, kill=True))

    async def capture(self, pid: int) -> str:
        """The stacks worker ``pid`` dumps when signalled, or why there are none."""
        vitals = self.sup.vitals.get(pid)
        if vitals is None or vitals.exited:  # checked in the same step as the signal: never a reused pid
            return "(no stacks: the process has exited)"
        if self.stopped(pid):
            return ("(no stacks: the process is stopped, by SIGSTOP or a debugger, and runs no signal "
                    "handler until it is continued)")
        path = self.directory / f"{pid}.txt"
        try:
            self.send(pid, STACKS_SIGNAL)
        except ProcessLookupError:
            return "(no stacks: the process has exited)"
        deadline = self.clock() + CAPTURE_TIMEOUT
        text = ""
        while True:
            text = _read_dump(path)
            if END_MARK in text or self.clock() >= deadline:
                break
            await self.sleep(0.05)  # polling the file the worker's signal handler writes
        if not text.strip():
            return f"(no stacks: the worker wrote none within {CAPTURE_TIMEOUT:g}s)"
        if END_MARK not in text:
            return text.rstrip() + "\n(no asyncio tasks: the event loop's thread ran no Python code to dump them)"
        return text.split(END_MARK)[0].rstrip()

    def _sweep(self, workers: set[int]) -> None:
        """Remove the dump files of workers that are gone."""
        self._swept_for = set(workers)
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.directory):
                stem = entry.name.removesuffix(".txt")
                if stem.isdigit() and int(stem) not in workers:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def _read_dump(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_DUMP).decode("utf-8", "replace")


